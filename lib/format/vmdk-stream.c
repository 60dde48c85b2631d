/* SPDX-License-Identifier: MIT */
/*
 * Writing a streamOptimized extent as a true stream: every grain is zlib
 * compressed behind a grain marker (LBA, size) and appended; at flush the
 * grain tables follow (each behind a GT marker), then the directory (GD
 * marker), the footer (a copy of the header with the directory's place) and
 * the end-of-stream marker. The header says gdOffset = all ones.
 *
 * Writers compress in their own threads, without the lock; finished grains
 * wait in a small sorted set and leave it lowest LBA first, so the parallel
 * workers of `vdisk convert` still give grains in ascending order. A grain
 * written again is appended again (the table points at the newest copy).
 * A stream is not crash safe between flushes: its tail is rewritten.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#ifdef HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

#include "../error.h"
#include "vmdk.h"

#define PEND_HIGH_BYTES (32u << 20)
#define PEND_LOW_BYTES  (16u << 20)
#define PEND_HIGH_COUNT 4096u
#define PEND_LOW_COUNT  2048u
#define ZLEVEL          1 /* speed: a stream is made once, read many times */

/* A compressed grain ready to append: marker + data, padded to a sector. */
struct pgrain {
    uint64_t g;
    uint8_t *buf;
    uint32_t len; /* bytes to write (a multiple of 512); a raw grain: grain_bytes */
    bool raw;     /* written in parts: kept uncompressed until it leaves */
};

struct vmdk_stream {
    pthread_mutex_t pool_lock; /* guards the compressors not in use */
#ifdef HAVE_LIBDEFLATE
    struct libdeflate_compressor *pool[64];
#endif
    unsigned npool;
    uint64_t pos; /* where the next grain goes; the tail is written here */
    struct pgrain *p;
    unsigned n, cap;
    uint64_t bytes;
    bool dirty;
};

/* Index of grain G in the pending set, or where it would go (*FOUND). */
static unsigned find(const struct vmdk_stream *w, uint64_t g, bool *found)
{
    unsigned lo = 0, hi = w->n;

    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;

        if (w->p[mid].g < g)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < w->n && w->p[lo].g == g;
    return lo;
}

bool vmdk_stream_pending(struct vmdk_sparse *sp, uint64_t grain)
{
    bool found = false;

    if (sp->ws)
        find(sp->ws, grain, &found);
    return found;
}

int vmdk_stream_read_pending(struct vmdk_sparse *sp, uint64_t grain, uint8_t *buf)
{
    bool found;
    unsigned i;
    uLongf out = sp->grain_bytes;

    if (!sp->ws)
        return 0;
    i = find(sp->ws, grain, &found);
    if (!found)
        return 0;
    if (sp->ws->p[i].raw) {
        memcpy(buf, sp->ws->p[i].buf, sp->grain_bytes);
        return 1;
    }
    if (uncompress(buf, &out, sp->ws->p[i].buf + 12, get_le32(sp->ws->p[i].buf + 8)) != Z_OK)
        return vdisk_error(EIO, "%s: a pending grain does not decompress", sp->file->path);
    return 1;
}

#ifdef HAVE_LIBDEFLATE
/* A compressor from the pool (or a new one); NULL: no memory. */
static struct libdeflate_compressor *get_compressor(struct vmdk_stream *w)
{
    struct libdeflate_compressor *c = NULL;

    pthread_mutex_lock(&w->pool_lock);
    if (w->npool)
        c = w->pool[--w->npool];
    pthread_mutex_unlock(&w->pool_lock);
    return c ? c : libdeflate_alloc_compressor(ZLEVEL);
}

static void put_compressor(struct vmdk_stream *w, struct libdeflate_compressor *c)
{
    pthread_mutex_lock(&w->pool_lock);
    if (w->npool < sizeof(w->pool) / sizeof(w->pool[0]))
        w->pool[w->npool++] = c, c = NULL;
    pthread_mutex_unlock(&w->pool_lock);
    libdeflate_free_compressor(c);
}

/* zlib format into DST (ROOM bytes): its length, 0 on failure. libdeflate: 2-4x zlib's speed. */
static size_t zcompress(struct vmdk_stream *w, uint8_t *dst, size_t room, const uint8_t *src,
                        size_t len)
{
    struct libdeflate_compressor *c = get_compressor(w);
    size_t n;

    if (!c)
        return 0;
    n = libdeflate_zlib_compress(c, src, len, dst, room);
    put_compressor(w, c);
    return n;
}
#else
static size_t zcompress(struct vmdk_stream *w, uint8_t *dst, size_t room, const uint8_t *src,
                        size_t len)
{
    uLongf n = room;

    (void)w;
    return compress2(dst, &n, src, len, ZLEVEL) == Z_OK ? n : 0;
}
#endif

