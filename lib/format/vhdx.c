/* SPDX-License-Identifier: MIT */
/*
 * VHDX (Hyper-V): probe, open (log replay, parent), map, and the writes map
 * cannot take in place: allocation, sector bitmaps of differencing images,
 * trim to UNMAPPED / ZERO states. Thread safe (s->lock, an rwlock): a map
 * that changes nothing (reads, writes into present blocks) runs shared, in
 * parallel; allocation, sector-bitmap loads, writes, log commits, trims and
 * check run exclusive. DATA mappings are pinned until release(), and trims
 * wait for the pins, as the image layer does for drivers that are not.
 *
 * Payload block states: FULLY_PRESENT is DATA; ZERO reads zeroes;
 * NOT_PRESENT is UNALLOCATED (the parent's bytes, or zeroes); UNDEFINED and
 * UNMAPPED read as the parent in a differencing image, else as zeroes;
 * PARTIALLY_PRESENT (differencing) is DATA or the parent, sector by sector.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

#include "../error.h"
#include "vhdx.h"

static const char *const vhdx_create_options[] = {
    "subformat",           "block_size",   "log_size",    "block_state_zero",
    "logical_sector_size", "backing_file", "backing_fmt", NULL,
};

static int vhdx_probe(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t file_size)
{
    (void)tail, (void)file_size;
    return head_len >= 8 && memcmp(head, "vhdxfile", 8) == 0 ? 100 : 0;
}

static void vhdx_free(struct vhdx *s)
{
    if (!s)
        return;
    for (uint64_t c = 0; s->sb && c < s->nchunks; c++)
        free(s->sb[c]);
    for (unsigned i = 0; i < s->novl; i++)
        free(s->ovl[i].data);
    for (int k = 0; k < 5; k++)
        free(s->locator[k]);
    free(s->ovl);
    free(s->sb);
    free(s->bat);
    free(s->bat_page_dirty);
    free(s->dirty);
    free(s->punch);
    free(s->parent_name);
    pthread_rwlock_destroy(&s->lock);
    pthread_mutex_destroy(&s->pin_lock);
    pthread_cond_destroy(&s->pin_done);
    free(s);
}

/* A locator path as this system spells it: backslashes to slashes, ".\" dropped. */
static char *local_path(const char *p)
{
    char *q;

    if (strncmp(p, ".\\", 2) == 0)
        p += 2;
    q = strdup(p);
    for (char *c = q; c && *c; c++)
        if (*c == '\\')
            *c = '/';
    return q;
}

/* Open the parent named by the locator and check its DataWriteGuid against the linkage. */
static int open_parent(struct vdisk_node *node, struct vhdx *s)
{
    const char *cand[2] = {s->locator[2], s->locator[4]}; /* relative, absolute */
    struct vhdx *p;
    char have[39];
    int r = -ENOENT;

    for (int i = 0; i < 2 && r < 0; i++) {
        char *name, *full;

        if (!cand[i])
            continue;
        name = local_path(cand[i]);
        full = name ? vdisk_node_resolve(node, name) : NULL;
        if (!full) {
            free(name);
            return vdisk_error(ENOMEM, "%s: out of memory", node->path);
        }
        if (access(full, F_OK) == 0 || i == 1 || !cand[1]) {
            r = vdisk_node_open_backing(node, name, "vhdx");
            if (r == 0)
                s->parent_name = name, name = NULL;
        }
        free(name);
        free(full);
    }
    if (r == -ENOENT && !cand[0] && !cand[1])
        return vdisk_error(ENOENT, "%s: differencing VHDX names no parent path", node->path);
    if (r < 0)
        return r;
    p = node->backing->priv;
    vhdx_guid_format(&p->data_write_guid, have);
    if (strcasecmp(have, s->locator[0]) != 0 &&
        !(s->locator[1] && strcasecmp(have, s->locator[1]) == 0))
        return vdisk_error(EINVAL,
                           "%s: parent %s does not match: the child links to DataWriteGuid %s, "
                           "the parent has %s (changed since the child was made?)",
                           node->path, node->backing->path, s->locator[0], have);
    return 0;
}

