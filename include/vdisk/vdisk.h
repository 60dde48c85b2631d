/* SPDX-License-Identifier: MIT */
/*
 * libvdisk: open, create and do I/O on virtual disk images of any format.
 *
 * Every call returns 0 (or a count) on success and a negative errno on failure;
 * vdisk_last_error() then holds a message naming the object, for this thread.
 * An image handle may be used from several threads at once: formats that are
 * not thread safe are serialised by the library.
 */
#ifndef VDISK_VDISK_H
#define VDISK_VDISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vdisk_image;

/* vdisk_open() flags */
#define VDISK_OPEN_RDONLY (1u << 0) /* no writes; shared lock only */
#define VDISK_OPEN_DIRECT (1u << 1) /* O_DIRECT on the image file */
#define VDISK_OPEN_NOLOCK (1u << 2) /* take no QEMU-compatible lock */
#define VDISK_OPEN_UNSAFE (1u << 3) /* flush and FUA don't wait for the disk (cache=unsafe) */

/* vdisk_write() flags */
#define VDISK_WRITE_FUA (1u << 0) /* durable before return */

/* vdisk_write_zeroes() flags */
#define VDISK_ZERO_FUA         VDISK_WRITE_FUA
#define VDISK_ZERO_MAY_UNMAP   (1u << 1) /* may deallocate the range */
#define VDISK_ZERO_NO_FALLBACK (1u << 2) /* -ENOTSUP rather than writing zero buffers */

/* vdisk_extent.flags, as NBD's base:allocation */
#define VDISK_EXTENT_HOLE (1u << 0) /* not allocated in this image chain */
#define VDISK_EXTENT_ZERO (1u << 1) /* reads as zeroes */

/* One run of the allocation map. */
struct vdisk_extent {
    uint64_t offset;
    uint64_t length;
    uint32_t flags;
};

/* What vdisk_get_info() reports. Strings belong to the image. */
struct vdisk_info {
    const char *format;       /* "raw", "qcow2", ... */
    const char *path;         /* as given to vdisk_open */
    uint64_t virtual_size;    /* bytes the guest sees */
    uint64_t file_size;       /* bytes of the image file */
    uint64_t allocated_bytes; /* bytes the image file occupies on disk */
    uint32_t cluster_size;    /* allocation unit, 0 where the format has none */
    bool read_only;
    bool direct;
    bool dirty;               /* format's dirty flag was set at open */
    const char *backing_file; /* NULL when none */
    const char *backing_format;
};

/* vdisk_check() flags and result */
#define VDISK_CHECK_REPAIR_LEAKS (1u << 0)
#define VDISK_CHECK_REPAIR_ALL   (1u << 1)

struct vdisk_check_result {
    uint64_t corruptions; /* errors that lose or mix up data */
    uint64_t leaks;       /* allocated but unused host clusters */
    uint64_t corruptions_fixed;
    uint64_t leaks_fixed;
    uint64_t allocated_clusters;
    uint64_t total_clusters;
};

/* The message of this thread's last failed call ("" when none). */
const char *vdisk_last_error(void);

/* Names of the formats this library knows, NULL terminated. */
const char *const *vdisk_formats(void);

/* Guess the format of an image file from its contents; *format is static. */
int vdisk_probe(const char *path, const char **format);

/*
 * Create a new image; fails with -EEXIST if PATH exists. OPTIONS is NULL or
 * "key=value,key=value" (format specific, e.g. cluster_size=65536).
 */
int vdisk_create(const char *path, const char *format, uint64_t size, const char *options);

/* Open an image; FORMAT NULL means probe. */
int vdisk_open(const char *path, const char *format, unsigned flags, struct vdisk_image **imgp);

/* Flush (when writable), unlock and free. */
int vdisk_close(struct vdisk_image *img);

