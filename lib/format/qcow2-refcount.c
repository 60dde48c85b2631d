/* SPDX-License-Identifier: MIT */
/*
 * qcow2 refcounts: reading and updating refcount blocks of any width (1 to 64
 * bits), allocating clusters, growing the refcount table, and the deferred
 * list of clusters to release once the metadata that dropped them is durable.
 * Every function here runs under s->lock taken exclusive.
 */
#include <errno.h>
#include <stdlib.h>

#include "../error.h"
#include "qcow2.h"

/* Entry I of a refcount block of 2^ORDER-bit entries. */
uint64_t qcow2_rb_get(const uint8_t *b, uint64_t i, unsigned order)
{
    switch (order) {
    case 0:
        return (b[i >> 3] >> (i & 7)) & 1;
    case 1:
        return (b[i >> 2] >> (2 * (i & 3))) & 3;
    case 2:
        return (b[i >> 1] >> (4 * (i & 1))) & 15;
    case 3:
        return b[i];
    case 4:
        return get_be16(b + 2 * i);
    case 5:
        return get_be32(b + 4 * i);
    default:
        return get_be64(b + 8 * i);
    }
}

void qcow2_rb_set(uint8_t *b, uint64_t i, unsigned order, uint64_t v)
{
    unsigned shift;

    switch (order) {
    case 0:
    case 1:
    case 2:
        shift = (unsigned)((i & ((8u >> order) - 1)) << order);
        b[i >> (3 - order)] &= ~(((1u << (1u << order)) - 1) << shift);
        b[i >> (3 - order)] |= (uint8_t)(v << shift);
        break;
    case 3:
        b[i] = (uint8_t)v;
        break;
    case 4:
        put_be16(b + 2 * i, (uint16_t)v);
        break;
    case 5:
        put_be32(b + 4 * i, (uint32_t)v);
        break;
    default:
        put_be64(b + 8 * i, v);
        break;
    }
}

int qcow2_sync(struct qcow2 *s)
{
    return vdisk_file_flush(s->file);
}

/* Is cluster IDX in use according to a running repair? */
static bool check_used(struct qcow2 *s, uint64_t idx)
{
    return s->check_refs && idx < s->check_nb && s->check_refs[idx];
}

/* A repair counts metadata it allocates, so its comparison stays right. */
static void check_count(struct qcow2 *s, uint64_t idx, int delta)
{
    if (s->check_refs && idx < s->check_nb)
        s->check_refs[idx] += delta;
}

static void note_end(struct qcow2 *s, uint64_t idx)
{
    uint64_t end = (idx + 1) << s->cluster_bits;

    if (end > s->file_size)
        s->file_size = end;
}

/* Write a dirty refcount block back (no sync). */
static int rb_writeback(struct qcow2 *s, struct qcow2_table *t)
{
    int r;

    if (!t->dirty)
        return 0;
    r = vdisk_file_pwrite(s->file, t->buf, s->cluster_size, t->offset);
    if (r == 0)
        t->dirty = false;
    return r;
}

/* The refcount block for reftable index RTI, or *tp = NULL when there is none. */
static int rb_load(struct qcow2 *s, uint64_t rti, struct qcow2_table **tp)
{
    uint64_t off = rti < s->rt_size ? s->reftable[rti] & QCOW2_RT_OFFSET_MASK : 0;
    struct qcow2_table *t;
    int r;

    *tp = NULL;
    if (!off)
        return 0;
    if (off & (s->cluster_size - 1) || off >= s->file_size)
        return vdisk_error(EIO, "%s: refcount block %llu at offset %llu is invalid", s->node->path,
                           (unsigned long long)rti, (unsigned long long)off);
    r = qcow2_overlap_table(s, off, "refcount block", rti);
    if (r == 0)
        r = qcow2_cache_take(s, &s->rbc, rti, rb_writeback, &t);
    if (r < 0)
        return r;
    if (t->index == (int64_t)rti && t->offset == off) {
        *tp = t;
        return 0;
    }
    qcow2_cache_assign(&s->rbc, t, rti, off);
    r = vdisk_file_pread(s->file, t->buf, s->cluster_size, off);
    if (r < 0) {
        qcow2_cache_drop(&s->rbc, t);
        return r;
    }
    *tp = t;
    return 0;
}

