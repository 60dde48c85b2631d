/* SPDX-License-Identifier: MIT */
/*
 * VHD (Virtual PC / Hyper-V "vpc"): shared state of the driver's files.
 * Spec: Microsoft Virtual Hard Disk Image Format Specification 1.0.
 * A 512-byte big-endian footer ends the file (fixed: after the data; dynamic
 * and differencing: also copied at offset 0), a dynamic header names the BAT
 * (u32 sector offsets of blocks, ~0 free) and, for differencing disks, the
 * parent. A block is a sector bitmap (512-byte aligned) then the data.
 */
#ifndef VDISK_FORMAT_VPC_H
#define VDISK_FORMAT_VPC_H

#include <endian.h>
#include <pthread.h>
#include <string.h>

#include "../format.h"
#include "bytes.h"

#define VPC_SECTOR        512u
#define VPC_FOOTER_SIZE   512u
#define VPC_DYN_SIZE      1024u
#define VPC_TYPE_FIXED    2u
#define VPC_TYPE_DYN      3u
#define VPC_TYPE_DIFF     4u
#define VPC_BAT_FREE      0xffffffffu
#define VPC_NO_OFFSET     0xffffffffffffffffull
#define VPC_MAX_GEOMETRY  (65535ull * 16 * 255) /* CHS at its maximum, in sectors */
#define VPC_MAX_SECTORS   0xff000000ull         /* 2040 GiB, as QEMU */
#define VPC_MAX_BLOCK     (256u << 20)          /* refuse absurd block sizes */
#define VPC_MAX_ENTRIES   (1u << 24)            /* a BAT of 64 MiB: 2040 GiB in 128 KiB blocks */
#define VPC_EPOCH         946684800ull          /* 2000-01-01 00:00:00 UTC */
#define VPC_DEFAULT_BLOCK (2u << 20)

/* footer field offsets */
#define VF_COOKIE   0
#define VF_FEATURES 8
#define VF_VERSION  12
#define VF_DATA_OFF 16
#define VF_TIME     24
#define VF_APP      28
#define VF_APP_VER  32
#define VF_APP_OS   36
#define VF_ORIG     40
#define VF_CURRENT  48
#define VF_CYLS     56
#define VF_HEADS    58
#define VF_SECS     59
#define VF_TYPE     60
#define VF_CHECKSUM 64
#define VF_UUID     68

/* dynamic header field offsets */
#define VD_COOKIE      0
#define VD_DATA_OFF    8
#define VD_TABLE_OFF   16
#define VD_VERSION     24
#define VD_ENTRIES     28
#define VD_BLOCK_SIZE  32
#define VD_CHECKSUM    36
#define VD_PARENT_UUID 40
#define VD_PARENT_TIME 56
#define VD_PARENT_NAME 64  /* 512 bytes of UTF-16BE */
#define VD_LOCATORS    576 /* 8 entries of 24 bytes */

/* parent locator platform codes */
#define VPC_PLAT_W2RU 0x57327275u /* "W2ru": relative path, UTF-16LE */
#define VPC_PLAT_W2KU 0x57326b75u /* "W2ku": absolute path, UTF-16LE */

/* what an allocated block's bitmap says, cached */
enum { BM_UNKNOWN, BM_FULL, BM_PARTIAL };

struct vpc {
    pthread_rwlock_t lock; /* shared: map; exclusive: BAT, bitmaps, next_block, file_size */
    struct vdisk_node *node;
    struct vdisk_file *file;
    uint8_t footer[VPC_FOOTER_SIZE]; /* as on disk */
    uint8_t dyn[VPC_DYN_SIZE];       /* dynamic header (not fixed) */
    uint32_t type;
    bool use_chs;        /* the size came from CHS */
    bool end_footer_bad; /* dynamic: the footer at the end was not a valid copy */
    uint64_t file_size;  /* at open */
    /* dynamic and differencing */
    uint64_t bat_off;
    uint32_t nblocks;                  /* BAT entries in use: the virtual size's blocks */
    uint32_t max_entries;              /* as the header says */
    uint32_t *bat;                     /* host order */
    uint32_t block_size, spb, bm_size; /* bytes, sectors per block, bitmap bytes (x512) */
    uint8_t *bstate;                   /* per block: BM_* */
    uint8_t **bitmap;    /* per block: the bitmap of a BM_PARTIAL block (NULL: none yet) */
    uint64_t meta_end;   /* end of header, BAT and locator data */
    uint64_t next_block; /* file offset of the next new block (the footer's place) */
    char *parent;        /* differencing: the parent path as found */
    uint8_t *zero;       /* a zeroed buffer of bm_size bytes */
};

/* Is sector bit I of bitmap B set (most significant bit first)? */
static inline bool vpc_bit(const uint8_t *b, uint32_t i)
{
    return b[i >> 3] & (0x80u >> (i & 7));
}

/* vpc.c */
/* Ones' complement of the byte sum of LEN bytes, skipping the 4-byte field at SKIP. */
uint32_t vpc_checksum(const uint8_t *p, size_t len, size_t skip);
/* Read FILE's footer (the copy at 0 if there is one, else the last 512 bytes), checked. */
int vpc_read_footer(struct vdisk_file *file, uint64_t file_size, uint8_t *footer,
                    bool *end_footer_bad);
/* The virtual size the footer gives, by QEMU's creator rules; *CHS says which. */
uint64_t vpc_footer_size(const uint8_t *footer, const char *force, bool *chs);

/* vpc-create.c */
int vpc_create(struct vdisk_node *node, uint64_t size, const struct vdisk_options *opts);

/* Set footer F's size and geometry fields for *SIZE, rounded as create rounds it (FORCE: exact). */
int vpc_footer_set_size(uint8_t *f, uint64_t *size, bool force, const char *path);

/* vpc-resize.c */
int vpc_resize(struct vdisk_node *node, uint64_t size, unsigned flags);
/* Does [HOST, HOST+LEN) overlap the dynamic header, the BAT or a parent locator's data? */
bool vpc_overlaps_meta(const struct vpc *s, uint64_t host, uint64_t len);

/* vpc-parent.c */
int vpc_open_parent(struct vpc *s);
/* UTF-8 IN to UTF-16 (LE unless BE) in OUT (at most OUTLEN bytes); bytes written or -errno. */
int vpc_to_utf16(const char *in, bool be, uint8_t *out, size_t outlen);

/* vpc-io.c */
int vpc_map(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags,
            struct vdisk_map *m);
int vpc_write(struct vdisk_node *node, const void *buf, size_t len, uint64_t off, unsigned flags);
int vpc_write_zeroes(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags);
int vpc_discard(struct vdisk_node *node, uint64_t off, uint64_t len);
/* Load block BLK's bitmap state (BM_FULL or BM_PARTIAL with s->bitmap[blk]). */
int vpc_load_bitmap(struct vpc *s, uint32_t blk);
/* Is the BAT entry of BLK a block inside the file? */
bool vpc_block_ok(const struct vpc *s, uint32_t blk);

/* vpc-check.c */
int vpc_check(struct vdisk_node *node, unsigned flags, struct vdisk_check_result *res);
/* Write the footer at 0 and at the end of the blocks, and end the file there. */
int vpc_repair_footers(struct vpc *s);

/* vpc-overlap.c */
int vpc_overlap_scan(struct vpc *s);

#endif
