/* SPDX-License-Identifier: MIT */
/*
 * vdisk check for VMDK, with qemu-img check's meaning: every grain table and
 * every allocated grain must lie inside its extent file (corruption), and a
 * redundant table that differs from its primary is only reported (the primary is
 * read; a power cut between the two writes leaves them apart). Two grains on one
 * place of the file are corruption too. With -r all a bad grain table entry
 * is dropped (the grain reads as unallocated: its data is lost, and the output
 * says so), a grain table past the end of the file is dropped from both
 * directories; the tables are written back primary, then redundant copy.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "vmdk.h"

struct grain_host {
    uint64_t host, g;
};

static int cmp_grain(const void *a, const void *b)
{
    const struct grain_host *x = a, *y = b;

    if (x->host != y->host)
        return x->host < y->host ? -1 : 1;
    return x->g < y->g ? -1 : x->g > y->g;
}

/* -r all: drop grain G's entry (its table goes back to the file at the flush). */
static void drop_grain(struct vmdk_sparse *sp, uint64_t g, struct vdisk_check_result *res)
{
    uint32_t i = (uint32_t)(g / sp->gtes);

    sp->gt[i][g % sp->gtes] = 0;
    sp->gt_dirty[i] = 1;
    res->corruptions_fixed++;
    fprintf(stderr,
            "Repairing: %s: grain %llu dropped: guest bytes %llu-%llu now read as unallocated "
            "(the data it pointed at is lost)\n",
            sp->file->path, (unsigned long long)g, (unsigned long long)(g * sp->grain_bytes),
            (unsigned long long)((g + 1) * sp->grain_bytes - 1));
}

/*
 * -r all: replace grain table I by a new zeroed one (in both directories; QEMU
 * cannot write where a directory entry is 0): its grains read as unallocated.
 */
static int drop_table(struct vmdk *s, struct vmdk_sparse *sp, uint32_t i,
                      struct vdisk_check_result *res)
{
    int r;

    free(sp->gt[i]); /* what was read there is no table */
    sp->gt[i] = NULL;
    r = vmdk_sparse_new_gt(s, sp, i);
    if (r < 0)
        return r;
    fprintf(stderr,
            "Repairing: %s: grain table %u replaced by an empty one: its %u grains now read as "
            "unallocated (their data is lost)\n",
            sp->file->path, i, sp->gtes);
    res->corruptions_fixed++;
    return 0;
}

/* Two uncompressed grains on one place of the file: all but the first are corrupt. */
static void check_shared(struct vmdk_sparse *sp, struct grain_host *h, uint64_t n, bool fix,
                         struct vdisk_check_result *res)
{
    uint64_t kept_end = 0;

    qsort(h, n, sizeof(*h), cmp_grain);
    for (uint64_t k = 0; k < n; k++) {
        if (k && h[k].host < kept_end) {
            fprintf(stderr, "ERROR: %s: grain %llu at sector %llu overlaps another grain\n",
                    sp->file->path, (unsigned long long)h[k].g,
                    (unsigned long long)(h[k].host / VMDK_SECTOR));
            res->corruptions++;
            if (fix)
                drop_grain(sp, h[k].g, res);
            continue;
        }
        kept_end = h[k].host + sp->grain_bytes;
    }
}

/* Check one sparse extent; FIX: -r all. */
static int check_sparse(struct vmdk *s, struct vmdk_sparse *sp, bool fix,
                        struct vdisk_check_result *res)
{
    uint64_t fsize, tbytes = (uint64_t)sp->gtes * 4, nh = 0, cap = 0;
    struct grain_host *hosts = NULL;
    uint8_t *bad = NULL; /* per grain table: over metadata or another table */
    uint32_t *rgt = NULL;
    int r = vdisk_file_get_size(sp->file, &fsize);

