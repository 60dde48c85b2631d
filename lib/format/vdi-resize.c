/* SPDX-License-Identifier: MIT */
/*
 * VDI resize: the block map grows into the room between it and the first
 * data block (vdisk and QEMU leave the map a whole MiB, room for about 256 GiB
 * of 1 MiB blocks); beyond that the data would have to move, which is
 * refused. New map entries are written before the header that counts them.
 * Dynamic: new blocks are free; shrinking drops only blocks without data.
 * Static: the file grows first (sparse zeroes, flushed), then the new blocks'
 * entries point at their slots in order; never shrunk (every block holds data).
 * Differencing: new blocks are free, and read as zeroes past the parent's end
 * (the node layer's rule for a backing node shorter than its child, as for
 * qcow2); grow only, since a block dropped by a shrink would show the
 * parent's data again after a later grow. qemu-img resize refuses VDI.
 */
#include <errno.h>
#include <inttypes.h>

#include "../error.h"
#include "vdi.h"

/* Grow the per-block arrays from s->blocks to NB entries (new map entries free). */
static int grow_arrays(struct vdi *s, uint32_t nb)
{
    uint32_t *bmap = realloc(s->bmap, 4ull * nb), *owner;
    uint8_t *busy;

    if (bmap)
        s->bmap = bmap;
    owner = bmap ? realloc(s->owner, 4ull * nb) : NULL;
    if (owner)
        s->owner = owner;
    busy = owner ? realloc(s->busy, nb / 8 + 1) : NULL;
    if (!busy)
        return vdisk_error(ENOMEM, "%s: out of memory for a %" PRIu32 "-block map", s->node->path,
                           nb);
    s->busy = busy;
    memset(busy + s->blocks / 8 + 1, 0, nb / 8 - s->blocks / 8);
    for (uint32_t i = s->blocks; i < nb; i++)
        s->owner[i] = VDI_FREE;
    return 0;
}

/* The first block at or past FIRST that holds data (or a data slot past NB), else UINT32_MAX. */
static uint32_t first_data(const struct vdi *s, uint32_t first, uint32_t nb)
{
    for (uint32_t b = 0; b < s->blocks; b++)
        if (s->bmap[b] < VDI_ZERO && (b >= first || s->bmap[b] >= nb))
            return b;
    return UINT32_MAX;
}

/* Static: grow the file by the slots of blocks OLD..NB (sparse, flushed), then map them in order.
 */
static int grow_static(struct vdi *s, uint32_t old, uint32_t nb)
{
    uint64_t end = s->off_data + (uint64_t)nb * s->stride;
    int r;

    if (s->allocated != old || s->next != old)
        return vdisk_error(EINVAL,
                           "%s: a static VDI whose %" PRIu32 " blocks are not all allocated "
                           "(%" PRIu32 "): run vdisk check -r first",
                           s->node->path, old, s->allocated);
    if (end > s->file_size) {
        r = vdisk_file_truncate(s->file, end);
        if (r == 0)
            r = vdisk_file_flush(s->file); /* the data before the map entries that point at it */
        if (r < 0)
            return r;
        s->file_size = end;
    }
    for (uint32_t i = old; i < nb; i++) {
        s->owner[i] = i;
        vdi_set_entry(s, i, i);
    }
    s->allocated = s->next = nb;
    return 0;
}

/* Set the virtual size (the map's room is the limit; static and differencing: grow only). */
int vdi_resize(struct vdisk_node *node, uint64_t size, unsigned flags)
{
    struct vdi *s = node->priv;
    uint64_t nb64 = (size + s->block_size - 1) / s->block_size;
    uint32_t nb, b, old = s->blocks;
    int r = 0;

    (void)flags;
    if (s->type != VDI_TYPE_DYNAMIC && s->type != VDI_TYPE_STATIC && s->type != VDI_TYPE_DIFF)
        return vdisk_error(ENOTSUP, "%s: an undo VDI image cannot be resized", node->path);
    if (s->type != VDI_TYPE_DYNAMIC && size < s->disk_size)
        return vdisk_error(ENOTSUP,
                           "%s: a %s VDI image is not shrunk (%s); convert it to a dynamic one "
                           "first",
                           node->path, s->type == VDI_TYPE_STATIC ? "static" : "differencing",
                           s->type == VDI_TYPE_STATIC
                               ? "every block holds data"
                               : "a dropped block would show its parent's data after a grow");
    if (size & 511)
        return vdisk_error(EINVAL, "%s: the new size %" PRIu64 " is not a multiple of 512",
                           node->path, size);
    if (nb64 > VDI_BLOCKS_MAX)
        return vdisk_error(EFBIG, "%s: %" PRIu64 " bytes is more than a VDI holds", node->path,
                           size);
    nb = (uint32_t)nb64;
    if (s->off_bmap + 4ull * nb > s->off_data)
        return vdisk_error(ENOSPC,
                           "%s: its block map has room for %" PRIu64 " blocks (%" PRIu64
                           " bytes); growing beyond would move the data, which is not supported",
                           node->path, (uint64_t)(s->off_data - s->off_bmap) / 4,
                           (uint64_t)(s->off_data - s->off_bmap) / 4 * s->block_size);
    vdi_exclusive(s);
    if (nb < old && (b = first_data(s, nb, nb)) != UINT32_MAX) {
        r = vdisk_error(EPERM,
                        "%s: data lies at offset %" PRIu64 ", past the new size %" PRIu64
                        " (or in a data slot past it); not shrinking (discard it first, or "
                        "choose a larger size)",
                        node->path, (uint64_t)b * s->block_size, size);
        goto out;
    }
    if (nb > old) {
        r = grow_arrays(s, nb);
        if (r < 0)
            goto out;
        s->blocks = nb;
        for (uint32_t i = old; i < nb; i++)
            vdi_set_entry(s, i, VDI_FREE); /* written with the header, before it */
        if (s->type == VDI_TYPE_STATIC) {
            r = grow_static(s, old, nb);
            if (r < 0) {
                s->blocks = old;
                goto out;
            }
        }
    } else {
        s->blocks = nb;
        if (!s->dirty) /* the header alone */
            vdi_set_entry(s, 0, s->bmap[0]);
        else if (s->dirty_hi >= nb)
            s->dirty_hi = nb ? nb - 1 : 0;
    }
    s->disk_size = size;
    put_le64(s->hdr + VDI_OFF_DISK_SIZE, size);
    put_le32(s->hdr + VDI_OFF_BLOCKS, nb);
    r = vdi_write_metadata(s);
    if (r == 0)
        node->size = size;
out:
    vdi_exclusive_end(s);
    return r;
}
