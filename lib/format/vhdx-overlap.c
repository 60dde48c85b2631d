/* SPDX-License-Identifier: MIT */
/*
 * VHDX overlap check at a read-write open: no two BAT entries that name a
 * file offset (payload blocks in any state, since a not-present block's area
 * is reused when it is written, and sector bitmap blocks) may share file
 * space. If two do, a write to one would land on the other: writes are
 * refused for the session (EIO; reads still work), `vdisk check` reports it
 * and `-r all` drops the entry. An entry over the log, the metadata region or
 * the BAT, before 1 MiB, past the end of the file, or with an invalid state
 * is refused where it is used (vhdx_area_ok, bad_block in vhdx.c), with its own
 * message. New blocks always go past every entry in use.
 */
#include <errno.h>
#include <stdlib.h>

#include "../error.h"
#include "vhdx.h"

struct varea {
    uint64_t off, len, idx; /* idx: the BAT entry */
};

static int cmp_varea(const void *a, const void *b)
{
    const struct varea *x = a, *y = b;

    return x->off < y->off ? -1 : x->off > y->off;
}

/* What area A is, for the message. */
static const char *what(const struct vhdx *s, const struct varea *a)
{
    return a->idx % (s->chunk_ratio + 1) == s->chunk_ratio ? "sector bitmap block"
                                                           : "payload block";
}

int vhdx_overlap_scan(struct vhdx *s)
{
    struct varea *a = malloc((s->bat_entries + 1) * sizeof(*a)), *p = NULL;
    uint64_t n = 0;

    if (!a)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    for (uint64_t i = 0; i < s->bat_entries; i++) {
        uint64_t off = BAT_OFFSET(vhdx_entry(s, i));
        uint64_t len = i % (s->chunk_ratio + 1) == s->chunk_ratio ? VHDX_SB_SIZE : s->block_size;

        if (off && !vhdx_bad_state(s, i) && vhdx_area_ok(s, off, len))
            a[n++] = (struct varea){off, len, i};
    }
    qsort(a, n, sizeof(*a), cmp_varea);
    for (uint64_t i = 0; i < n; i++) {
        if (p && a[i].off < p->off + p->len) {
            vdisk_node_refuse_writes(s->node,
                                     "VHDX BAT entry %llu at offset %llu overlaps the %s of "
                                     "entry %llu at offset %llu",
                                     (unsigned long long)a[i].idx, (unsigned long long)a[i].off,
                                     what(s, p), (unsigned long long)p->idx,
                                     (unsigned long long)p->off);
            break;
        }
        if (!p || a[i].off + a[i].len > p->off + p->len)
            p = &a[i];
    }
    free(a);
    return 0;
}
