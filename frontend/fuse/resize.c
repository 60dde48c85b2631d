/* SPDX-License-Identifier: MIT */
/*
 * A new size for the exported file, after the image was resized through the
 * same engine: FUSE threads clip I/O to it from now on, and the kernel's
 * cached attributes are dropped so that the next stat (and loop's
 * LOOP_SET_CAPACITY after it) sees the new length.
 */
#include <errno.h>

#include "internal.h"

int vdisk_fuse_set_size(struct vdisk_fuse *fs, uint64_t size)
{
    int r;

    __atomic_store_n(&fs->size, size, __ATOMIC_RELEASE);
    /* offset < 0: the attributes only, no page cache (loop reads with direct I/O) */
    r = fuse_lowlevel_notify_inval_inode(fs->se, FUSE_ROOT_ID, -1, 0);
    return r == -ENOENT ? 0 : r; /* not looked up yet: nothing cached */
}