int qcow2_rc_get(struct qcow2 *s, uint64_t idx, uint64_t *val)
{
    struct qcow2_table *t;
    int r = rb_load(s, idx >> s->rb_bits, &t);

    *val = 0;
    if (r < 0 || !t)
        return r;
    *val = qcow2_rb_get(t->buf, idx & ((1ull << s->rb_bits) - 1), s->refcount_order);
    return 0;
}

/* Start a refcount block for reftable index RTI in cluster IDX (inside its range). */
static int rb_create_at(struct qcow2 *s, uint64_t rti, uint64_t idx)
{
    struct qcow2_table *t;
    int r = qcow2_overlap_check_alloc(s, idx);

    if (r == 0)
        r = qcow2_cache_take(s, &s->rbc, rti, rb_writeback, &t);
    if (r < 0)
        return r;
    qcow2_overlap_note(s, idx << s->cluster_bits, "refcount block");
    qcow2_cache_assign(&s->rbc, t, rti, idx << s->cluster_bits);
    memset(t->buf, 0, s->cluster_size);
    qcow2_rb_set(t->buf, idx & ((1ull << s->rb_bits) - 1), s->refcount_order, 1);
    t->dirty = true;
    s->reftable[rti] = idx << s->cluster_bits;
    s->rt_dirty = true;
    check_count(s, idx, 1);
    note_end(s, idx);
    return 0;
}

/* Clusters of the file as far as it is used (for placing new tables). */
static uint64_t used_clusters(struct qcow2 *s)
{
    return (s->file_size + s->cluster_size - 1) >> s->cluster_bits;
}

/*
 * Replace the refcount table by one of at least MIN_ENTRIES entries, placed
 * past every cluster in use together with the refcount blocks that cover it.
 * Written through: new blocks and table, sync, header, sync.
 */
static int grow_reftable(struct qcow2 *s, uint64_t min_entries)
{
    uint64_t cs = s->cluster_size, E = 1ull << s->rb_bits;
    uint64_t p, entries, tc, k, first, end, *nt = NULL, old_off = s->rt_offset;
    uint32_t old_clusters = s->rt_clusters;
    uint8_t *buf = NULL, hdr[12];
    int r;

    p = used_clusters(s);
    if (p < s->rt_size * E)
        p = s->rt_size * E;
    entries = s->rt_size + s->rt_size / 2 + 1;
    if (entries < min_entries)
        entries = min_entries;
    for (;;) {
        tc = (entries * 8 + cs - 1) / cs;
        k = 0;
        for (;;) { /* blocks covering [p, p + tc + k) */
            uint64_t nk = (p + tc + k - 1) / E - p / E + 1;

            if (nk == k)
                break;
            k = nk;
        }
        end = p + tc + k;
        if ((end - 1) / E < entries)
            break;
        entries = (end - 1) / E + 1;
    }
    if (tc * cs > QCOW2_MAX_RT_BYTES || (end << s->cluster_bits) > QCOW2_OFFSET_MASK)
        return vdisk_error(EFBIG, "%s: refcount table would exceed %u bytes", s->node->path,
                           QCOW2_MAX_RT_BYTES);
    entries = tc * cs / 8;
    r = qcow2_flush_refcounts(s); /* the new table copies entries: they must be durable */
    if (r < 0)
        return r;
    nt = qcow2_alloc_buf(tc * cs);
    buf = qcow2_alloc_buf(cs);
    if (!nt || !buf) {
        r = vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        goto out;
    }
    memcpy(nt, s->reftable, s->rt_size * 8);
    first = p / E;
    for (uint64_t b = 0; b < k; b++) {
        uint64_t rti = first + b, blk = p + tc + b;

        memset(buf, 0, cs);
        for (uint64_t i = rti * E; i < (rti + 1) * E; i++)
            if (i >= p && i < end)
                qcow2_rb_set(buf, i - rti * E, s->refcount_order, 1);
        r = vdisk_file_pwrite(s->file, buf, cs, blk << s->cluster_bits);
        if (r < 0)
            goto out;
        nt[rti] = blk << s->cluster_bits;
        qcow2_overlap_note(s, nt[rti], "refcount block");
    }
    for (uint64_t i = 0; i < entries; i++)
        nt[i] = htobe64(nt[i]);
    r = vdisk_file_pwrite(s->file, nt, tc * cs, p << s->cluster_bits);
    if (r == 0)
        r = qcow2_sync(s);
    if (r < 0)
        goto out;
    for (uint64_t i = 0; i < entries; i++)
        nt[i] = be64toh(nt[i]);
    put_be64(hdr, p << s->cluster_bits);
    put_be32(hdr + 8, (uint32_t)tc);
    r = vdisk_file_pwrite(s->file, hdr, sizeof(hdr), QCOW2_HDR_RT_OFFSET);
    if (r == 0)
        r = qcow2_sync(s);
    if (r < 0)
        goto out;
    r = qcow2_cache_grow_slots(&s->rbc, entries);
    if (r < 0) {
        r = vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        goto out;
    }
    free(s->reftable);
    s->reftable = nt;
    nt = NULL;
    s->rt_size = entries;
    s->rt_offset = p << s->cluster_bits;
    s->rt_clusters = (uint32_t)tc;
    note_end(s, end - 1);
    for (uint64_t i = 0; i < old_clusters; i++) {
        uint64_t idx = (old_off >> s->cluster_bits) + i;

        r = qcow2_rc_update(s, idx, -1);
        if (r < 0)
            goto out;
        check_count(s, idx, -1);
    }
out:
    free(nt);
    free(buf);
    return r;
}

