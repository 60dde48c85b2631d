/* SPDX-License-Identifier: MIT */
/*
 * vdisk_resize(): the checks every format shares (writable, a size a disk
 * can have, shrinking asked for), then the driver's resize() on the top node.
 */
#include <errno.h>
#include <inttypes.h>

#include "error.h"
#include "node.h"

#define MAX_SIZE (UINT64_C(1) << 62) /* far beyond any format's limit; keeps sums safe */

int vdisk_resize(struct vdisk_image *img, uint64_t size, unsigned flags)
{
    struct vdisk_node *n = img->root;
    int r;

    vdisk_error_clear();
    if (flags & ~VDISK_RESIZE_SHRINK)
        return vdisk_error(EINVAL, "%s: unknown resize flags 0x%x", n->path, flags);
    if (n->read_only)
        return vdisk_error(EROFS, "%s: opened read-only: cannot resize", n->path);
    if (!n->fmt->resize)
        return vdisk_error(ENOTSUP, "%s: resizing a %s image is not supported", n->path,
                           n->fmt->name);
    if (size == 0 || size > MAX_SIZE)
        return vdisk_error(EINVAL, "%s: %" PRIu64 " bytes is not a size a disk can have", n->path,
                           size);
    if (size == n->size)
        return 0;
    if (size < n->size && !(flags & VDISK_RESIZE_SHRINK))
        return vdisk_error(EPERM,
                           "%s: %" PRIu64 " bytes is smaller than the image's %" PRIu64
                           "; shrinking cuts the disk off: ask for it with --shrink",
                           n->path, size, n->size);
    r = node_flush(n); /* the driver starts from durable metadata */
    if (r < 0)
        return r;
    r = n->fmt->resize(n, size, flags);
    if (r < 0)
        return r;
    return node_flush(n);
}
