/* SPDX-License-Identifier: MIT */
/*
 * VHDX resize (qemu-img resize refuses VHDX; Hyper-V's Resize-VHD does it).
 * The BAT region (its length is fixed in the region table) must hold the new
 * entry count, sector-bitmap entries included: vdisk and QEMU size it with
 * room to spare, Hyper-V for the size it was made at. Past that room the BAT
 * region would have to move, which is refused (not done yet). One log entry
 * carries the BAT pages with the new (free) entries, then the metadata page
 * with the new virtual size: a crash replays all of it or none. Shrinking
 * drops only blocks without payload; a differencing VHDX only grows (a block
 * it dropped would show its parent's data after a later grow).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "../error.h"
#include "vhdx.h"

/* The file offset of the virtual disk size item, from the metadata table; 0 if none. */
static int size_item(struct vhdx *s, uint64_t *off)
{
    uint8_t *t = malloc(VHDX_RT_SIZE);
    unsigned n;
    int r;

    if (!t)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    r = vhdx_pread_meta(s, t, VHDX_RT_SIZE, s->meta_off);
    n = r == 0 ? get_le16(t + 10) : 0;
    *off = 0;
    for (unsigned i = 0; i < n && i < VHDX_META_MAX; i++) {
        const uint8_t *e = t + 32 + 32 * i;

        if (memcmp(e, &VHDX_GUID_DISK_SIZE, 16) == 0 && get_le32(e + 20) >= 8)
            *off = s->meta_off + get_le32(e + 16);
    }
    free(t);
    if (r == 0 && (!*off || *off % VHDX_PAGE > VHDX_PAGE - 8))
        r = vdisk_error(EINVAL, "%s: VHDX virtual disk size item not found (or across pages)",
                        s->node->path);
    return r;
}

/* Entries of the BAT for SIZE bytes, as vhdx_read_bat counts them. */
static uint64_t entries_for(const struct vhdx *s, uint64_t size, uint64_t *blocks)
{
    uint64_t nb = (size + s->block_size - 1) / s->block_size;
    uint64_t nc = (nb + s->chunk_ratio - 1) / s->chunk_ratio;

    *blocks = nb;
    return s->has_parent ? nc * (s->chunk_ratio + 1) : nb + (nb - 1) / s->chunk_ratio;
}

/* Make the in-memory BAT and bitmap arrays hold ENTRIES entries and NC chunks (new ones zero). */
static int grow_arrays(struct vhdx *s, uint64_t entries, uint64_t nc)
{
    size_t old = (s->bat_entries * 8 + VHDX_PAGE - 1) & ~(size_t)(VHDX_PAGE - 1);
    size_t bytes = (entries * 8 + VHDX_PAGE - 1) & ~(size_t)(VHDX_PAGE - 1);
    uint64_t *bat = bytes > old ? realloc(s->bat, bytes) : s->bat;
    uint8_t *dirty = NULL, **sb = NULL;

    if (bat) {
        s->bat = bat;
        dirty = bytes > old ? realloc(s->bat_page_dirty, bytes / VHDX_PAGE) : s->bat_page_dirty;
    }
    if (dirty) {
        s->bat_page_dirty = dirty;
        sb = nc > s->nchunks ? realloc(s->sb, nc * sizeof(*sb)) : s->sb;
    }
    if (!sb)
        return vdisk_error(ENOMEM, "%s: out of memory for a BAT of %" PRIu64 " entries",
                           s->node->path, entries);
    s->sb = sb;
    if (bytes > old) {
        memset((uint8_t *)s->bat + old, 0, bytes - old);
        memset(s->bat_page_dirty + old / VHDX_PAGE, 0, (bytes - old) / VHDX_PAGE);
    }
    for (uint64_t c = s->nchunks; c < nc; c++)
        s->sb[c] = NULL;
    return 0;
}