/* Compress grain G of SRC (grain_bytes) into *PG. */
static int compress_grain(struct vmdk_sparse *sp, uint64_t g, const uint8_t *src, struct pgrain *pg)
{
    size_t zmax = compressBound(sp->grain_bytes) + 64, zlen;
    uint64_t room = (12 + zmax + VMDK_SECTOR - 1) & ~(uint64_t)(VMDK_SECTOR - 1);
    uint8_t *b = malloc(room);

    if (!b)
        return vdisk_error(ENOMEM, "%s: out of memory", sp->file->path);
    zlen = zcompress(sp->ws, b + 12, zmax, src, sp->grain_bytes);
    if (zlen == 0) {
        free(b);
        return vdisk_error(EIO, "%s: cannot compress a grain", sp->file->path);
    }
    put_le64(b, g * sp->grain);
    put_le32(b + 8, (uint32_t)zlen);
    pg->len = (uint32_t)((12 + zlen + VMDK_SECTOR - 1) & ~(uint64_t)(VMDK_SECTOR - 1));
    memset(b + 12 + zlen, 0, pg->len - 12 - zlen);
    pg->g = g;
    pg->buf = b;
    pg->raw = false;
    return 0;
}

/* The in-memory GTE slot of grain G (a new table when none). */
static int slot(struct vmdk_sparse *sp, uint64_t g, uint32_t **gte)
{
    uint64_t i = g / sp->gtes;

    if (i >= sp->gd_n)
        return vdisk_error(EIO, "%s: grain %llu is past the grain directory", sp->file->path,
                           (unsigned long long)g);
    if (!sp->gt[i]) {
        sp->gt[i] = calloc(sp->gtes, 4);
        if (!sp->gt[i])
            return vdisk_error(ENOMEM, "%s: out of memory", sp->file->path);
    }
    *gte = &sp->gt[i][g % sp->gtes];
    return 0;
}

/* Append the lowest pending grains until the set is under LOW (0: all). */
static int emit(struct vmdk_sparse *sp, unsigned low_count, uint64_t low_bytes)
{
    struct vmdk_stream *w = sp->ws;
    unsigned k = 0;
    int r = 0;

    while (k < w->n && (w->n - k > low_count || w->bytes > low_bytes)) {
        struct pgrain *pg = &w->p[k];
        uint32_t *gte = NULL;

        if (pg->raw) { /* a grain written in parts: compressed now, under the lock */
            struct pgrain z;

            r = compress_grain(sp, pg->g, pg->buf, &z);
            if (r < 0)
                break;
            free(pg->buf);
            w->bytes -= pg->len - z.len;
            *pg = z;
        }
        r = slot(sp, pg->g, &gte);
        if (r == 0)
            r = vdisk_file_pwrite(sp->file, pg->buf, pg->len, w->pos);
        if (r < 0)
            break;
        *gte = (uint32_t)(w->pos / VMDK_SECTOR);
        w->pos += pg->len;
        w->bytes -= pg->len;
        free(pg->buf);
        k++;
    }
    memmove(w->p, w->p + k, (w->n - k) * sizeof(*w->p));
    w->n -= k;
    if (w->pos > sp->end)
        sp->end = w->pos;
    return r;
}

/* Put PG in the pending set (replacing an older copy); append if it is full. */
static int install(struct vmdk_sparse *sp, struct pgrain *pg)
{
    struct vmdk_stream *w = sp->ws;
    bool found;
    unsigned i = find(w, pg->g, &found);

    if (found) {
        w->bytes -= w->p[i].len;
        free(w->p[i].buf);
        w->p[i] = *pg;
    } else {
        if (w->n == w->cap) {
            unsigned cap = w->cap ? w->cap * 2 : 256;
            struct pgrain *p = realloc(w->p, cap * sizeof(*p));

            if (!p) {
                free(pg->buf);
                return vdisk_error(ENOMEM, "%s: out of memory", sp->file->path);
            }
            w->p = p;
            w->cap = cap;
        }
        memmove(w->p + i + 1, w->p + i, (w->n - i) * sizeof(*w->p));
        w->p[i] = *pg;
        w->n++;
    }
    w->bytes += pg->len;
    w->dirty = true;
    if (w->n > PEND_HIGH_COUNT || w->bytes > PEND_HIGH_BYTES)
        return emit(sp, PEND_LOW_COUNT, PEND_LOW_BYTES);
    return 0;
}