uint64_t vdisk_get_size(const struct vdisk_image *img);
bool vdisk_is_read_only(const struct vdisk_image *img);
int vdisk_get_info(struct vdisk_image *img, struct vdisk_info *info);

/*
 * The image file's descriptor when guest bytes are file bytes (raw, iso), for
 * handing to loop or vdisk.ko; the QEMU lock lives on it. -ENOTSUP otherwise.
 */
int vdisk_get_raw_fd(struct vdisk_image *img);

/* Data path. Ranges must lie within the virtual size. */
int vdisk_read(struct vdisk_image *img, void *buf, size_t len, uint64_t offset);
int vdisk_write(struct vdisk_image *img, const void *buf, size_t len, uint64_t offset,
                unsigned flags);
int vdisk_flush(struct vdisk_image *img);
int vdisk_discard(struct vdisk_image *img, uint64_t offset, uint64_t len);
int vdisk_write_zeroes(struct vdisk_image *img, uint64_t offset, uint64_t len, unsigned flags);

/*
 * Describe the allocation at OFFSET: fills *ext with a run starting at OFFSET
 * of at most LEN bytes (at least 1) that has the same flags throughout.
 */
int vdisk_block_status(struct vdisk_image *img, uint64_t offset, uint64_t len,
                       struct vdisk_extent *ext);

/* Consistency check; returns 0, or -ENOTSUP for formats without metadata. */
int vdisk_check(struct vdisk_image *img, unsigned flags, struct vdisk_check_result *res);

/*
 * Asynchronous requests. A queue belongs to one thread and keeps up to DEPTH
 * requests in flight, completing in any order. Reads and writes whose bytes
 * lie as they are in the image file (raw; allocated qcow2 clusters) go to the
 * kernel through io_uring; the rest run on the queue's worker threads. While
 * a thread has requests in flight it must not call the synchronous functions
 * above on the same image (they may wait for those requests to complete).
 */
struct vdisk_queue;

enum vdisk_op {
    VDISK_OP_READ,
    VDISK_OP_WRITE, /* flags: VDISK_WRITE_FUA */
    VDISK_OP_FLUSH, /* covers writes completed before it was submitted */
    VDISK_OP_DISCARD,
    VDISK_OP_WRITE_ZEROES, /* flags: VDISK_ZERO_* */
};

/* One request; the caller owns it (and BUF) until it comes back completed. */
struct vdisk_request {
    enum vdisk_op op;
    unsigned flags;
    void *buf; /* READ, WRITE */
    uint64_t offset, length;
    void *user_data;
    int result; /* on completion: 0 or -errno */
};

/* A queue for IMG with room for DEPTH (1 to 4096) requests; FLAGS must be 0. */
int vdisk_queue_create(struct vdisk_image *img, unsigned depth, unsigned flags,
                       struct vdisk_queue **qp);

/* Wait for every request in flight, then free the queue. */
void vdisk_queue_destroy(struct vdisk_queue *q);

/*
 * Start REQ. It reaches the kernel at the latest at the next
 * vdisk_queue_complete(). -EAGAIN when DEPTH requests are in flight; a request
 * that can never succeed (past the end, write to a read-only image) fails here.
 */
int vdisk_queue_submit(struct vdisk_queue *q, struct vdisk_request *req);

/*
 * Collect up to MAX completed requests into DONE, waiting until at least MIN
 * (capped at the number in flight) have completed; returns how many. A failed
 * request's message is this thread's vdisk_last_error() afterwards.
 */
int vdisk_queue_complete(struct vdisk_queue *q, struct vdisk_request **done, unsigned max,
                         unsigned min);

/* Requests submitted and not yet collected. */
unsigned vdisk_queue_inflight(const struct vdisk_queue *q);

/* Parse "10G", "512K", "100" (MiB, as the seed) into bytes; -EINVAL/-ERANGE. */
int vdisk_parse_size(const char *text, uint64_t *bytes);

#ifdef __cplusplus
}
#endif

#endif