    if (r < 0)
        return r;
    fix = fix && !sp->stream && !sp->cowd && !sp->se;
    res->total_clusters += (sp->capacity + sp->grain - 1) / sp->grain;
    bad = calloc(sp->gd_n ? sp->gd_n : 1, 1);
    if (!bad) {
        r = vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        goto out;
    }
    if (!sp->stream) { /* (again, if the open built it): tables over metadata are counted */
        overlap_clear(&sp->meta);
        r = vmdk_overlap_build(s->node, sp, res, bad);
        if (r < 0)
            goto out;
    }
    for (uint32_t i = 0; i < sp->gd_n; i++) {
        uint32_t *gt;

        if (sp->gd[i] == 0 && !sp->gt[i])
            continue;
        if (bad[i]) { /* reported above; its entries are not grains: never write it back */
            if (fix && (r = drop_table(s, sp, i, res)) < 0)
                goto out;
            continue;
        }
        if (!sp->gt[i] && (uint64_t)sp->gd[i] * VMDK_SECTOR + tbytes > fsize) {
            fprintf(stderr, "ERROR: %s: grain table %u at sector %u is past the end of the file\n",
                    sp->file->path, i, sp->gd[i]);
            res->corruptions++;
            if (fix && (r = drop_table(s, sp, i, res)) < 0)
                goto out;
            continue;
        }
        r = vmdk_sparse_gt(sp, s->node->path, i, false, &gt);
        if (r < 0)
            goto out;
        for (uint32_t j = 0; j < sp->gtes; j++) {
            uint64_t at = (uint64_t)gt[j] * VMDK_SECTOR;

            if (gt[j] == 0 || (gt[j] == VMDK_GTE_ZERO && sp->zero_gte))
                continue;
            res->allocated_clusters++;
            if (at >= fsize || (!sp->compressed && at + sp->grain_bytes > fsize)) {
                fprintf(stderr, "ERROR: %s: grain %llu at sector %u is past the end of the file\n",
                        sp->file->path, (unsigned long long)i * sp->gtes + j, gt[j]);
                res->corruptions++;
                if (fix)
                    drop_grain(sp, (uint64_t)i * sp->gtes + j, res);
            } else if (!sp->stream && overlap_find(&sp->meta, at, sp->grain_bytes)) {
                fprintf(stderr, "ERROR: %s: grain %llu at sector %u overlaps metadata\n",
                        sp->file->path, (unsigned long long)i * sp->gtes + j, gt[j]);
                res->corruptions++;
                if (fix)
                    drop_grain(sp, (uint64_t)i * sp->gtes + j, res);
            } else if (!sp->compressed) { /* only allocated grains: bounded by the file */
                if (nh == cap) {
                    struct grain_host *h =
                        realloc(hosts, (cap = cap ? 2 * cap : 1024) * sizeof(*hosts));

                    if (!h) {
                        r = vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
                        goto out;
                    }
                    hosts = h;
                }
                hosts[nh++] = (struct grain_host){at, (uint64_t)i * sp->gtes + j};
            }
        }
        if (!sp->rgd || sp->gt_dirty[i])
            continue;
        if (!rgt)
            rgt = malloc(tbytes);
        if (!rgt) {
            r = vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
            goto out;
        }
        if ((uint64_t)sp->rgd[i] * VMDK_SECTOR + tbytes > fsize ||
            vdisk_file_pread(sp->file, rgt, tbytes, (uint64_t)sp->rgd[i] * VMDK_SECTOR) < 0) {
            fprintf(stderr, "ERROR: %s: redundant grain table %u is unreadable\n", sp->file->path,
                    i);
            res->corruptions++;
            continue;
        }
        for (uint32_t j = 0; j < sp->gtes; j++) {
            if (le32toh(rgt[j]) != gt[j]) { /* a power cut between the two copies: normal */
                fprintf(stderr,
                        "Warning: %s: redundant grain table %u differs at entry %u (the "
                        "primary is used; a crash between the two writes leaves this)\n",
                        sp->file->path, i, j);
                break;
            }
        }
    }
    if (hosts)
        check_shared(sp, hosts, nh, fix, res);
    if (fix && res->corruptions_fixed) /* tables, then directories (vmdk-sparse.c) */
        r = vmdk_sparse_flush(s, sp);
out:
    free(bad);
    free(hosts);
    free(rgt);
    return r;
}

int vmdk_check(struct vdisk_node *node, unsigned flags, struct vdisk_check_result *res)
{
    struct vmdk *s = node->priv;
    int r = 0;

    bool fix = (flags & VDISK_CHECK_REPAIR_ALL) && !node->read_only;

    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; i < s->n_ext && r == 0; i++) {
        struct vmdk_sparse *sp = s->ext[i].sp;

        if (sp && (i == 0 || sp != s->ext[i - 1].sp))
            r = check_sparse(s, sp, fix, res);
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}
