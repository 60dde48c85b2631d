/* SPDX-License-Identifier: MIT */
/*
 * qcow2 data path: guest offsets to host clusters through L1 and cached L2
 * tables (standard or extended entries), reads (data, zero, compressed,
 * backing), writes (in place, or allocate with copy-on-write) and block
 * status.
 */
#include <errno.h>
#include <stdlib.h>

#include "../error.h"
#include "qcow2.h"

enum { QC_UNALLOC, QC_ZERO, QC_DATA, QC_COMPRESSED };

/* A run of guest bytes that map alike. */
struct qc_map {
    int type;
    uint64_t host; /* DATA: host offset of the first byte; COMPRESSED: the L2 entry */
    uint64_t len;
};

/* Does host cluster H overlap any metadata (qcow2-overlap.c)? */
static bool hits_metadata(struct qcow2 *s, uint64_t h)
{
    return qcow2_overlap_what(s, h, s->cluster_size) != NULL;
}

/* Write a dirty L2 table: the refcounts of what it points to go first. */
static int l2_writeback(struct qcow2 *s, struct qcow2_table *t)
{
    int r;

    if (!t->dirty)
        return 0;
    r = qcow2_flush_refcounts(s);
    if (r == 0)
        r = vdisk_file_pwrite(s->file, t->buf, s->cluster_size, t->offset);
    if (r == 0)
        t->dirty = false;
    return r;
}

/* The L2 table of L1 entry L1I in the cache; *tp = NULL when unallocated. */
int qcow2_l2_load(struct qcow2 *s, uint64_t l1i, struct qcow2_table **tp)
{
    uint64_t off = l1i < s->l1_size ? s->l1[l1i] & QCOW2_OFFSET_MASK : 0;
    struct qcow2_table *t;
    int r;

    *tp = NULL;
    if (!off)
        return 0;
    if (off & (s->cluster_size - 1) || off >= s->file_size)
        return vdisk_error(EIO, "%s: L2 table %llu at offset %llu is invalid (image corrupt)",
                           s->node->path, (unsigned long long)l1i, (unsigned long long)off);
    r = qcow2_overlap_table(s, off, "L2 table", l1i);
    if (r == 0)
        r = qcow2_cache_take(s, &s->l2c, l1i, l2_writeback, &t);
    if (r < 0)
        return r;
    if (t->index == (int64_t)l1i && t->offset == off) {
        *tp = t;
        return 0;
    }
    qcow2_cache_assign(&s->l2c, t, l1i, off);
    r = vdisk_file_pread(s->file, t->buf, s->cluster_size, off);
    if (r < 0) {
        qcow2_cache_drop(&s->l2c, t);
        return r;
    }
    *tp = t;
    return 0;
}

/* The cached L2 table of L1I without loading anything: -EAGAIN on a miss. */
int qcow2_l2_peek(struct qcow2 *s, uint64_t l1i, struct qcow2_table **tp)
{
    uint64_t off = l1i < s->l1_size ? s->l1[l1i] & QCOW2_OFFSET_MASK : 0;
    struct qcow2_table *t;

    *tp = NULL;
    if (!off)
        return 0;
    t = qcow2_cache_find(&s->l2c, l1i);
    if (!t || t->offset != off)
        return -EAGAIN;
    *tp = t;
    return 0;
}

/* How unit [OFF, ...) of a cluster with entry E/BM maps; sets type and host. */
static int classify(struct qcow2 *s, uint64_t off, uint64_t e, uint64_t bm, int *type,
                    uint64_t *host)
{
    uint64_t in = off & (s->cluster_size - 1), h = e & QCOW2_OFFSET_MASK;

    *host = 0;
    if (e & QCOW2_COMPRESSED) {
        *type = QC_COMPRESSED;
        *host = e;
        return 0;
    }
    if (s->ext_l2) {
        unsigned sc = (unsigned)(in >> s->sc_bits);
        bool a = (bm >> sc) & 1, z = (bm >> (32 + sc)) & 1;

        if (a && z)
            return vdisk_error(EIO, "%s: subcluster at %llu is both allocated and zero",
                               s->node->path, (unsigned long long)off);
        if (!a) {
            *type = z ? QC_ZERO : QC_UNALLOC;
            return 0;
        }
        if (!h)
            return vdisk_error(EIO, "%s: allocated subcluster at %llu has no cluster",
                               s->node->path, (unsigned long long)off);
    } else if (s->version >= 3 && (e & QCOW2_ZERO)) {
        *type = QC_ZERO;
        return 0;
    } else if (!h) {
        *type = QC_UNALLOC;
        return 0;
    }
    if (h & (s->cluster_size - 1) || h >= s->file_size)
        return vdisk_error(EIO, "%s: cluster at guest %llu maps to invalid offset %llu",
                           s->node->path, (unsigned long long)off, (unsigned long long)h);
    *type = QC_DATA;
    *host = h + in;
    return 0;
}

