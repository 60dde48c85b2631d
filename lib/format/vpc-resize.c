/* SPDX-License-Identifier: MIT */
/*
 * VHD resize. The new size is rounded as vdisk create rounds it: up to a CHS
 * geometry when the image's size comes from CHS (QEMU's and Virtual PC's),
 * to whole sectors when it comes from current_size (Hyper-V's, qem2).
 * Fixed: the footer moves to the new end (written there first, then the old
 * one, now guest bytes, is zeroed). Dynamic: the BAT grows into the entries
 * its header reserves (max_table_entries); beyond those, a larger BAT is
 * written after the last block and the header pointed at it. Differencing
 * images grow as dynamic ones do (qemu-img resize refuses every VHD): their
 * new blocks are free and read as zeroes past the parent's end, the node
 * layer's rule for a shorter backing node; they are never shrunk. Shrinking
 * drops only blocks (or, fixed, ranges) without data.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "../error.h"
#include "vpc.h"

/* The footer F for SIZE (rounded, as create does, into *SIZE), the original size kept. */
static int new_footer(struct vpc *s, uint8_t *f, uint64_t *size)
{
    uint8_t orig[8];
    int r;

    memcpy(f, s->footer, VPC_FOOTER_SIZE);
    memcpy(orig, f + VF_ORIG, 8);
    r = vpc_footer_set_size(f, size, !s->use_chs, s->node->path);
    if (r < 0)
        return r;
    memcpy(f + VF_ORIG, orig, 8);
    put_be32(f + VF_CHECKSUM, vpc_checksum(f, VPC_FOOTER_SIZE, VF_CHECKSUM));
    return 0;
}

/*
 * Does [HOST, HOST+LEN) overlap the dynamic header, the BAT or a parent
 * locator's data? (The BAT may follow the blocks once a resize moved it.)
 */
bool vpc_overlaps_meta(const struct vpc *s, uint64_t host, uint64_t len)
{
    uint64_t dyn_end = get_be64(s->footer + VF_DATA_OFF) + VPC_DYN_SIZE;
    uint64_t bat_end = s->bat_off + ((4ull * s->max_entries + 511) & ~511ull);

    if (host < dyn_end || (host < bat_end && host + len > s->bat_off))
        return true;
    for (int i = 0; i < 8; i++) {
        const uint8_t *l = s->dyn + VD_LOCATORS + 24 * i;
        uint64_t at = get_be64(l + 16), end = at + ((get_be32(l + 8) + 511ull) & ~511ull);

        if (get_be32(l) && host < end && host + len > at)
            return true;
    }
    return false;
}

/* The first data byte (not a hole) in [OFF, END) of a fixed image, or END. */
static uint64_t first_data(struct vpc *s, uint64_t off, uint64_t end)
{
    while (off < end) {
        uint64_t run_end;
        bool data;

        if (vdisk_file_extent(s->file, off, end, &data, &run_end) < 0 || data)
            return off;
        off = run_end;
    }
    return end;
}

/* Fixed: the footer to the new end, then the old footer's bytes zeroed (or cut off). */
static int resize_fixed(struct vpc *s, const uint8_t *f, uint64_t size)
{
    static const uint8_t zeroes[VPC_FOOTER_SIZE];
    uint64_t old = s->node->size, d;
    int r;

    if (size < old && (d = first_data(s, size, old)) < old)
        return vdisk_error(EPERM,
                           "%s: data lies at offset %" PRIu64 ", past the new size %" PRIu64
                           "; not shrinking (discard it first, or choose a larger size)",
                           s->node->path, d, size);
    r = vdisk_file_pwrite(s->file, f, VPC_FOOTER_SIZE, size);
    if (r == 0)
        r = vdisk_file_flush(s->file);
    if (r == 0 && size > old) { /* the old footer lies in the disk now: it must read as zeroes */
        r = vdisk_file_punch_hole(s->file, old, VPC_FOOTER_SIZE);
        if (r < 0)
            r = vdisk_file_pwrite(s->file, zeroes, VPC_FOOTER_SIZE, old);
    }
    if (r == 0)
        r = vdisk_file_truncate(s->file, size + VPC_FOOTER_SIZE);
    if (r == 0)
        r = vdisk_file_flush(s->file);
    if (r == 0)
        s->file_size = size + VPC_FOOTER_SIZE;
    return r;
}

/*
 * A BAT of at least NB entries at the end of the blocks (where the footer
 * was): written there first, then the dynamic header pointed at it. A crash
 * in between leaves the old BAT in use and the new one unused past the end.
 */
