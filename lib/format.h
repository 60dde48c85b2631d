/* SPDX-License-Identifier: MIT */
/*
 * The contract between the image layer and a format driver.
 *
 * An image is a graph of nodes. A node is one format driver over its files:
 * its own file (node->file), other files it opened through the image layer
 * (extents; vdisk_node_open_file), and a backing node of any format
 * (node->backing, vdisk_node_open_backing) that supplies the bytes the node
 * leaves unallocated. The image layer (node.c) checks bounds, read-only mode
 * and arguments before calling a driver, so drivers see valid, in-range
 * requests only.
 *
 * Data path: the image layer asks map() what lies at an offset and does the
 * I/O itself: DATA is read from (or written to) a file, ZERO reads as zeroes,
 * UNALLOCATED is read from the backing node (zeroes without one), OTHER goes
 * through the driver's read(). A write that map() does not answer with DATA
 * (allocation, copy-on-write, compressed clusters...) goes through write().
 * A caller that passes VDISK_MAP_TRANSFORM (the request engine) may get DATA
 * with ->transform set (encrypted sectors): it does the file I/O itself and
 * runs fmt->transform() on the bytes (after a read, before a write).
 *
 * Locks: for a driver without VDISK_FORMAT_THREAD_SAFE the image layer holds
 * node->lock (a mutex) around every callback below except probe, create,
 * open and close, map() and release() included (a NOWAIT map only tries the
 * lock). A thread-safe driver gets no lock and does its own locking.
 * open(), close() and create() run alone: nothing else runs on the node.
 */
#ifndef VDISK_FORMAT_H
#define VDISK_FORMAT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "vdisk/vdisk.h"
#include "io/file.h"
#include "options.h"

/* What a range of a node holds (map()). */
enum vdisk_map_type {
    VDISK_MAP_DATA,        /* bytes of a file: map->file at map->host */
    VDISK_MAP_ZERO,        /* reads as zeroes */
    VDISK_MAP_UNALLOCATED, /* not in this node: the backing node's bytes (or zeroes) */
    VDISK_MAP_OTHER,       /* only the driver can read it (compressed, ...) */
};

/* One extent of a map() answer. */
struct vdisk_map {
    enum vdisk_map_type type;
    uint64_t len;            /* bytes from the asked offset that map alike: 1 to the asked length */
    struct vdisk_file *file; /* DATA: the file */
    uint64_t host;           /* DATA: file offset of the first byte */
    uintptr_t handle;        /* the driver's, given back to release(); 0 when nothing is held */
    bool transform;          /* DATA (VDISK_MAP_TRANSFORM): file bytes need fmt->transform() */
    bool written;            /* WRITE DATA: the caller's, before release(): all bytes on file */
};

/* map() flags */
#define VDISK_MAP_WRITE     (1u << 0) /* for a write: DATA only where bytes can be written in place */
#define VDISK_MAP_NOWAIT    (1u << 1) /* never block (the engine's thread): -EAGAIN instead */
#define VDISK_MAP_FUA       (1u << 2) /* the write is FUA */
#define VDISK_MAP_TRANSFORM (1u << 3) /* the caller can run fmt->transform() (map->transform) */

/* One node of an image graph. */
struct vdisk_node {
    const struct vdisk_format *fmt;
    char *path;                 /* as resolved from what the user or the parent named */
    struct vdisk_file *file;    /* the node's own file */
    struct vdisk_node *backing; /* where UNALLOCATED ranges read from; NULL for none */
    struct vdisk_file **files;  /* other files opened for this node (extents), owned */
    unsigned nfiles;
    uint64_t size;          /* virtual size; the driver sets it in open() */
    uint64_t linear_offset; /* VDISK_CAP_LINEAR: file offset of guest byte 0 */
    unsigned caps;          /* VDISK_CAP_*, from the driver, adjusted by open() */
    unsigned flags;         /* VDISK_OPEN_* */
    bool read_only;
    bool dirty_at_open;
    bool probed;                /* the format was probed, not stated */
    bool guard_probe;           /* probed linear: refuse writes that change what it probes as */
    pthread_mutex_t guard_lock; /* a probe-window check and its write, as one */
    struct vdisk_node *above;   /* the node this one backs; NULL for the top */
    char *real;                 /* canonical path of node->file, for cycle checks */
    int depth;                  /* backing nodes above this one */
    struct vdisk_options opts;  /* open options meant for this node */
    pthread_mutex_t lock;       /* serialises drivers without VDISK_FORMAT_THREAD_SAFE */
    /* DATA mappings in use, for drivers without release(): changes that free wait */
    atomic_uint pins;
    pthread_mutex_t pin_lock;
    pthread_cond_t pin_done;
    void *priv; /* the driver's state */
    /* LINEAR: the file holding the guest bytes when it is not node->file (a flat VMDK) */
    struct vdisk_file *linear_file;
    /* damage found (format/overlap.c): every further write fails with EIO and this */
    char *_Atomic write_refused;
};

/* vdisk_format.flags */
#define VDISK_FORMAT_THREAD_SAFE (1u << 0) /* callbacks may run concurrently */

/* A driver: a format (raw, qcow2, ...), later also filters. */
struct vdisk_format {
    const char *name;
    const char *qemu_name; /* what QEMU calls it, where that differs (headers naming it) */
    unsigned flags;        /* VDISK_FORMAT_* */
    unsigned caps;         /* VDISK_CAP_* every node of this format has (open() may add LINEAR) */
    /* Keys create() and open() accept in their options, NULL terminated; NULL for none. */
    const char *const *create_options;
    const char *const *open_options;

