/* SPDX-License-Identifier: MIT */
/*
 * The temporary snapshot overlay (vdisk open/serve --snapshot): a sparse,
 * unlinked file the size of the disk plus an in-memory bitmap at 4 KiB
 * granularity. A set bit: the block's bytes are in the overlay file at the
 * same offset; unset: the base's (the backing node). It has no on-disk
 * metadata because nothing of it outlives the process: a whole-block write
 * goes straight to the file (no copy, no allocation table), only a write
 * covering part of a block not yet in the overlay copies that block from the
 * base first.
 *
 * Ordering: a bit is set only once its block's bytes are in the file (the
 * engine's I/O completed: vdisk_map.written, or our own pwrite), with release
 * semantics; readers load it with acquire. A read racing a first write sees
 * the base's bytes or the new ones, never the overlay's hole.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "node.h"
#include "snapshot-overlay.h"

#define BLOCK       4096u
#define STRIPES     64u            /* locks for partial-block copies, by block number */
#define MAX_BITMAP  (512ull << 20) /* bytes of bitmap: a 16 TiB disk */
#define WORD_BLOCKS 64u

struct snap {
    _Atomic uint64_t *bits;
    uint64_t nblocks;
    /* read side: a partial-block copy; write side: zeroing (which sets bits without data) */
    pthread_rwlock_t zlock;
    pthread_mutex_t stripe[STRIPES];
};

/* Is block B in the overlay? */
static bool block_set(struct snap *s, uint64_t b)
{
    return atomic_load_explicit(&s->bits[b / WORD_BLOCKS], memory_order_acquire) &
           (1ull << (b % WORD_BLOCKS));
}

/* Mark blocks [B, E) as in the overlay (their bytes are in the file already). */
static void set_blocks(struct snap *s, uint64_t b, uint64_t e)
{
    while (b < e) {
        uint64_t w = b / WORD_BLOCKS, lo = b % WORD_BLOCKS;
        uint64_t n = e - b < WORD_BLOCKS - lo ? e - b : WORD_BLOCKS - lo;
        uint64_t mask = n == 64 ? ~0ull : ((1ull << n) - 1) << lo;

        atomic_fetch_or_explicit(&s->bits[w], mask, memory_order_release);
        b += n;
    }
}

/* First block of [OFF, ...) and the end of the last block wholly inside [OFF, END) (the disk's
 * short last block counts as whole). */
static void whole_blocks(const struct vdisk_node *node, uint64_t off, uint64_t end, uint64_t *b,
                         uint64_t *e)
{
    *b = (off + BLOCK - 1) / BLOCK;
    *e = end == node->size ? (end + BLOCK - 1) / BLOCK : end / BLOCK;
    if (*e < *b)
        *e = *b;
}

/* Open: size the overlay file like the base, and an empty bitmap. */
static int snap_open(struct vdisk_node *node)
{
    struct snap *s;
    uint64_t words;
    int r;

    if (!node->backing)
        return vdisk_error(EINVAL, "a snapshot overlay needs a base");
    node->size = node->backing->size;
    words = (node->size + (uint64_t)BLOCK * WORD_BLOCKS - 1) / ((uint64_t)BLOCK * WORD_BLOCKS);
    if (words * 8 > MAX_BITMAP)
        return vdisk_error(EFBIG,
                           "disk of %llu bytes is too large for a snapshot (its bitmap would "
                           "take %llu MiB of memory; at most %llu MiB, a 16 TiB disk)",
                           (unsigned long long)node->size, (unsigned long long)(words * 8 >> 20),
                           (unsigned long long)(MAX_BITMAP >> 20));
    s = calloc(1, sizeof(*s));
    if (s)
        s->bits = calloc(words ? words : 1, sizeof(*s->bits));
    if (!s || !s->bits) {
        if (s)
            free(s);
        return vdisk_error(ENOMEM, "out of memory for the snapshot bitmap");
    }
    r = vdisk_file_truncate(node->file, node->size); /* sparse: holes cost nothing */
    if (r < 0) {
        free(s->bits);
        free(s);
        return vdisk_error_prefix(-r, "sizing the overlay file");
    }
    s->nblocks = (node->size + BLOCK - 1) / BLOCK;
    vdisk_rwlock_init(&s->zlock);
    for (unsigned i = 0; i < STRIPES; i++)
        pthread_mutex_init(&s->stripe[i], NULL);
    node->priv = s;
    return 0;
}

