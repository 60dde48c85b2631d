/* SPDX-License-Identifier: MIT */
/*
 * qcow2 check and repair, as qemu-node check: count the references every
 * cluster gets from the header, L1/L2 tables (active and snapshots),
 * snapshot table and refcount structures, compare with the stored refcounts
 * (higher: leak; lower: corruption), check the COPIED flags, and fix what
 * the flags allow. Also rebuilds refcounts when a dirty image is opened.
 */
#include <errno.h>
#include <stdlib.h>

#include "../error.h"
#include "qcow2.h"

#define CHECK_MAX_CLUSTERS (1ull << 28) /* 512 MiB of counters */
#define SNAPSHOT_TABLE_MAX (64u << 20)

struct check {
    struct qcow2 *s;
    uint16_t *refs;
    uint64_t nb;
    struct vdisk_check_result *res;
    uint8_t *l2;   /* one table */
    uint8_t *seen; /* per L1 walk: L2 tables met (a repeat is corrupt; bounds the work) */
    uint64_t file_size;
};

/* Count one reference to each cluster of [OFF, OFF+LEN). */
static void inc(struct check *c, uint64_t off, uint64_t len)
{
    uint64_t first, last;

    if (!len)
        return;
    first = off >> c->s->cluster_bits;
    last = (off + len - 1) >> c->s->cluster_bits;
    for (uint64_t i = first; i <= last; i++) {
        if (i >= c->nb) {
            c->res->corruptions++; /* reference past the end of the file */
            return;
        }
        if (c->refs[i] < UINT16_MAX)
            c->refs[i]++;
    }
}

/* Count the L2 tables and clusters an L1 table references. */
static int walk_l1(struct check *c, const uint64_t *l1, uint64_t l1_size, bool active)
{
    struct qcow2 *s = c->s;
    uint64_t cs = s->cluster_size, n = 1ull << s->l2_bits;
    int r;

    memset(c->seen, 0, (c->nb + 7) / 8);
    for (uint64_t i = 0; i < l1_size; i++) {
        uint64_t off = l1[i] & QCOW2_OFFSET_MASK, idx = off >> s->cluster_bits;

        if (!off)
            continue;
        if (off & (cs - 1) || idx >= c->nb || (c->seen[idx / 8] & (1u << (idx % 8)))) {
            c->res->corruptions++;
            continue;
        }
        c->seen[idx / 8] |= (uint8_t)(1u << (idx % 8));
        inc(c, off, cs);
        r = vdisk_file_pread(s->file, c->l2, cs, off);
        if (r < 0)
            return r;
        for (uint64_t j = 0; j < n; j++) {
            const uint8_t *p = c->l2 + j * s->l2_entry_bytes;
            uint64_t e = get_be64(p), bm = s->ext_l2 ? get_be64(p + 8) : 0, h;

            if (e & QCOW2_COMPRESSED) {
                unsigned x = 62 - (s->cluster_bits - 8);
                uint64_t host = e & ((1ull << x) - 1);
                uint64_t nsec = ((e >> x) & ((1ull << (s->cluster_bits - 8)) - 1)) + 1;

                inc(c, host & ~511ull, nsec * 512);
                if (active)
                    c->res->allocated_clusters++;
                continue;
            }
            if (s->ext_l2 && (bm & (bm >> 32) & 0xffffffffull))
                c->res->corruptions++; /* subcluster both allocated and zero */
            h = e & QCOW2_OFFSET_MASK;
            if (!h) {
                if (s->ext_l2 && (bm & 0xffffffffull))
                    c->res->corruptions++;
                continue;
            }
            if (h & (cs - 1)) {
                c->res->corruptions++;
                continue;
            }
            inc(c, h, cs);
            if (active)
                c->res->allocated_clusters++;
        }
    }
    return 0;
}

