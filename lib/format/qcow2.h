/* SPDX-License-Identifier: MIT */
/*
 * qcow2 internals shared by qcow2.c (header, open, create), qcow2-cache.c and
 * qcow2-refcount.c (metadata caches, refcounts, allocation), qcow2-cluster.c
 * (mapping and the data path), qcow2-compress.c (compressed clusters),
 * qcow2-zero.c (discard, write-zeroes), qcow2-flush.c (the ordered flush), qcow2-check.c (check
 * and repair) and qcow2-overlap.c (no data over metadata; the corrupt bit).
 *
 * Locking: s->lock (a writer-preferring rwlock) guards all metadata: L1, the
 * caches, the reftable, the free list. The image layer's reads and in-place
 * writes ask qcow2_map(): it looks the mapping up with the lock shared (a
 * trylock for the engine's NOWAIT maps), changing nothing but the clock bit,
 * and a DATA answer leaves holding a pin instead of the lock while the layer
 * (or io_uring) does the I/O; qcow2_release() drops it. Whatever changes or
 * frees the mapping of an allocated cluster (discard, zeroes, applying frees,
 * check) first waits, with the lock held exclusive, for the pins to drop
 * (qcow2_wait_pins). Cache misses, allocating writes, discard, flush and
 * check take the lock exclusive; an allocating write drops it while it fills
 * its new, unlinked cluster (listed in s->inflight so that check counts it),
 * then links it if nothing changed. The copy-on-write of a partial cluster
 * reads what lies below through the image layer (vdisk_node_read_backing).
 *
 * Durability order (see qcow2_flush_locked): data and refcount blocks, sync,
 * reftable, sync, L2 tables, sync, L1, sync; refcount drops only after that.
 */
#ifndef VDISK_QCOW2_H
#define VDISK_QCOW2_H

#include <endian.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "../format.h"
#include "bytes.h"
#include "overlap.h"

#define QCOW2_MAGIC            0x514649fbu
#define QCOW2_V2_HEADER        72
#define QCOW2_V3_HEADER        104
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_L1_BYTES     (32u << 20)
#define QCOW2_MAX_RT_BYTES     (8u << 20)
#define QCOW2_MAX_SNAPSHOTS    65536
#define QCOW2_MAX_BACKING_NAME 1023
#define QCOW2_MAX_FREES        8192 /* queued frees that force a flush */

#define QCOW2_INCOMPAT_DIRTY       (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT     (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE   (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2       (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN       0x1full
#define QCOW2_COMPAT_LAZY          (1ull << 0)

#define QCOW2_OFFSET_MASK    0x00fffffffffffe00ull /* L1 and L2 entries */
#define QCOW2_RT_OFFSET_MASK 0xfffffffffffffe00ull
#define QCOW2_COPIED         (1ull << 63)
#define QCOW2_COMPRESSED     (1ull << 62)
#define QCOW2_ZERO           1ull

#define QCOW2_EXT_END         0u
#define QCOW2_EXT_BACKING_FMT 0xe2792acau
#define QCOW2_EXT_FDE         0x0537be77u /* full disk encryption header pointer */

/* Header field offsets. */
#define QCOW2_HDR_RT_OFFSET 48
#define QCOW2_HDR_INCOMPAT  72
#define QCOW2_HDR_AUTOCLEAR 88

/* One cached metadata table (an L2 table or a refcount block). */
struct qcow2_table {
    uint64_t offset; /* in the image file */
    int64_t index;   /* L1 index or reftable index; -1 when free */
    uint8_t *buf;
    bool dirty, ref;
};

/* A small clock-replacement cache, indexed by table index. */
struct qcow2_cache {
    struct qcow2_table *t;
    unsigned n, hand;
    size_t size;   /* bytes per table */
    int32_t *slot; /* index -> entry, or -1 */
    uint64_t nslot;
};

/* A range of host bytes whose clusters lose one reference at the next flush. */
struct qcow2_free {
    uint64_t off, len;
};

struct qcow2 {
    struct vdisk_node *node;
    struct vdisk_file *file;
    pthread_rwlock_t lock;

    uint32_t version;
    unsigned cluster_bits;
    uint64_t cluster_size;
    unsigned l2_bits; /* log2 of entries per L2 table */
    unsigned l2_entry_bytes;
    bool ext_l2;
    unsigned sc_bits; /* log2 of the subcluster size (= cluster_bits without ext_l2) */
    unsigned refcount_order;
    unsigned rb_bits; /* log2 of entries per refcount block */
    uint64_t rc_max;
    unsigned compression; /* 0 zlib, 1 zstd */
    uint64_t incompat, compat, autoclear;

