/* SPDX-License-Identifier: MIT */
/* The table of ways to give an image a block device, in order of preference. */
#include <string.h>

#include "vdisk.h"

static const struct via *const vias[] = {
    &via_kmod, &via_loop, &via_ublk, &via_nbd, &via_fuse,
};

const struct via *via_find(const char *name)
{
    for (size_t i = 0; i < sizeof(vias) / sizeof(vias[0]); i++)
        if (strcmp(vias[i]->name, name) == 0)
            return vias[i];
    return NULL;
}

/* Linear images go to the kernel's own drivers; the rest to a user-space server. */
const struct via *via_auto(unsigned caps)
{
    static const char *const linear_order[] = {"kmod", "loop", NULL};
    static const char *const image_order[] = {"ublk", "nbd", "fuse", NULL};
    const char *const *order = (caps & VDISK_CAP_LINEAR) ? linear_order : image_order;

    for (; *order; order++) {
        const struct via *v = via_find(*order);

        if (v && v->available())
            return v;
    }
    return NULL;
}

int kernel_way_allowed(const struct open_request *req, struct vdisk_image *img)
{
    struct vdisk_info info;

    if (req->read_only || vdisk_get_info(img, &info) < 0 || !info.format_probed)
        return 0;
    if (info.linear_offset > 0) /* the guest's bytes start after the header it cannot reach */
        return 0;
    return -err("%s: its format was probed and cannot be remembered here (no user xattrs on "
                "this file system?), so a guest could turn it into another format: give -f %s, "
                "or use a user-space way (--via nbd or fuse), which guards it",
                req->image, info.format);
}
