/* SPDX-License-Identifier: MIT */
/*
 * VDI data path: map() over the block map, allocating writes (block data,
 * then the map entry and the header count, made durable at the next flush
 * after the data), discard and write-zeroes to the ZERO state with the data
 * area kept compact (the last block moves into a freed slot, as VirtualBox
 * does, so that every writer can keep allocating at blocks_allocated).
 * Thread safe (locks in vdi.h): maps run in parallel under a read lock;
 * allocations take a slot under alloc_lock, write the block with no lock and
 * then link it, so blocks fill in parallel; discard, write-zeroes and check
 * run alone.
 */
#include <errno.h>
#include <stdlib.h>

#include "../error.h"
#include "vdi.h"

int vdi_map(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags,
            struct vdisk_map *m)
{
    struct vdi *s = node->priv;
    uint64_t bs = s->block_size, o = off & (bs - 1);
    uint64_t b = off / bs, n = bs - o < len ? bs - o : len;
    uint32_t e;

    if (!(flags & VDISK_MAP_NOWAIT))
        pthread_rwlock_rdlock(&s->lock);
    else if (pthread_rwlock_tryrdlock(&s->lock) != 0)
        return -EAGAIN;
    e = s->bmap[b];
    m->len = n;
    if (e == VDI_FREE || e == VDI_ZERO) {
        if (flags & VDISK_MAP_WRITE) {
            m->type = VDISK_MAP_OTHER;
            goto out;
        }
        m->type = e == VDI_FREE ? VDISK_MAP_UNALLOCATED : VDISK_MAP_ZERO;
        while (m->len < len && b + 1 < s->blocks && s->bmap[b + 1] == e) {
            b++;
            m->len += bs < len - m->len ? bs : len - m->len;
        }
        goto out;
    }
    if ((flags & VDISK_MAP_WRITE) && (s->bad || ((flags & VDISK_MAP_FUA) && s->dirty))) {
        m->type = VDISK_MAP_OTHER; /* refused, or the metadata must be made durable too */
        goto out;
    }
    m->type = VDISK_MAP_DATA;
    m->file = s->file;
    m->host = vdi_slot_host(s, e) + o;
    while (!s->block_extra && m->len < len && b + 1 < s->blocks && s->bmap[b + 1] == e + 1 &&
           e + 1 < VDI_ZERO) {
        b++, e++;
        m->len += bs < len - m->len ? bs : len - m->len;
    }
    atomic_fetch_add(&s->pins, 1); /* exclusive work waits until it is released */
    m->handle = 1;
out:
    pthread_rwlock_unlock(&s->lock);
    return 0;
}

static void unpin(struct vdi *s)
{
    if (atomic_fetch_sub(&s->pins, 1) == 1) {
        pthread_mutex_lock(&s->pin_lock);
        pthread_cond_broadcast(&s->pin_done);
        pthread_mutex_unlock(&s->pin_lock);
    }
}

void vdi_release(struct vdisk_node *node, const struct vdisk_map *m)
{
    if (m->handle)
        unpin(node->priv);
}

void vdi_exclusive(struct vdi *s)
{
    pthread_mutex_lock(&s->alloc_lock);
    while (s->inflight)
        pthread_cond_wait(&s->alloc_done, &s->alloc_lock);
    pthread_rwlock_wrlock(&s->lock);
    pthread_mutex_lock(&s->pin_lock);
    while (atomic_load(&s->pins))
        pthread_cond_wait(&s->pin_done, &s->pin_lock);
    pthread_mutex_unlock(&s->pin_lock);
}

void vdi_exclusive_end(struct vdi *s)
{
    pthread_rwlock_unlock(&s->lock);
    pthread_mutex_unlock(&s->alloc_lock);
}

void vdi_set_entry(struct vdi *s, uint32_t block, uint32_t entry)
{
    s->bmap[block] = entry;
    if (!s->dirty || block < s->dirty_lo)
        s->dirty_lo = block;
    if (!s->dirty || block > s->dirty_hi)
        s->dirty_hi = block;
    s->dirty = true;
}

/*
 * Write the header count and the changed map entries, after the data they
 * point at is durable; flush. Where the map follows the header closely (vdisk
 * and QEMU images) one write carries both, so no crash leaves them disagreeing.
 */
