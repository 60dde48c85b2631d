/* SPDX-License-Identifier: MIT */
/*
 * vdisk check for VHDX: header and region table copies (CRC-32C), BAT
 * entries past the end of the file or over the metadata, blocks that overlap
 * each other, and leaked space (file MiBs past the metadata no entry uses).
 * Repairs: a bad header or region table copy is rewritten from the good one;
 * with -r all, a block past the end of the file, over the metadata or over
 * another block is dropped (through the log; its data is lost and the output
 * says so); leaked space at the end of the file is cut off.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "../error.h"
#include "vhdx.h"

struct area {
    uint64_t off, len, idx;
};

static int cmp_area(const void *a, const void *b)
{
    const struct area *x = a, *y = b;

    return x->off < y->off ? -1 : x->off > y->off;
}

/* Is the other header or region table copy bad? Rewrite it when REPAIR. */
static int check_copies(struct vhdx *s, bool repair, struct vdisk_check_result *res)
{
    uint8_t *b = malloc(VHDX_RT_SIZE);
    const uint64_t hoff[2] = {VHDX_HDR1_OFF, VHDX_HDR2_OFF}, roff[2] = {VHDX_RT1_OFF, VHDX_RT2_OFF};
    int r = 0, bad_rt = -1, good_rt = -1;
    bool bad_hdr = false;

    if (!b)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    for (int i = 0; i < 2 && r == 0; i++) {
        r = vdisk_file_pread(s->file, b, VHDX_HDR_SIZE, hoff[i]);
        if (r == 0 &&
            (memcmp(b, "head", 4) || get_le32(b + 4) != vhdx_checksum(b, VHDX_HDR_SIZE, 4))) {
            fprintf(stderr, "ERROR: VHDX header %d is invalid (signature or CRC-32C)\n", i + 1);
            bad_hdr = true;
        }
    }
    for (int i = 0; i < 2 && r == 0; i++) {
        r = vhdx_pread_meta(s, b, VHDX_RT_SIZE, roff[i]);
        if (r == 0 &&
            (memcmp(b, "regi", 4) || get_le32(b + 4) != vhdx_checksum(b, VHDX_RT_SIZE, 4))) {
            fprintf(stderr, "ERROR: VHDX region table %d is invalid (signature or CRC-32C)\n",
                    i + 1);
            bad_rt = i;
        } else {
            good_rt = i;
        }
    }
    res->corruptions += bad_hdr + (bad_rt >= 0);
    if (r == 0 && repair && bad_hdr && (r = vhdx_write_headers(s)) == 0)
        res->corruptions_fixed++;
    if (r == 0 && repair && bad_rt >= 0 && good_rt >= 0) {
        r = vhdx_pread_meta(s, b, VHDX_RT_SIZE, roff[good_rt]);
        if (r == 0)
            r = vdisk_file_pwrite(s->file, b, VHDX_RT_SIZE, roff[bad_rt]);
        if (r == 0 && (r = vdisk_file_flush(s->file)) == 0)
            res->corruptions_fixed++;
    }
    free(b);
    return r;
}

/* Is BAT entry IDX a payload block with data (one that -r all may drop)? */
static bool live_payload(struct vhdx *s, uint64_t idx)
{
    unsigned st = BAT_STATE(vhdx_entry(s, idx));

    return idx % (s->chunk_ratio + 1) != s->chunk_ratio &&
           (st == PAYLOAD_FULLY_PRESENT || st == PAYLOAD_PARTIALLY_PRESENT);
}

/* Drop block entry IDX (through the log): what it pointed at is lost. */
static int drop_entry(struct vhdx *s, uint64_t idx)
{
    uint64_t page = idx * 8 / VHDX_PAGE, blk = idx - idx / (s->chunk_ratio + 1);
    int r = vhdx_session_begin(s);

    if (r < 0)
        return r;
    fprintf(stderr,
            "Repairing: VHDX BAT entry %llu dropped: guest bytes %llu-%llu now read as %s (the "
            "data it pointed at is lost)\n",
            (unsigned long long)idx, (unsigned long long)(blk * s->block_size),
            (unsigned long long)((blk + 1) * s->block_size - 1),
            s->has_parent ? "the parent's" : "zeroes");
    s->bat[idx] = htole64(s->has_parent ? PAYLOAD_NOT_PRESENT : PAYLOAD_ZERO);
    if (s->bat_page_dirty[page])
        return 0;
    s->bat_page_dirty[page] = 1;
    return vhdx_log_dirty(s, s->bat_off + page * VHDX_PAGE, (uint8_t *)s->bat + page * VHDX_PAGE);
}

#define REGION UINT64_MAX /* an area that is the log, the metadata or the BAT */

/* Report (and with REPAIR punch) the whole MiBs of [FROM, TO) that nothing uses. */
static void gap(struct vhdx *s, uint64_t from, uint64_t to, bool repair,
                struct vdisk_check_result *res)
{
    bool is_data = true;
    uint64_t end = 0;

    from = (from + MiB - 1) & ~(MiB - 1);
    if (to < from + MiB)
        return;
    if (vdisk_file_extent(s->file, from, to, &is_data, &end) == 0 && !is_data && end >= to)
        return; /* a hole: it takes no space */
    fprintf(stderr, "Leaked: %llu bytes at file offset %llu\n", (unsigned long long)(to - from),
            (unsigned long long)from);
    res->leaks += (to - from) / MiB;
    if (repair && vdisk_file_punch_hole(s->file, from, to - from) == 0)
        res->leaks_fixed += (to - from) / MiB; /* the space goes back; the offsets stay */
}

