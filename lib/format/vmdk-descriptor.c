/* SPDX-License-Identifier: MIT */
/*
 * VMDK descriptor text: "key=value" lines (CID, parentCID, createType,
 * parentFileNameHint, ddb.*), extent lines (ACCESS SECTORS TYPE "FILE"
 * [OFFSET]) and comments. Anything else is refused with its line number:
 * a descriptor names files to open, so it is read strictly.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../error.h"
#include "vmdk.h"

static const char *const type_names[] = {
    [VMDK_EXT_FLAT] = "FLAT",
    [VMDK_EXT_SPARSE] = "SPARSE",
    [VMDK_EXT_ZERO] = "ZERO",
    [VMDK_EXT_VMFS] = "VMFS",
    [VMDK_EXT_VMFSSPARSE] = "VMFSSPARSE",
    [VMDK_EXT_SESPARSE] = "SESPARSE",
};

static const char *const access_names[] = {"RW", "RDONLY", "NOACCESS"};

const char *vmdk_type_name(enum vmdk_type t)
{
    return type_names[t];
}

const char *vmdk_access_name(enum vmdk_access a)
{
    return access_names[a];
}

/* Skip blanks from P to at most END. */
static char *skip_blank(char *p, char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/* Next whitespace-separated word of [*P, END), NUL terminated in place; NULL if none. */
static char *word(char **p, char *end)
{
    char *w = skip_blank(*p, end), *e = w;

    if (w >= end)
        return NULL;
    while (e < end && *e != ' ' && *e != '\t')
        e++;
    if (e < end)
        *e++ = '\0';
    *p = e;
    return w;
}

/* A decimal count, the whole of W; false if W is not one. */
static bool parse_u64(const char *w, uint64_t *v)
{
    char *e;

    if (!w || *w < '0' || *w > '9')
        return false;
    errno = 0;
    *v = strtoull(w, &e, 10);
    return errno == 0 && *e == '\0';
}

/* Parse an extent line [P, END) (NUL terminated) into X. */
static int parse_extent(const char *path, unsigned line, char *p, char *end,
                        struct vmdk_desc_extent *x)
{
    char *acc = word(&p, end), *num = word(&p, end), *type = word(&p, end), *file = NULL, *off;
    unsigned i;

    for (i = 0; i < 3 && strcmp(acc, access_names[i]) != 0; i++)
        ;
    x->access = (enum vmdk_access)i;
    if (!parse_u64(num, &x->sectors) || !type)
        return vdisk_error(EINVAL,
                           "%s: descriptor line %u: an extent line wants ACCESS SECTORS "
                           "TYPE [\"FILE\" [OFFSET]]",
                           path, line);
    for (i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
        if (strcmp(type, type_names[i]) == 0)
            break;
    if (i == sizeof(type_names) / sizeof(type_names[0]))
        return vdisk_error(ENOTSUP, "%s: descriptor line %u: extent type '%s' is not supported",
                           path, line, type);
    x->type = (enum vmdk_type)i;
    p = skip_blank(p, end);
    if (p < end && *p == '"') {
        char *q = memchr(p + 1, '"', end - p - 1);

        if (!q)
            return vdisk_error(EINVAL, "%s: descriptor line %u: unterminated file name", path,
                               line);
        *q = '\0';
        file = p + 1;
        p = q + 1;
    }
    off = word(&p, end);
    if (off && !parse_u64(off, &x->offset))
        return vdisk_error(EINVAL, "%s: descriptor line %u: bad extent offset '%s'", path, line,
                           off);
    if (word(&p, end))
        return vdisk_error(EINVAL, "%s: descriptor line %u: junk after the extent", path, line);
    if (x->type != VMDK_EXT_ZERO && (!file || !*file))
        return vdisk_error(EINVAL, "%s: descriptor line %u: a %s extent needs a file name", path,
                           line, type);
    if (x->type == VMDK_EXT_ZERO && file)
        return vdisk_error(EINVAL, "%s: descriptor line %u: a ZERO extent has no file", path, line);
    if (x->sectors == 0 || x->sectors > (uint64_t)INT64_MAX / VMDK_SECTOR ||
        x->offset > (uint64_t)INT64_MAX / VMDK_SECTOR)
        return vdisk_error(EINVAL, "%s: descriptor line %u: extent size or offset out of range",
                           path, line);
    if (file) {
        x->file = strdup(file);
        if (!x->file)
            return vdisk_error(ENOMEM, "%s: out of memory", path);
    }
    return 0;
}

/* Set *DST to a copy of VAL; -errno. */
static int set_str(const char *path, char **dst, const char *val)
{
    free(*dst);
    *dst = strdup(val);
    return *dst ? 0 : vdisk_error(ENOMEM, "%s: out of memory", path);
}

/* A CID: 8 hex digits at most. */
static int parse_cid(const char *path, unsigned line, const char *v, uint32_t *cid)
{
    char *e;
    unsigned long long x;

    errno = 0;
    x = strtoull(v, &e, 16);
    if (!*v || *e || errno || x > 0xffffffffull)
        return vdisk_error(EINVAL, "%s: descriptor line %u: bad CID '%s'", path, line, v);
    *cid = (uint32_t)x;
    return 0;
}

/* Handle a key=value line. */
static int parse_pair(const char *path, unsigned line, char *key, char *val, struct vmdk_desc *d)
{
    size_t n = strlen(val);

    if (n >= 2 && val[0] == '"' && val[n - 1] == '"') {
        val[n - 1] = '\0';
        val++;
    }
    if (strcmp(key, "CID") == 0)
        return parse_cid(path, line, val, &d->cid);
    if (strcmp(key, "parentCID") == 0)
        return parse_cid(path, line, val, &d->parent_cid);
    if (strcmp(key, "createType") == 0)
        return set_str(path, &d->create_type, val);
    if (strcmp(key, "parentFileNameHint") == 0)
        return set_str(path, &d->parent_hint, val);
    if (strcmp(key, "ddb.adapterType") == 0)
        return set_str(path, &d->adapter_type, val);
    if (strcmp(key, "ddb.virtualHWVersion") == 0)
        return set_str(path, &d->hwversion, val);
    if (strcmp(key, "version") == 0 && strcmp(val, "1") && strcmp(val, "2") && strcmp(val, "3"))
        return vdisk_error(ENOTSUP, "%s: descriptor version %s is not supported", path, val);
    return 0; /* other keys (encoding, ddb.geometry..., ddb.uuid...) are kept in the text only */
}

/* Parse one line [P, END) (NUL terminated, trimmed). */
static int parse_line(const char *path, unsigned line, char *p, char *end, struct vmdk_desc *d)
{
    char *eq;

    if (p == end || *p == '#')
        return 0;
    if (strncmp(p, "RW ", 3) == 0 || strncmp(p, "RDONLY ", 7) == 0 ||
        strncmp(p, "NOACCESS ", 9) == 0 || strncmp(p, "RW\t", 3) == 0) {
        struct vmdk_desc_extent *x;

        if (d->n_ext >= VMDK_MAX_EXTENTS)
            return vdisk_error(EINVAL, "%s: more than %u extents", path, VMDK_MAX_EXTENTS);
        x = realloc(d->ext, (d->n_ext + 1) * sizeof(*x));
        if (!x)
            return vdisk_error(ENOMEM, "%s: out of memory", path);
        d->ext = x;
        x = &d->ext[d->n_ext++];
        memset(x, 0, sizeof(*x));
        return parse_extent(path, line, p, end, x);
    }
    eq = strchr(p, '=');
    if (!eq || eq == p)
        return vdisk_error(EINVAL, "%s: descriptor line %u is neither key=value nor an extent",
                           path, line);
    {
        char *k = p, *ke = eq, *v = skip_blank(eq + 1, end);

        while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
            ke--;
        *ke = '\0';
        return parse_pair(path, line, k, v, d);
    }
}

int vmdk_desc_parse(const char *path, const char *text, size_t len, struct vmdk_desc *d)
{
    char *buf, *p, *end;
    unsigned line = 0;
    int r = 0;

    memset(d, 0, sizeof(*d));
    d->parent_cid = VMDK_NO_PARENT;
    d->cid = VMDK_NO_PARENT;
    if (len > VMDK_MAX_DESC)
        return vdisk_error(EFBIG, "%s: descriptor of %zu bytes is too large", path, len);
    len = strnlen(text, len); /* an embedded descriptor ends at its first NUL */
    d->text = strndup(text, len);
    buf = strndup(text, len);
    if (!d->text || !buf) {
        free(buf);
        return vdisk_error(ENOMEM, "%s: out of memory", path);
    }
    d->text_len = len;
    for (p = buf; r == 0 && p < buf + len; p = end + 1) {
        char *nl = memchr(p, '\n', buf + len - p);

        end = nl ? nl : buf + len;
        *end = '\0';
        line++;
        {
            char *s = skip_blank(p, end), *e = end;

            while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
                e--;
            *e = '\0';
            r = parse_line(path, line, s, e, d);
        }
    }
    free(buf);
    if (r == 0 && !d->create_type)
        r = vdisk_error(EINVAL, "%s: descriptor has no createType", path);
    if (r == 0 && d->n_ext == 0)
        r = vdisk_error(EINVAL, "%s: descriptor lists no extent", path);
    if (r < 0)
        vmdk_desc_free(d);
    return r;
}

void vmdk_desc_free(struct vmdk_desc *d)
{
    for (unsigned i = 0; i < d->n_ext; i++)
        free(d->ext[i].file);
    free(d->ext);
    free(d->create_type);
    free(d->parent_hint);
    free(d->adapter_type);
    free(d->hwversion);
    free(d->text);
    memset(d, 0, sizeof(*d));
}

char *vmdk_desc_with_cid(const struct vmdk_desc *d, uint32_t cid, size_t *len)
{
    const char *t = d->text, *p = t, *line = NULL, *eol;
    char *out;

    while (p && *p) {
        const char *s = p;

        while (*s == ' ' || *s == '\t')
            s++;
        if (strncmp(s, "CID", 3) == 0 && (s[3] == '=' || s[3] == ' ')) {
            line = s;
            break;
        }
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    if (!line) { /* no CID line: put one first */
        if (asprintf(&out, "CID=%08x\n%s", cid, t) < 0)
            return NULL;
        *len = strlen(out);
        return out;
    }
    for (eol = line; *eol && *eol != '\n' && *eol != '\r'; eol++)
        ;
    if (asprintf(&out, "%.*sCID=%08x%s", (int)(line - t), t, cid, eol) < 0)
        return NULL;
    *len = strlen(out);
    return out;
}