static int vhdx_open(struct vdisk_node *node)
{
    struct vhdx *s = calloc(1, sizeof(*s));
    const char *stop = getenv("VDISK_VHDX_STOP_AFTER");
    int r;

    if (!s)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    vdisk_rwlock_init(&s->lock);
    pthread_mutex_init(&s->pin_lock, NULL);
    pthread_cond_init(&s->pin_done, NULL);
    s->node = node;
    s->file = node->file;
    s->log_state = "clean";
    s->stop_after = stop && !node->read_only ? atoll(stop) : -1;
    r = vdisk_file_get_size(s->file, &s->file_size);
    if (r == 0)
        r = vhdx_read_headers(s);
    if (r == 0 && !vhdx_guid_is_zero(&s->log_guid))
        r = vhdx_log_replay(s);
    if (r == 0)
        r = vhdx_read_regions(s);
    if (r == 0)
        r = vhdx_read_metadata(s);
    if (r == 0)
        r = vhdx_read_bat(s);
    if (r == 0 && !node->read_only) /* no data over other data or metadata (vhdx-overlap.c) */
        r = vhdx_overlap_scan(s);
    node->priv = s;
    if (r == 0 && s->has_parent)
        r = open_parent(node, s);
    if (r < 0) {
        vhdx_free(s);
        node->priv = NULL;
        return r;
    }
    node->size = s->vsize;
    node->dirty_at_open = s->log_entries > 0; /* VHDX's dirty flag: a log to replay */
    return 0;
}

static void vhdx_close(struct vdisk_node *node)
{
    struct vhdx *s = node->priv;

    if (!node->read_only)
        vhdx_session_end(s);
    vhdx_free(s);
    node->priv = NULL;
}

/* Queue the BAT page holding entry IDX for the next log entry. */
static int bat_dirty(struct vhdx *s, uint64_t idx)
{
    uint64_t page = idx * 8 / VHDX_PAGE;

    if (s->bat_page_dirty[page])
        return 0;
    s->bat_page_dirty[page] = 1;
    return vhdx_log_dirty(s, s->bat_off + page * VHDX_PAGE, (uint8_t *)s->bat + page * VHDX_PAGE);
}

static int bat_set(struct vhdx *s, uint64_t idx, uint64_t e)
{
    s->bat[idx] = htole64(e);
    return bat_dirty(s, idx);
}

/* First sector bit of block BLK in its chunk's bitmap. */
static uint64_t sb_bit(const struct vhdx *s, uint64_t blk)
{
    return (blk % s->chunk_ratio) * s->sectors_per_block;
}

/* Length of the run of sectors from bit B (at most N bits) whose bit equals B's; *set its value. */
static uint64_t sb_run(const uint8_t *bm, uint64_t b, uint64_t n, bool *set)
{
    uint64_t i = 0;

    *set = (bm[b / 8] >> (b % 8)) & 1;
    while (i < n) {
        uint64_t k = b + i;

        if ((k % 64) == 0 && n - i >= 64) { /* a whole word alike: skip it */
            uint64_t w;

            memcpy(&w, bm + k / 8, 8);
            if (w == (*set ? ~0ull : 0)) {
                i += 64;
                continue;
            }
        }
        if (((bm[k / 8] >> (k % 8)) & 1) != *set)
            break;
        i++;
    }
    return i;
}

/* May a payload block of LEN bytes lie at file offset OFF (inside the file, off the metadata)? */
bool vhdx_area_ok(const struct vhdx *s, uint64_t off, uint64_t len)
{
    const uint64_t r[3][2] = {
        {s->log_off, s->log_len}, {s->meta_off, s->meta_len}, {s->bat_off, s->bat_len}};

    if (off < MiB || off + len > s->file_size)
        return false;
    for (int i = 0; i < 3; i++)
        if (off < r[i][0] + r[i][1] && r[i][0] < off + len)
            return false;
    return true;
}

