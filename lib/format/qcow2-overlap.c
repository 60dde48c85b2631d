/* SPDX-License-Identifier: MIT */
/*
 * qcow2 overlap checks: no new cluster and no data write may land on the
 * image's own metadata (header, L1 table, refcount table and blocks, L2
 * tables, snapshot table and snapshot L1 tables, LUKS header). A damaged
 * image (a metadata cluster with refcount 0, an L2 entry pointing into a
 * table) fails the request with EIO and is marked corrupt (incompatible
 * feature bit 1): no more writes, and no read-write open until
 * `vdisk check -r all` repairs it and clears the bit.
 *
 * s->meta holds every L2 table and refcount block that ever was in the
 * active tables (a superset: hits are confirmed against s->l1 and
 * s->reftable); s->snap_meta the snapshot tables, read once at open.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "../error.h"
#include "qcow2.h"

#define SNAP_TABLE_MAX (64ull << 20)

/* Note the L2 table or refcount block at OFF (exclusive lock held). */
void qcow2_overlap_note(struct qcow2 *s, uint64_t off, const char *what)
{
    if (off && overlap_add(&s->meta, off, s->cluster_size, what) < 0)
        s->meta_lost = true; /* lookups walk the tables instead */
}

/* Is host cluster OFF an L2 table (by L1) or a refcount block (by the reftable) now? */
static const char *walk_tables(struct qcow2 *s, uint64_t off, uint64_t len)
{
    uint64_t cs = s->cluster_size;

    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t t = s->l1[i] & QCOW2_OFFSET_MASK;

        if (t && t < off + len && t + cs > off)
            return "L2 table";
    }
    for (uint64_t i = 0; i < s->rt_size; i++) {
        uint64_t t = s->reftable[i] & QCOW2_RT_OFFSET_MASK;

        if (t && t < off + len && t + cs > off)
            return "refcount block";
    }
    return NULL;
}

/* Do [A, A+AL) and [B, B+BL) overlap? */
static bool crosses(uint64_t a, uint64_t al, uint64_t b, uint64_t bl)
{
    return al && bl && a < b + bl && b < a + al;
}

/* Which metadata [OFF, OFF+LEN) of the file overlaps; NULL for none. Lock held (either). */
const char *qcow2_overlap_what(struct qcow2 *s, uint64_t off, uint64_t len)
{
    const struct overlap_range *r;

    if (crosses(off, len, 0, s->cluster_size))
        return "image header";
    if (crosses(off, len, s->l1_offset, (uint64_t)s->l1_size * 8))
        return "L1 table";
    if (crosses(off, len, s->rt_offset, (uint64_t)s->rt_clusters << s->cluster_bits))
        return "refcount table";
    if (s->crypt_method == 2 && crosses(off, len, s->fde_offset, s->fde_len))
        return "LUKS header";
    r = overlap_find(&s->snap_meta, off, len);
    if (r)
        return r->what;
    if (s->meta_lost)
        return walk_tables(s, off, len);
    r = overlap_find(&s->meta, off, len);
    return r ? walk_tables(s, off, len) : NULL; /* the set may hold freed tables */
}

/* Read the snapshot table: its own range and each snapshot's L1 table. */
static int note_snapshots(struct qcow2 *s, uint64_t file_size)
{
    uint64_t off = s->snapshots_offset;
    uint8_t e[40];
    int r;

    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        uint64_t l1_off, l1_bytes;

        if (off - s->snapshots_offset > SNAP_TABLE_MAX || off + sizeof(e) > file_size)
            break; /* check reports it; keep what was found */
        r = vdisk_file_pread(s->file, e, sizeof(e), off);
        if (r < 0)
            return r;
        l1_off = get_be64(e);
        l1_bytes = (uint64_t)get_be32(e + 8) * 8;
        if (l1_bytes <= QCOW2_MAX_L1_BYTES &&
            overlap_add(&s->snap_meta, l1_off, l1_bytes, "snapshot L1 table") < 0)
            return -ENOMEM;
        off += (40 + (uint64_t)get_be32(e + 36) + get_be16(e + 12) + get_be16(e + 14) + 7) & ~7ull;
    }
    if (overlap_add(&s->snap_meta, s->snapshots_offset, off - s->snapshots_offset,
                    "snapshot table") < 0)
        return -ENOMEM;
    return 0;
}

