/* SPDX-License-Identifier: MIT */
/*
 * raw resize: the file's length is the disk's size, to the byte, as qemu-img
 * resize sets it (its info then rounds up to a whole sector). Shrinking refuses while data (not
 * holes) lies past the new end.
 */
#include <errno.h>
#include <inttypes.h>

#include "../error.h"
#include "../format.h"

/* The first byte of data (not a hole) in [OFF, END), or END when none. */
static uint64_t first_data(struct vdisk_node *node, uint64_t off, uint64_t end)
{
    while (off < end) {
        uint64_t run_end;
        bool data;

        if (vdisk_file_extent(node->file, off, end, &data, &run_end) < 0 || data)
            return off; /* unknown counts as data: never cut it off */
        off = run_end;
    }
    return end;
}

/* Set the file length; refuses a shrink over data. */
int raw_resize(struct vdisk_node *node, uint64_t size, unsigned flags)
{
    uint64_t d;
    int r;

    (void)flags;
    if (size < node->size && (d = first_data(node, size, node->size)) < node->size)
        return vdisk_error(EPERM,
                           "%s: data lies at offset %" PRIu64 ", past the new size %" PRIu64
                           "; not shrinking (discard it first, or choose a larger size)",
                           node->path, d, size);
    r = vdisk_file_truncate(node->file, size);
    if (r < 0)
        return r;
    node->size = size;
    return 0;
}