/* Count the snapshot table and every snapshot's tables. */
static int walk_snapshots(struct check *c)
{
    struct qcow2 *s = c->s;
    uint64_t off = s->snapshots_offset;
    uint8_t fixed[40];
    int r;

    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        uint64_t l1_off, *l1, entry;
        uint32_t l1_size, extra;
        uint16_t id_len, name_len;

        if (off - s->snapshots_offset > SNAPSHOT_TABLE_MAX || off + 40 > c->file_size) {
            c->res->corruptions++;
            return 0;
        }
        r = vdisk_file_pread(s->file, fixed, sizeof(fixed), off);
        if (r < 0)
            return r;
        l1_off = get_be64(fixed);
        l1_size = get_be32(fixed + 8);
        id_len = get_be16(fixed + 12);
        name_len = get_be16(fixed + 14);
        extra = get_be32(fixed + 36);
        entry = (40 + (uint64_t)extra + id_len + name_len + 7) & ~7ull;
        off += entry;
        if ((uint64_t)l1_size * 8 > QCOW2_MAX_L1_BYTES || (l1_off & (s->cluster_size - 1)) ||
            l1_off > c->file_size || (uint64_t)l1_size * 8 > c->file_size - l1_off) {
            c->res->corruptions++;
            continue;
        }
        inc(c, l1_off, (uint64_t)l1_size * 8);
        l1 = malloc((uint64_t)l1_size * 8 + 8);
        if (!l1)
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        r = vdisk_file_pread(s->file, l1, (uint64_t)l1_size * 8, l1_off);
        for (uint32_t j = 0; j < l1_size; j++)
            l1[j] = be64toh(l1[j]);
        if (r == 0)
            r = walk_l1(c, l1, l1_size, false);
        free(l1);
        if (r < 0)
            return r;
    }
    inc(c, s->snapshots_offset, off - s->snapshots_offset);
    return 0;
}

/* Count every reference in the image into c->refs. */
static int count_refs(struct check *c, unsigned flags)
{
    struct qcow2 *s = c->s;
    int r;

    inc(c, 0, s->cluster_size);
    inc(c, s->l1_offset, (uint64_t)s->l1_size * 8);
    r = walk_l1(c, s->l1, s->l1_size, true);
    if (r == 0 && s->nb_snapshots)
        r = walk_snapshots(c);
    if (r < 0)
        return r;
    for (unsigned i = 0; i < s->ninflight; i++) /* being filled by a write: in use */
        inc(c, s->inflight[i].host, s->cluster_size);
    inc(c, s->rt_offset, (uint64_t)s->rt_clusters << s->cluster_bits);
    if (s->crypt_method == 2 && s->fde_len) /* the LUKS header's clusters */
        inc(c, s->fde_offset, s->fde_len);
    for (uint64_t i = 0; i < s->rt_size; i++) {
        uint64_t off = s->reftable[i] & QCOW2_RT_OFFSET_MASK;

        if (!off)
            continue;
        if (off & (s->cluster_size - 1) || (off >> s->cluster_bits) >= c->nb) {
            c->res->corruptions++;
            if (flags & VDISK_CHECK_REPAIR_ALL) { /* drop it; rebuilt below */
                s->reftable[i] = 0;
                s->rt_dirty = true;
                c->res->corruptions_fixed++;
            }
            continue;
        }
        inc(c, off, s->cluster_size);
    }
    return 0;
}

/* Compare stored and counted refcounts; fix them as FLAGS allow. */
static int compare(struct check *c, unsigned flags, bool count)
{
    struct qcow2 *s = c->s;
    int changed = 0, r;

    for (uint64_t i = 0; i < c->nb; i++) {
        uint64_t stored, want = c->refs[i];

        r = qcow2_rc_get(s, i, &stored);
        if (r < 0) {
            if (count)
                c->res->corruptions++;
            stored = 0;
        }
        if (stored == want)
            continue;
        if (stored > want) {
            if (count)
                c->res->leaks++;
            if (!(flags & (VDISK_CHECK_REPAIR_LEAKS | VDISK_CHECK_REPAIR_ALL)))
                continue;
        } else {
            if (count)
                c->res->corruptions++;
            if (!(flags & VDISK_CHECK_REPAIR_ALL))
                continue;
        }
        r = qcow2_rc_set(s, i, want);
        if (r < 0)
            return r;
        changed++;
        if (count && stored > want)
            c->res->leaks_fixed++;
        else if (count)
            c->res->corruptions_fixed++;
    }
    return changed;
}

