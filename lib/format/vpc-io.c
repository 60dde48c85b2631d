/* SPDX-License-Identifier: MIT */
/*
 * VHD data path: map() by BAT entry and sector bitmap, writes that allocate
 * blocks or mark sectors, and zeroing. Thread safe: s->lock (an rwlock) is
 * shared for map() and exclusive for whatever changes the BAT or a bitmap;
 * a fixed disk needs no lock at all.
 *
 * Power-cut order for a new block: bitmap + data over the old footer, the
 * footer after them, flush, then the BAT entry. For a sector newly marked in
 * an existing block: data, flush, then the bitmap.
 */
#include <errno.h>
#include <stdlib.h>

#include "../error.h"
#include "vpc.h"

/* Keep B as the bitmap of partly marked block BLK (the table is made on first need). */
static int keep_bitmap(struct vpc *s, uint32_t blk, uint8_t *b)
{
    if (!s->bitmap)
        s->bitmap = calloc(s->nblocks, sizeof(*s->bitmap));
    if (!s->bitmap)
        return vdisk_error(ENOMEM, "%s: out of memory for block bitmaps", s->node->path);
    s->bitmap[blk] = b;
    s->bstate[blk] = BM_PARTIAL;
    return 0;
}

int vpc_load_bitmap(struct vpc *s, uint32_t blk)
{
    uint8_t *b = malloc(s->bm_size);
    uint32_t full = s->spb / 8, i = 0;
    int r;

    if (!b)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    r = vdisk_file_pread(s->file, b, s->bm_size, (uint64_t)s->bat[blk] * VPC_SECTOR);
    if (r < 0) {
        free(b);
        return r;
    }
    while (i < full && b[i] == 0xff)
        i++;
    if (i == full) {
        free(b);
        s->bstate[blk] = BM_FULL;
        return 0;
    }
    r = keep_bitmap(s, blk, b);
    if (r < 0)
        free(b);
    return r;
}

/* Block BLK usable: inside the file, its bitmap known (may read it unless NOWAIT). */
static int block_ready(struct vpc *s, uint32_t blk, bool nowait)
{
    if (!vpc_block_ok(s, blk))
        return vdisk_error(EIO, "%s: VHD BAT entry %u (sector %u) points past the end of the file",
                           s->node->path, blk, s->bat[blk]);
    if (s->bstate[blk] != BM_UNKNOWN)
        return 0;
    return nowait ? -EAGAIN : vpc_load_bitmap(s, blk);
}

/* map() of a dynamic or differencing disk, S->lock held shared: -EAGAIN for an unread bitmap. */
static int map_locked(struct vpc *s, uint64_t off, uint64_t len, struct vdisk_map *m)
{
    uint32_t blk, first, last, i;
    uint64_t in, n, host;
    const uint8_t *b;
    int r;

    blk = (uint32_t)(off / s->block_size);
    in = off % s->block_size;
    n = s->block_size - in < len ? s->block_size - in : len;
    if (s->bat[blk] == VPC_BAT_FREE) { /* and the free blocks after it */
        while (n < len && blk + 1 < s->nblocks && s->bat[blk + 1] == VPC_BAT_FREE) {
            blk++;
            n += s->block_size < len - n ? s->block_size : len - n;
        }
        m->type = VDISK_MAP_UNALLOCATED;
        m->len = n;
        return 0;
    }
    r = block_ready(s, blk, true);
    if (r < 0)
        return r;
    host = (uint64_t)s->bat[blk] * VPC_SECTOR + s->bm_size + in;
    m->file = s->file;
    m->host = host;
    if (s->bstate[blk] == BM_FULL) { /* the next block's bitmap lies between: stop here */
        m->type = VDISK_MAP_DATA;
        m->len = n;
        return 0;
    }
    /* a run of sectors alike in the bitmap */
    b = s->bitmap[blk];
    first = (uint32_t)(in / VPC_SECTOR);
    last = (uint32_t)((in + n - 1) / VPC_SECTOR);
    for (i = first + 1; i <= last && vpc_bit(b, i) == vpc_bit(b, first); i++)
        ;
    if ((uint64_t)i * VPC_SECTOR < in + n)
        n = (uint64_t)i * VPC_SECTOR - in;
    m->len = n;
    if (vpc_bit(b, first))
        m->type = VDISK_MAP_DATA;
    else
        m->type = s->type == VPC_TYPE_DIFF ? VDISK_MAP_UNALLOCATED : VDISK_MAP_ZERO;
    return 0;
}