/* Free the bitmap; the file goes with its last descriptor. */
static void snap_close(struct vdisk_node *node)
{
    struct snap *s = node->priv;

    if (!s)
        return;
    pthread_rwlock_destroy(&s->zlock);
    for (unsigned i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&s->stripe[i]);
    free(s->bits);
    free(s);
    node->priv = NULL;
}

/*
 * Reads: a run of set blocks is DATA in the overlay file at the same offset,
 * a run of unset ones UNALLOCATED (the base). Writes: DATA over set blocks and
 * over unset blocks the write covers whole (their bits are set at release,
 * once written); an unset block covered in part goes through write() (copy).
 */
static int snap_map(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags,
                    struct vdisk_map *m)
{
    struct snap *s = node->priv;
    uint64_t end = off + len, b = off / BLOCK, p = off;
    bool write = flags & VDISK_MAP_WRITE;
    bool first = block_set(s, b), direct = first, fresh = false;

    /* each block's bit is loaded once: another thread may set it meanwhile */
    if (write) {
        while (p < end) {
            uint64_t cb = p / BLOCK, cs = cb * BLOCK;
            uint64_t ce = cs + BLOCK < node->size ? cs + BLOCK : node->size;
            bool set = cb == b ? first : block_set(s, cb), d = set || (cs >= off && ce <= end);

            if (cb == b)
                direct = d;
            else if (d != direct)
                break;
            fresh |= !set;
            p = ce;
        }
        if (p > end)
            p = end;
        m->len = p - off;
        if (direct) {
            m->type = VDISK_MAP_DATA;
            m->file = node->file;
            m->host = off;
            m->handle = fresh; /* release() sets the bits of what was written */
        } else {
            m->type = VDISK_MAP_UNALLOCATED; /* write() copies the block first */
        }
        return 0;
    }
    p = (b + 1) * BLOCK; /* the first block counts as loaded, even if set since */
    while (p < end && block_set(s, p / BLOCK) == first)
        p = (p / BLOCK + 1) * BLOCK;
    m->len = (p < end ? p : end) - off;
    if (first) {
        m->type = VDISK_MAP_DATA;
        m->file = node->file;
        m->host = off;
    } else {
        m->type = VDISK_MAP_UNALLOCATED;
    }
    return 0;
}

/* A write mapping is done with: if its bytes all reached the file, its whole blocks are ours. */
static void snap_release(struct vdisk_node *node, const struct vdisk_map *m)
{
    uint64_t b, e;

    if (!m->written)
        return; /* failed or never sent: the blocks still read from the base */
    whole_blocks(node, m->host, m->host + m->len, &b, &e);
    set_blocks(node->priv, b, e);
}

/* Write [OFF, OFF+LEN), inside block B, of an unset block: copy it from the base, merge BUF
 * (NULL: zeroes), write it whole, then set its bit. The caller holds the block's locks. */
static int copy_block(struct vdisk_node *node, uint64_t b, const uint8_t *buf, uint64_t len,
                      uint64_t off)
{
    uint64_t bs = b * BLOCK, blen = bs + BLOCK < node->size ? BLOCK : node->size - bs;
    uint8_t *tmp;
    int r;

    if (posix_memalign((void **)&tmp, BLOCK, BLOCK) != 0)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    r = vdisk_node_read_backing(node, tmp, blen, bs);
    if (r == 0) {
        if (buf)
            memcpy(tmp + (off - bs), buf, len);
        else
            memset(tmp + (off - bs), 0, len);
        r = vdisk_file_pwrite(node->file, tmp, blen, bs);
    }
    if (r == 0)
        set_blocks(node->priv, b, b + 1); /* after the bytes: a reader never sees the hole */
    free(tmp);
    return r;
}

/* Write BUF (NULL: zeroes) at [OFF, OFF+LEN) block by block; ZLOCKED: the caller holds zlock
 * for writing (no stripe locks then). */
