/* SPDX-License-Identifier: MIT */
/*
 * VHD overlap check: at a read-write open, every allocated block (sector
 * bitmap and data) must lie off the footers, the dynamic header, the BAT,
 * the parent locators and the other blocks. A block that does not would let
 * a data write land on metadata: writes are refused for the session (reads
 * still work) and `vdisk check` reports the block. New blocks always go past
 * every one in use, so the check at open is enough for the session.
 */
#include <errno.h>

#include "../error.h"
#include "overlap.h"
#include "vpc.h"

int vpc_overlap_scan(struct vpc *s)
{
    struct overlap_set o = {0};
    uint64_t area = (uint64_t)s->bm_size + s->block_size;
    int r = overlap_add(&o, 0, s->meta_end, "header, BAT or parent locators");

    if (r == 0 && !s->end_footer_bad)
        r = overlap_add(&o, s->file_size - VPC_FOOTER_SIZE, VPC_FOOTER_SIZE, "footer");
    for (uint32_t i = 0; r == 0 && i < s->nblocks; i++) {
        uint64_t host = (uint64_t)s->bat[i] * VPC_SECTOR;
        const struct overlap_range *hit;

        if (s->bat[i] == VPC_BAT_FREE || !vpc_block_ok(s, i))
            continue;
        hit = overlap_find(&o, host, area);
        if (hit) {
            vdisk_node_refuse_writes(s->node, "VHD block %u at sector %u overlaps the %s", i,
                                     s->bat[i], hit->what);
            break;
        }
        r = overlap_add(&o, host, area, "another block");
    }
    overlap_free(&o);
    if (r < 0)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    return 0;
}