int vmdk_stream_start(struct vmdk *s, struct vmdk_sparse *sp)
{
    struct vmdk_stream *w;
    uint64_t pos = sp->overhead * VMDK_SECTOR, fsize;
    uint32_t top = 0;
    int r = vdisk_file_get_size(sp->file, &fsize);

    if (r < 0)
        return r;
    if (sp->cowd || !sp->markers)
        return vdisk_error(ENOTSUP, "%s: compressed extent %s without markers cannot be written",
                           s->node->path, sp->file->path);
    /* every table in memory: the tail is written anew from them */
    for (uint32_t i = 0; i < sp->gd_n; i++) {
        uint32_t *gt;

        if (sp->gd[i] == 0)
            continue;
        r = vmdk_sparse_gt(sp, s->node->path, i, false, &gt);
        if (r < 0)
            return r;
        for (uint32_t j = 0; j < sp->gtes; j++)
            if (gt[j] > top && !(gt[j] == VMDK_GTE_ZERO && sp->zero_gte))
                top = gt[j];
    }
    if (top) { /* after the last grain */
        uint8_t mk[12];

        r = vdisk_file_pread(sp->file, mk, sizeof(mk), (uint64_t)top * VMDK_SECTOR);
        if (r < 0)
            return r;
        pos = (uint64_t)top * VMDK_SECTOR + 12 + get_le32(mk + 8);
    }
    pos = (pos + VMDK_SECTOR - 1) & ~(uint64_t)(VMDK_SECTOR - 1);
    if (pos < sp->overhead * VMDK_SECTOR || pos > fsize + VMDK_SECTOR)
        return vdisk_error(EIO, "%s: extent %s: cannot find the end of the stream's grains",
                           s->node->path, sp->file->path);
    w = calloc(1, sizeof(*w));
    if (!w)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    w->pos = pos;
    pthread_mutex_init(&w->pool_lock, NULL);
    sp->ws = w;
    return 0;
}

/* Part of grain G (N bytes at IN): into its raw pending copy, made from what it holds now. */
static int write_part(struct vmdk *s, struct vmdk_extent *e, uint64_t g, uint64_t in,
                      const uint8_t *buf, uint64_t n)
{
    struct vmdk_sparse *sp = e->sp;
    struct vmdk_stream *w = sp->ws;
    struct pgrain pg = {.g = g, .len = (uint32_t)sp->grain_bytes, .raw = true};
    bool found;
    unsigned i = find(w, g, &found);
    int r;

    if (found && w->p[i].raw) {
        memcpy(w->p[i].buf + in, buf, n);
        return 0;
    }
    pg.buf = malloc(sp->grain_bytes);
    if (!pg.buf)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    r = vmdk_sparse_read(s, e, pg.buf, sp->grain_bytes, g * sp->grain_bytes, true);
    if (r < 0) {
        free(pg.buf);
        return r;
    }
    memcpy(pg.buf + in, buf, n);
    return install(sp, &pg);
}

int vmdk_stream_write(struct vmdk *s, struct vmdk_extent *e, const uint8_t *buf, uint64_t len,
                      uint64_t rel)
{
    struct vmdk_sparse *sp = e->sp;
    uint64_t gb = sp->grain_bytes;
    int r = 0;

    pthread_mutex_lock(&s->lock);
    if (!sp->ws)
        r = vmdk_stream_start(s, sp);
    pthread_mutex_unlock(&s->lock);
    while (len > 0 && r == 0) {
        uint64_t g = rel / gb, in = rel % gb, n = gb - in < len ? gb - in : len;
        struct pgrain pg;

        if (n == gb && rel + gb <= e->len) {
            r = compress_grain(sp, g, buf, &pg); /* unlocked: writers compress in parallel */
            if (r == 0) {
                pthread_mutex_lock(&s->lock);
                r = install(sp, &pg);
                pthread_mutex_unlock(&s->lock);
            }
        } else {
            pthread_mutex_lock(&s->lock);
            r = write_part(s, e, g, in, buf, n);
            pthread_mutex_unlock(&s->lock);
        }
        buf += n;
        rel += n;
        len -= n;
    }
    return r;
}

