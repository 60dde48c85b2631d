/* SPDX-License-Identifier: MIT */
/*
 * vdisk check for VHD: BAT entries past the end of the file or over the
 * metadata, blocks that overlap (corruptions), and footer copies that differ
 * (what a crash while adding a block leaves: the copy at 0 holds; counted as
 * a leak, and -r leaks|all rewrites both). With -r all a bad BAT entry is
 * dropped, as qemu-img check -r all does: its sectors then read as zeroes (or
 * the parent's), the data it pointed at is lost, and the output says so.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "../error.h"
#include "vpc.h"

/* One problem, on stderr as qemu-img check prints them (the first few only). */
static void report(struct vdisk_check_result *res, const char *path, const char *what, uint32_t blk,
                   uint64_t host)
{
    if (res->corruptions++ >= 20)
        return;
    if (blk == UINT32_MAX)
        fprintf(stderr, "ERROR %s: the block at offset %llu %s\n", path, (unsigned long long)host,
                what);
    else
        fprintf(stderr, "ERROR %s: BAT entry %u (offset %llu) %s\n", path, blk,
                (unsigned long long)host, what);
}

struct blk_host {
    uint64_t host;
    uint32_t blk;
};

static int cmp_host(const void *a, const void *b)
{
    const struct blk_host *x = a, *y = b;

    if (x->host != y->host)
        return x->host < y->host ? -1 : 1;
    return x->blk < y->blk ? -1 : x->blk > y->blk;
}

/* Drop BAT entry BLK (-r all): it reads as unallocated from now on. */
static int drop_entry(struct vpc *s, uint32_t blk, struct vdisk_check_result *res)
{
    uint8_t e[4];
    int r;

    put_be32(e, VPC_BAT_FREE);
    r = vdisk_file_pwrite(s->file, e, 4, s->bat_off + (uint64_t)blk * 4);
    if (r < 0)
        return r;
    fprintf(stderr,
            "Repairing: %s: BAT entry %u dropped: guest bytes %llu-%llu now read as %s (the "
            "data it pointed at is lost)\n",
            s->node->path, blk, (unsigned long long)blk * s->block_size,
            (unsigned long long)(blk + 1) * s->block_size - 1,
            s->type == VPC_TYPE_DIFF ? "the parent's" : "zeroes");
    s->bat[blk] = VPC_BAT_FREE;
    s->bstate[blk] = BM_UNKNOWN;
    if (s->bitmap && s->bitmap[blk]) {
        free(s->bitmap[blk]);
        s->bitmap[blk] = NULL;
    }
    res->corruptions_fixed++;
    return 0;
}

int vpc_check(struct vdisk_node *node, unsigned flags, struct vdisk_check_result *res)
{
    struct vpc *s = node->priv;
    uint64_t span = (uint64_t)s->bm_size + s->block_size, n = 0, kept_end = 0;
    bool fix = (flags & VDISK_CHECK_REPAIR_ALL) && !node->read_only;
    struct blk_host *hosts;
    int r = 0;

    memset(res, 0, sizeof(*res));
    if (s->type == VPC_TYPE_FIXED)
        return 0;
    res->total_clusters = s->nblocks;
    hosts = malloc(((size_t)s->nblocks + 1) * sizeof(*hosts));
    if (!hosts)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    pthread_rwlock_wrlock(&s->lock);
    for (uint32_t i = 0; i < s->nblocks && r == 0; i++) {
        uint64_t host = (uint64_t)s->bat[i] * VPC_SECTOR;
        const char *bad = NULL;

        if (s->bat[i] == VPC_BAT_FREE)
            continue;
        res->allocated_clusters++;
        if (!vpc_block_ok(s, i))
            bad = "lies past the end of the file";
        else if (host < s->meta_end && vpc_overlaps_meta(s, host, span))
            bad = "overlaps the header, BAT or parent locators";
        if (!bad) {
            hosts[n++] = (struct blk_host){host, i};
            continue;
        }
        report(res, node->path, bad, i, host);
        if (fix && (r = drop_entry(s, i, res)) == 0)
            res->allocated_clusters--;
    }
    /* two entries on one block: the first (lowest offset, then lowest entry) keeps it */
    qsort(hosts, n, sizeof(*hosts), cmp_host);
    for (uint64_t k = 0; k < n && r == 0; k++) {
        if (k && hosts[k].host < kept_end) {
            report(res, node->path, "overlaps another block", hosts[k].blk, hosts[k].host);
            if (fix && (r = drop_entry(s, hosts[k].blk, res)) == 0)
                res->allocated_clusters--;
            continue;
        }
        kept_end = hosts[k].host + span;
    }
    free(hosts);
    if (r == 0 && res->corruptions_fixed)
        r = vdisk_file_flush(s->file);
    if (r == 0 && s->end_footer_bad) { /* a crash while a block was added: harmless, like a leak */
        res->leaks++;
        fprintf(stderr, "Leaked: %s: the two footer copies differ (torn by a crash?)\n",
                node->path);
        if ((flags & (VDISK_CHECK_REPAIR_ALL | VDISK_CHECK_REPAIR_LEAKS)) && !node->read_only) {
            r = vpc_repair_footers(s);
            if (r == 0)
                res->leaks_fixed++;
        }
    }
    pthread_rwlock_unlock(&s->lock);
    return r;
}

int vpc_repair_footers(struct vpc *s)
{
    int r = vdisk_file_pwrite(s->file, s->footer, VPC_FOOTER_SIZE, s->next_block);

    if (r == 0)
        r = vdisk_file_truncate(s->file, s->next_block + VPC_FOOTER_SIZE);
    if (r == 0)
        r = vdisk_file_pwrite(s->file, s->footer, VPC_FOOTER_SIZE, 0);
    if (r == 0)
        r = vdisk_file_flush(s->file);
    if (r == 0) {
        s->end_footer_bad = false;
        s->file_size = s->next_block + VPC_FOOTER_SIZE;
    }
    return r;
}