    uint64_t *l1; /* host order, padded to whole 512-byte sectors */
    uint32_t l1_size;
    uint64_t l1_offset;
    uint64_t l1_dirty_lo, l1_dirty_hi; /* dirty entries [lo, hi) */

    uint64_t *reftable; /* host order */
    uint64_t rt_size;   /* entries */
    uint64_t rt_offset;
    uint32_t rt_clusters;
    bool rt_dirty;

    uint32_t nb_snapshots;
    uint64_t snapshots_offset;

    struct qcow2_cache l2c, rbc;
    uint64_t free_hint; /* no free cluster below this index */
    uint64_t file_size; /* end of the highest cluster in use */
    struct qcow2_free *frees;
    size_t nfrees, cap_frees;

    bool lazy;         /* lazy refcounts: dirty bit set while open for writing */
    bool dirty_marked; /* the dirty bit is set on disk */

    char *backing_name; /* as the header names it */
    char *backing_fmt;  /* as the header states it; NULL when it does not */

    /* new clusters being filled without s->lock; changes hold both locks */
    struct qcow2_inflight {
        uint64_t guest, host; /* guest cluster index, host offset */
    } * inflight;
    unsigned ninflight, cap_inflight;
    pthread_mutex_t inflight_lock; /* waiting for an allocation to finish */
    pthread_cond_t inflight_done;

    /* vdisk_queue I/O in flight on mappings from qcow2_map: exclusive holders wait */
    _Atomic unsigned pins;
    pthread_mutex_t pin_lock;
    pthread_cond_t pin_done;

    /* encrypt.format=luks (qcow2-crypt.c): LUKS header clusters, the data cipher */
    uint32_t crypt_method;
    uint64_t fde_offset, fde_len;
    struct luks_cipher *crypt; /* NULL: not encrypted */
    char crypt_cipher[64];

    uint16_t *check_refs; /* during repair: clusters in use, not to be allocated */
    uint64_t check_nb;

    /* qcow2-overlap.c: metadata that no data may overwrite */
    struct overlap_set meta;      /* L2 tables and refcount blocks (and freed ones) */
    struct overlap_set snap_meta; /* snapshot table and snapshot L1 tables */
    bool meta_lost;               /* out of memory for meta: walk the tables */
    _Atomic bool corrupt;         /* marked corrupt: no writes until check -r all */
};

/* qcow2-cache.c */
int qcow2_cache_init(struct qcow2_cache *c, unsigned n, size_t size, uint64_t nslot);
void qcow2_cache_destroy(struct qcow2_cache *c);
int qcow2_cache_grow_slots(struct qcow2_cache *c, uint64_t nslot);
struct qcow2_table *qcow2_cache_find(struct qcow2_cache *c, uint64_t index);
struct qcow2_table *qcow2_cache_victim(struct qcow2_cache *c);
/* The cached entry for INDEX, else a victim written back with WRITEBACK (not yet assigned). */
int qcow2_cache_take(struct qcow2 *s, struct qcow2_cache *c, uint64_t index,
                     int (*writeback)(struct qcow2 *s, struct qcow2_table *t),
                     struct qcow2_table **tp);
void qcow2_cache_assign(struct qcow2_cache *c, struct qcow2_table *t, uint64_t index,
                        uint64_t offset);
void qcow2_cache_drop(struct qcow2_cache *c, struct qcow2_table *t);
void *qcow2_alloc_buf(size_t size);

/* qcow2-refcount.c */
uint64_t qcow2_rb_get(const uint8_t *b, uint64_t i, unsigned order);
void qcow2_rb_set(uint8_t *b, uint64_t i, unsigned order, uint64_t v);
int qcow2_rc_get(struct qcow2 *s, uint64_t idx, uint64_t *val);
int qcow2_rc_set(struct qcow2 *s, uint64_t idx, uint64_t val);
int qcow2_rc_update(struct qcow2 *s, uint64_t idx, int64_t delta);
int qcow2_alloc_cluster(struct qcow2 *s, uint64_t *off);
int qcow2_queue_free(struct qcow2 *s, uint64_t off, uint64_t len);
int qcow2_apply_frees(struct qcow2 *s);
int qcow2_flush_refcounts(struct qcow2 *s);
int qcow2_sync(struct qcow2 *s);