/* The error for block BLK whose BAT entry has the invalid state ST. */
static int bad_block(struct vhdx *s, uint64_t blk, unsigned st)
{
    return vdisk_error(EIO,
                       "%s: VHDX block %llu has invalid state %u (vdisk check -r all drops it)",
                       s->node->path, (unsigned long long)blk, st);
}

/* Where block BLK's bytes at IN lie, as map() answers; LEN capped to the block. */
static int block_map(struct vhdx *s, uint64_t off, uint64_t len, unsigned flags,
                     struct vdisk_map *m)
{
    uint64_t blk = off / s->block_size, in = off % s->block_size, e, host;
    unsigned st;
    int r;

    m->len = len < s->block_size - in ? len : s->block_size - in;
    e = vhdx_entry(s, vhdx_bat_index(s, blk));
    st = BAT_STATE(e);
    if (vhdx_bad_state(s, vhdx_bat_index(s, blk)))
        return bad_block(s, blk, st);
    host = BAT_OFFSET(e) + in;
    if (st == PAYLOAD_PARTIALLY_PRESENT) {
        uint64_t c = blk / s->chunk_ratio, b = sb_bit(s, blk) + in / s->lss;
        uint64_t nsec = (in % s->lss + m->len + s->lss - 1) / s->lss, run;
        uint8_t *bm;
        bool set;

        if (!s->sb[c] && (flags & VDISK_MAP_NOWAIT))
            return -EAGAIN; /* loading the bitmap reads the file: a worker does it */
        r = vhdx_sb_get(s, c, &bm);
        if (r < 0)
            return r;
        if (!bm)
            return vdisk_error(EIO,
                               "%s: VHDX block %llu is partially present without a "
                               "sector bitmap",
                               s->node->path, (unsigned long long)blk);
        run = sb_run(bm, b, nsec, &set);
        if (run < nsec)
            m->len = (in / s->lss + run) * s->lss - in;
        st = set ? PAYLOAD_FULLY_PRESENT : PAYLOAD_NOT_PRESENT;
    }
    switch (st) {
    case PAYLOAD_FULLY_PRESENT:
        if (!vhdx_area_ok(s, BAT_OFFSET(e), s->block_size) && (flags & VDISK_MAP_WRITE))
            return vdisk_node_refuse_writes(s->node,
                                            "VHDX block %llu at offset %llu lies past the end "
                                            "of the file or over its metadata",
                                            (unsigned long long)blk,
                                            (unsigned long long)BAT_OFFSET(e));
        if (!vhdx_area_ok(s, BAT_OFFSET(e), s->block_size))
            return vdisk_error(EIO,
                               "%s: VHDX block %llu lies past the end of the file or over "
                               "its metadata (vdisk check tells)",
                               s->node->path, (unsigned long long)blk);
        m->type = VDISK_MAP_DATA;
        m->file = s->file;
        m->host = host;
        if (((flags & VDISK_MAP_WRITE) && !s->session) || vhdx_overlay_hits(s, host, m->len) ||
            ((flags & VDISK_MAP_FUA) && s->ndirty))
            m->type = VDISK_MAP_OTHER;
        break;
    case PAYLOAD_ZERO:
        m->type = VDISK_MAP_ZERO;
        break;
    case PAYLOAD_UNDEFINED:
    case PAYLOAD_UNMAPPED:
        m->type = s->has_parent ? VDISK_MAP_UNALLOCATED : VDISK_MAP_ZERO;
        break;
    default:
        m->type = VDISK_MAP_UNALLOCATED;
    }
    if ((flags & VDISK_MAP_WRITE) && m->type != VDISK_MAP_DATA)
        m->type = VDISK_MAP_OTHER;
    return 0;
}

