/* SPDX-License-Identifier: MIT */
/*
 * VDI (VirtualBox Disk Image) driver internals: the on-disk layout of the
 * pre-header and header v1.1 (all little endian), and the driver's state.
 * Layout learned from VirtualBox's VDICore.h and QEMU's block/vdi.c.
 */
#ifndef VDISK_FORMAT_VDI_H
#define VDISK_FORMAT_VDI_H

#include <endian.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../format.h"
#include "bytes.h"

#define VDI_SIGNATURE   0xbeda107fu
#define VDI_VERSION_1_1 0x00010001u
#define VDI_V0_HEADER   348u /* header of major version 0 (VirtualBox's first), read only */

/* Image types */
#define VDI_TYPE_DYNAMIC 1u
#define VDI_TYPE_STATIC  2u
#define VDI_TYPE_UNDO    3u
#define VDI_TYPE_DIFF    4u

/* Block map entries other than a block index */
#define VDI_FREE 0xffffffffu /* not allocated: the parent's bytes, or zeroes */
#define VDI_ZERO 0xfffffffeu /* reads as zeroes, hides the parent */

/* Byte offsets in the file (pre-header 72 bytes, then header v1.1) */
#define VDI_OFF_TEXT       0
#define VDI_OFF_SIGNATURE  64
#define VDI_OFF_VERSION    68
#define VDI_OFF_HDR_SIZE   72
#define VDI_OFF_TYPE       76
#define VDI_OFF_FLAGS      80
#define VDI_OFF_COMMENT    84
#define VDI_COMMENT_LEN    256
#define VDI_OFF_BMAP       340
#define VDI_OFF_DATA       344
#define VDI_OFF_SECTOR     360 /* legacy geometry: cylinders 348, heads 352, sectors 356 */
#define VDI_OFF_DISK_SIZE  368
#define VDI_OFF_BLOCK_SIZE 376
#define VDI_OFF_BLOCK_XTRA 380
#define VDI_OFF_BLOCKS     384
#define VDI_OFF_ALLOCATED  388
#define VDI_OFF_UUID       392 /* image (creation), modification, link, parent modification */
#define VDI_HEADER_END     472 /* header v1.1 "plus" (with the LCHS geometry) ends here */
#define VDI_PRE_HEADER     72
#define VDI_HDR_SIZE_MIN   0x180 /* v1.1 without the LCHS geometry (QEMU writes this) */
#define VDI_HDR_SIZE_PLUS  0x190 /* v1.1 with it (VirtualBox writes this) */

/* The UUID fields, in header order */
enum { VDI_UUID_IMAGE, VDI_UUID_MODIFY, VDI_UUID_LINK, VDI_UUID_PARENT_MODIFY, VDI_NUUIDS };

/* Sanity limits */
#define VDI_BLOCK_MIN 512u
#define VDI_BLOCK_MAX (64u << 20)
#define VDI_ZERO_BUF  (1u << 20)
#define VDI_BLOCKS_MAX                                                                             \
    (1u << 24) /* 16 TiB of 1 MiB blocks: a 64 MiB map (and never over the file) */

/* Where a vdisk-made differencing image names its parent: its comment field. */
#define VDI_PARENT_TAG "vdisk-parent:"

struct vdi {
    struct vdisk_node *node;
    struct vdisk_file *file;
    uint8_t hdr[VDI_HEADER_END]; /* the pre-header and header as on disk, updated in place */
    uint32_t type, hdr_size, block_size, block_extra, blocks, allocated;
    uint32_t off_bmap, off_data;
    uint64_t disk_size, file_size, stride; /* stride: block_size + block_extra */
    uint32_t *bmap;                        /* host order */
    uint32_t *owner; /* owner[index] = the block that uses data slot index, or VDI_FREE */
    uint32_t next;   /* the data slot the next new block takes */
    uint32_t bad;    /* map entries that are out of range or shared: writes refused */
    uint32_t dirty_lo, dirty_hi; /* map entries changed since the last flush */
    atomic_bool dirty;           /* header or map changed since the last flush */
    bool linear;                 /* static, all blocks in order: VDISK_CAP_LINEAR */
    bool v0;                     /* header major version 0: hdr holds it as 1.1; read only */
    char *parent;                /* parent's name (option or comment), NULL for none */
    bool parent_from_option;
    bool parent_found;   /* by its UUID, beside the image or one directory up */
    uint8_t *zero_block; /* VDI_ZERO_BUF zeroes (or a block, if smaller) */

    /*
     * Locks (the driver is thread safe). lock (writer-preferring rwlock):
     * bmap, the dirty range, hdr, allocated, file_size; map() reads under it.
     * alloc_lock: next, owner, busy, inflight; held by flush (with no
     * allocation in flight, so the metadata it writes is stable) and by
     * exclusive work. pins: DATA mappings in use (released by vdi_release);
     * exclusive work (discard, write-zeroes, check) holds alloc_lock with no
     * allocation in flight, then lock for writing, then waits for no pins.
     */
    pthread_rwlock_t lock;
    pthread_mutex_t alloc_lock;
    pthread_cond_t alloc_done;
    uint8_t *busy;     /* blocks being allocated (a bit each) */
    unsigned inflight; /* allocations between slot and map entry */
    atomic_uint pins;
    pthread_mutex_t pin_lock;
    pthread_cond_t pin_done;
};

static inline const uint8_t *vdi_uuid(const struct vdi *s, int which)
{
    return s->hdr + VDI_OFF_UUID + 16 * which;
}

/* A buffer of LEN bytes aligned for O_DIRECT (aligned_alloc wants whole pages). */
static inline void *vdi_alloc_buf(uint64_t len)
{
    return aligned_alloc(4096, (len + 4095) & ~4095ull);
}

/* Host offset of data slot INDEX's first guest byte. */
static inline uint64_t vdi_slot_host(const struct vdi *s, uint32_t index)
{
    return s->off_data + (uint64_t)index * s->stride + s->block_extra;
}

/* vdi-resize.c */
int vdi_resize(struct vdisk_node *node, uint64_t size, unsigned flags);

/* vdi-io.c: the data path */
int vdi_map(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags,
            struct vdisk_map *m);
int vdi_write(struct vdisk_node *node, const void *buf, size_t len, uint64_t off, unsigned flags);
void vdi_release(struct vdisk_node *node, const struct vdisk_map *m);
int vdi_flush(struct vdisk_node *node);
/* Take (release) everything: no allocation in flight, map locked, no DATA mapping in use. */
void vdi_exclusive(struct vdi *s);
void vdi_exclusive_end(struct vdi *s);
int vdi_discard(struct vdisk_node *node, uint64_t off, uint64_t len);
int vdi_write_zeroes(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags);
/* Write the changed header and map entries (data made durable first), then flush. */
int vdi_write_metadata(struct vdi *s);
/* Mark map entry BLOCK changed. */
void vdi_set_entry(struct vdi *s, uint32_t block, uint32_t entry);
/* Copy data slot FROM to slot TO (both whole strides). */
int vdi_copy_slot(struct vdi *s, uint32_t from, uint32_t to);
/* Move the last used data slots into the holes; cut the file after the last one. */
int vdi_compact(struct vdi *s);

/* vdi-check.c */
int vdi_check(struct vdisk_node *node, unsigned flags, struct vdisk_check_result *res);
/* Count entries out of range or sharing a slot; rebuild owner[] and next. */
void vdi_scan(struct vdi *s);

/* A UUID as text, the fields as VirtualBox prints them (first three little endian). */
void vdi_uuid_str(const uint8_t *u, char out[37]);

#endif