/* qcow2-cluster.c */
int qcow2_l2_load(struct qcow2 *s, uint64_t l1i, struct qcow2_table **tp);
/* The L2 table of L1I ready to change: allocated if missing, copied if shared. */
int qcow2_l2_for_write(struct qcow2 *s, uint64_t l1i, struct qcow2_table **tp);
/* Bytes [IN, IN+LEN) of the compressed cluster with L2 entry E, into BUF. */
int qcow2_read_compressed(struct qcow2 *s, uint64_t e, uint8_t *buf, uint64_t in, uint64_t len);
/* Queue the host bytes L2 entry E holds to be freed at the next flush. */
int qcow2_free_entry(struct qcow2 *s, uint64_t e);
int qcow2_l2_peek(struct qcow2 *s, uint64_t l1i, struct qcow2_table **tp);
int qcow2_flush_locked(struct qcow2 *s);
int qcow2_mark_dirty(struct qcow2 *s);
int qcow2_read(struct vdisk_node *node, void *buf, size_t len, uint64_t off);

/* qcow2-crypt.c */
int qcow2_crypt_open(struct qcow2 *s);
void qcow2_crypt_close(struct qcow2 *s);
int qcow2_crypt_read(struct qcow2 *s, uint8_t *buf, uint64_t len, uint64_t host);
int qcow2_crypt_write(struct qcow2 *s, const uint8_t *buf, uint64_t len, uint64_t host);
/* fmt->transform(): decrypt whole sectors read from HOST (the engine), or encrypt them. */
int qcow2_crypt_transform(struct vdisk_node *node, void *buf, size_t len, uint64_t off,
                          uint64_t host, bool write);
int qcow2_write(struct vdisk_node *node, const void *buf, size_t len, uint64_t off, unsigned flags);
int qcow2_flush(struct vdisk_node *node);
int qcow2_discard(struct vdisk_node *node, uint64_t off, uint64_t len);
int qcow2_write_zeroes(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags);
void qcow2_lock_excl(struct qcow2 *s);
void qcow2_wait_pins(struct qcow2 *s);
int qcow2_map(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags,
              struct vdisk_map *m);
void qcow2_release(struct vdisk_node *node, const struct vdisk_map *m);

/* qcow2-check.c */
int qcow2_check_locked(struct qcow2 *s, unsigned flags, struct vdisk_check_result *res);
int qcow2_check(struct vdisk_node *node, unsigned flags, struct vdisk_check_result *res);

/* qcow2-resize.c */
int qcow2_resize(struct vdisk_node *node, uint64_t size, unsigned flags);
/* qcow2-overlap.c */
void qcow2_overlap_note(struct qcow2 *s, uint64_t off, const char *what);
const char *qcow2_overlap_what(struct qcow2 *s, uint64_t off, uint64_t len);
int qcow2_overlap_build(struct qcow2 *s, bool snapshots);
int qcow2_corrupt(struct qcow2 *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int qcow2_refuse_corrupt(struct qcow2 *s);
int qcow2_overlap_check_alloc(struct qcow2 *s, uint64_t idx);
int qcow2_overlap_open_check(struct qcow2 *s);
int qcow2_overlap_table(struct qcow2 *s, uint64_t off, const char *what, uint64_t index);
bool qcow2_overlap_fixed(struct qcow2 *s, uint64_t off);
uint64_t qcow2_overlap_count(struct qcow2 *s, char *first, size_t size);
int qcow2_overlap_repaired(struct qcow2 *s);

/* qcow2.c */
int qcow2_write_header_u64(struct qcow2 *s, unsigned field, uint64_t v);

/* L1 index of guest offset OFF. */
static inline uint64_t l1_index(struct qcow2 *s, uint64_t off)
{
    return off >> (s->cluster_bits + s->l2_bits);
}

/* L2 index of guest offset OFF. */
static inline uint64_t l2_index(struct qcow2 *s, uint64_t off)
{
    return (off >> s->cluster_bits) & ((1ull << s->l2_bits) - 1);
}

/* Entry I of L2 table T (and its subcluster bitmap with extended L2). */
static inline void l2_get(struct qcow2 *s, const struct qcow2_table *t, uint64_t i, uint64_t *e,
                          uint64_t *bm)
{
    const uint8_t *p = t->buf + i * s->l2_entry_bytes;

    *e = get_be64(p);
    *bm = s->ext_l2 ? get_be64(p + 8) : 0;
}

/* Set entry I of L2 table T, marking it dirty. */
static inline void l2_set(struct qcow2 *s, struct qcow2_table *t, uint64_t i, uint64_t e,
                          uint64_t bm)
{
    uint8_t *p = t->buf + i * s->l2_entry_bytes;

    put_be64(p, e);
    if (s->ext_l2)
        put_be64(p + 8, bm);
    t->dirty = true;
}

/* Bits [A, B) of a 32-bit subcluster mask. */
static inline uint64_t sc_mask(unsigned a, unsigned b)
{
    return ((b >= 32 ? 0x100000000ull : (1ull << b)) - (1ull << a));
}

#endif
