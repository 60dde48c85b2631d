/* SPDX-License-Identifier: MIT */
/*
 * VMDK overlap checks for a writable sparse extent: the header, the embedded
 * descriptor, the grain directory and its redundant copy, and every grain
 * table are kept in sp->meta. A grain table inside another structure (its
 * flush would overwrite it) refuses writes at open; a grain that a write
 * would fill in place, or a new one, over any of them refuses writes for the
 * session with EIO. `vdisk check` reports such grains.
 */
#include <errno.h>
#include <stdio.h>

#include "../error.h"
#include "vmdk.h"

/*
 * Build sp->meta; a grain table on other metadata refuses NODE's writes, or
 * with RES (check), is counted as a corruption (once per table) and marked
 * in BAD (gd_n bytes, or NULL).
 */
int vmdk_overlap_build(struct vdisk_node *node, struct vmdk_sparse *sp,
                       struct vdisk_check_result *res, uint8_t *bad)
{
    uint64_t dir = (uint64_t)sp->gd_n * 4, gt = (uint64_t)sp->gtes * 4;
    const struct overlap_range *hit;
    int r;

    r = overlap_add(&sp->meta, 0, VMDK_SECTOR, "header");
    if (r == 0)
        r = overlap_add(&sp->meta, sp->desc_off * VMDK_SECTOR, sp->desc_size * VMDK_SECTOR,
                        "descriptor");
    if (r == 0)
        r = overlap_add(&sp->meta, sp->gd_off * VMDK_SECTOR, dir, "grain directory");
    if (r == 0 && sp->rgd_off)
        r = overlap_add(&sp->meta, sp->rgd_off * VMDK_SECTOR, dir, "redundant grain directory");
    for (uint32_t i = 0; r == 0 && i < sp->gd_n; i++) {
        for (int k = 0; k < 2 && r == 0; k++) {
            uint32_t at = k ? (sp->rgd ? sp->rgd[i] : 0) : sp->gd[i];

            if (!at)
                continue;
            hit = overlap_find(&sp->meta, (uint64_t)at * VMDK_SECTOR, gt);
            if (hit && res) {
                if (!bad || !bad[i]) {
                    fprintf(stderr, "ERROR: %s: grain table %u at sector %u overlaps the %s\n",
                            sp->file->path, i, at, hit->what);
                    res->corruptions++;
                }
                if (bad)
                    bad[i] = 1;
            } else if (hit && !node->write_refused)
                vdisk_node_refuse_writes(node,
                                         "extent %s: grain table %u at sector %u overlaps "
                                         "the %s",
                                         sp->file->path, i, at, hit->what);
            r = overlap_add(&sp->meta, (uint64_t)at * VMDK_SECTOR, gt, "grain table");
        }
    }
    return r < 0 ? vdisk_error(ENOMEM, "%s: out of memory", sp->file->path) : 0;
}

/* A write of LEN bytes at HOST of SP's file: -EIO (writes refused) if it hits metadata. */
int vmdk_overlap_check(struct vdisk_node *node, struct vmdk_sparse *sp, uint64_t host, uint64_t len)
{
    const struct overlap_range *hit = overlap_find(&sp->meta, host, len);

    if (!hit)
        return 0;
    return vdisk_node_refuse_writes(node, "extent %s: a grain at sector %llu overlaps the %s",
                                    sp->file->path, (unsigned long long)(host / VMDK_SECTOR),
                                    hit->what);
}