/*
 * Blocks never move once allocated and are never freed, so a DATA answer stays
 * valid after the lock is dropped: no pins, no release().
 */
int vpc_map(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags,
            struct vdisk_map *m)
{
    struct vpc *s = node->priv;
    int r;

    if (s->type == VPC_TYPE_FIXED) {
        m->type = VDISK_MAP_DATA;
        m->len = len;
        m->file = s->file;
        m->host = off;
        return 0;
    }
    for (;;) {
        if (!(flags & VDISK_MAP_NOWAIT))
            pthread_rwlock_rdlock(&s->lock);
        else if (pthread_rwlock_tryrdlock(&s->lock) != 0)
            return -EAGAIN;
        r = map_locked(s, off, len, m);
        pthread_rwlock_unlock(&s->lock);
        if (r != -EAGAIN || (flags & VDISK_MAP_NOWAIT))
            return r;
        /* the block's bitmap is not read yet: read it exclusively, then map again */
        pthread_rwlock_wrlock(&s->lock);
        r = block_ready(s, (uint32_t)(off / s->block_size), false);
        pthread_rwlock_unlock(&s->lock);
        if (r < 0)
            return r;
    }
}

/* Is sector SEC of block BLK (allocated, bitmap known) marked? */
static bool sector_set(const struct vpc *s, uint32_t blk, uint32_t sec)
{
    return s->bstate[blk] == BM_FULL || vpc_bit(s->bitmap[blk], sec);
}

/* The guest's current bytes of sector SEC of block BLK, into DST (512 bytes). */
static int read_sector(struct vpc *s, uint32_t blk, uint32_t sec, uint8_t *dst)
{
    uint64_t guest = (uint64_t)blk * s->block_size + (uint64_t)sec * VPC_SECTOR;

    if (s->bat[blk] != VPC_BAT_FREE && sector_set(s, blk, sec))
        return vdisk_file_pread(s->file, dst, VPC_SECTOR,
                                (uint64_t)s->bat[blk] * VPC_SECTOR + s->bm_size +
                                    (uint64_t)sec * VPC_SECTOR);
    if (s->type == VPC_TYPE_DIFF)
        return vdisk_node_read_backing(s->node, dst, VPC_SECTOR, guest);
    memset(dst, 0, VPC_SECTOR);
    return 0;
}

/* Write the 4-byte BAT entry of BLK. */
static int write_bat(struct vpc *s, uint32_t blk, uint32_t v)
{
    uint8_t e[4];

    put_be32(e, v);
    return vdisk_file_pwrite(s->file, e, 4, s->bat_off + (uint64_t)blk * 4);
}