    /*
     * How sure the format is that the file is its own: 0 no, 100 a full
     * magic match. HEAD holds the first bytes of the file (zero padded),
     * TAIL the last 512 bytes.
     */
    int (*probe)(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t file_size);
    /*
     * Lay out a new image of SIZE bytes in the empty, writable node->file.
     * More files are made with vdisk_node_create_file(): if create fails,
     * the image layer removes every one of them.
     */
    int (*create)(struct vdisk_node *node, uint64_t size, const struct vdisk_options *opts);
    /* Read the metadata; set node->size and node->priv; open children. */
    int (*open)(struct vdisk_node *node);
    /* Free node->priv (after a flush, for writable nodes). Children are closed after. */
    void (*close)(struct vdisk_node *node);

    /* What lies at [OFF, OFF+LEN): fill *M. Required. */
    int (*map)(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags,
               struct vdisk_map *m);
    /* Optional: M (with a non-zero handle) is no longer used; NULL: the layer pins for it. */
    void (*release)(struct vdisk_node *node, const struct vdisk_map *m);
    /*
     * Optional: turn BUF (LEN bytes at node offset OFF, file offset HOST, of a DATA extent that
     * map() gave under VDISK_MAP_TRANSFORM with ->transform set) from file bytes into guest
     * bytes after a read (decrypt), or guest into file bytes before a write (encrypt, WRITE).
     * In place; on any thread.
     */
    int (*transform)(struct vdisk_node *node, void *buf, size_t len, uint64_t off, uint64_t host,
                     bool write);
    /* Optional: bytes of OTHER extents. */
    int (*read)(struct vdisk_node *node, void *buf, size_t len, uint64_t off);
    /* Writes map() did not answer with DATA. NULL: the node is read-only. */
    int (*write)(struct vdisk_node *node, const void *buf, size_t len, uint64_t off,
                 unsigned flags);
    /* Make completed writes durable. NULL: fdatasync of the node's files. */
    int (*flush)(struct vdisk_node *node);
    /* Optional: NULL means discard is a no-op (allowed by the protocols). */
    int (*discard)(struct vdisk_node *node, uint64_t off, uint64_t len);
    /* Optional: NULL (or -ENOTSUP) means the layer writes zero buffers. */
    int (*write_zeroes)(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags);
    /* Optional: fill format-specific fields (cluster size, backing file...). */
    int (*get_info)(struct vdisk_node *node, struct vdisk_info *info);
    /* Optional: NULL means -ENOTSUP. */
    int (*check)(struct vdisk_node *node, unsigned flags, struct vdisk_check_result *res);
    /* Optional: change node->size to SIZE (VDISK_RESIZE_*; checked by resize.c); NULL: -ENOTSUP. */
    int (*resize)(struct vdisk_node *node, uint64_t size, unsigned flags);
};

extern const struct vdisk_format vdisk_format_raw;
extern const struct vdisk_format vdisk_format_iso;
extern const struct vdisk_format vdisk_format_qcow2;
extern const struct vdisk_format vdisk_format_vhdx;
extern const struct vdisk_format vdisk_format_vmdk;
extern const struct vdisk_format vdisk_format_vpc;
extern const struct vdisk_format vdisk_format_vdi;
extern const struct vdisk_format vdisk_format_luks;

/* ---- the image layer's services to drivers (node.c) ---- */

/* Is [OFF, OFF+LEN) inside NODE, and writable for WRITE? -errno naming WHAT if not. */
int vdisk_check_range(struct vdisk_node *node, const char *what, uint64_t off, uint64_t len,
                      bool write);

/*
 * NODE's metadata is damaged so that a write could land on it (what FMT
 * says): fail this and every further write with EIO, for this session.
 * Returns -EIO with the message set. (format/overlap.c)
 */
int vdisk_node_refuse_writes(struct vdisk_node *node, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Open the backing node NAME (relative to NODE's directory unless absolute)
 * in FORMAT, read-only, as node->backing. FORMAT must be stated (header or
 * user): backing files are never probed. Refuses cycles and chains deeper
 * than VDISK_MAX_CHAIN.
 */
int vdisk_node_open_backing(struct vdisk_node *node, const char *name, const char *format);

/* NAME relative to the directory of NODE's file, unless absolute (malloc'd; NULL: no memory). */
char *vdisk_node_resolve(const struct vdisk_node *node, const char *name);

/* Open another file NAME (relative to NODE) for NODE, locked like NODE's own; kept in node->files.
 */
int vdisk_node_open_file(struct vdisk_node *node, const char *name, struct vdisk_file **filep);

/* create(): make another file NAME (relative to NODE) that a failed create removes. */
int vdisk_node_create_file(struct vdisk_node *node, const char *name, struct vdisk_file **filep);

/*
 * The bytes NODE's backing chain shows at [OFF, OFF+LEN): the backing node's,
 * zeroes past its end or without one. Drivers use it for the copy-on-write of
 * a partial block; callable under the driver's own locks.
 */
int vdisk_node_read_backing(struct vdisk_node *node, void *buf, uint64_t len, uint64_t off);

/* Read NODE's guest bytes (map, then file, zeroes, backing or read()). */
int vdisk_node_read(struct vdisk_node *node, void *buf, size_t len, uint64_t off);

/* get_info(): add a format-specific fact KEY (snake_case) = printf(FMT); quietly dropped when full.
 */
void vdisk_info_add(struct vdisk_info *info, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A writer-preferring rwlock for a driver's metadata: a stream of readers cannot starve a writer.
 */
static inline void vdisk_rwlock_init(pthread_rwlock_t *lock)
{
    pthread_rwlockattr_t a;

    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(lock, &a);
    pthread_rwlockattr_destroy(&a);
}

/* Look a format up by name; NULL if unknown. */
const struct vdisk_format *vdisk_format_find(const char *name);

#define VDISK_MAX_CHAIN 64 /* backing nodes below a top image */

#endif
