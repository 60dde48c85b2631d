/* SPDX-License-Identifier: MIT */
/*
 * VMDK (VMware virtual disks): the shared state of the driver's files.
 * Spec: VMware "Virtual Disk Format 1.1". A descriptor (text) lists extents;
 * an extent is flat (raw bytes of a file), zero, or sparse (a KDMV hosted
 * sparse file: grain directory -> grain tables -> grains; streamOptimized is
 * the sparse kind with zlib grains and markers; COWD is the older ESX kind).
 */
#ifndef VDISK_VMDK_H
#define VDISK_VMDK_H

#include <endian.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "../format.h"
#include "bytes.h"
#include "overlap.h"

#define VMDK_SECTOR          512u
#define VMDK_MAGIC           0x564d444bu   /* "KDMV" little endian */
#define VMDK_COWD_MAGIC      0x44574f43u   /* "COWD" little endian */
#define VMDK_SE_MAGIC        0xcafebabeull /* seSparse const header, u64 */
#define VMDK_SE_VOL_MAGIC    0xcafecafeull /* seSparse volatile header, u64 */
#define VMDK_SE_VERSION      0x0000000200000001ull
#define VMDK_GD_AT_END       UINT64_MAX  /* gdOffset of a stream: the footer has it */
#define VMDK_NO_PARENT       0xffffffffu /* parentCID of a disk without a parent */
#define VMDK_GTES            512u        /* grain table entries per table, as VMware makes them */
#define VMDK_MAX_GRAIN       (1u << 17)  /* sectors (64 MiB): QEMU allows more; nobody makes them */
#define VMDK_MAX_DESC        (1u << 20)  /* bytes of descriptor text we read */
#define VMDK_MAX_EXTENTS     4096u
#define VMDK_TWOGB           (2048ull << 20) /* bytes per extent of the twoGbMaxExtent types */
#define VMDK_STREAM_OVERHEAD 128u            /* sectors before the first grain of a stream */

/* sparse header flags */
#define VMDK_FLAG_NL_TEST  (1u << 0)
#define VMDK_FLAG_RGD      (1u << 1)
#define VMDK_FLAG_ZERO_GTE (1u << 2)
#define VMDK_FLAG_COMPRESS (1u << 16)
#define VMDK_FLAG_MARKERS  (1u << 17)

/* stream marker types (a marker with size 0) */
#define VMDK_MARKER_EOS    0u
#define VMDK_MARKER_GT     1u
#define VMDK_MARKER_GD     2u
#define VMDK_MARKER_FOOTER 3u

#define VMDK_GTE_ZERO 1u /* a zeroed grain (with VMDK_FLAG_ZERO_GTE) */

enum vmdk_type {
    VMDK_EXT_FLAT,
    VMDK_EXT_SPARSE,
    VMDK_EXT_ZERO,
    VMDK_EXT_VMFS,
    VMDK_EXT_VMFSSPARSE,
    VMDK_EXT_SESPARSE,
};

enum vmdk_access { VMDK_RW, VMDK_RDONLY, VMDK_NOACCESS };

/* One extent line of a descriptor. */
struct vmdk_desc_extent {
    enum vmdk_access access;
    enum vmdk_type type;
    uint64_t sectors;
    uint64_t offset; /* FLAT/VMFS: sectors into the file */
    char *file;      /* NULL for ZERO */
};

/* A parsed descriptor. */
struct vmdk_desc {
    uint32_t cid, parent_cid;
    char *create_type;
    char *parent_hint; /* parentFileNameHint, NULL for none */
    char *adapter_type;
    char *hwversion;
    struct vmdk_desc_extent *ext;
    unsigned n_ext;
    char *text; /* the text as read, NUL terminated */
    size_t text_len;
};

/* A hosted sparse (or COWD, or stream) extent file. */
struct vmdk_sparse {
    struct vdisk_file *file;
    uint32_t version, flags;
    uint64_t capacity; /* sectors */
    uint64_t grain;    /* sectors */
    uint64_t grain_bytes;
    uint32_t gtes;                                           /* entries per grain table */
    uint64_t gd_off, rgd_off, overhead, desc_off, desc_size; /* sectors; rgd 0: none */
    uint32_t gd_n;                                           /* grain directory entries */
    uint32_t *gd, *rgd;
    uint32_t **gt;     /* loaded grain tables by directory index (host order) */
    uint8_t *gt_dirty; /* tables to write at the next flush */
    bool gd_dirty;
    bool cowd, compressed, markers, zero_gte, stream;
    bool se; /* seSparse: 64-bit entries, converted when read (read-only) */
    uint64_t se_gt_off, se_grains_off; /* seSparse: sectors of the tables and the grains */
    uint64_t end;                      /* bytes: where the next grain goes */
    uint8_t hdr[512];                  /* the header as read (a stream's footer copies it) */
    struct vmdk_stream *ws;            /* stream writer state, when written */
    struct overlap_set meta;           /* writable: metadata no grain may overlap */
};

/* One extent of the open image. */
struct vmdk_extent {
    enum vmdk_type type;
    enum vmdk_access access;
    uint64_t start, len; /* guest bytes */
    uint64_t flat_off;   /* FLAT: file offset of the first byte */
    struct vdisk_file *file;
    struct vmdk_sparse *sp;
};