/*
 * Map [OFF, OFF+LEN) as far as it maps alike, within one L2 table. SHARED:
 * the lock is held shared, so change nothing: -EAGAIN when the table is not cached.
 */
static int map_range(struct qcow2 *s, uint64_t off, uint64_t len, struct qc_map *m, bool shared)
{
    uint64_t l1i = l1_index(s, off), unit = 1ull << s->sc_bits;
    uint64_t table_end = (l1i + 1) << (s->cluster_bits + s->l2_bits);
    struct qcow2_table *t;
    uint64_t pos = off, end = off + len;
    int r = shared ? qcow2_l2_peek(s, l1i, &t) : qcow2_l2_load(s, l1i, &t);

    if (r < 0)
        return r;
    if (end > table_end)
        end = table_end;
    if (!t) {
        m->type = QC_UNALLOC;
        m->host = 0;
        m->len = end - off;
        return 0;
    }
    while (pos < end) {
        uint64_t e, bm, host, next = (pos | (unit - 1)) + 1;
        int type = QC_UNALLOC;

        l2_get(s, t, l2_index(s, pos), &e, &bm);
        r = classify(s, pos, e, bm, &type, &host);
        if (r < 0)
            return r;
        if (pos == off) {
            m->type = type;
            m->host = host;
        } else if (type != m->type || type == QC_COMPRESSED ||
                   (type == QC_DATA && host != m->host + (pos - off))) {
            break;
        }
        if (type == QC_COMPRESSED)
            next = (pos | (s->cluster_size - 1)) + 1;
        pos = next < end ? next : end;
    }
    m->len = pos - off;
    return 0;
}

/* Read one mapped run M of guest bytes at OFF. */
static int read_run(struct qcow2 *s, uint8_t *buf, const struct qc_map *m, uint64_t off)
{
    switch (m->type) {
    case QC_DATA:
        if (s->crypt)
            return qcow2_crypt_read(s, buf, m->len, m->host);
        return vdisk_file_pread(s->file, buf, m->len, m->host);
    case QC_ZERO:
        memset(buf, 0, m->len);
        return 0;
    case QC_UNALLOC:
        return vdisk_node_read_backing(s->node, buf, m->len, off);
    default:
        return qcow2_read_compressed(s, m->host, buf, off & (s->cluster_size - 1), m->len);
    }
}

/*
 * Read guest bytes; LOCKED when the caller holds s->lock exclusive. Otherwise
 * the lock is taken shared for lookup and I/O, exclusive on a cache miss.
 */
static int do_read(struct qcow2 *s, uint8_t *buf, uint64_t len, uint64_t off, bool locked)
{
    while (len > 0) {
        struct qc_map m;
        int r;

        if (locked) {
            r = map_range(s, off, len, &m, false);
        } else {
            pthread_rwlock_rdlock(&s->lock);
            r = map_range(s, off, len, &m, true);
            if (r == -EAGAIN) {
                pthread_rwlock_unlock(&s->lock);
                qcow2_lock_excl(s);
                r = map_range(s, off, len, &m, false);
            }
        }
        if (r == 0)
            r = read_run(s, buf, &m, off);
        if (!locked)
            pthread_rwlock_unlock(&s->lock);
        if (r < 0)
            return r;
        buf += m.len;
        off += m.len;
        len -= m.len;
    }
    return 0;
}

int qcow2_read(struct vdisk_node *node, void *buf, size_t len, uint64_t off)
{
    return do_read(node->priv, buf, len, off, false);
}