int vdi_write_metadata(struct vdi *s)
{
    uint64_t span = s->off_bmap + 4ull * (s->dirty_hi + 1);
    uint8_t *buf;
    int r;

    if (!s->dirty)
        return vdisk_file_flush(s->file);
    r = vdisk_file_flush(s->file);
    if (r < 0)
        return r;
    put_le32(s->hdr + VDI_OFF_ALLOCATED, s->allocated);
    if (s->off_bmap <= 4096 && span <= (1u << 20)) {
        buf = malloc(span);
        if (!buf)
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        memcpy(buf, s->hdr, VDI_HEADER_END);
        r = vdisk_file_pread(s->file, buf + VDI_HEADER_END, s->off_bmap - VDI_HEADER_END,
                             VDI_HEADER_END);
        for (uint32_t i = 0; i <= s->dirty_hi; i++)
            put_le32(buf + s->off_bmap + 4 * i, s->bmap[i]);
        if (r == 0)
            r = vdisk_file_pwrite(s->file, buf, span, 0);
    } else {
        uint32_t n = s->dirty_hi - s->dirty_lo + 1;

        buf = malloc(4ull * n);
        if (!buf)
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        for (uint32_t i = 0; i < n; i++)
            put_le32(buf + 4 * i, s->bmap[s->dirty_lo + i]);
        r = vdisk_file_pwrite(s->file, buf, 4ull * n, s->off_bmap + 4ull * s->dirty_lo);
        if (r == 0)
            r = vdisk_file_pwrite(s->file, s->hdr, VDI_HEADER_END, 0);
    }
    free(buf);
    if (r == 0)
        r = vdisk_file_flush(s->file);
    if (r == 0)
        s->dirty = false;
    return r;
}

/* With no allocation in flight (none starts meanwhile) the metadata stands still. */
int vdi_flush(struct vdisk_node *node)
{
    struct vdi *s = node->priv;
    int r;

    pthread_mutex_lock(&s->alloc_lock);
    while (s->inflight)
        pthread_cond_wait(&s->alloc_done, &s->alloc_lock);
    r = vdi_write_metadata(s);
    pthread_mutex_unlock(&s->alloc_lock);
    return r;
}

/* A free data slot: the next one past the used ones, else a hole. */
static int alloc_slot(struct vdi *s, uint32_t *slot)
{
    if (s->next < s->blocks) {
        *slot = s->next;
        return 0;
    }
    for (uint32_t i = 0; i < s->blocks; i++) {
        if (s->owner[i] == VDI_FREE) {
            *slot = i;
            return 0;
        }
    }
    return vdisk_error(ENOSPC, "%s: no free VDI data slot (block map inconsistent?)",
                       s->node->path);
}

/* Zero the extra data in front of slot SLOT (images with block_extra only). */
static int zero_extra(struct vdi *s, uint32_t slot)
{
    uint64_t at = s->off_data + (uint64_t)slot * s->stride;
    int r = 0;

    /* no buffers written where the file system can zero (it may be 64 MiB) */
    if (vdisk_file_zero_alloc(s->file, at, s->block_extra) == 0)
        return 0;
    for (uint64_t done = 0; r == 0 && done < s->block_extra; done += VDI_ZERO_BUF) {
        uint64_t n = s->block_extra - done < VDI_ZERO_BUF ? s->block_extra - done : VDI_ZERO_BUF;

        r = vdisk_file_pwrite(s->file, s->zero_block, n, at + done);
    }
    return r;
}

static void set_busy(struct vdi *s, uint32_t block, bool on)
{
    if (on)
        s->busy[block / 8] |= 1u << (block % 8);
    else
        s->busy[block / 8] &= ~(1u << (block % 8));
}

static bool is_busy(const struct vdi *s, uint32_t block)
{
    return s->busy[block / 8] & (1u << (block % 8));
}

/*
 * Give BLOCK (entry E, not DATA) data slot SLOT holding what it read before
 * (the parent's bytes of a free block in a differencing image, else zeroes)
 * with [O, O+N) from BUF; the caller reserved SLOT and marked BLOCK busy.
 * No lock is held while the block is written.
 */
static int fill_block(struct vdi *s, uint32_t block, uint32_t e, uint32_t slot, const void *buf,
                      uint64_t o, uint64_t n)
{
    uint64_t bs = s->block_size, host = vdi_slot_host(s, slot), at = host, len = bs;
    const uint8_t *data = buf;
    uint8_t *tmp = NULL;
    int r = 0;

    /*
     * The rest is zeroes: zero the slot without writing buffers (allocated, the
     * file grown to cover it), then write N bytes, not a whole block (a 4 KiB
     * write into a new 1 MiB block wrote 1 MiB). Where the file system can't,
     * the whole block is written as before.
     */
    if (n != bs && !(e == VDI_FREE && s->node->backing) &&
        vdisk_file_zero_alloc(s->file, host, bs) == 0) {
        at = host + o;
        len = n;
    } else if (n != bs) {
        tmp = vdi_alloc_buf(bs);
        if (!tmp)
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        if (e == VDI_FREE && s->node->backing)
            r = vdisk_node_read_backing(s->node, tmp, bs, (uint64_t)block * bs);
        else
            memset(tmp, 0, bs);
        memcpy(tmp + o, buf, n);
        data = tmp;
    }
    if (r == 0 && s->block_extra)
        r = zero_extra(s, slot);
    if (r == 0)
        r = vdisk_file_pwrite_alloc(s->file, data, len, at);
    free(tmp);
    if (r < 0)
        return r;
    pthread_rwlock_wrlock(&s->lock);
    if (host + bs > s->file_size)
        s->file_size = host + bs;
    s->allocated++;
    vdi_set_entry(s, block, slot);
    pthread_rwlock_unlock(&s->lock);
    return 0;
}