/* OTHER extents of reads: blocks the in-memory log replay touched. */
static int read_locked(struct vdisk_node *node, void *buf, size_t len, uint64_t off)
{
    struct vhdx *s = node->priv;

    while (len > 0) {
        struct vdisk_map m = {0};
        int r = block_map(s, off, len, 0, &m);

        if (r == 0 && (m.type == VDISK_MAP_DATA || m.type == VDISK_MAP_OTHER))
            r = vhdx_pread_meta(s, buf, m.len, m.host); /* OTHER: the log replayed into it */
        else if (r == 0 && m.type == VDISK_MAP_ZERO)
            memset(buf, 0, m.len);
        else if (r == 0)
            r = vdisk_node_read_backing(node, buf, m.len, off);
        if (r < 0)
            return r;
        buf = (uint8_t *)buf + m.len;
        off += m.len;
        len -= m.len;
    }
    return 0;
}

/* A new MiB-aligned area of LEN bytes at the end of the file (reads as zeroes). */
static int alloc_area(struct vhdx *s, uint64_t len, uint64_t *off)
{
    int r = vdisk_file_truncate(s->file, s->alloc_end + len);

    if (r < 0)
        return r;
    *off = s->alloc_end;
    s->alloc_end += len;
    s->file_size = s->alloc_end;
    return 0;
}

/* The sector bitmap of chunk C, allocated if it is not present yet. */
static int sb_need(struct vhdx *s, uint64_t c, uint8_t **bm)
{
    uint64_t off;
    int r = vhdx_sb_get(s, c, bm);

    if (r < 0 || *bm)
        return r;
    s->sb[c] = calloc(1, VHDX_SB_SIZE);
    if (!s->sb[c])
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    r = alloc_area(s, VHDX_SB_SIZE, &off);
    if (r == 0)
        r = bat_set(s, vhdx_sb_index(s, c), off | SB_PRESENT);
    *bm = s->sb[c];
    return r;
}

/* Set or clear N sector bits from B in chunk C's bitmap BM, queueing the pages changed. */
static int sb_mark(struct vhdx *s, uint64_t c, uint8_t *bm, uint64_t b, uint64_t n, bool set)
{
    uint64_t sboff = BAT_OFFSET(vhdx_entry(s, vhdx_sb_index(s, c))), last = ~0ull;
    int r = 0;

    for (uint64_t k = b; k < b + n; k++) {
        uint64_t page = k / 8 / VHDX_PAGE;

        if (set)
            bm[k / 8] |= (uint8_t)(1u << (k % 8));
        else
            bm[k / 8] &= (uint8_t) ~(1u << (k % 8));
        if (page != last && r == 0) {
            bool queued = false;

            for (unsigned i = 0; i < s->ndirty && !queued; i++)
                queued = s->dirty[i].off == sboff + page * VHDX_PAGE;
            if (!queued)
                r = vhdx_log_dirty(s, sboff + page * VHDX_PAGE, bm + page * VHDX_PAGE);
            last = page;
        }
    }
    return r;
}

/* Block BLK changes to state ST (keeping its file area); its sector bits go with PARTIALLY. */
static int block_set_state(struct vhdx *s, uint64_t blk, unsigned st)
{
    uint64_t idx = vhdx_bat_index(s, blk), e = vhdx_entry(s, idx);
    int r = 0;

    if (BAT_STATE(e) == PAYLOAD_PARTIALLY_PRESENT) {
        uint64_t c = blk / s->chunk_ratio;
        uint8_t *bm;

        r = vhdx_sb_get(s, c, &bm);
        if (r == 0 && bm)
            r = sb_mark(s, c, bm, sb_bit(s, blk), s->sectors_per_block, false);
    }
    return r < 0 ? r : bat_set(s, idx, BAT_OFFSET(e) | st);
}

/* Punch block area OFF once the next commit is durable (0: forget a pending punch of OFF). */
static int punch_later(struct vhdx *s, uint64_t off, bool punch)
{
    for (unsigned i = 0; i < s->npunch; i++) {
        if (s->punch[i] == off) {
            if (!punch)
                s->punch[i] = s->punch[--s->npunch];
            return 0;
        }
    }
    if (!punch)
        return 0;
    if (s->npunch == s->punch_cap) {
        unsigned cap = s->punch_cap ? 2 * s->punch_cap : 64;
        uint64_t *p = realloc(s->punch, cap * sizeof(*p));

        if (!p)
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        s->punch = p;
        s->punch_cap = cap;
    }
    s->punch[s->npunch++] = off;
    return 0;
}

