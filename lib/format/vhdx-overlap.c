/* SPDX-License-Identifier: MIT */
/*
 * VHDX overlap check at a read-write open: every BAT entry that names a file
 * offset (payload blocks in any state, since a not-present block's area is
 * reused when it is written, and sector bitmap blocks) must lie off the log,
 * the metadata region, the BAT and every other such block. If two do not,
 * a write to one would land on the other: writes are refused for the session
 * (EIO; reads still work) and `vdisk check` reports, `-r all` drops the entry.
 * Entries before 1 MiB or past the end of the file are refused where they are
 * used (area_ok in vhdx.c); new blocks always go past every entry in use.
 */
#include <errno.h>
#include <stdlib.h>

#include "../error.h"
#include "vhdx.h"

struct varea {
    uint64_t off, len, idx; /* idx UINT64_MAX: a region */
};

static int cmp_varea(const void *a, const void *b)
{
    const struct varea *x = a, *y = b;

    return x->off < y->off ? -1 : x->off > y->off;
}

/* What area A is, for the message. */
static const char *what(const struct vhdx *s, const struct varea *a)
{
    if (a->idx != UINT64_MAX)
        return a->idx % (s->chunk_ratio + 1) == s->chunk_ratio ? "a sector bitmap block"
                                                               : "another payload block";
    if (a->off == s->log_off)
        return "log";
    return a->off == s->bat_off ? "BAT" : "metadata region";
}

int vhdx_overlap_scan(struct vhdx *s)
{
    struct varea *a = malloc((s->bat_entries + 3) * sizeof(*a)), *p = NULL;
    uint64_t n = 0;

    if (!a)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    a[n++] = (struct varea){s->meta_off, s->meta_len, UINT64_MAX};
    a[n++] = (struct varea){s->bat_off, s->bat_len, UINT64_MAX};
    if (s->log_len)
        a[n++] = (struct varea){s->log_off, s->log_len, UINT64_MAX};
    for (uint64_t i = 0; i < s->bat_entries; i++) {
        uint64_t off = BAT_OFFSET(vhdx_entry(s, i));
        uint64_t len = i % (s->chunk_ratio + 1) == s->chunk_ratio ? VHDX_SB_SIZE : s->block_size;

        if (off >= MiB && off + len <= s->file_size)
            a[n++] = (struct varea){off, len, i};
    }
    qsort(a, n, sizeof(*a), cmp_varea);
    for (uint64_t i = 0; i < n; i++) {
        if (p && a[i].off < p->off + p->len) {
            const struct varea *e = a[i].idx != UINT64_MAX ? &a[i] : p;
            const struct varea *o = e == p ? &a[i] : p;

            vdisk_node_refuse_writes(s->node,
                                     "VHDX BAT entry %llu at offset %llu overlaps the %s at "
                                     "offset %llu",
                                     (unsigned long long)e->idx, (unsigned long long)e->off,
                                     what(s, o), (unsigned long long)o->off);
            break;
        }
        if (!p || a[i].off + a[i].len > p->off + p->len)
            p = &a[i];
    }
    free(a);
    return 0;
}