/* COPIED must be set exactly where the refcount is 1 (active tables only). */
static int check_copied(struct check *c, unsigned flags)
{
    struct qcow2 *s = c->s;
    bool fix = flags & VDISK_CHECK_REPAIR_ALL;
    int r;

    for (uint64_t i = 0; i < s->l1_size; i++) {
        uint64_t off = s->l1[i] & QCOW2_OFFSET_MASK, rc;
        struct qcow2_table *t;

        if (!off || off & (s->cluster_size - 1) || (off >> s->cluster_bits) >= c->nb ||
            qcow2_overlap_fixed(s, off)) /* counted by qcow2_overlap_count */
            continue;
        r = qcow2_rc_get(s, off >> s->cluster_bits, &rc);
        if (r < 0)
            return r;
        if (!!(s->l1[i] & QCOW2_COPIED) != (rc == 1)) {
            c->res->corruptions++;
            if (fix) {
                s->l1[i] ^= QCOW2_COPIED;
                s->l1_dirty_lo = 0;
                s->l1_dirty_hi = s->l1_size;
                c->res->corruptions_fixed++;
            }
        }
        r = qcow2_l2_load(s, i, &t);
        if (r < 0)
            return r;
        for (uint64_t j = 0; t && j < (1ull << s->l2_bits); j++) {
            uint8_t *p = t->buf + j * s->l2_entry_bytes;
            uint64_t e = get_be64(p), h = e & QCOW2_OFFSET_MASK;

            if ((e & QCOW2_COMPRESSED) || !h || h & (s->cluster_size - 1) ||
                (h >> s->cluster_bits) >= c->nb)
                continue;
            r = qcow2_rc_get(s, h >> s->cluster_bits, &rc);
            if (r < 0)
                return r;
            if (!!(e & QCOW2_COPIED) != (rc == 1)) {
                c->res->corruptions++;
                if (fix) {
                    put_be64(p, e ^ QCOW2_COPIED);
                    t->dirty = true;
                    c->res->corruptions_fixed++;
                }
            }
        }
    }
    return 0;
}

int qcow2_check_locked(struct qcow2 *s, unsigned flags, struct vdisk_check_result *res)
{
    struct check c = {.s = s, .res = res};
    uint64_t file_size;
    int r;

    if (!s->node->read_only) {
        /* everything on disk, including the refcounts released by the first flush */
        r = qcow2_flush_locked(s);
        if (r == 0)
            r = qcow2_flush_locked(s);
        if (r < 0)
            return r;
    }
    r = vdisk_file_get_size(s->file, &file_size);
    if (r < 0)
        return r;
    c.nb = (file_size + s->cluster_size - 1) >> s->cluster_bits;
    if (c.nb > CHECK_MAX_CLUSTERS)
        return vdisk_error(EFBIG, "%s: too many clusters (%llu) to check", s->node->path,
                           (unsigned long long)c.nb);
    c.file_size = file_size;
    c.refs = calloc(c.nb ? c.nb : 1, sizeof(*c.refs));
    c.seen = malloc(c.nb / 8 + 1);
    c.l2 = qcow2_alloc_buf(s->cluster_size);
    if (!c.refs || !c.l2 || !c.seen) {
        r = vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        goto out;
    }
    res->total_clusters = (s->node->size + s->cluster_size - 1) >> s->cluster_bits;
    r = count_refs(&c, flags);
    if (r < 0)
        goto out;
    s->check_refs = c.refs;
    s->check_nb = c.nb;
    r = compare(&c, flags, true);
    /* fixing may have added refcount blocks (counted in c.refs): settle */
    for (int pass = 0; pass < 4 && r > 0; pass++)
        r = compare(&c, flags, false);
    s->check_refs = NULL;
    if (r < 0)
        goto out;
    r = check_copied(&c, flags);
    if (r == 0 && (flags & (VDISK_CHECK_REPAIR_LEAKS | VDISK_CHECK_REPAIR_ALL)))
        r = qcow2_flush_locked(s);
out:
    s->check_refs = NULL;
    free(c.refs);
    free(c.seen);
    free(c.l2);
    return r;
}

int qcow2_check(struct vdisk_node *node, unsigned flags, struct vdisk_check_result *res)
{
    struct qcow2 *s = node->priv;
    int r;

    qcow2_lock_excl(s);
    qcow2_wait_pins(s); /* a repair may move or free anything */
    r = qcow2_check_locked(s, flags, res);
    if (r == 0)
        res->corruptions += qcow2_overlap_count(s, NULL, 0); /* not repairable */
    if (r == 0 && (flags & VDISK_CHECK_REPAIR_ALL) && res->corruptions == res->corruptions_fixed)
        r = qcow2_overlap_repaired(s);
    pthread_rwlock_unlock(&s->lock);
    return r;
}