/* With lazy refcounts, set the dirty bit before the first metadata change. */
int qcow2_mark_dirty(struct qcow2 *s)
{
    int r;

    if (!s->lazy || s->dirty_marked)
        return 0;
    r = qcow2_write_header_u64(s, QCOW2_HDR_INCOMPAT, s->incompat | QCOW2_INCOMPAT_DIRTY);
    if (r == 0)
        r = qcow2_sync(s);
    if (r == 0)
        s->dirty_marked = true;
    return r;
}

static void l1_set(struct qcow2 *s, uint64_t l1i, uint64_t e)
{
    s->l1[l1i] = e;
    qcow2_overlap_note(s, e & QCOW2_OFFSET_MASK, "L2 table");
    if (s->l1_dirty_lo >= s->l1_dirty_hi) {
        s->l1_dirty_lo = l1i;
        s->l1_dirty_hi = l1i + 1;
    } else {
        if (l1i < s->l1_dirty_lo)
            s->l1_dirty_lo = l1i;
        if (l1i + 1 > s->l1_dirty_hi)
            s->l1_dirty_hi = l1i + 1;
    }
}

/*
 * The L2 table of L1I, ready to be changed: allocated when missing, copied
 * when shared with a snapshot (the old copy loses a reference after flush).
 */
int qcow2_l2_for_write(struct qcow2 *s, uint64_t l1i, struct qcow2_table **tp)
{
    uint64_t e = s->l1[l1i], old = e & QCOW2_OFFSET_MASK, noff;
    struct qcow2_table *t = NULL;
    uint8_t *copy = NULL;
    int r;

    if (old && (e & QCOW2_COPIED))
        return qcow2_l2_load(s, l1i, tp);
    if (old) {
        r = qcow2_l2_load(s, l1i, &t);
        if (r < 0)
            return r;
        copy = malloc(s->cluster_size);
        if (!copy)
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        memcpy(copy, t->buf, s->cluster_size);
    }
    r = qcow2_alloc_cluster(s, &noff);
    if (r < 0)
        goto out;
    r = qcow2_cache_take(s, &s->l2c, l1i, l2_writeback, &t);
    if (r < 0) {
        qcow2_rc_update(s, noff >> s->cluster_bits, -1);
        goto out;
    }
    qcow2_cache_assign(&s->l2c, t, l1i, noff);
    if (copy)
        memcpy(t->buf, copy, s->cluster_size);
    else
        memset(t->buf, 0, s->cluster_size);
    t->dirty = true;
    l1_set(s, l1i, noff | QCOW2_COPIED);
    if (old)
        r = qcow2_queue_free(s, old, s->cluster_size);
    *tp = t;
out:
    free(copy);
    return r;
}

/* Host bytes an entry holds (to release): a cluster, or a compressed run. */
int qcow2_free_entry(struct qcow2 *s, uint64_t e)
{
    if (e & QCOW2_COMPRESSED) {
        unsigned x = 62 - (s->cluster_bits - 8);
        uint64_t host = e & ((1ull << x) - 1);
        uint64_t nsec = ((e >> x) & ((1ull << (s->cluster_bits - 8)) - 1)) + 1;

        return qcow2_queue_free(s, host & ~511ull, nsec * 512);
    }
    if (e & QCOW2_OFFSET_MASK)
        return qcow2_queue_free(s, e & QCOW2_OFFSET_MASK, s->cluster_size);
    return 0;
}

/* Note a new cluster HOST being filled for guest cluster GUEST; false if out of memory. */
static bool inflight_add(struct qcow2 *s, uint64_t guest, uint64_t host)
{
    bool ok = true;

    pthread_mutex_lock(&s->inflight_lock);
    if (s->ninflight == s->cap_inflight) {
        unsigned cap = s->cap_inflight ? 2 * s->cap_inflight : 16;
        struct qcow2_inflight *p = realloc(s->inflight, cap * sizeof(*p));

        if (p) {
            s->inflight = p;
            s->cap_inflight = cap;
        }
        ok = p != NULL;
    }
    if (ok)
        s->inflight[s->ninflight++] = (struct qcow2_inflight){guest, host};
    pthread_mutex_unlock(&s->inflight_lock);
    return ok;
}

static void inflight_del(struct qcow2 *s, uint64_t host)
{
    pthread_mutex_lock(&s->inflight_lock);
    for (unsigned i = 0; i < s->ninflight; i++) {
        if (s->inflight[i].host == host) {
            s->inflight[i] = s->inflight[--s->ninflight];
            break;
        }
    }
    pthread_cond_broadcast(&s->inflight_done);
    pthread_mutex_unlock(&s->inflight_lock);
}