/* Write [O, O+N) of BLOCK: in place if it has data, else into a new slot. */
static int write_block(struct vdi *s, uint32_t block, const void *buf, uint64_t o, uint64_t n)
{
    uint32_t e, slot = 0;
    int r;

    for (;;) {
        pthread_rwlock_rdlock(&s->lock);
        e = s->bmap[block];
        if (e != VDI_FREE && e != VDI_ZERO) {
            uint64_t host = vdi_slot_host(s, e) + o;

            atomic_fetch_add(&s->pins, 1);
            pthread_rwlock_unlock(&s->lock);
            r = vdisk_file_pwrite(s->file, buf, n, host);
            unpin(s);
            return r;
        }
        pthread_rwlock_unlock(&s->lock);
        pthread_mutex_lock(&s->alloc_lock);
        if (!is_busy(s, block))
            break;
        while (is_busy(s, block)) /* another writer is allocating it: then write in place */
            pthread_cond_wait(&s->alloc_done, &s->alloc_lock);
        pthread_mutex_unlock(&s->alloc_lock);
    }
    /* entries turn into data only while busy, and discard holds alloc_lock: E stands */
    e = __atomic_load_n(&s->bmap[block], __ATOMIC_RELAXED);
    if (e != VDI_FREE && e != VDI_ZERO) {
        pthread_mutex_unlock(&s->alloc_lock);
        return write_block(s, block, buf, o, n);
    }
    r = alloc_slot(s, &slot);
    if (r < 0) {
        pthread_mutex_unlock(&s->alloc_lock);
        return r;
    }
    s->owner[slot] = block;
    if (slot >= s->next)
        s->next = slot + 1;
    set_busy(s, block, true);
    s->inflight++;
    pthread_mutex_unlock(&s->alloc_lock);

    r = fill_block(s, block, e, slot, buf, o, n);

    pthread_mutex_lock(&s->alloc_lock);
    if (r < 0) {
        s->owner[slot] = VDI_FREE; /* a hole until compaction, or the next allocation */
        if (slot + 1 == s->next)
            s->next = slot;
    }
    set_busy(s, block, false);
    s->inflight--;
    pthread_cond_broadcast(&s->alloc_done);
    pthread_mutex_unlock(&s->alloc_lock);
    return r;
}

static int refuse_bad(struct vdi *s)
{
    return vdisk_error(EIO,
                       "%s: the VDI block map has %u entries out of range or shared: writes "
                       "are refused until `vdisk check -r all` repairs it",
                       s->node->path, s->bad);
}

int vdi_write(struct vdisk_node *node, const void *buf, size_t len, uint64_t off, unsigned flags)
{
    struct vdi *s = node->priv;
    const uint8_t *p = buf;
    uint64_t bs = s->block_size;
    int r = 0;

    if (s->bad) /* changes only in check, which runs alone */
        return refuse_bad(s);
    while (len && r == 0) {
        uint64_t b = off / bs, o = off & (bs - 1), n = bs - o < len ? bs - o : len;

        r = write_block(s, (uint32_t)b, p, o, n);
        p += n, off += n, len -= n;
    }
    if (r == 0 && (flags & VDISK_WRITE_FUA))
        r = vdi_flush(node);
    return r;
}

int vdi_copy_slot(struct vdi *s, uint32_t from, uint32_t to)
{
    uint64_t src = s->off_data + (uint64_t)from * s->stride;
    uint64_t dst = s->off_data + (uint64_t)to * s->stride;
    uint8_t *tmp = vdi_alloc_buf(s->block_size);
    int r = 0;

    if (!tmp)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    for (uint64_t done = 0; r == 0 && done < s->stride; done += s->block_size) {
        uint64_t n = s->stride - done < s->block_size ? s->stride - done : s->block_size;

        r = vdisk_file_pread(s->file, tmp, n, src + done);
        if (r == 0)
            r = vdisk_file_pwrite(s->file, tmp, n, dst + done);
    }
    free(tmp);
    return r;
}

/* BLOCK reads as zeroes now; its slot becomes a hole (vdi_compact fills it). */
static void zero_block(struct vdi *s, uint32_t block)
{
    uint32_t e = s->bmap[block];

    if (e < s->blocks && s->owner[e] == block) {
        s->owner[e] = VDI_FREE;
        s->allocated--;
    }
    vdi_set_entry(s, block, VDI_ZERO);
}