/* A file area for block BLK: its old one (zeroed) if it has one, else a new one. */
static int block_area(struct vhdx *s, uint64_t blk, uint64_t *off)
{
    uint64_t e = vhdx_entry(s, vhdx_bat_index(s, blk));

    if (BAT_OFFSET(e) && vhdx_area_ok(s, BAT_OFFSET(e), s->block_size)) {
        *off = BAT_OFFSET(e);
        punch_later(s, *off, false);
        return vdisk_file_zero_range(s->file, *off, s->block_size, false);
    }
    return alloc_area(s, s->block_size, off);
}

/* Write into a partially present block: edge sectors the parent still owns are copied first. */
static int write_partial(struct vhdx *s, uint64_t blk, const void *buf, size_t len, uint64_t in)
{
    uint64_t c = blk / s->chunk_ratio, host = BAT_OFFSET(vhdx_entry(s, vhdx_bat_index(s, blk)));
    uint64_t first = in / s->lss, last = (in + len - 1) / s->lss;
    uint64_t edges[2] = {first, last};
    uint8_t *bm, *sec = NULL;
    int r = sb_need(s, c, &bm);

    for (int i = 0; i < 2 && r == 0; i++) {
        uint64_t k = edges[i], b = sb_bit(s, blk) + k;
        bool whole = k * s->lss >= in && (k + 1) * s->lss <= in + len;

        if (whole || ((bm[b / 8] >> (b % 8)) & 1) || (i == 1 && last == first))
            continue;
        if (!sec && !(sec = malloc(s->lss)))
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        r = vdisk_node_read_backing(s->node, sec, s->lss, blk * s->block_size + k * s->lss);
        if (r == 0)
            r = vdisk_file_pwrite(s->file, sec, s->lss, host + k * s->lss);
    }
    free(sec);
    if (r == 0)
        r = vdisk_file_pwrite(s->file, buf, len, host + in);
    if (r == 0)
        r = sb_mark(s, c, bm, sb_bit(s, blk) + first, last - first + 1, true);
    return r;
}

/* Write LEN bytes at OFF, inside one block: in place, or allocating. */
static int write_block(struct vhdx *s, const void *buf, size_t len, uint64_t off)
{
    uint64_t blk = off / s->block_size, in = off % s->block_size, idx = vhdx_bat_index(s, blk);
    uint64_t e = vhdx_entry(s, idx), area = 0;
    unsigned st = BAT_STATE(e);
    int r;

    if (vhdx_bad_state(s, idx))
        return bad_block(s, blk, st);
    if ((st == PAYLOAD_FULLY_PRESENT || st == PAYLOAD_PARTIALLY_PRESENT) &&
        !vhdx_area_ok(s, BAT_OFFSET(e), s->block_size)) /* data would land on metadata */
        return vdisk_node_refuse_writes(s->node,
                                        "VHDX block %llu at offset %llu lies past the end of "
                                        "the file or over its metadata",
                                        (unsigned long long)blk, (unsigned long long)BAT_OFFSET(e));
    if (st == PAYLOAD_FULLY_PRESENT)
        return vdisk_file_pwrite(s->file, buf, len, BAT_OFFSET(e) + in);
    if (st == PAYLOAD_PARTIALLY_PRESENT)
        return write_partial(s, blk, buf, len, in);
    r = block_set_state(s, blk, st); /* forget stale sector bits before reuse */
    if (r == 0)
        r = block_area(s, blk, &area);
    if (r < 0)
        return r;
    if (s->has_parent && st != PAYLOAD_ZERO) { /* the parent shows through the rest */
        r = bat_set(s, idx, area | PAYLOAD_PARTIALLY_PRESENT);
        return r < 0 ? r : write_partial(s, blk, buf, len, in);
    }
    r = vdisk_file_pwrite_alloc(s->file, buf, len, area + in);
    return r < 0 ? r : bat_set(s, idx, area | PAYLOAD_FULLY_PRESENT);
}