static bool inflight_has(struct qcow2 *s, uint64_t guest)
{
    for (unsigned i = 0; i < s->ninflight; i++)
        if (s->inflight[i].guest == guest)
            return true;
    return false;
}

/*
 * Another write is filling a new cluster for GUEST: wait for it without
 * s->lock (held exclusive on entry and on return), then -EAGAIN to start over.
 */
static int inflight_wait(struct qcow2 *s, uint64_t guest)
{
    pthread_mutex_lock(&s->inflight_lock);
    if (!inflight_has(s, guest)) {
        pthread_mutex_unlock(&s->inflight_lock);
        return 0;
    }
    pthread_rwlock_unlock(&s->lock);
    while (inflight_has(s, guest))
        pthread_cond_wait(&s->inflight_done, &s->inflight_lock);
    pthread_mutex_unlock(&s->inflight_lock);
    qcow2_lock_excl(s);
    return -EAGAIN;
}

/*
 * Write SRC to [LO, HI) of the cluster at host offset H; with ZERO, first zero
 * the whole cluster through the file system (much cheaper than writing a
 * cluster of zero buffers, most of all with O_DIRECT).
 */
static int fill_cluster(struct qcow2 *s, const uint8_t *src, uint64_t lo, uint64_t hi, uint64_t H,
                        bool zero)
{
    int r = zero ? vdisk_file_zero_alloc(s->file, H, s->cluster_size) : 0;

    if (r == -EOPNOTSUPP || r == -ENOTSUP) { /* no such fallocate here: write the zeroes */
        uint8_t *z = qcow2_alloc_buf(s->cluster_size);

        if (!z)
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        memset(z, 0, s->cluster_size);
        r = vdisk_file_pwrite(s->file, z, s->cluster_size, H);
        free(z);
    }
    if (r == 0)
        r = s->crypt ? qcow2_crypt_write(s, src, hi - lo, H + lo)
                     : vdisk_file_pwrite(s->file, src, hi - lo, H + lo);
    return r;
}

/*
 * Write [OFF, OFF+LEN) inside one cluster that cannot be written in place:
 * allocate (unless the cluster is ours already), copy the old contents around
 * the new bytes, write, then point the L2 entry at it. Locked.
 */
