/* SPDX-License-Identifier: MIT */
/*
 * The table of operations every image format fills in, and the image object
 * the library hands to it. image.c checks bounds, read-only and arguments
 * before calling a format, so formats only see valid, in-range requests.
 */
#ifndef VDISK_FORMAT_H
#define VDISK_FORMAT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vdisk/vdisk.h"
#include "io/file.h"
#include "options.h"

struct vdisk_image {
    const struct vdisk_format *fmt;
    struct vdisk_file *file;
    char *path;
    uint64_t size;  /* virtual size; formats set it in open */
    unsigned flags; /* VDISK_OPEN_* */
    bool read_only;
    bool dirty_at_open;
    pthread_mutex_t lock; /* serialises formats without VDISK_FORMAT_THREAD_SAFE */
    void *priv;           /* the format's state */
};

/* vdisk_format.flags */
#define VDISK_FORMAT_THREAD_SAFE (1u << 0) /* callbacks may run concurrently */
#define VDISK_FORMAT_READ_ONLY   (1u << 1) /* never opened for writing (iso) */

struct vdisk_format {
    const char *name;
    unsigned flags;
    /* Keys create() accepts in its options, NULL terminated; NULL for none. */
    const char *const *create_options;

    /*
     * How sure the format is that the file is its own: 0 no, 100 a full
     * magic match. HEAD holds the first bytes of the file (zero padded),
     * TAIL the last 512 bytes.
     */
    int (*probe)(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t file_size);
    /* Lay out a new image of SIZE bytes in an empty, writable FILE. */
    int (*create)(struct vdisk_file *file, uint64_t size, const struct vdisk_options *opts);
    /* Read the metadata; set img->size and img->priv. */
    int (*open)(struct vdisk_image *img);
    /* Free img->priv (after a flush, for writable images). */
    void (*close)(struct vdisk_image *img);

    int (*read)(struct vdisk_image *img, void *buf, size_t len, uint64_t off);
    int (*write)(struct vdisk_image *img, const void *buf, size_t len, uint64_t off,
                 unsigned flags);
    int (*flush)(struct vdisk_image *img);
    /* Optional: NULL means discard is a no-op (allowed by the protocols). */
    int (*discard)(struct vdisk_image *img, uint64_t off, uint64_t len);
    /* Optional: NULL means image.c writes zero buffers. */
    int (*write_zeroes)(struct vdisk_image *img, uint64_t off, uint64_t len, unsigned flags);
    /* Optional: NULL means all data. */
    int (*block_status)(struct vdisk_image *img, uint64_t off, uint64_t len,
                        struct vdisk_extent *ext);
    /*
     * Optional, for vdisk_queue: the file offset where guest bytes [OFF,
     * OFF+LEN) lie contiguously and can be read (or, with WRITE, written)
     * directly, changing no metadata; -EAGAIN when they can't (the request
     * then goes through read/write). Must not block. The mapping stays valid
     * until a matching release(), which may be NULL when it always is.
     */
    int (*map)(struct vdisk_image *img, uint64_t off, uint64_t len, bool write, unsigned flags,
               uint64_t *host);
    void (*release)(struct vdisk_image *img);
    /* Optional: fill format-specific fields (cluster size, backing file...). */
    int (*get_info)(struct vdisk_image *img, struct vdisk_info *info);
    /* Optional: NULL means -ENOTSUP. */
    int (*check)(struct vdisk_image *img, unsigned flags, struct vdisk_check_result *res);
};

extern const struct vdisk_format vdisk_format_raw;
extern const struct vdisk_format vdisk_format_iso;
extern const struct vdisk_format vdisk_format_qcow2;

/* Is [OFF, OFF+LEN) inside IMG, and writable for WRITE? -errno naming WHAT if not. */
int vdisk_check_range(struct vdisk_image *img, const char *what, uint64_t off, uint64_t len,
                      bool write);

/* Look a format up by name; NULL if unknown. */
const struct vdisk_format *vdisk_format_find(const char *name);

#endif
