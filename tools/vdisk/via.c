/* SPDX-License-Identifier: MIT */
/* The table of ways to give an image a block device, in order of preference. */
#include <string.h>

#include "vdisk.h"

static const struct via *const vias[] = {
    &via_kmod,
    &via_loop,
    &via_nbd,
    &via_fuse,
};

const struct via *via_find(const char *name)
{
    for (size_t i = 0; i < sizeof(vias) / sizeof(vias[0]); i++)
        if (strcmp(vias[i]->name, name) == 0)
            return vias[i];
    return NULL;
}

/* Is FORMAT served as plain file bytes (so loop or vdisk.ko can take it)? */
bool format_is_raw(const char *format)
{
    return strcmp(format, "raw") == 0 || strcmp(format, "iso") == 0;
}

const struct via *via_auto(const char *format)
{
    static const char *const raw_order[] = {"kmod", "loop", NULL};
    static const char *const image_order[] = {"ublk", "nbd", "fuse", NULL};
    const char *const *order = format_is_raw(format) ? raw_order : image_order;

    for (; *order; order++) {
        const struct via *v = via_find(*order);

        if (v && v->available())
            return v;
    }
    return NULL;
}
