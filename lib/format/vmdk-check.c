/* SPDX-License-Identifier: MIT */
/*
 * vdisk check for VMDK, with qemu-img check's meaning: every grain table and
 * every allocated grain must lie inside its extent file (corruption), and a
 * redundant table that differs from its primary is only reported (the primary is
 * read; a power cut between the two writes leaves them apart). Nothing is repaired.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "vmdk.h"

/* Check one sparse extent. */
static int check_sparse(struct vmdk *s, struct vmdk_sparse *sp, struct vdisk_check_result *res)
{
    uint64_t fsize, tbytes = (uint64_t)sp->gtes * 4;
    uint32_t *rgt = NULL;
    int r = vdisk_file_get_size(sp->file, &fsize);

    if (r < 0)
        return r;
    res->total_clusters += (sp->capacity + sp->grain - 1) / sp->grain;
    if (!sp->meta.n && !sp->stream && (r = vmdk_overlap_build(s->node, sp, res)) < 0)
        return r; /* read-only: build it here (vmdk-overlap.c) */
    for (uint32_t i = 0; i < sp->gd_n; i++) {
        uint32_t *gt;

        if (sp->gd[i] == 0 && !sp->gt[i])
            continue;
        if (!sp->gt[i] && (uint64_t)sp->gd[i] * VMDK_SECTOR + tbytes > fsize) {
            fprintf(stderr, "ERROR: %s: grain table %u at sector %u is past the end of the file\n",
                    sp->file->path, i, sp->gd[i]);
            res->corruptions++;
            continue;
        }
        r = vmdk_sparse_gt(sp, s->node->path, i, false, &gt);
        if (r < 0)
            return r;
        for (uint32_t j = 0; j < sp->gtes; j++) {
            uint64_t at = (uint64_t)gt[j] * VMDK_SECTOR;

            if (gt[j] == 0 || (gt[j] == VMDK_GTE_ZERO && sp->zero_gte))
                continue;
            res->allocated_clusters++;
            if (at >= fsize || (!sp->compressed && at + sp->grain_bytes > fsize)) {
                fprintf(stderr, "ERROR: %s: grain %llu at sector %u is past the end of the file\n",
                        sp->file->path, (unsigned long long)i * sp->gtes + j, gt[j]);
                res->corruptions++;
            } else if (!sp->stream && overlap_find(&sp->meta, at, sp->grain_bytes)) {
                fprintf(stderr, "ERROR: %s: grain %llu at sector %u overlaps metadata\n",
                        sp->file->path, (unsigned long long)i * sp->gtes + j, gt[j]);
                res->corruptions++;
            }
        }
        if (!sp->rgd || sp->gt_dirty[i])
            continue;
        if (!rgt)
            rgt = malloc(tbytes);
        if (!rgt)
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
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
    free(rgt);
    return 0;
}

int vmdk_check(struct vdisk_node *node, unsigned flags, struct vdisk_check_result *res)
{
    struct vmdk *s = node->priv;
    int r = 0;

    if (flags & (VDISK_CHECK_REPAIR_LEAKS | VDISK_CHECK_REPAIR_ALL))
        return vdisk_error(ENOTSUP, "%s: vdisk cannot repair VMDK images", node->path);
    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; i < s->n_ext && r == 0; i++) {
        struct vmdk_sparse *sp = s->ext[i].sp;

        if (sp && (i == 0 || sp != s->ext[i - 1].sp))
            r = check_sparse(s, sp, res);
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}