static int write_blocks(struct vdisk_node *node, const uint8_t *buf, uint64_t len, uint64_t off,
                        bool zlocked)
{
    struct snap *s = node->priv;
    int r = 0;

    while (len > 0 && r == 0) {
        uint64_t b = off / BLOCK, bs = b * BLOCK;
        uint64_t be = bs + BLOCK < node->size ? bs + BLOCK : node->size;
        uint64_t n = be - off < len ? be - off : len;
        bool whole = off == bs && n == be - bs;

        if (block_set(s, b) || whole) {
            r = buf ? vdisk_file_pwrite(node->file, buf, n, off)
                    : vdisk_file_zero_range(node->file, off, n, true);
            if (r == 0 && whole)
                set_blocks(s, b, b + 1);
        } else {
            pthread_mutex_t *l = &s->stripe[b % STRIPES];

            if (!zlocked) {
                pthread_rwlock_rdlock(&s->zlock);
                pthread_mutex_lock(l);
            }
            /* again under the lock: another copy may have made it ours meanwhile */
            if (block_set(s, b))
                r = buf ? vdisk_file_pwrite(node->file, buf, n, off)
                        : vdisk_file_zero_range(node->file, off, n, true);
            else
                r = copy_block(node, b, buf, n, off);
            if (!zlocked) {
                pthread_mutex_unlock(l);
                pthread_rwlock_unlock(&s->zlock);
            }
        }
        if (buf)
            buf += n;
        off += n;
        len -= n;
    }
    return r;
}

/* Writes map() did not answer with DATA: partial blocks not yet in the overlay. */
static int snap_write(struct vdisk_node *node, const void *buf, size_t len, uint64_t off,
                      unsigned flags)
{
    (void)flags; /* FUA: nothing here outlives the process, see snap_flush */
    return write_blocks(node, buf, len, off, false);
}

/* Whole blocks of [OFF, OFF+LEN) read as zeroes from now on: punch them and set their bits. */
static int punch_blocks(struct vdisk_node *node, uint64_t off, uint64_t len, uint64_t *bp,
                        uint64_t *ep)
{
    uint64_t b, e, end;
    int r = 0;

    whole_blocks(node, off, off + len, &b, &e);
    end = e * BLOCK < node->size ? e * BLOCK : node->size;
    if (e > b)
        r = vdisk_file_punch_hole(node->file, b * BLOCK, end - b * BLOCK);
    if (r == 0)
        set_blocks(node->priv, b, e);
    *bp = b;
    *ep = e;
    return r;
}

/* Zeroes: whole blocks punched (no base bytes show through: their bits are set), the partial
 * blocks at either end written. */
static int snap_write_zeroes(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags)
{
    struct snap *s = node->priv;
    uint64_t b, e, end = off + len;
    int r;

    (void)flags;
    pthread_rwlock_wrlock(&s->zlock); /* no partial-block copy of these blocks in flight */
    r = punch_blocks(node, off, len, &b, &e);
    if (r == 0 && e == b) {
        r = write_blocks(node, NULL, len, off, true);
    } else if (r == 0) {
        if (off < b * BLOCK)
            r = write_blocks(node, NULL, b * BLOCK - off, off, true);
        if (r == 0 && e * BLOCK < end)
            r = write_blocks(node, NULL, end - e * BLOCK, e * BLOCK, true);
    }
    pthread_rwlock_unlock(&s->zlock);
    return r;
}

/* Discard: the whole blocks read as zeroes afterwards (allowed); partial ends are kept. */
static int snap_discard(struct vdisk_node *node, uint64_t off, uint64_t len)
{
    struct snap *s = node->priv;
    uint64_t b, e;
    int r;

    pthread_rwlock_wrlock(&s->zlock);
    r = punch_blocks(node, off, len, &b, &e);
    pthread_rwlock_unlock(&s->zlock);
    return r;
}

/*
 * Nothing to make durable: the overlay is unlinked and its bitmap is in memory,
 * so no crash can leave anything to read back. An fdatasync would only cost
 * (FUA writes and guest flushes call here).
 */
static int snap_flush(struct vdisk_node *node)
{
    (void)node;
    return 0;
}

/* Facts for vdisk info: how much the overlay holds. */
static int snap_get_info(struct vdisk_node *node, struct vdisk_info *info)
{
    struct snap *s = node->priv;
    uint64_t n = 0;

    for (uint64_t w = 0; w < (s->nblocks + WORD_BLOCKS - 1) / WORD_BLOCKS; w++)
        n += (uint64_t)__builtin_popcountll(atomic_load(&s->bits[w]));
    vdisk_info_add(info, "snapshot_blocks", "%llu", (unsigned long long)n);
    vdisk_info_add(info, "snapshot_block_size", "%u", BLOCK);
    return 0;
}

const struct vdisk_format vdisk_format_snapshot = {
    .name = "snapshot",
    .flags = VDISK_FORMAT_THREAD_SAFE,
    .caps = VDISK_CAP_THREAD_SAFE,
    .open = snap_open,
    .close = snap_close,
    .map = snap_map,
    .release = snap_release,
    .write = snap_write,
    .flush = snap_flush,
    .discard = snap_discard,
    .write_zeroes = snap_write_zeroes,
    .get_info = snap_get_info,
};