/*
 * The refcount block for cluster IDX, created when missing: placed in a free
 * cluster of its own range other than IDX.
 */
static int rb_get_or_create(struct qcow2 *s, uint64_t idx, struct qcow2_table **tp)
{
    uint64_t rti = idx >> s->rb_bits, E = 1ull << s->rb_bits;
    int r;

    if (rti >= s->rt_size) {
        r = grow_reftable(s, rti + 1);
        if (r < 0)
            return r;
    }
    r = rb_load(s, rti, tp);
    if (r < 0 || *tp)
        return r;
    for (uint64_t j = rti * E; j < (rti + 1) * E; j++) {
        if (j == idx || check_used(s, j))
            continue;
        r = rb_create_at(s, rti, j);
        if (r < 0)
            return r;
        return rb_load(s, rti, tp);
    }
    return vdisk_error(ENOSPC, "%s: no room for a refcount block", s->node->path);
}

int qcow2_rc_set(struct qcow2 *s, uint64_t idx, uint64_t val)
{
    struct qcow2_table *t;
    int r;

    if (val > s->rc_max)
        return vdisk_error(ERANGE, "%s: refcount %llu of cluster %llu exceeds %u bits",
                           s->node->path, (unsigned long long)val, (unsigned long long)idx,
                           1u << s->refcount_order);
    if (val == 0) {
        r = rb_load(s, idx >> s->rb_bits, &t);
        if (r < 0 || !t)
            return r;
    } else {
        r = rb_get_or_create(s, idx, &t);
        if (r < 0)
            return r;
    }
    qcow2_rb_set(t->buf, idx & ((1ull << s->rb_bits) - 1), s->refcount_order, val);
    t->dirty = true;
    if (val == 0 && idx < s->free_hint)
        s->free_hint = idx;
    if (val)
        note_end(s, idx);
    return 0;
}

int qcow2_rc_update(struct qcow2 *s, uint64_t idx, int64_t delta)
{
    uint64_t v;
    int r = qcow2_rc_get(s, idx, &v);

    if (r < 0)
        return r;
    if ((delta < 0 && v < (uint64_t)-delta) || (delta > 0 && s->rc_max - v < (uint64_t)delta))
        return vdisk_error(EIO, "%s: refcount of cluster %llu would go from %llu by %lld",
                           s->node->path, (unsigned long long)idx, (unsigned long long)v,
                           (long long)delta);
    return qcow2_rc_set(s, idx, v + delta);
}