/*
 * Sort the areas: overlaps are corruptions (FIX: the later payload block is
 * dropped), unused MiBs between them leaks.
 */
static int check_areas(struct vhdx *s, struct area *a, uint64_t n, bool repair, bool fix,
                       struct vdisk_check_result *res, uint64_t *used_end)
{
    const struct area *p = NULL; /* the last area kept */
    int r = 0;

    qsort(a, n, sizeof(*a), cmp_area);
    *used_end = MiB;
    for (uint64_t i = 0; i < n && r == 0; i++) {
        if (p && a[i].off < p->off + p->len) {
            uint64_t victim = a[i].idx == REGION ? p->idx : a[i].idx;

            if (a[i].idx == REGION || p->idx == REGION)
                fprintf(stderr, "ERROR: VHDX BAT entry %llu points into the image's metadata\n",
                        (unsigned long long)victim);
            else
                fprintf(stderr, "ERROR: VHDX BAT entries %llu and %llu overlap in the file\n",
                        (unsigned long long)p->idx, (unsigned long long)a[i].idx);
            res->corruptions++;
            if (fix && victim != REGION && live_payload(s, victim) &&
                (r = drop_entry(s, victim)) == 0)
                res->corruptions_fixed++;
            if (a[i].idx != REGION) /* the earlier one (or the region) keeps its place */
                continue;
        } else if (a[i].off > *used_end) {
            gap(s, *used_end, a[i].off, repair, res);
        }
        p = &a[i];
        if (a[i].off + a[i].len > *used_end)
            *used_end = a[i].off + a[i].len;
    }
    return r;
}

int vhdx_check(struct vdisk_node *node, unsigned flags, struct vdisk_check_result *res)
{
    struct vhdx *s = node->priv;
    bool repair = !node->read_only && (flags & (VDISK_CHECK_REPAIR_ALL | VDISK_CHECK_REPAIR_LEAKS));
    bool fix = !node->read_only && (flags & VDISK_CHECK_REPAIR_ALL);
    struct area *a = calloc(s->bat_entries + 3, sizeof(*a));
    uint64_t n = 0, used_end;
    int r;

    if (!a)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    a[n++] = (struct area){s->meta_off, s->meta_len, REGION};
    a[n++] = (struct area){s->bat_off, s->bat_len, REGION};
    if (s->log_len)
        a[n++] = (struct area){s->log_off, s->log_len, REGION};
    r = check_copies(s, repair, res);
    res->total_clusters = s->data_blocks;
    for (uint64_t i = 0; i < s->bat_entries && r == 0; i++) {
        uint64_t e = vhdx_entry(s, i), len = s->block_size;
        bool sb = i % (s->chunk_ratio + 1) == s->chunk_ratio;
        unsigned st = BAT_STATE(e);

        if (sb)
            len = VHDX_SB_SIZE;
        if (vhdx_bad_state(s, i)) {
            fprintf(stderr, "ERROR: VHDX BAT entry %llu has invalid state %u\n",
                    (unsigned long long)i, st);
            res->corruptions++;
            if (!sb && fix && (r = drop_entry(s, i)) == 0)
                res->corruptions_fixed++;
            continue;
        }
        if (!sb && (st == PAYLOAD_FULLY_PRESENT || st == PAYLOAD_PARTIALLY_PRESENT))
            res->allocated_clusters++;
        if (!BAT_OFFSET(e) && !live_payload(s, i)) /* present data at 0 is on the header */
            continue;
        if (BAT_OFFSET(e) + len > s->file_size) {
            bool live = !sb && (st == PAYLOAD_FULLY_PRESENT || st == PAYLOAD_PARTIALLY_PRESENT);

            fprintf(stderr, "ERROR: VHDX BAT entry %llu points past the end of the file\n",
                    (unsigned long long)i);
            res->corruptions++;
            if (live && fix && (r = drop_entry(s, i)) == 0)
                res->corruptions_fixed++;
            continue;
        }
        if (BAT_OFFSET(e) < MiB) {
            fprintf(stderr, "ERROR: VHDX BAT entry %llu points into the image's metadata\n",
                    (unsigned long long)i);
            res->corruptions++;
            if (fix && live_payload(s, i) && (r = drop_entry(s, i)) == 0)
                res->corruptions_fixed++;
            continue;
        }
        a[n++] = (struct area){BAT_OFFSET(e), len, i};
    }
    if (r == 0)
        r = check_areas(s, a, n, repair, fix, res, &used_end);
    /* whole MiBs between the last area and the end of the file are leaked (a tail of a
       few bytes is not: Disk2vhd leaves 512) */
    if (r == 0 && (s->file_size & ~(MiB - 1)) > ((used_end + MiB - 1) & ~(MiB - 1))) {
        used_end = (used_end + MiB - 1) & ~(MiB - 1);
        fprintf(stderr, "Leaked: %llu bytes at the end of the file\n",
                (unsigned long long)(s->file_size - used_end));
        res->leaks += (s->file_size - used_end + MiB - 1) / MiB;
        if (repair && (r = vdisk_file_truncate(s->file, used_end)) == 0) {
            res->leaks_fixed += (s->file_size - used_end + MiB - 1) / MiB;
            s->file_size = s->alloc_end = used_end;
        }
    }
    if (r == 0 && s->session)
        r = vhdx_log_commit(s);
    free(a);
    return r;
}