/* Allocate block BLK with sectors [A, A+LEN) (sector aligned, in block) from SRC. */
static int allocate_block(struct vpc *s, uint32_t blk, uint64_t a, const uint8_t *src, uint64_t len)
{
    /* data on a page boundary: a page is written whole (direct I/O, a killed writer) */
    uint64_t gap = s->next_block, data = (gap + s->bm_size + 4095) & ~4095ull;
    uint64_t at = data - s->bm_size, end = data + s->block_size;
    uint64_t cur = s->file_size, zero_end = s->type == VPC_TYPE_DIFF ? at : end;
    uint8_t *bm = calloc(1, s->bm_size);
    int r = 0;

    if (!bm)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    if (at / VPC_SECTOR >= VPC_BAT_FREE) {
        free(bm);
        return vdisk_error(EFBIG, "%s: VHD file would grow past 2 TiB of sectors", s->node->path);
    }
    if (s->type == VPC_TYPE_DIFF) { /* only the written sectors: the rest is the parent's */
        for (uint64_t i = a / VPC_SECTOR; i < (a + len) / VPC_SECTOR; i++)
            bm[i >> 3] |= 0x80u >> (i & 7);
    } else { /* every sector: the ones not written read as zeroes */
        memset(bm, 0xff, s->spb / 8);
    }
    if (zero_end > cur) /* the file ends before: a hole reads as zeroes */
        zero_end = cur;
    if (zero_end > gap) /* the old footer, a torn earlier allocation: nothing stale stays */
        r = vdisk_file_zero_range(s->file, gap, zero_end - gap, false);
    if (r == 0)
        r = vdisk_file_pwrite(s->file, bm, s->bm_size, at);
    if (r == 0)
        r = vdisk_file_pwrite_alloc(s->file, src, len, data + a);
    if (r == 0)
        r = vdisk_file_pwrite(s->file, s->footer, VPC_FOOTER_SIZE, end);
    if (r == 0 && cur > end + VPC_FOOTER_SIZE) /* the footer must end the file */
        r = vdisk_file_truncate(s->file, end + VPC_FOOTER_SIZE);
    if (r == 0)
        r = vdisk_file_flush(s->file);
    if (r == 0)
        r = write_bat(s, blk, (uint32_t)(at / VPC_SECTOR));
    if (r < 0) {
        free(bm);
        return r;
    }
    s->file_size = end + VPC_FOOTER_SIZE;
    s->next_block = end;
    s->bat[blk] = (uint32_t)(at / VPC_SECTOR);
    if (s->type == VPC_TYPE_DIFF && len < s->block_size) {
        s->bstate[blk] = BM_UNKNOWN; /* if memory runs out, read it again when needed */
        if (keep_bitmap(s, blk, bm) < 0)
            free(bm);
        return 0;
    }
    free(bm);
    s->bstate[blk] = BM_FULL;
    return 0;
}

/* Mark sectors [FIRST, END) of allocated block BLK in its bitmap (after their data). */
static int mark_sectors(struct vpc *s, uint32_t blk, uint32_t first, uint32_t end)
{
    uint8_t *b = s->bitmap[blk];
    uint32_t lo = first / 8 / VPC_SECTOR, hi = (end - 1) / 8 / VPC_SECTOR, i = 0;
    bool change = false;
    int r;

    for (uint32_t k = first; k < end && !change; k++)
        change = !vpc_bit(b, k);
    if (!change)
        return 0;
    r = vdisk_file_flush(s->file); /* the data first: a marked sector must hold it */
    if (r < 0)
        return r;
    for (uint32_t k = first; k < end; k++)
        b[k >> 3] |= 0x80u >> (k & 7);
    r = vdisk_file_pwrite(s->file, b + lo * VPC_SECTOR, (hi - lo + 1) * VPC_SECTOR,
                          (uint64_t)s->bat[blk] * VPC_SECTOR + lo * VPC_SECTOR);
    if (r < 0)
        return r;
    while (i < s->spb / 8 && b[i] == 0xff)
        i++;
    if (i == s->spb / 8) {
        free(b);
        s->bitmap[blk] = NULL;
        s->bstate[blk] = BM_FULL;
    }
    return 0;
}

