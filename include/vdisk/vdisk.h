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
#define VDISK_OPEN_REPAIR (1u << 4) /* for check -r: open an image marked corrupt read-write */

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

/* What an image can do (vdisk_info.caps). */
#define VDISK_CAP_THREAD_SAFE (1u << 0) /* its driver runs requests in parallel */
#define VDISK_CAP_READ_ONLY   (1u << 1) /* can never be written (iso) */
#define VDISK_CAP_LINEAR      (1u << 2) /* guest bytes are one linear range of one file */

/* One format-specific fact for `vdisk info` ("creator" = "Hyper-V"). */
struct vdisk_info_detail {
    char key[32];    /* snake_case: JSON key, and with spaces the text label */
    char value[256]; /* as printed; a JSON string */
};
#define VDISK_INFO_DETAILS 24

/* What vdisk_get_info() reports. Strings belong to the image. */
struct vdisk_info {
    const char *format;       /* "raw", "qcow2", ... */
    const char *path;         /* as given to vdisk_open */
    uint64_t virtual_size;    /* bytes the guest sees */
    uint64_t file_size;       /* bytes of the image file */
    uint64_t allocated_bytes; /* bytes the image file occupies on disk */
    uint32_t cluster_size;    /* allocation unit, 0 where the format has none */
    unsigned caps;            /* VDISK_CAP_* */
    uint64_t linear_offset;   /* VDISK_CAP_LINEAR: file offset of guest byte 0 */
    bool read_only;
    bool direct;
    bool dirty;               /* format's dirty flag was set at open */
    bool format_probed;       /* the format was probed, not stated (-f or remembered) */
    const char *backing_file; /* NULL when none */
    const char *backing_format;
    const char *const *files; /* every file the image reads, top first, NULL terminated */
    /* what else the format knows (creator, block size, log state...), in its order */
    struct vdisk_info_detail details[VDISK_INFO_DETAILS];
    unsigned ndetails;
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

/*
 * Open an image; FORMAT NULL means probe. OPTIONS is NULL or "key=value,..."
 * (format specific, e.g. l2-cache-size=4M for qcow2). A probed image whose
 * file says vdisk served it as raw before, but which now probes as another
 * format, is refused (its guest may have written the header): state FORMAT.
 */
int vdisk_open(const char *path, const char *format, unsigned flags, const char *options,
               struct vdisk_image **imgp);

/* Flush (when writable), unlock and free. */
int vdisk_close(struct vdisk_image *img);

uint64_t vdisk_get_size(const struct vdisk_image *img);
bool vdisk_is_read_only(const struct vdisk_image *img);
int vdisk_get_info(struct vdisk_image *img, struct vdisk_info *info);

/*
 * For an image with VDISK_CAP_LINEAR: the descriptor of the file that holds
 * the guest bytes and the offset of byte 0 in it, for handing to loop or
 * vdisk.ko; the QEMU lock lives on it. -ENOTSUP for other images.
 */
int vdisk_get_linear(struct vdisk_image *img, int *fd, uint64_t *offset);

/*
 * st_dev and st_ino of the file IMG opened for PATH (the path it was opened
 * with, or one of info.files), from the descriptor it reads: 0, or -ENOENT
 * when PATH is none of its files.
 */
int vdisk_file_id(struct vdisk_image *img, const char *path, uint64_t *dev, uint64_t *ino);

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

/* Bring [OFFSET, OFFSET+LEN) into the page cache where it helps (advisory). */
int vdisk_cache(struct vdisk_image *img, uint64_t offset, uint64_t len);

/* Consistency check; returns 0, or -ENOTSUP for formats without metadata. */
int vdisk_check(struct vdisk_image *img, unsigned flags, struct vdisk_check_result *res);

/* vdisk_resize() flags */
#define VDISK_RESIZE_SHRINK (1u << 0) /* a smaller size is allowed (never cutting off data) */

/*
 * Change the virtual size to SIZE bytes, like qemu-img resize: growing always,
 * shrinking only with VDISK_RESIZE_SHRINK and only where no allocated data
 * lies past SIZE. No other request may run on IMG meanwhile. -ENOTSUP for
 * formats that cannot.
 */
int vdisk_resize(struct vdisk_image *img, uint64_t size, unsigned flags);

/*
 * Asynchronous requests. A queue belongs to one thread and keeps up to DEPTH
 * requests in flight, completing in any order. Reads and writes whose bytes
 * lie as they are in the image file (raw; allocated qcow2 clusters) go to the
 * kernel through io_uring (a small write to the page cache is copied there at
 * submit); the rest run on the queue's worker threads. While a thread has
 * requests in flight it must not call the synchronous functions above on the
 * same image (they may wait for those requests to complete).
 */
struct vdisk_queue;

enum vdisk_op {
    VDISK_OP_READ,
    VDISK_OP_WRITE, /* flags: VDISK_WRITE_FUA */
    VDISK_OP_FLUSH, /* covers writes completed before it was submitted */
    VDISK_OP_DISCARD,
    VDISK_OP_WRITE_ZEROES, /* flags: VDISK_ZERO_* */
    VDISK_OP_BLOCK_STATUS, /* buf: struct vdisk_extent[count]; result: extents filled */
    VDISK_OP_CACHE,        /* bring [offset, offset+length) into the page cache (advisory) */
};

/* One request; the caller owns it (and BUF) until it comes back completed. */
struct vdisk_request {
    enum vdisk_op op;
    unsigned flags;
    void *buf; /* READ, WRITE: the bytes; BLOCK_STATUS: the extents */
    uint64_t offset, length;
    unsigned count; /* BLOCK_STATUS: room in buf, in extents (at least 1) */
    void *user_data;
    int result; /* on completion: 0 (BLOCK_STATUS: extents filled) or -errno */
};

/* A queue for IMG with room for DEPTH (1 to 4096) requests; FLAGS must be 0. */
int vdisk_queue_create(struct vdisk_image *img, unsigned depth, unsigned flags,
                       struct vdisk_queue **qp);

/*
 * A queue whose file I/O goes on RING, an io_uring the caller owns and waits
 * on (e.g. a ublk queue thread's, or a server's with its sockets on it): its
 * SQEs carry user_data with VDISK_QUEUE_CQE_BIT set. The caller gives every
 * such CQE to vdisk_queue_handle_cqe() (then marks it seen itself) and
 * collects completed requests with vdisk_queue_complete(q, done, max, 0);
 * the queue never waits on RING itself. Size RING with room for the caller's
 * own SQEs plus DEPTH + 1. Requests may submit SQEs (io_uring_get_sqe, and
 * io_uring_submit when the SQ is full); the caller's io_uring_submit*()
 * sends the rest.
 */
struct io_uring;
int vdisk_queue_create_on_ring(struct vdisk_image *img, unsigned depth, struct io_uring *ring,
                               struct vdisk_queue **qp);
#define VDISK_QUEUE_CQE_BIT (1ull << 63)
void vdisk_queue_handle_cqe(struct vdisk_queue *q, uint64_t user_data, int res);

/*
 * N buffers of Q's requests: buffer I is [BASE + I*STRIDE, +LEN). File I/O
 * whose bytes lie inside one goes as READ_FIXED / WRITE_FIXED: the kernel need
 * not pin the pages of each O_DIRECT I/O. On a queue made with
 * vdisk_queue_create_on_ring the caller has registered them on its ring as
 * fixed buffers 0..N-1 (io_uring_register_buffers) and keeps them registered
 * until the queue is destroyed; on the queue's own ring this call registers
 * them (with nothing in flight; -errno if the kernel refuses, e.g. the
 * locked-memory limit: then none are). Without io_uring it does nothing.
 * N 0: none.
 */
int vdisk_queue_fixed_buffers(struct vdisk_queue *q, void *base, size_t stride, size_t len,
                              unsigned n);

/*
 * Wait for every request in flight, then free the queue. On a caller's ring,
 * complete every request first: waiting there would consume the caller's CQEs.
 */
void vdisk_queue_destroy(struct vdisk_queue *q);

/*
 * Start REQ. It reaches the kernel at the latest at the next
 * vdisk_queue_complete() (or the caller's submit, on its own ring). -EAGAIN
 * when DEPTH requests are in flight; a request that can never succeed (past
 * the end, write to a read-only image) fails here.
 */
int vdisk_queue_submit(struct vdisk_queue *q, struct vdisk_request *req);

/*
 * Collect up to MAX completed requests into DONE, waiting until at least MIN
 * (capped at the number in flight) have completed; returns how many (MIN 0:
 * whatever has completed, without waiting). A failed request's message is
 * this thread's vdisk_last_error() afterwards. MIN must be 0 on a caller's
 * ring.
 */
int vdisk_queue_complete(struct vdisk_queue *q, struct vdisk_request **done, unsigned max,
                         unsigned min);

/*
 * For a caller that waits in its own poll loop on a queue of its own ring or
 * of none: an fd that polls readable when requests may have completed; then
 * vdisk_queue_complete(q, done, max, 0) collects them. -EINVAL on a caller's
 * ring (that ring's fd is the caller's).
 */
int vdisk_queue_poll_fd(const struct vdisk_queue *q);

/* Requests submitted and not yet collected. */
unsigned vdisk_queue_inflight(const struct vdisk_queue *q);

/* What a queue has done since it was made. */
struct vdisk_queue_stats {
    uint64_t requests;   /* submitted */
    uint64_t ring;       /* went to the files: on the io_uring, or at once (a small write to
                            the page cache); no thread hand-off */
    uint64_t workers;    /* ran on the worker threads (synchronous path) */
    uint64_t ring_ios;   /* file I/Os on the ring (a request may need several) */
    uint64_t ring_fixed; /* of those, into registered buffers (READ_FIXED / WRITE_FIXED) */
};
void vdisk_queue_get_stats(const struct vdisk_queue *q, struct vdisk_queue_stats *st);

/* Parse "10G", "1.5G", "512K", "100" (MiB, as the seed) into bytes; -EINVAL/-ERANGE. */
int vdisk_parse_size(const char *text, uint64_t *bytes);

/* ---- overlays and partitions (overlay.c, slice.c, partition.c) ---- */

/*
 * Open PATH (FORMAT NULL: probe; OPTIONS its open options) read-only as the
 * base of a temporary qcow2 overlay that takes every write: an unlinked file
 * (O_TMPFILE) in DIR (NULL: $TMPDIR, else /var/tmp), gone at close or crash.
 * FLAGS as vdisk_open's (RDONLY is ignored: the overlay is writable).
 */
int vdisk_open_snapshot(const char *path, const char *format, unsigned flags, const char *options,
                        const char *dir, struct vdisk_image **imgp);

/*
 * Write every range IMG's top node holds (data and zeroes) into its backing
 * image, reopened read-write for it, and flush that: qemu-img commit without
 * the emptying. *BYTES (may be NULL) gets the bytes written.
 */
int vdisk_commit(struct vdisk_image *img, uint64_t *bytes);

/* Bytes (and runs of them) IMG's top node holds itself, not its backing chain. */
int vdisk_allocated_in_top(struct vdisk_image *img, uint64_t *bytes, uint64_t *extents);

/*
 * Does IMG's top node hold [OFF, ...) itself (1) or leave it to its backing
 * chain (0)? *RUN gets how many bytes from OFF (up to LEN) are alike.
 */
int vdisk_top_allocated(struct vdisk_image *img, uint64_t off, uint64_t len, uint64_t *run);

/*
 * Point the closed qcow2 image PATH at backing file NAME in FORMAT (NAME NULL
 * or "": no backing file), rewriting its header cluster; nothing else changes.
 */
int vdisk_qcow2_set_backing(const char *path, const char *name, const char *format);

/* From now on IMG is its range [OFF, OFF+LEN) alone (a slice node over the image). */
int vdisk_image_slice(struct vdisk_image *img, uint64_t off, uint64_t len);

#define VDISK_MAX_PARTITIONS 128

/* One partition; offsets in bytes. */
struct vdisk_partition {
    unsigned number; /* MBR: 1-4 primary, 5+ logical; GPT: entry index + 1 */
    uint64_t start;
    uint64_t size;
    char type[40]; /* MBR: the type byte in hex ("83"); GPT: the type GUID */
    char uuid[40]; /* GPT: the partition's GUID; "" for MBR */
    char name[80]; /* GPT: its name (UTF-8); "" for MBR */
    bool bootable; /* MBR: the active flag */
};

/* A partition table as read from an image. */
struct vdisk_partition_table {
    char label[8];        /* "dos", "gpt", or "" when the image has none */
    char id[40];          /* disk identifier: "0x1234abcd" (dos) or a GUID */
    unsigned sector_size; /* the table's sector size */
    uint64_t first_lba;   /* GPT: first and last usable sectors */
    uint64_t last_lba;
    unsigned count;
    struct vdisk_partition parts[VDISK_MAX_PARTITIONS];
};

/* Read IMG's partition table (MBR with logical partitions, or GPT) into *T. */
int vdisk_get_partitions(struct vdisk_image *img, struct vdisk_partition_table *t);

/* Make IMG partition NUMBER alone (vdisk_image_slice); -ENOENT when there is none. */
int vdisk_select_partition(struct vdisk_image *img, unsigned number);

#ifdef __cplusplus
}
#endif

#endif
