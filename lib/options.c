/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "options.h"
#include "size.h"

/* Is KEY one of ALLOWED? */
static bool key_allowed(const char *const *allowed, const char *key)
{
    for (; allowed && *allowed; allowed++)
        if (strcmp(*allowed, key) == 0)
            return true;
    return false;
}

int vdisk_options_parse(const char *text, const char *const *allowed, const char *format,
                        struct vdisk_options *opts)
{
    char *save = NULL, *item;
    int r;

    memset(opts, 0, sizeof(*opts));
    if (!text || !*text)
        return 0;
    opts->buf = strdup(text);
    if (!opts->buf)
        return vdisk_error(ENOMEM, "options: out of memory");
    /* every message is made before the buffer ITEM points into is freed */
    for (item = strtok_r(opts->buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');

        if (!eq || eq == item) {
            r = vdisk_error(EINVAL, "option '%s': expected KEY=VALUE", item);
            goto err;
        }
        if (opts->count == VDISK_OPTIONS_MAX) {
            r = vdisk_error(E2BIG, "too many options (at most %d): '%s'", VDISK_OPTIONS_MAX, item);
            goto err;
        }
        *eq = '\0';
        if (!key_allowed(allowed, item)) {
            r = vdisk_error(EINVAL, "format %s has no option '%s'", format, item);
            goto err;
        }
        opts->key[opts->count] = item;
        opts->value[opts->count++] = eq + 1;
    }
    return 0;

err:
    vdisk_options_free(opts);
    return r;
}

void vdisk_options_free(struct vdisk_options *opts)
{
    free(opts->buf);
    memset(opts, 0, sizeof(*opts));
}

const char *vdisk_options_get(const struct vdisk_options *opts, const char *key)
{
    for (int i = opts ? opts->count - 1 : -1; i >= 0; i--)
        if (strcmp(opts->key[i], key) == 0)
            return opts->value[i];
    return NULL;
}

int vdisk_options_get_size(const struct vdisk_options *opts, const char *key, uint64_t def,
                           uint64_t *out)
{
    const char *v = vdisk_options_get(opts, key);

    *out = def;
    if (!v)
        return 0;
    return vdisk_parse_size_unit(v, 1, out);
}

int vdisk_options_get_bool(const struct vdisk_options *opts, const char *key, bool def, bool *out)
{
    static const char *const yes[] = {"on", "true", "yes", "1", NULL};
    static const char *const no[] = {"off", "false", "no", "0", NULL};
    const char *v = vdisk_options_get(opts, key);

    *out = def;
    if (!v)
        return 0;
    if (key_allowed(yes, v)) {
        *out = true;
        return 0;
    }
    if (key_allowed(no, v)) {
        *out = false;
        return 0;
    }
    return vdisk_error(EINVAL, "option %s: expected on or off, not '%s'", key, v);
}
