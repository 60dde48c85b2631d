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
    uint64_t dyn_end = get_be64(s->footer + VF_DATA_OFF) + VPC_DYN_SIZE;
    uint64_t bat_end = s->bat_off + ((4ull * s->max_entries + 511) & ~511ull);
    /* each piece on its own: a BAT moved by a resize lies after the blocks (vpc-resize.c) */
    int r = overlap_add(&o, 0, dyn_end, "header");

    if (r == 0)
        r = overlap_add(&o, s->bat_off, bat_end - s->bat_off, "BAT");
    for (int i = 0; r == 0 && i < 8; i++) {
        const uint8_t *l = s->dyn + VD_LOCATORS + 24 * i;
        uint64_t at = get_be64(l + 16), len = (get_be32(l + 8) + 511ull) & ~511ull;

        if (get_be32(l) && len && at < s->file_size)
            r = overlap_add(&o, at, len, "parent locators");
    }

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
