/* SPDX-License-Identifier: MIT */
/*
 * VDI check and repair, with qemu-img check's findings: map entries past the
 * data area or shared by two blocks, and an allocated count that disagrees
 * with the map (corruptions); also data slots past the end of the file
 * (corruption) and holes in the data area (leaks). Repairs keep what every
 * block reads: a shared or out-of-range block gets a copy of its data in a
 * slot of its own, a block whose data lies past the end of the file (it reads
 * as zeroes) becomes a ZERO block, holes are filled by moving the last blocks.
 */
#include <errno.h>

#include "../error.h"
#include "vdi.h"

void vdi_scan(struct vdi *s)
{
    uint32_t used = 0, end = 0;

    s->bad = 0;
    for (uint32_t i = 0; i < s->blocks; i++)
        s->owner[i] = VDI_FREE;
    for (uint32_t b = 0; b < s->blocks; b++) {
        uint32_t e = s->bmap[b];

        if (e == VDI_FREE || e == VDI_ZERO)
            continue;
        if (e >= s->blocks || s->owner[e] != VDI_FREE) {
            s->bad++;
            continue;
        }
        s->owner[e] = b;
        used++;
        if (e + 1 > end)
            end = e + 1;
    }
    s->allocated = used;
    /* a new block goes past every used slot and past the header's count (as QEMU's would) */
    s->next = end;
    if (get_le32(s->hdr + VDI_OFF_ALLOCATED) > s->next)
        s->next = get_le32(s->hdr + VDI_OFF_ALLOCATED);
}

/* Give BLOCK, whose slot E is out of range or shared, a slot of its own (or ZERO). */
static int repair_entry(struct vdi *s, uint32_t block, uint32_t e)
{
    uint32_t slot = s->next;

    if (s->off_data + (uint64_t)e * s->stride >= s->file_size || slot >= s->blocks) {
        vdi_set_entry(s, block, VDI_ZERO); /* it read as zeroes: nothing to keep */
        return 0;
    }
    int r = vdi_copy_slot(s, e, slot);

    if (r < 0)
        return r;
    if (s->off_data + (uint64_t)(slot + 1) * s->stride > s->file_size)
        s->file_size = s->off_data + (uint64_t)(slot + 1) * s->stride;
    s->owner[slot] = block;
    s->next = slot + 1;
    s->allocated++;
    vdi_set_entry(s, block, slot);
    return 0;
}

static int check_locked(struct vdisk_node *node, unsigned flags, struct vdisk_check_result *res);

int vdi_check(struct vdisk_node *node, unsigned flags, struct vdisk_check_result *res)
{
    struct vdi *s = node->priv;
    int r;

    vdi_exclusive(s);
    r = check_locked(node, flags, res);
    vdi_exclusive_end(s);
    return r;
}

/* Check (and repair) with everything held. */
static int check_locked(struct vdisk_node *node, unsigned flags, struct vdisk_check_result *res)
{
    struct vdi *s = node->priv;
    bool repair = !node->read_only && (flags & VDISK_CHECK_REPAIR_ALL);
    bool fix_leaks =
        !node->read_only && (flags & (VDISK_CHECK_REPAIR_ALL | VDISK_CHECK_REPAIR_LEAKS));
    uint32_t header_count = get_le32(s->hdr + VDI_OFF_ALLOCATED);
    int r = 0;

    if (!node->read_only && s->dirty) {
        r = vdi_write_metadata(s);
        if (r < 0)
            return r;
        header_count = s->allocated;
    }
    vdi_scan(s);
    res->total_clusters = s->blocks;
    if (s->type == VDI_TYPE_STATIC && s->allocated != s->blocks)
        res->corruptions++; /* a static image has every block */
    for (uint32_t b = 0; b < s->blocks && r == 0; b++) {
        uint32_t e = s->bmap[b];

        if (e == VDI_FREE || e == VDI_ZERO)
            continue;
        if (e >= s->blocks || s->owner[e] != b) { /* out of range, or a second user */
            res->corruptions++;
            if (repair) {
                r = repair_entry(s, b, e);
                res->corruptions_fixed++;
            }
        } else if (vdi_slot_host(s, e) >= s->file_size) {
            res->corruptions++;
            if (repair) {
                s->owner[e] = VDI_FREE;
                s->allocated--;
                vdi_set_entry(s, b, VDI_ZERO);
                res->corruptions_fixed++;
            }
        }
    }
    if (header_count != s->allocated) {
        res->corruptions++;
        if (repair) {
            s->dirty = true; /* the header gets the count of the map */
            res->corruptions_fixed++;
        }
    }
    for (uint32_t i = 0; i < s->next; i++) {
        if (s->owner[i] == VDI_FREE) {
            res->leaks++;
            if (fix_leaks)
                res->leaks_fixed++;
        }
    }
    if (s->file_size > s->off_data + (uint64_t)s->next * s->stride && !s->linear) {
        /* blocks written past the last slot the map uses (a writer died before its flush) */
        res->leaks += (s->file_size - s->off_data - (uint64_t)s->next * s->stride + s->stride - 1) /
                      s->stride;
        if (fix_leaks)
            res->leaks_fixed = res->leaks;
    }
    if (r == 0 && (repair || fix_leaks) && (res->corruptions_fixed || res->leaks_fixed)) {
        if (!s->dirty) { /* the header alone: write it */
            s->dirty = true;
            s->dirty_lo = s->dirty_hi = 0;
        }
        r = vdi_compact(s);
    }
    if (r == 0)
        vdi_scan(s);
    res->allocated_clusters = s->allocated;
    return r;
}