/* Write [IN, IN+N) of block BLK from BUF. */
static int write_block(struct vpc *s, uint32_t blk, uint64_t in, const uint8_t *buf, uint64_t n)
{
    uint64_t a = in & ~(uint64_t)(VPC_SECTOR - 1), b = (in + n + VPC_SECTOR - 1) & ~511ull;
    const uint8_t *src = buf;
    uint8_t *tmp = NULL;
    int r = 0;

    if (s->bat[blk] != VPC_BAT_FREE) {
        r = block_ready(s, blk, false);
        if (r < 0)
            return r;
    }
    if (a != in || b != in + n) { /* partial sectors: their other bytes as they are now */
        tmp = malloc(b - a);
        if (!tmp)
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        r = read_sector(s, blk, (uint32_t)(a / VPC_SECTOR), tmp);
        if (r == 0 && b - a > VPC_SECTOR)
            r = read_sector(s, blk, (uint32_t)(b / VPC_SECTOR - 1), tmp + (b - a) - VPC_SECTOR);
        memcpy(tmp + (in - a), buf, n);
        src = tmp;
    }
    if (r == 0 && s->bat[blk] == VPC_BAT_FREE)
        r = allocate_block(s, blk, a, src, b - a);
    else if (r == 0) {
        r = vdisk_file_pwrite_alloc(s->file, src, b - a,
                                    (uint64_t)s->bat[blk] * VPC_SECTOR + s->bm_size + a);
        if (r == 0 && s->bstate[blk] == BM_PARTIAL)
            r = mark_sectors(s, blk, (uint32_t)(a / VPC_SECTOR), (uint32_t)(b / VPC_SECTOR));
    }
    free(tmp);
    return r;
}

int vpc_write(struct vdisk_node *node, const void *buf, size_t len, uint64_t off, unsigned flags)
{
    struct vpc *s = node->priv;
    const uint8_t *p = buf;
    int r = 0;

    if (s->type == VPC_TYPE_FIXED) /* only the probe window comes here */
        r = vdisk_file_pwrite(s->file, buf, len, off);
    else
        pthread_rwlock_wrlock(&s->lock);
    while (s->type != VPC_TYPE_FIXED && len > 0 && r == 0) {
        uint32_t blk = (uint32_t)(off / s->block_size);
        uint64_t in = off % s->block_size;
        uint64_t n = s->block_size - in < len ? s->block_size - in : len;

        r = write_block(s, blk, in, p, n);
        p += n;
        off += n;
        len -= n;
    }
    if (s->type != VPC_TYPE_FIXED)
        pthread_rwlock_unlock(&s->lock);
    if (r == 0 && (flags & VDISK_WRITE_FUA))
        r = vdisk_file_flush(s->file);
    return r;
}

/* Zero (UNMAP: or punch) what the guest sees at [OFF, OFF+LEN) of a fixed or dynamic disk. */
static int zero_range(struct vpc *s, uint64_t off, uint64_t len, bool unmap)
{
    int r = 0;

    if (s->type == VPC_TYPE_FIXED)
        return vdisk_file_zero_range(s->file, off, len, unmap);
    pthread_rwlock_wrlock(&s->lock);
    while (len > 0 && r == 0) {
        uint32_t blk = (uint32_t)(off / s->block_size);
        uint64_t in = off % s->block_size;
        uint64_t n = s->block_size - in < len ? s->block_size - in : len;

        /* a free block reads as zeroes, and so do unmarked sectors: zero the file under all */
        if (s->bat[blk] != VPC_BAT_FREE) {
            r = block_ready(s, blk, false);
            if (r == 0)
                r = vdisk_file_zero_range(
                    s->file, (uint64_t)s->bat[blk] * VPC_SECTOR + s->bm_size + in, n, unmap);
        }
        off += n;
        len -= n;
    }
    pthread_rwlock_unlock(&s->lock);
    return r;
}

int vpc_write_zeroes(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags)
{
    struct vpc *s = node->priv;
    int r;

    if (s->type == VPC_TYPE_DIFF) /* zeroes must hide the parent: the layer writes them */
        return -ENOTSUP;
    r = zero_range(s, off, len, flags & VDISK_ZERO_MAY_UNMAP);
    if (r == 0 && (flags & VDISK_ZERO_FUA))
        r = vdisk_file_flush(s->file);
    return r;
}

int vpc_discard(struct vdisk_node *node, uint64_t off, uint64_t len)
{
    struct vpc *s = node->priv;
    int r;

    if (s->type == VPC_TYPE_DIFF) /* advisory: the data stays */
        return 0;
    r = zero_range(s, off, len, true);
    return (r == -EOPNOTSUPP || r == -ENOTSUP) ? 0 : r;
}