/* Write a metadata marker of TYPE announcing SECTORS sectors at *AT. */
static int marker(struct vmdk_sparse *sp, uint64_t *at, uint64_t sectors, uint32_t type)
{
    uint8_t m[VMDK_SECTOR] = {0};

    put_le64(m, sectors);
    put_le32(m + 12, type);
    *at += VMDK_SECTOR;
    return vdisk_file_pwrite(sp->file, m, sizeof(m), *at - VMDK_SECTOR);
}

/* Table T of N entries (host order) at *AT, little endian, padded to sectors. */
static int table(struct vmdk_sparse *sp, uint64_t *at, const uint32_t *t, uint32_t n)
{
    size_t bytes = ((size_t)n * 4 + VMDK_SECTOR - 1) & ~(size_t)(VMDK_SECTOR - 1);
    uint32_t *le = calloc(1, bytes);
    int r;

    if (!le)
        return vdisk_error(ENOMEM, "%s: out of memory", sp->file->path);
    for (uint32_t i = 0; t && i < n; i++)
        le[i] = htole32(t[i]);
    r = vdisk_file_pwrite(sp->file, le, bytes, *at);
    *at += bytes;
    free(le);
    return r;
}

int vmdk_stream_write_tail(struct vmdk_sparse *sp, const char *path, uint64_t at)
{
    uint64_t gt_sectors = ((uint64_t)sp->gtes * 4 + VMDK_SECTOR - 1) / VMDK_SECTOR;
    uint64_t gd_sectors = ((uint64_t)sp->gd_n * 4 + VMDK_SECTOR - 1) / VMDK_SECTOR, gd_at;
    uint8_t h[VMDK_SECTOR];
    int r = 0;

    (void)path;
    for (uint32_t i = 0; i < sp->gd_n && r == 0; i++) {
        bool used = false;

        for (uint32_t j = 0; sp->gt[i] && j < sp->gtes && !used; j++)
            used = sp->gt[i][j] != 0;
        sp->gd[i] = 0;
        if (!used)
            continue;
        r = marker(sp, &at, gt_sectors, VMDK_MARKER_GT);
        sp->gd[i] = (uint32_t)(at / VMDK_SECTOR);
        if (r == 0)
            r = table(sp, &at, sp->gt[i], sp->gtes);
    }
    if (r == 0)
        r = marker(sp, &at, gd_sectors, VMDK_MARKER_GD);
    gd_at = at / VMDK_SECTOR;
    if (r == 0)
        r = table(sp, &at, sp->gd, sp->gd_n);
    if (r == 0)
        r = marker(sp, &at, 1, VMDK_MARKER_FOOTER);
    if (r == 0) {
        memcpy(h, sp->hdr, sizeof(h));
        put_le64(h + 56, gd_at);
        r = vdisk_file_pwrite(sp->file, h, sizeof(h), at);
        at += VMDK_SECTOR;
    }
    if (r == 0)
        r = marker(sp, &at, 0, VMDK_MARKER_EOS);
    if (r == 0)
        r = vdisk_file_truncate(sp->file, at);
    if (r == 0 && at > sp->end)
        sp->end = at;
    return r;
}

int vmdk_stream_finish(struct vmdk *s, struct vmdk_sparse *sp)
{
    struct vmdk_stream *w = sp->ws;
    int r;

    if (!w->dirty)
        return vdisk_file_flush(sp->file);
    r = emit(sp, 0, 0);
    if (r == 0 && get_le64(sp->hdr + 56) != VMDK_GD_AT_END) {
        /* a stream another tool made with its directory up front: now it is at the end */
        put_le64(sp->hdr + 56, VMDK_GD_AT_END);
        put_le32(sp->hdr + 8, get_le32(sp->hdr + 8) & ~VMDK_FLAG_RGD);
        put_le64(sp->hdr + 48, 0);
        r = vdisk_file_pwrite(sp->file, sp->hdr, VMDK_SECTOR, 0);
    }
    if (r == 0)
        r = vmdk_stream_write_tail(sp, s->node->path, w->pos);
    if (r == 0)
        r = vdisk_file_flush(sp->file);
    if (r == 0)
        w->dirty = false;
    return r;
}

void vmdk_stream_free(struct vmdk_sparse *sp)
{
    if (!sp->ws)
        return;
    for (unsigned i = 0; i < sp->ws->n; i++)
        free(sp->ws->p[i].buf);
    free(sp->ws->p);
#ifdef HAVE_LIBDEFLATE
    for (unsigned i = 0; i < sp->ws->npool; i++)
        libdeflate_free_compressor(sp->ws->pool[i]);
#endif
    pthread_mutex_destroy(&sp->ws->pool_lock);
    free(sp->ws);
    sp->ws = NULL;
}