/*
 * A write map of a block without data in an image without a parent: give the
 * block its file area now (zeroes), so that the image layer writes the bytes
 * in place, outside the driver's lock, in parallel. Its BAT entry reaches the
 * disk at the next commit, after the data (a crash before it reads the old
 * zeroes). NOWAIT: a worker does it.
 */
static int map_allocate(struct vhdx *s, uint64_t off, unsigned flags)
{
    uint64_t blk = off / s->block_size, idx = vhdx_bat_index(s, blk), area = 0;
    int r;

    if (BAT_STATE(vhdx_entry(s, idx)) == PAYLOAD_FULLY_PRESENT && s->session)
        return 0;
    if (vhdx_bad_state(s, idx))
        return bad_block(s, blk, BAT_STATE(vhdx_entry(s, idx)));
    if (flags & VDISK_MAP_NOWAIT)
        return -EAGAIN;
    r = vhdx_session_begin(s);
    if (r < 0 || BAT_STATE(vhdx_entry(s, idx)) == PAYLOAD_FULLY_PRESENT)
        return r;
    r = block_area(s, blk, &area);
    return r < 0 ? r : bat_set(s, idx, area | PAYLOAD_FULLY_PRESENT);
}

/* map(), S->lock held: shared when map_needs_change() says no, else exclusive. */
static int map_locked(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags,
                      struct vdisk_map *m)
{
    struct vhdx *s = node->priv;

    if ((flags & VDISK_MAP_WRITE) && !(flags & VDISK_MAP_FUA) && !s->has_parent) {
        int r = map_allocate(s, off, flags);

        if (r < 0)
            return r;
    }
    return block_map(s, off, len, flags, m);
}

static int write_locked(struct vdisk_node *node, const void *buf, size_t len, uint64_t off,
                        unsigned flags)
{
    struct vhdx *s = node->priv;
    int r = vhdx_session_begin(s);

    while (r == 0 && len > 0) {
        uint64_t in = off % s->block_size, n = len < s->block_size - in ? len : s->block_size - in;

        r = write_block(s, buf, n, off);
        buf = (const uint8_t *)buf + n;
        off += n;
        len -= n;
    }
    if (r == 0 && (flags & VDISK_WRITE_FUA))
        r = vhdx_log_commit(s);
    return r;
}

static int flush_locked(struct vdisk_node *node)
{
    struct vhdx *s = node->priv;

    return s->session ? vhdx_log_commit(s) : vdisk_file_flush(s->file);
}

/* Whole blocks of [OFF, OFF+LEN) to state ST, partial ones through PARTIAL (may be NULL). */
static int trim(struct vhdx *s, uint64_t off, uint64_t len, unsigned st, bool zero_partial)
{
    static const uint8_t zero[65536];
    int r = vhdx_session_begin(s);

    while (r == 0 && len > 0) {
        uint64_t blk = off / s->block_size, in = off % s->block_size;
        uint64_t n = len < s->block_size - in ? len : s->block_size - in;
        uint64_t e = vhdx_entry(s, vhdx_bat_index(s, blk));
        struct vdisk_map m;

        if (n == s->block_size && s->leave_alloc) { /* fixed: the block stays, its bytes go */
            if (BAT_STATE(e) == PAYLOAD_FULLY_PRESENT)
                r = vdisk_file_zero_range(s->file, BAT_OFFSET(e), s->block_size, true);
        } else if (n == s->block_size) {
            r = block_set_state(s, blk, st);
            if (r == 0 && BAT_OFFSET(e) && vhdx_area_ok(s, BAT_OFFSET(e), s->block_size))
                r = punch_later(s, BAT_OFFSET(e), true); /* the space goes back after commit */
        } else if (zero_partial) {
            for (uint64_t k = 0; r == 0 && k < n; k += m.len) {
                r = block_map(s, off + k, n - k, 0, &m);
                if (r == 0 && m.type != VDISK_MAP_ZERO &&
                    !(m.type == VDISK_MAP_UNALLOCATED && !s->node->backing)) {
                    m.len = m.len < sizeof(zero) ? m.len : sizeof(zero);
                    r = write_block(s, zero, m.len, off + k);
                }
            }
        }
        off += n;
        len -= n;
    }
    return r;
}