/* Queue the BAT pages of entries [FROM, TO), set to 0 (not present), for the log. */
static int free_entries(struct vhdx *s, uint64_t from, uint64_t to)
{
    int r = 0;

    for (uint64_t i = from; i < to; i++)
        s->bat[i] = 0;
    for (uint64_t p = from * 8 / VHDX_PAGE; r == 0 && from < to && p <= (to - 1) * 8 / VHDX_PAGE;
         p++) {
        if (s->bat_page_dirty[p])
            continue;
        s->bat_page_dirty[p] = 1;
        r = vhdx_log_dirty(s, s->bat_off + p * VHDX_PAGE, (uint8_t *)s->bat + p * VHDX_PAGE);
    }
    return r;
}

int vhdx_resize(struct vdisk_node *node, uint64_t size, unsigned flags)
{
    struct vhdx *s = node->priv;
    uint64_t blocks, entries = entries_for(s, size, &blocks), item = 0, keep;
    uint8_t *page = NULL;
    int r;

    (void)flags;
    if (size % s->lss)
        return vdisk_error(EINVAL,
                           "%s: the new size %" PRIu64 " is not a multiple of the "
                           "logical sector size %u",
                           node->path, size, s->lss);
    if (size > VHDX_MAX_SIZE)
        return vdisk_error(EFBIG, "%s: %" PRIu64 " bytes is more than a VHDX holds (64 TiB)",
                           node->path, size);
    if (entries * 8 > s->bat_len)
        return vdisk_error(ENOSPC,
                           "%s: its BAT region holds %u entries; %" PRIu64 " bytes needs %" PRIu64
                           ", and moving the BAT region is not supported yet",
                           node->path, s->bat_len / 8, size, entries);
    if (size < s->vsize && s->has_parent)
        return vdisk_error(ENOTSUP,
                           "%s: a differencing VHDX is not shrunk (a block it drops "
                           "would show its parent's data after a later grow); grow only",
                           node->path);
    for (uint64_t b = blocks; size < s->vsize && b < s->data_blocks; b++) {
        unsigned st = BAT_STATE(vhdx_entry(s, vhdx_bat_index(s, b)));

        if (st == PAYLOAD_FULLY_PRESENT || st == PAYLOAD_PARTIALLY_PRESENT)
            return vdisk_error(EPERM,
                               "%s: data lies at offset %" PRIu64 ", past the new size %" PRIu64
                               "; not shrinking (discard it first, or choose a larger size)",
                               node->path, b * s->block_size, size);
    }
    r = size_item(s, &item);
    if (r == 0)
        r = vhdx_session_begin(s);
    if (r == 0)
        r = vhdx_log_commit(s); /* nothing queued points into the BAT array while it moves */
    if (r < 0)
        return r;
    page = aligned_alloc(VHDX_PAGE, VHDX_PAGE);
    if (!page)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    r = vhdx_pread_meta(s, page, VHDX_PAGE, item & ~(uint64_t)(VHDX_PAGE - 1));
    if (r == 0 && entries > s->bat_entries)
        r = grow_arrays(s, entries, (blocks + s->chunk_ratio - 1) / s->chunk_ratio);
    /* the entries past the old end may hold anything: free them; a shrink frees its tail */
    keep = entries < s->bat_entries ? entries : s->bat_entries;
    if (r == 0)
        r = free_entries(s, keep, entries > s->bat_entries ? entries : s->bat_entries);
    if (r == 0) {
        put_le64(page + item % VHDX_PAGE, size);
        r = vhdx_log_dirty(s, item & ~(uint64_t)(VHDX_PAGE - 1), page); /* last: after the BAT */
    }
    if (r == 0)
        r = vhdx_log_commit(s);
    free(page);
    if (r < 0)
        return r;
    s->vsize = size;
    s->data_blocks = blocks;
    if (entries > s->bat_entries) {
        s->nchunks = (blocks + s->chunk_ratio - 1) / s->chunk_ratio;
        s->bat_entries = entries;
    }
    node->size = size;
    return 0;
}