static int write_alloc(struct qcow2 *s, const uint8_t *buf, uint64_t len, uint64_t off)
{
    uint64_t cs = s->cluster_size, coff = off & ~(cs - 1), a = off - coff, b = a + len;
    uint64_t l1i = l1_index(s, off), l2i = l2_index(s, off);
    uint64_t e = 0, bm = 0, host, H, lo = 0, hi = cs, nbm = 0;
    bool reuse, old_data, zero_cow = false;
    struct qcow2_table *t;
    uint8_t *bounce = NULL;
    const uint8_t *src = buf;
    int r = inflight_wait(s, off >> s->cluster_bits);

    if (r == 0)
        r = qcow2_mark_dirty(s);
    if (r < 0)
        return r;
    r = qcow2_l2_load(s, l1i, &t);
    if (r < 0)
        return r;
    if (t)
        l2_get(s, t, l2i, &e, &bm);
    host = (e & QCOW2_COMPRESSED) ? 0 : e & QCOW2_OFFSET_MASK;
    reuse = host && (e & QCOW2_COPIED);
    old_data = (e & QCOW2_COMPRESSED) || (host && !reuse);
    if (host && (host & (cs - 1) || host >= s->file_size || (reuse && hits_metadata(s, host))))
        return qcow2_corrupt(s, "cluster at guest %llu maps to invalid offset %llu",
                             (unsigned long long)coff, (unsigned long long)host);
    if (s->ext_l2 && !old_data) {
        unsigned sa = (unsigned)(a >> s->sc_bits);
        unsigned sb = (unsigned)((b + (1ull << s->sc_bits) - 1) >> s->sc_bits);

        lo = (uint64_t)sa << s->sc_bits;
        hi = (uint64_t)sb << s->sc_bits;
        nbm = (bm | sc_mask(sa, sb)) & ~(sc_mask(sa, sb) << 32);
    } else if (s->ext_l2) {
        nbm = 0xffffffffull;
    } else if (reuse && !(s->version >= 3 && (e & QCOW2_ZERO))) {
        lo = a;
        hi = b;
    } else if ((a || b < cs) && ((s->version >= 3 && (e & QCOW2_ZERO)) ||
                                 (!(e & QCOW2_COMPRESSED) && !host && !s->node->backing))) {
        /* what surrounds the new bytes reads as zeroes: zero it with fallocate, not buffers */
        zero_cow = !s->file->is_block_device && !s->crypt; /* zeroes must be encrypted */
        if (zero_cow) {
            lo = a;
            hi = b;
        }
    }
    if (s->crypt) { /* whole 512-byte sectors: each is encrypted as one */
        lo &= ~511ull;
        hi = (hi + 511) & ~511ull;
    }
    if (lo != a || hi != b) {
        bounce = qcow2_alloc_buf(hi - lo);
        if (!bounce)
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        if (a > lo)
            r = do_read(s, bounce, a - lo, coff + lo, true);
        if (r == 0 && hi > b)
            r = do_read(s, bounce + (b - lo), hi - b, coff + b, true);
        if (r < 0)
            goto out;
        memcpy(bounce + (a - lo), buf, len);
        src = bounce;
    }
    r = qcow2_l2_for_write(s, l1i, &t);
    if (r < 0)
        goto out;
    if (reuse) {
        H = host;
    } else {
        r = qcow2_alloc_cluster(s, &H);
        if (r < 0)
            goto out;
    }
    if (reuse || !inflight_add(s, off >> s->cluster_bits, H)) { /* written under the lock */
        r = fill_cluster(s, src, lo, hi, H, zero_cow);
        if (r == 0)
            l2_set(s, t, l2i, H | QCOW2_COPIED, nbm);
        else if (!reuse)
            qcow2_rc_update(s, H >> s->cluster_bits, -1);
        if (r == 0 && old_data)
            r = qcow2_free_entry(s, e);
        goto out;
    }
    /*
     * A new cluster nobody references yet: write it without the lock, so that
     * allocating writes overlap, then link it if the entry did not change
     * meanwhile (else give it back and let the caller start over).
     */
    pthread_rwlock_unlock(&s->lock);
    r = fill_cluster(s, src, lo, hi, H, zero_cow);
    qcow2_lock_excl(s);
    if (r == 0 && (s->l1[l1i] & QCOW2_COPIED))
        r = qcow2_l2_load(s, l1i, &t);
    else if (r == 0)
        t = NULL;
    if (r == 0 && t) {
        uint64_t e2, bm2;

        l2_get(s, t, l2i, &e2, &bm2);
        if (e2 != e || bm2 != bm)
            t = NULL;
    }
    if (r < 0 || !t) {
        qcow2_rc_update(s, H >> s->cluster_bits, -1); /* never referenced */
        if (r == 0)
            r = -EAGAIN;
        goto out_inflight;
    }
    l2_set(s, t, l2i, H | QCOW2_COPIED, nbm);
    if (old_data)
        r = qcow2_free_entry(s, e);
out_inflight:
    inflight_del(s, H); /* linked (or given back): waiters may look again */
out:
    free(bounce);
    return r;
}

/*
 * Write whole clusters [OFF, OFF+N*cs) that hold nothing yet (unallocated or
 * plain zero, no subclusters) into new clusters that lie one after another,
 * with one pwrite, as write_alloc does for one. Returns how many clusters it
 * wrote (at least 2), 0 when the start doesn't suit (write_alloc's turn), or
 * -EAGAIN after a race. Locked, within one L2 table.
 */