static int discard_locked(struct vdisk_node *node, uint64_t off, uint64_t len)
{
    struct vhdx *s = node->priv;

    return trim(s, off, len, PAYLOAD_UNMAPPED, false);
}

static int zeroes_locked(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags)
{
    struct vhdx *s = node->priv;
    int r;

    r = trim(s, off, len, PAYLOAD_ZERO, true);
    if (r == 0 && (flags & VDISK_ZERO_FUA))
        r = vhdx_log_commit(s);
    return r;
}

static int info_locked(struct vdisk_node *node, struct vdisk_info *info)
{
    struct vhdx *s = node->priv;
    char g[39];

    info->cluster_size = s->block_size;
    info->backing_file = s->parent_name;
    info->backing_format = s->has_parent ? "vhdx" : NULL;
    vdisk_info_add(info, "creator", "%s", s->creator);
    vdisk_info_add(info, "subformat", "%s",
                   s->has_parent    ? "differencing"
                   : s->leave_alloc ? "fixed"
                                    : "dynamic");
    vdisk_info_add(info, "block_size", "%u", s->block_size);
    vdisk_info_add(info, "logical_sector_size", "%u", s->lss);
    vdisk_info_add(info, "physical_sector_size", "%u", s->pss);
    vdisk_info_add(info, "leave_blocks_allocated", "%s", s->leave_alloc ? "true" : "false");
    vdisk_info_add(info, "log_size", "%u", s->log_len);
    vdisk_info_add(info, "log_state", "%s", s->log_state);
    if (s->log_entries)
        vdisk_info_add(info, "log_entries_replayed", "%u", s->log_entries);
    vhdx_guid_format(&s->data_write_guid, g);
    vdisk_info_add(info, "data_write_guid", "%s", g);
    if (s->has_parent) {
        vdisk_info_add(info, "parent_linkage", "%s", s->locator[0]);
        if (s->locator[2])
            vdisk_info_add(info, "parent_relative_path", "%s", s->locator[2]);
        if (s->locator[4])
            vdisk_info_add(info, "parent_absolute_win32_path", "%s", s->locator[4]);
    }
    return 0;
}

/* Does map() of OFF with FLAGS change the state (allocate, load a bitmap)? Lock held. */
static bool map_needs_change(const struct vhdx *s, uint64_t off, unsigned flags)
{
    uint64_t blk = off / s->block_size, e = vhdx_entry(s, vhdx_bat_index(s, blk));

    if ((flags & VDISK_MAP_WRITE) && !(flags & VDISK_MAP_FUA) && !s->has_parent &&
        !(BAT_STATE(e) == PAYLOAD_FULLY_PRESENT && s->session))
        return true;
    return BAT_STATE(e) == PAYLOAD_PARTIALLY_PRESENT && !s->sb[blk / s->chunk_ratio];
}

static int vhdx_map(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags,
                    struct vdisk_map *m)
{
    struct vhdx *s = node->priv;
    int r;

    if (!(flags & VDISK_MAP_NOWAIT))
        pthread_rwlock_rdlock(&s->lock);
    else if (pthread_rwlock_tryrdlock(&s->lock) != 0)
        return -EAGAIN;
    if (map_needs_change(s, off, flags)) {
        pthread_rwlock_unlock(&s->lock);
        if (flags & VDISK_MAP_NOWAIT)
            return -EAGAIN; /* a worker does it */
        pthread_rwlock_wrlock(&s->lock);
    }
    r = map_locked(node, off, len, flags, m);
    if (r == 0 && m->type == VDISK_MAP_DATA) {
        atomic_fetch_add(&s->pins, 1); /* trims wait until it is released */
        m->handle = 1;
    }
    pthread_rwlock_unlock(&s->lock);
    return r;
}

