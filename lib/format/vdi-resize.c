/* SPDX-License-Identifier: MIT */
/*
 * VDI resize, for dynamic images: the block map grows into the room between
 * it and the first data block (vdisk and QEMU leave the map a whole MiB, room
 * for about 256 GiB of 1 MiB blocks); beyond that the data would have to move,
 * which is refused. New map entries are written (free) before the header
 * that counts them. Shrinking drops only blocks that hold no data.
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

/* Set the virtual size (dynamic images; the map's room is the limit). */
int vdi_resize(struct vdisk_node *node, uint64_t size, unsigned flags)
{
    struct vdi *s = node->priv;
    uint64_t nb64 = (size + s->block_size - 1) / s->block_size;
    uint32_t nb, b, old = s->blocks;
    int r = 0;

    (void)flags;
    if (s->type != VDI_TYPE_DYNAMIC)
        return vdisk_error(ENOTSUP, "%s: only dynamic VDI images can be resized (this one is %s)",
                           node->path, s->type == VDI_TYPE_STATIC ? "static" : "differencing");
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