static int write_alloc_run(struct qcow2 *s, const uint8_t *buf, uint64_t n, uint64_t off)
{
    uint64_t cs = s->cluster_size, l1i = l1_index(s, off), l2i = l2_index(s, off);
    uint64_t guest = off >> s->cluster_bits, H = 0, k = 0, e, bm;
    struct qcow2_table *t;
    bool unlocked;
    int r;

    if (s->ext_l2 || n < 2)
        return 0;
    r = qcow2_mark_dirty(s);
    if (r == 0)
        r = qcow2_l2_for_write(s, l1i, &t);
    if (r < 0)
        return r;
    pthread_mutex_lock(&s->inflight_lock);
    for (; k < n; k++) {
        l2_get(s, t, l2i + k, &e, &bm);
        if ((e != 0 && !(s->version >= 3 && e == QCOW2_ZERO)) || inflight_has(s, guest + k))
            break;
    }
    pthread_mutex_unlock(&s->inflight_lock);
    if (k < 2)
        return 0;
    for (uint64_t i = 0; i < k; i++) {
        uint64_t h;

        r = qcow2_alloc_cluster(s, &h);
        if (r < 0 || (i > 0 && h != H + i * cs)) {
            if (r == 0)
                qcow2_rc_update(s, h >> s->cluster_bits, -1); /* not next to the others */
            if (i < 2) {
                for (uint64_t j = 0; j < i; j++)
                    qcow2_rc_update(s, (H >> s->cluster_bits) + j, -1);
                return r < 0 ? r : 0;
            }
            k = i;
            break;
        }
        if (i == 0)
            H = h;
    }
    /* announce the new clusters, then fill them without the lock */
    unlocked = true;
    for (uint64_t i = 0; i < k && unlocked; i++) {
        if (!inflight_add(s, guest + i, H + i * cs)) {
            for (uint64_t j = 0; j < i; j++)
                inflight_del(s, H + j * cs);
            unlocked = false;
        }
    }
    if (unlocked)
        pthread_rwlock_unlock(&s->lock);
    r = s->crypt ? qcow2_crypt_write(s, buf, k * cs, H)
                 : vdisk_file_pwrite_alloc(s->file, buf, k * cs, H);
    if (unlocked)
        qcow2_lock_excl(s);
    t = NULL;
    if (r == 0 && (s->l1[l1i] & QCOW2_COPIED))
        r = qcow2_l2_load(s, l1i, &t);
    for (uint64_t i = 0; r == 0 && t && i < k; i++) {
        l2_get(s, t, l2i + i, &e, &bm);
        if (e != 0 && !(s->version >= 3 && e == QCOW2_ZERO))
            t = NULL; /* changed meanwhile: give everything back, start over */
    }
    for (uint64_t i = 0; i < k; i++) {
        if (r == 0 && t)
            l2_set(s, t, l2i + i, (H + i * cs) | QCOW2_COPIED, 0);
        else
            qcow2_rc_update(s, (H >> s->cluster_bits) + i, -1); /* never referenced */
        if (unlocked)
            inflight_del(s, H + i * cs);
    }
    if (r < 0)
        return r;
    return t ? (int)k : -EAGAIN;
}

/*
 * Host offset for an in-place write of [OFF, OFF+LEN) in one cluster, or 0.
 * SHARED as for map_range (-EAGAIN when the L2 table is not cached).
 */
static int in_place(struct qcow2 *s, uint64_t off, uint64_t len, uint64_t *hostp, bool shared)
{
    uint64_t e, bm, h, in = off & (s->cluster_size - 1);
    struct qcow2_table *t;
    int r;

    *hostp = 0;
    if (!(s->l1[l1_index(s, off)] & QCOW2_COPIED))
        return 0;
    r = shared ? qcow2_l2_peek(s, l1_index(s, off), &t) : qcow2_l2_load(s, l1_index(s, off), &t);
    if (r < 0 || !t)
        return r;
    l2_get(s, t, l2_index(s, off), &e, &bm);
    h = e & QCOW2_OFFSET_MASK;
    if ((e & (QCOW2_COPIED | QCOW2_COMPRESSED)) != QCOW2_COPIED || !h)
        return 0;
    if (h & (s->cluster_size - 1) || h >= s->file_size || hits_metadata(s, h))
        return qcow2_corrupt(s, "cluster at guest %llu maps to invalid offset %llu",
                             (unsigned long long)off, (unsigned long long)h);
    if (s->ext_l2) {
        unsigned sa = (unsigned)(in >> s->sc_bits);
        unsigned sb = (unsigned)((in + len + (1ull << s->sc_bits) - 1) >> s->sc_bits);
        uint64_t m = sc_mask(sa, sb);

        if ((bm & m) != m)
            return 0;
    } else if (s->version >= 3 && (e & QCOW2_ZERO)) {
        return 0;
    }
    *hostp = h + in;
    return 0;
}