/* The DATA mapping M is no longer in use: unpin (no lock: a trim may be waiting with it). */
static void vhdx_release(struct vdisk_node *node, const struct vdisk_map *m)
{
    struct vhdx *s = node->priv;

    if (m->handle && atomic_fetch_sub(&s->pins, 1) == 1) {
        pthread_mutex_lock(&s->pin_lock);
        pthread_cond_broadcast(&s->pin_done);
        pthread_mutex_unlock(&s->pin_lock);
    }
}

/* Take S->lock exclusive; with UNPINNED, also wait until no DATA mapping is in use. */
static void exclusive(struct vhdx *s, bool unpinned)
{
    pthread_rwlock_wrlock(&s->lock);
    if (!unpinned || atomic_load(&s->pins) == 0)
        return;
    pthread_mutex_lock(&s->pin_lock);
    while (atomic_load(&s->pins) > 0)
        pthread_cond_wait(&s->pin_done, &s->pin_lock);
    pthread_mutex_unlock(&s->pin_lock);
}

static int vhdx_read(struct vdisk_node *node, void *buf, size_t len, uint64_t off)
{
    struct vhdx *s = node->priv;
    int r;

    exclusive(s, false); /* may load a sector bitmap */
    r = read_locked(node, buf, len, off);
    pthread_rwlock_unlock(&s->lock);
    return r;
}

static int vhdx_write(struct vdisk_node *node, const void *buf, size_t len, uint64_t off,
                      unsigned flags)
{
    struct vhdx *s = node->priv;
    int r;

    exclusive(s, false);
    r = write_locked(node, buf, len, off, flags);
    pthread_rwlock_unlock(&s->lock);
    return r;
}

static int vhdx_flush(struct vdisk_node *node)
{
    struct vhdx *s = node->priv;
    int r;

    exclusive(s, false);
    r = flush_locked(node);
    pthread_rwlock_unlock(&s->lock);
    return r;
}

static int vhdx_discard(struct vdisk_node *node, uint64_t off, uint64_t len)
{
    struct vhdx *s = node->priv;
    int r;

    exclusive(s, true); /* frees blocks: no I/O may still point into them */
    r = discard_locked(node, off, len);
    pthread_rwlock_unlock(&s->lock);
    return r;
}

static int vhdx_write_zeroes(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags)
{
    struct vhdx *s = node->priv;
    int r;

    exclusive(s, true);
    r = zeroes_locked(node, off, len, flags);
    pthread_rwlock_unlock(&s->lock);
    return r;
}

static int vhdx_get_info(struct vdisk_node *node, struct vdisk_info *info)
{
    struct vhdx *s = node->priv;
    int r;

    pthread_rwlock_rdlock(&s->lock);
    r = info_locked(node, info);
    pthread_rwlock_unlock(&s->lock);
    return r;
}

static int vhdx_check_locked(struct vdisk_node *node, unsigned flags,
                             struct vdisk_check_result *res)
{
    struct vhdx *s = node->priv;
    int r;

    exclusive(s, true);
    r = vhdx_check(node, flags, res);
    pthread_rwlock_unlock(&s->lock);
    return r;
}

/* Resize (vhdx-resize.c) with no request in the driver and no mapping in use. */
static int vhdx_resize_locked(struct vdisk_node *node, uint64_t size, unsigned flags)
{
    struct vhdx *s = node->priv;
    int r;

    exclusive(s, true);
    r = vhdx_resize(node, size, flags);
    pthread_rwlock_unlock(&s->lock);
    return r;
}

const struct vdisk_format vdisk_format_vhdx = {
    .name = "vhdx",
    .flags = VDISK_FORMAT_THREAD_SAFE,
    .create_options = vhdx_create_options,
    .probe = vhdx_probe,
    .create = vhdx_create,
    .open = vhdx_open,
    .close = vhdx_close,
    .map = vhdx_map,
    .release = vhdx_release,
    .read = vhdx_read,
    .write = vhdx_write,
    .flush = vhdx_flush,
    .discard = vhdx_discard,
    .write_zeroes = vhdx_write_zeroes,
    .get_info = vhdx_get_info,
    .check = vhdx_check_locked,
    .resize = vhdx_resize_locked,
};