/* Find a free cluster, set its refcount to 1 and return its offset. */
int qcow2_alloc_cluster(struct qcow2 *s, uint64_t *off)
{
    uint64_t E = 1ull << s->rb_bits, limit = QCOW2_OFFSET_MASK >> s->cluster_bits;
    uint64_t idx = s->free_hint;
    struct qcow2_table *t;
    int r;

    while (idx < limit) {
        uint64_t rti = idx >> s->rb_bits;

        if (rti >= s->rt_size) {
            r = grow_reftable(s, rti + 1);
            if (r < 0)
                return r;
            continue;
        }
        r = rb_load(s, rti, &t);
        if (r < 0)
            return r;
        if (!t) {
            if (!check_used(s, idx)) {
                r = rb_create_at(s, rti, idx);
                if (r < 0)
                    return r;
            }
            idx++;
            continue;
        }
        for (uint64_t i = idx & (E - 1); i < E; i++, idx++) {
            if (qcow2_rb_get(t->buf, i, s->refcount_order) || check_used(s, idx))
                continue;
            r = qcow2_overlap_check_alloc(s, idx);
            if (r < 0)
                return r;
            qcow2_rb_set(t->buf, i, s->refcount_order, 1);
            t->dirty = true;
            s->free_hint = idx + 1;
            check_count(s, idx, 1);
            note_end(s, idx);
            *off = idx << s->cluster_bits;
            return 0;
        }
    }
    return vdisk_error(ENOSPC, "%s: no free cluster left", s->node->path);
}

/* Drop one reference to each cluster of [OFF, OFF+LEN) at the next flush. */
int qcow2_queue_free(struct qcow2 *s, uint64_t off, uint64_t len)
{
    if (s->nfrees && s->frees[s->nfrees - 1].off + s->frees[s->nfrees - 1].len == off &&
        !(off & (s->cluster_size - 1))) {
        s->frees[s->nfrees - 1].len += len;
        return 0;
    }
    if (s->nfrees == s->cap_frees) {
        size_t cap = s->cap_frees ? s->cap_frees * 2 : 64;
        struct qcow2_free *f = realloc(s->frees, cap * sizeof(*f));

        if (!f)
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        s->frees = f;
        s->cap_frees = cap;
    }
    s->frees[s->nfrees++] = (struct qcow2_free){off, len};
    return 0;
}

/*
 * Release the queued clusters: the metadata that referenced them is durable,
 * the exclusive lock means no read or write that looked one up still runs,
 * and the wait for pins that no queue I/O does.
 */
int qcow2_apply_frees(struct qcow2 *s)
{
    int r = 0;

    if (!s->nfrees)
        return 0;
    qcow2_wait_pins(s);
    for (size_t i = 0; i < s->nfrees && r == 0; i++) {
        uint64_t first = s->frees[i].off >> s->cluster_bits;
        uint64_t last = (s->frees[i].off + s->frees[i].len - 1) >> s->cluster_bits;

        for (uint64_t idx = first; idx <= last && r == 0; idx++) {
            uint64_t v;

            r = qcow2_rc_update(s, idx, -1);
            if (r == 0)
                r = qcow2_rc_get(s, idx, &v);
            if (r == 0 && v == 0) /* give the space back; advisory */
                vdisk_file_punch_hole(s->file, idx << s->cluster_bits, s->cluster_size);
        }
    }
    s->nfrees = 0;
    return r;
}

/* Make refcounts durable: data and blocks, sync, then the reftable, sync. */
int qcow2_flush_refcounts(struct qcow2 *s)
{
    int r;

    for (unsigned i = 0; i < s->rbc.n; i++) {
        r = rb_writeback(s, &s->rbc.t[i]);
        if (r < 0)
            return r;
    }
    r = qcow2_sync(s);
    if (r < 0 || !s->rt_dirty)
        return r;
    {
        size_t bytes = (size_t)s->rt_clusters << s->cluster_bits;
        uint64_t *be = qcow2_alloc_buf(bytes);

        if (!be)
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        for (uint64_t i = 0; i < s->rt_size; i++)
            be[i] = htobe64(s->reftable[i]);
        r = vdisk_file_pwrite(s->file, be, bytes, s->rt_offset);
        free(be);
    }
    if (r == 0)
        r = qcow2_sync(s);
    if (r == 0)
        s->rt_dirty = false;
    return r;
}