int qcow2_write(struct vdisk_node *node, const void *buf, size_t len, uint64_t off, unsigned flags)
{
    struct qcow2 *s = node->priv;
    const uint8_t *p = buf;
    int r = 0;

    if (s->corrupt)
        return qcow2_refuse_corrupt(s);
    while (len > 0 && r == 0) {
        uint64_t n = s->cluster_size - (off & (s->cluster_size - 1)), host;

        if (n > len)
            n = len;
        pthread_rwlock_rdlock(&s->lock);
        r = in_place(s, off, n, &host, true);
        if (r == 0 && host && s->crypt && ((host | n) & 511))
            host = 0; /* part of a sector: read, merge, encrypt under the lock (write_alloc) */
        if (r == 0 && host) {
            /* extend over clusters that follow on disk */
            uint64_t h2;

            while (n < len) {
                uint64_t m = len - n < s->cluster_size ? len - n : s->cluster_size;

                if (in_place(s, off + n, m, &h2, true) < 0 || h2 != host + n)
                    break;
                n += m;
            }
            r = s->crypt ? qcow2_crypt_write(s, p, n, host)
                         : vdisk_file_pwrite(s->file, p, n, host);
            pthread_rwlock_unlock(&s->lock);
        } else {
            pthread_rwlock_unlock(&s->lock);
            qcow2_lock_excl(s);
            r = in_place(s, off, n, &host, false);
            if (r == 0 && host && s->crypt && ((host | n) & 511))
                host = 0;
            if (r == 0 && host) {
                r = s->crypt ? qcow2_crypt_write(s, p, n, host)
                             : vdisk_file_pwrite(s->file, p, n, host);
            } else if (r == 0 && n == s->cluster_size && len >= 2 * n) {
                /* whole clusters: allocate a run of them at once, to the L2 table's end */
                uint64_t left = ((1ull << s->l2_bits) - l2_index(s, off)) << s->cluster_bits;
                uint64_t want = (len < left ? len : left) >> s->cluster_bits;

                r = write_alloc_run(s, p, want, off);
                if (r > 0)
                    n = (uint64_t)r << s->cluster_bits;
                if (r == 0)
                    r = write_alloc(s, p, n, off);
                r = r > 0 ? 0 : r;
            } else if (r == 0) {
                r = write_alloc(s, p, n, off);
            }
            pthread_rwlock_unlock(&s->lock);
            if (r == -EAGAIN) { /* raced with another change of this cluster: look again */
                r = 0;
                continue;
            }
        }
        p += n;
        off += n;
        len -= n;
    }
    if (r == 0 && (flags & VDISK_WRITE_FUA))
        r = qcow2_flush(node);
    return r;
}

/* Take s->lock exclusive. */
void qcow2_lock_excl(struct qcow2 *s)
{
    pthread_rwlock_wrlock(&s->lock);
}

/*
 * With s->lock exclusive (so no new pins): wait until no queue I/O holds a
 * pin, before changing or freeing a mapping such I/O may use.
 */
void qcow2_wait_pins(struct qcow2 *s)
{
    if (atomic_load(&s->pins) == 0)
        return;
    pthread_mutex_lock(&s->pin_lock);
    while (atomic_load(&s->pins) > 0)
        pthread_cond_wait(&s->pin_done, &s->pin_lock);
    pthread_mutex_unlock(&s->pin_lock);
}

/*
 * How many bytes of [OFF, OFF+LEN) can be written in place from the first
 * on, as one run of host bytes starting at *HOST. Shared lock (or
 * exclusive): -EAGAIN when an L2 table is not cached.
 */
static int in_place_run(struct qcow2 *s, uint64_t off, uint64_t len, uint64_t *host, uint64_t *run)
{
    uint64_t n = 0, h;
    int r = 0;

    while (n < len) {
        uint64_t pos = off + n, in = pos & (s->cluster_size - 1);
        uint64_t m = s->cluster_size - in < len - n ? s->cluster_size - in : len - n;

        r = in_place(s, pos, m, &h, true);
        if (r < 0 || !h || (n && h != *host + n))
            break;
        if (n == 0)
            *host = h;
        n += m;
    }
    *run = n;
    return n ? 0 : r;
}

/* How many bytes from OFF can NOT be written in place (to the first cluster that can). */
static uint64_t not_in_place_run(struct qcow2 *s, uint64_t off, uint64_t len)
{
    uint64_t n = 0, h;

    while (n < len) {
        uint64_t pos = off + n, in = pos & (s->cluster_size - 1);
        uint64_t m = s->cluster_size - in < len - n ? s->cluster_size - in : len - n;

        if (n && in_place(s, pos, m, &h, true) == 0 && h)
            break;
        n += m;
    }
    return n;
}