/*
 * Close the holes in the data area: the last used slot moves into the lowest
 * hole until none is left; then the file is cut after the last slot. The
 * moves and the cut come after the metadata that freed the holes is durable,
 * and the cut after the metadata of the moves.
 */
int vdi_compact(struct vdi *s)
{
    uint32_t hole = 0;
    bool moved = false;
    int r = vdi_write_metadata(s);

    while (r == 0) {
        while (s->next > 0 && s->owner[s->next - 1] == VDI_FREE)
            s->next--;
        while (hole < s->next && s->owner[hole] != VDI_FREE)
            hole++;
        if (hole >= s->next)
            break;
        r = vdi_copy_slot(s, s->next - 1, hole);
        if (r < 0)
            break;
        s->owner[hole] = s->owner[s->next - 1];
        s->owner[s->next - 1] = VDI_FREE;
        vdi_set_entry(s, s->owner[hole], hole);
        moved = true;
    }
    if (r == 0 && moved)
        r = vdi_write_metadata(s);
    if (r == 0 && s->file_size > s->off_data + (uint64_t)s->next * s->stride) {
        s->file_size = s->off_data + (uint64_t)s->next * s->stride;
        r = vdisk_file_truncate(s->file, s->file_size);
    }
    return r;
}

/* Whole blocks of [OFF, OFF+LEN) (the last, partial block of the disk counts as whole). */
static void whole_blocks(const struct vdi *s, uint64_t off, uint64_t len, uint64_t *first,
                         uint64_t *end)
{
    uint64_t bs = s->block_size, e = off + len;

    *first = (off + bs - 1) / bs;
    *end = e == s->disk_size ? (e + bs - 1) / bs : e / bs;
    if (*end < *first)
        *end = *first;
}

/* Whole blocks [FIRST, END) become ZERO (FREE ones too, where a parent would show). */
static int zero_blocks(struct vdi *s, uint64_t first, uint64_t end)
{
    bool changed = false;
    int r = 0;

    if (first >= end)
        return 0;
    vdi_exclusive(s);
    for (uint64_t b = first; b < end; b++) {
        uint32_t e = s->bmap[b];

        /* a free block of a plain image already reads as zeroes */
        if (e == VDI_ZERO || (e == VDI_FREE && s->type != VDI_TYPE_DIFF))
            continue;
        zero_block(s, (uint32_t)b);
        changed = true;
    }
    if (changed)
        r = vdi_compact(s);
    vdi_exclusive_end(s);
    return r;
}

int vdi_discard(struct vdisk_node *node, uint64_t off, uint64_t len)
{
    struct vdi *s = node->priv;
    uint64_t first, end;

    if (s->linear) { /* as raw (and loop on it): holes in the data area */
        int r = vdisk_file_punch_hole(s->file, s->off_data + off, len);

        return (r == -EOPNOTSUPP || r == -ENOTSUP) ? 0 : r;
    }
    if (s->type == VDI_TYPE_STATIC)
        return 0; /* a static image keeps every block */
    if (s->bad)
        return refuse_bad(s);
    whole_blocks(s, off, len, &first, &end);
    return zero_blocks(s, first, end);
}

int vdi_write_zeroes(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags)
{
    struct vdi *s = node->priv;
    uint64_t first, end, bs = s->block_size, stop = off + len;
    int r = 0;

    if (s->linear) {
        r = vdisk_file_zero_range(s->file, s->off_data + off, len, flags & VDISK_ZERO_MAY_UNMAP);
        if (r == 0 && (flags & VDISK_ZERO_FUA))
            r = vdisk_file_flush(s->file);
        return r;
    }
    if (s->type == VDI_TYPE_STATIC)
        return -ENOTSUP; /* the image layer writes zero buffers */
    if (s->bad)
        return refuse_bad(s);
    whole_blocks(s, off, len, &first, &end);
    for (; off < stop && r == 0; off += bs - (off & (bs - 1))) { /* parts of blocks: written */
        uint64_t b = off / bs, n = bs - (off & (bs - 1));
        uint32_t e;

        if (b >= first && b < end)
            continue;
        if (n > stop - off)
            n = stop - off;
        pthread_rwlock_rdlock(&s->lock);
        e = s->bmap[b];
        pthread_rwlock_unlock(&s->lock);
        if (e == VDI_ZERO || (e == VDI_FREE && !node->backing))
            continue; /* reads as zeroes already */
        for (uint64_t d = 0; r == 0 && d < n; d += VDI_ZERO_BUF)
            r = vdi_write(node, s->zero_block, n - d < VDI_ZERO_BUF ? n - d : VDI_ZERO_BUF, off + d,
                          0);
    }
    if (r == 0)
        r = zero_blocks(s, first, end);
    if (r == 0 && (flags & VDISK_ZERO_FUA))
        r = vdi_flush(node);
    return r;
}