/* (Re)build the sets from the tables in memory (and the snapshot table on disk). */
int qcow2_overlap_build(struct qcow2 *s, bool snapshots)
{
    uint64_t file_size;
    int r;

    overlap_clear(&s->meta);
    s->meta_lost = false;
    for (uint32_t i = 0; i < s->l1_size; i++)
        qcow2_overlap_note(s, s->l1[i] & QCOW2_OFFSET_MASK, "L2 table");
    for (uint64_t i = 0; i < s->rt_size; i++)
        qcow2_overlap_note(s, s->reftable[i] & QCOW2_RT_OFFSET_MASK, "refcount block");
    if (!snapshots || !s->nb_snapshots)
        return 0;
    r = vdisk_file_get_size(s->file, &file_size);
    if (r == 0)
        r = note_snapshots(s, file_size);
    if (r == -ENOMEM)
        r = vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    return r;
}

/*
 * The image is inconsistent (what FMT says): mark it corrupt on disk (v3),
 * refuse further writes, and return -EIO with a message that says so.
 */
int qcow2_corrupt(struct qcow2 *s, const char *fmt, ...)
{
    char why[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    /* the first to find it marks it (a write in place finds it under the shared lock) */
    if (!s->node->read_only && !atomic_exchange(&s->corrupt, true)) {
        s->incompat |= QCOW2_INCOMPAT_CORRUPT;
        if (s->version >= 3 &&
            qcow2_write_header_u64(s, QCOW2_HDR_INCOMPAT,
                                   s->incompat | (s->dirty_marked ? QCOW2_INCOMPAT_DIRTY : 0)) == 0)
            qcow2_sync(s);
    }
    return vdisk_error(EIO,
                       "%s: %s: image marked corrupt, no more writes; repair it with "
                       "`vdisk check -r all`",
                       s->node->path, why);
}

/* Writes are refused once the image is corrupt. */
int qcow2_refuse_corrupt(struct qcow2 *s)
{
    return vdisk_error(EIO,
                       "%s: image is marked corrupt: writes are refused until "
                       "`vdisk check -r all` repairs it",
                       s->node->path);
}

/* Cluster IDX, about to be handed out as free, must hold no metadata. */
int qcow2_overlap_check_alloc(struct qcow2 *s, uint64_t idx)
{
    const char *what = qcow2_overlap_what(s, idx << s->cluster_bits, s->cluster_size);

    if (!what)
        return 0;
    return qcow2_corrupt(s, "cluster %llu holds the %s but its refcount is 0",
                         (unsigned long long)idx, what);
}

/* Refcount of the metadata cluster at OFF must not be 0 (or the allocator hands it out). */
static int referenced(struct qcow2 *s, uint64_t off, uint64_t len, const char *what)
{
    for (uint64_t c = off >> s->cluster_bits; len && c <= (off + len - 1) >> s->cluster_bits; c++) {
        uint64_t rc;
        int r = qcow2_rc_get(s, c, &rc);

        if (r < 0)
            return r;
        if (rc == 0)
            return qcow2_corrupt(s, "the %s in cluster %llu has refcount 0", what,
                                 (unsigned long long)c);
    }
    return 0;
}

/* Which fixed table (header, L1, reftable, snapshot tables) the cluster at OFF overlaps. */
static const char *fixed_what(struct qcow2 *s, uint64_t off)
{
    uint64_t cs = s->cluster_size;
    const struct overlap_range *r = overlap_find(&s->snap_meta, off, cs);

    if (crosses(off, cs, 0, cs))
        return "image header";
    if (crosses(off, cs, s->l1_offset, (uint64_t)s->l1_size * 8))
        return "L1 table";
    if (crosses(off, cs, s->rt_offset, (uint64_t)s->rt_clusters << s->cluster_bits))
        return "refcount table";
    return r ? r->what : NULL;
}

/* Does the cluster at OFF lie in a fixed table (header, L1, reftable, snapshot tables)? */
bool qcow2_overlap_fixed(struct qcow2 *s, uint64_t off)
{
    return fixed_what(s, off) != NULL;
}

/* A table (WHAT number INDEX) about to be loaded for writing must not lie in a fixed one. */
int qcow2_overlap_table(struct qcow2 *s, uint64_t off, const char *what, uint64_t index)
{
    const char *in = s->node->read_only ? NULL : fixed_what(s, off);

    if (!in)
        return 0;
    return qcow2_corrupt(s, "%s %llu at offset %llu overlaps the %s", what,
                         (unsigned long long)index, (unsigned long long)off, in);
}

/*
 * L2 tables and refcount blocks that overlap a fixed table: no refcount
 * repair can fix that (the table would have to move, and its contents are
 * lost). Counted by check; CORRUPT for the first one found (may be NULL).
 */
uint64_t qcow2_overlap_count(struct qcow2 *s, char *first, size_t size)
{
    uint64_t n = 0;
    const char *what;

    for (uint64_t i = 0; i < s->rt_size + s->l1_size; i++) {
        bool rb = i < s->rt_size;
        uint64_t off =
            rb ? s->reftable[i] & QCOW2_RT_OFFSET_MASK : s->l1[i - s->rt_size] & QCOW2_OFFSET_MASK;

        if (!off || !(what = fixed_what(s, off)))
            continue;
        if (!n++ && first)
            snprintf(first, size, "%s %llu at offset %llu overlaps the %s",
                     rb ? "refcount block" : "L2 table",
                     (unsigned long long)(rb ? i : i - s->rt_size), (unsigned long long)off, what);
    }
    return n;
}

/*
 * At a read-write open: the cheap signs of damage that would let data
 * overwrite metadata. L2 tables and refcount blocks must not overlap the
 * fixed tables, and no metadata cluster may have refcount 0.
 */
int qcow2_overlap_open_check(struct qcow2 *s)
{
    uint64_t cs = s->cluster_size;
    char why[160];
    int r = 0;

    if (qcow2_overlap_count(s, why, sizeof(why)))
        return qcow2_corrupt(s, "%s", why);
    r = referenced(s, 0, cs, "image header");
    if (r == 0)
        r = referenced(s, s->l1_offset, (uint64_t)s->l1_size * 8, "L1 table");
    if (r == 0)
        r = referenced(s, s->rt_offset, (uint64_t)s->rt_clusters << s->cluster_bits,
                       "refcount table");
    for (uint64_t i = 0; r == 0 && i < s->rt_size; i++) {
        uint64_t off = s->reftable[i] & QCOW2_RT_OFFSET_MASK;

        if (off)
            r = referenced(s, off, cs, "refcount block");
    }
    for (uint32_t i = 0; r == 0 && i < s->l1_size; i++) {
        uint64_t off = s->l1[i] & QCOW2_OFFSET_MASK;

        if (off && off < s->file_size) /* past the end: an error when used, not an overlap */
            r = referenced(s, off, cs, "L2 table");
    }
    for (size_t i = 0; r == 0 && i < s->snap_meta.n; i++)
        r = referenced(s, s->snap_meta.r[i].off, s->snap_meta.r[i].len, s->snap_meta.r[i].what);
    return r;
}

/* After a repair that left nothing corrupt: clear the bit, allow writes again. */
int qcow2_overlap_repaired(struct qcow2 *s)
{
    int r = qcow2_overlap_build(s, false);

    if (r < 0 || !(s->incompat & QCOW2_INCOMPAT_CORRUPT))
        return r;
    s->incompat &= ~QCOW2_INCOMPAT_CORRUPT;
    r = qcow2_write_header_u64(s, QCOW2_HDR_INCOMPAT,
                               s->incompat | (s->dirty_marked ? QCOW2_INCOMPAT_DIRTY : 0));
    if (r == 0)
        r = qcow2_sync(s);
    if (r == 0)
        s->corrupt = false;
    return r;
}
