/* SPDX-License-Identifier: MIT */
/*
 * vdisk check for VHD: BAT entries past the end of the file or over the
 * metadata, blocks that overlap (corruptions: reported, not guessed at), and
 * footer copies that differ (what a crash while adding a block leaves: the
 * copy at 0 holds; counted as a leak, and -r rewrites both).
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

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

int vpc_check(struct vdisk_node *node, unsigned flags, struct vdisk_check_result *res)
{
    struct vpc *s = node->priv;
    uint64_t span = (uint64_t)s->bm_size + s->block_size, *hosts, n = 0;
    int r = 0;

    memset(res, 0, sizeof(*res));
    if (s->type == VPC_TYPE_FIXED)
        return 0;
    res->total_clusters = s->nblocks;
    hosts = malloc(((size_t)s->nblocks + 1) * sizeof(*hosts));
    if (!hosts)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    pthread_rwlock_wrlock(&s->lock);
    for (uint32_t i = 0; i < s->nblocks; i++) {
        uint64_t host = (uint64_t)s->bat[i] * VPC_SECTOR;

        if (s->bat[i] == VPC_BAT_FREE)
            continue;
        res->allocated_clusters++;
        if (!vpc_block_ok(s, i))
            report(res, node->path, "lies past the end of the file", i, host);
        else if (host < s->meta_end && vpc_overlaps_meta(s, host, span))
            report(res, node->path, "overlaps the header, BAT or parent locators", i, host);
        else
            hosts[n++] = host;
    }
    qsort(hosts, n, sizeof(*hosts), cmp_u64);
    for (uint64_t k = 1; k < n; k++)
        if (hosts[k] < hosts[k - 1] + span)
            report(res, node->path, "overlaps another block", UINT32_MAX, hosts[k]);
    free(hosts);
    if (s->end_footer_bad) { /* a crash while a block was added: harmless, like a leak */
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