/* The answer for a write at OFF, with s->lock held shared. */
static int map_write(struct qcow2 *s, uint64_t off, uint64_t len, struct vdisk_map *m)
{
    uint64_t run = 0;
    int r = s->crypt ? 0 : in_place_run(s, off, len, &m->host, &run);

    if (r < 0)
        return r;
    if (run) {
        m->type = VDISK_MAP_DATA;
        m->len = run;
    } else {
        m->type = VDISK_MAP_OTHER; /* allocation, copy-on-write: qcow2_write */
        m->len = not_in_place_run(s, off, len);
    }
    return 0;
}

/* The answer for a read at OFF; SHARED as for map_range. */
static int map_read(struct qcow2 *s, uint64_t off, uint64_t len, struct vdisk_map *m, bool shared)
{
    static const enum vdisk_map_type types[] = {
        [QC_UNALLOC] = VDISK_MAP_UNALLOCATED,
        [QC_ZERO] = VDISK_MAP_ZERO,
        [QC_DATA] = VDISK_MAP_DATA,
        [QC_COMPRESSED] = VDISK_MAP_OTHER,
    };
    struct qc_map q;
    int r = map_range(s, off, len, &q, shared);

    if (r < 0)
        return r;
    m->type = types[q.type];
    if (q.type == QC_DATA && s->crypt)
        m->type = VDISK_MAP_OTHER; /* ciphertext: qcow2_read decrypts */
    m->len = q.len;
    m->host = q.type == QC_DATA ? q.host : 0;
    return 0;
}

/*
 * What lies at [OFF, OFF+LEN). A DATA answer holds a pin until
 * qcow2_release(): whatever would change or free that cluster waits for it
 * (qcow2_wait_pins). FUA writes go the slow way, which also makes the
 * metadata they depend on durable. NOWAIT: -EAGAIN rather than block.
 */
int qcow2_map(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags,
              struct vdisk_map *m)
{
    struct qcow2 *s = node->priv;
    bool write = flags & VDISK_MAP_WRITE;
    int r;

    if (write && s->corrupt)
        return qcow2_refuse_corrupt(s);
    if (write && (flags & VDISK_MAP_FUA)) {
        m->type = VDISK_MAP_OTHER;
        m->len = len;
        return 0;
    }
    if (flags & VDISK_MAP_NOWAIT) {
        if (pthread_rwlock_tryrdlock(&s->lock))
            return -EAGAIN;
    } else {
        pthread_rwlock_rdlock(&s->lock);
    }
    r = write ? map_write(s, off, len, m) : map_read(s, off, len, m, true);
    if (r == -EAGAIN && !(flags & VDISK_MAP_NOWAIT)) {
        /* an L2 table to load: exclusive, then answer as under the shared lock */
        pthread_rwlock_unlock(&s->lock);
        qcow2_lock_excl(s);
        r = write ? 0 : map_read(s, off, len, m, false);
        if (write) {
            struct qcow2_table *t;

            r = qcow2_l2_load(s, l1_index(s, off), &t);
            if (r == 0)
                r = map_write(s, off, len, m);
        }
    }
    /* encrypted data, whole sectors: to a caller that decrypts it (the engine, transform) */
    if (r == 0 && !write && s->crypt && m->type == VDISK_MAP_OTHER && m->host &&
        (flags & VDISK_MAP_TRANSFORM) && !((off | m->len) & 511)) {
        m->type = VDISK_MAP_DATA;
        m->transform = true;
    }
    if (r == 0 && m->type == VDISK_MAP_DATA) {
        m->file = s->file;
        m->handle = 1;
        atomic_fetch_add(&s->pins, 1);
    }
    pthread_rwlock_unlock(&s->lock);
    return r;
}

/* The I/O of a DATA mapping from qcow2_map() is done. */
void qcow2_release(struct vdisk_node *node, const struct vdisk_map *m)
{
    struct qcow2 *s = node->priv;

    (void)m;
    if (atomic_fetch_sub(&s->pins, 1) == 1) {
        pthread_mutex_lock(&s->pin_lock);
        pthread_cond_broadcast(&s->pin_done);
        pthread_mutex_unlock(&s->pin_lock);
    }
}