static int move_bat(struct vpc *s, uint32_t nb)
{
    uint64_t bytes = (4ull * nb + 511) & ~511ull, at = s->next_block;
    uint64_t dyn_off = get_be64(s->footer + VF_DATA_OFF);
    uint32_t *be = malloc(bytes);
    int r;

    if (!be)
        return vdisk_error(ENOMEM, "%s: out of memory for a BAT of %" PRIu32 " entries",
                           s->node->path, nb);
    for (uint64_t i = 0; i < bytes / 4; i++)
        be[i] = htobe32(i < s->nblocks ? s->bat[i] : VPC_BAT_FREE);
    r = vdisk_file_pwrite(s->file, be, bytes, at);
    free(be);
    if (r == 0)
        r = vdisk_file_flush(s->file);
    if (r < 0)
        return r;
    put_be64(s->dyn + VD_TABLE_OFF, at);
    put_be32(s->dyn + VD_ENTRIES, (uint32_t)(bytes / 4));
    put_be32(s->dyn + VD_CHECKSUM, vpc_checksum(s->dyn, VPC_DYN_SIZE, VD_CHECKSUM));
    r = vdisk_file_pwrite(s->file, s->dyn, VPC_DYN_SIZE, dyn_off);
    if (r == 0)
        r = vdisk_file_flush(s->file);
    if (r < 0)
        return r;
    s->bat_off = at;
    s->max_entries = (uint32_t)(bytes / 4);
    s->meta_end = s->next_block = at + bytes; /* new blocks go after it */
    return 0;
}

/* Dynamic: more (or fewer) BAT entries in use, free ones written first; then the footers. */
static int resize_dynamic(struct vpc *s, const uint8_t *f, uint64_t size)
{
    uint64_t nb64 = (size + s->block_size - 1) / s->block_size;
    uint32_t nb = (uint32_t)nb64, old = s->nblocks;
    int r;

    if (nb64 > VPC_MAX_ENTRIES)
        return vdisk_error(EFBIG, "%s: %" PRIu64 " bytes needs more than %u BAT entries",
                           s->node->path, size, VPC_MAX_ENTRIES);
    for (uint32_t b = nb; b < old; b++)
        if (s->bat[b] != VPC_BAT_FREE)
            return vdisk_error(EPERM,
                               "%s: data lies at offset %" PRIu64 ", past the new size %" PRIu64
                               "; not shrinking (discard it first, or choose a larger size)",
                               s->node->path, (uint64_t)b * s->block_size, size);
    if (nb > s->max_entries) {
        r = move_bat(s, nb);
        if (r < 0)
            return r;
    }
    if (nb > old) {
        uint32_t *bat = realloc(s->bat, (size_t)nb * 4 + 4), *be;
        uint8_t *bstate = bat ? realloc(s->bstate, nb + 1) : NULL, **bitmap = NULL;

        if (bat)
            s->bat = bat;
        if (bstate)
            s->bstate = bstate;
        if (bstate && s->bitmap) {
            bitmap = realloc(s->bitmap, sizeof(*bitmap) * (nb + 1));
            if (bitmap)
                s->bitmap = bitmap;
        }
        be = malloc((size_t)(nb - old) * 4);
        if (!bat || !bstate || (s->bitmap && !bitmap) || !be) {
            free(be);
            return vdisk_error(ENOMEM, "%s: out of memory for a BAT of %" PRIu32 " entries",
                               s->node->path, nb);
        }
        for (uint32_t b = old; b < nb; b++) {
            s->bat[b] = VPC_BAT_FREE;
            s->bstate[b] = BM_UNKNOWN;
            if (s->bitmap)
                s->bitmap[b] = NULL;
            be[b - old] = htobe32(VPC_BAT_FREE);
        }
        /* the reserved entries may hold anything: free them on disk before the size covers them */
        r = vdisk_file_pwrite(s->file, be, (size_t)(nb - old) * 4, s->bat_off + 4ull * old);
        free(be);
        if (r == 0)
            r = vdisk_file_flush(s->file);
        if (r < 0)
            return r;
    } else {
        for (uint32_t b = nb; s->bitmap && b < old; b++) {
            free(s->bitmap[b]);
            s->bitmap[b] = NULL;
        }
    }
    s->nblocks = nb;
    memcpy(s->footer, f, VPC_FOOTER_SIZE);
    return vpc_repair_footers(s); /* at the end of the blocks, then the copy at 0 */
}

/* Set the virtual size (fixed and dynamic VHDs). */
int vpc_resize(struct vdisk_node *node, uint64_t size, unsigned flags)
{
    struct vpc *s = node->priv;
    uint8_t f[VPC_FOOTER_SIZE];
    int r;

    (void)flags;
    if (s->type == VPC_TYPE_DIFF && size < node->size) /* a dropped block would show the parent */
        return vdisk_error(ENOTSUP,
                           "%s: a differencing VHD is not shrunk (a block it drops would show "
                           "its parent's data after a later grow); grow only",
                           node->path);
    r = new_footer(s, f, &size);
    if (r < 0)
        return r;
    pthread_rwlock_wrlock(&s->lock);
    r = s->type == VPC_TYPE_FIXED ? resize_fixed(s, f, size) : resize_dynamic(s, f, size);
    if (r == 0) {
        memcpy(s->footer, f, VPC_FOOTER_SIZE);
        node->size = size;
    }
    pthread_rwlock_unlock(&s->lock);
    return r;
}