/* The driver's state. */
struct vmdk {
    struct vdisk_node *node;
    pthread_mutex_t lock; /* guards grain tables, allocation and the descriptor */
    struct vmdk_desc desc;
    struct vmdk_extent *ext;
    unsigned n_ext;
    bool embedded;               /* the descriptor lives in the sparse header's area */
    uint64_t desc_off, desc_max; /* bytes: where the descriptor is, room it has */
    bool cid_changed;            /* first write done: the CID is new */
    /* extent arrays a resize replaced, freed at close */
    struct vmdk_retired *retired;
};

/* An extent array replaced by a resize (vmdk-resize.c). */
struct vmdk_retired {
    struct vmdk_retired *next;
    void *ext;
};

/* vmdk-descriptor.c */
int vmdk_desc_parse(const char *path, const char *text, size_t len, struct vmdk_desc *d);
void vmdk_desc_free(struct vmdk_desc *d);
/* D's text with CID=NEW (malloc'd, *LEN set); NULL: no memory. */
char *vmdk_desc_with_cid(const struct vmdk_desc *d, uint32_t cid, size_t *len);
const char *vmdk_type_name(enum vmdk_type t);
const char *vmdk_access_name(enum vmdk_access a);

/* vmdk-sparse.c */
int vmdk_sparse_open(struct vdisk_node *node, struct vdisk_file *file, bool writable,
                     struct vmdk_sparse **spp);
void vmdk_sparse_close(struct vmdk_sparse *sp);
/* Read the header's embedded descriptor text (malloc'd); *TEXT NULL when none. */
int vmdk_sparse_read_desc(struct vmdk_sparse *sp, char **text, size_t *len);
int vmdk_sparse_map(struct vmdk *s, struct vmdk_extent *e, uint64_t rel, uint64_t len,
                    unsigned flags, struct vdisk_map *m);
/* OTHER bytes of a sparse extent; LOCKED: the caller holds s->lock (else taken per grain). */
int vmdk_sparse_read(struct vmdk *s, struct vmdk_extent *e, uint8_t *buf, uint64_t len,
                     uint64_t rel, bool locked);
int vmdk_sparse_write(struct vmdk *s, struct vmdk_extent *e, const uint8_t *buf, uint64_t len,
                      uint64_t rel);
int vmdk_sparse_flush(struct vmdk *s, struct vmdk_sparse *sp);
/* Zeroes over [REL, REL+LEN) of a sparse extent with zeroed-grain entries. */
int vmdk_sparse_zero(struct vmdk *s, struct vmdk_extent *e, uint64_t rel, uint64_t len);
/* The grain table of directory entry I, loaded if needed (NOWAIT: -EAGAIN instead). */
int vmdk_sparse_gt(struct vmdk_sparse *sp, const char *path, uint32_t i, bool nowait,
                   uint32_t **gtp);
int vmdk_sparse_check(struct vmdk *s, struct vmdk_sparse *sp, struct vdisk_check_result *res);
/* Give directory entry I a new (zeroed) grain table, and a redundant one. */
int vmdk_sparse_new_gt(struct vmdk *s, struct vmdk_sparse *sp, uint64_t i);
/* Build a sparse header for a new extent of CAPACITY sectors. */
void vmdk_sparse_header(uint8_t *h, uint32_t version, uint32_t flags, uint64_t capacity,
                        uint64_t grain, uint64_t desc_off, uint64_t desc_size, uint64_t rgd_off,
                        uint64_t gd_off, uint64_t overhead);

/* vmdk-stream.c: streamOptimized writing */
int vmdk_stream_start(struct vmdk *s, struct vmdk_sparse *sp);
int vmdk_stream_write(struct vmdk *s, struct vmdk_extent *e, const uint8_t *buf, uint64_t len,
                      uint64_t rel);
/* A grain the writer still holds: decompressed into BUF; 1 if held, 0 if not. */
int vmdk_stream_read_pending(struct vmdk_sparse *sp, uint64_t grain, uint8_t *buf);
bool vmdk_stream_pending(struct vmdk_sparse *sp, uint64_t grain);
int vmdk_stream_finish(struct vmdk *s, struct vmdk_sparse *sp);
void vmdk_stream_free(struct vmdk_sparse *sp);
/* Write the metadata tail (GTs, GD, footer, EOS) at byte AT; truncate after it. */
int vmdk_stream_write_tail(struct vmdk_sparse *sp, const char *path, uint64_t at);
/* Read grain G of a compressed extent into BUF (grain_bytes). */
int vmdk_read_compressed(struct vmdk_sparse *sp, const char *path, uint64_t g, uint32_t gte,
                         uint64_t end, uint8_t *buf);

/* vmdk-create.c */
extern const char *const vmdk_create_options[];
int vmdk_create(struct vdisk_node *node, uint64_t size, const struct vdisk_options *opts);

/* vmdk-check.c */
int vmdk_check(struct vdisk_node *node, unsigned flags, struct vdisk_check_result *res);

/* vmdk-resize.c */
int vmdk_resize(struct vdisk_node *node, uint64_t size, unsigned flags);

/* vmdk-overlap.c */
int vmdk_overlap_build(struct vdisk_node *node, struct vmdk_sparse *sp,
                       struct vdisk_check_result *res, uint8_t *bad);
int vmdk_overlap_check(struct vdisk_node *node, struct vmdk_sparse *sp, uint64_t host,
                       uint64_t len);

#endif
