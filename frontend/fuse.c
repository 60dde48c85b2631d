/* SPDX-License-Identifier: MIT */
/*
 * The FUSE frontend: one image, one regular file, the root inode of a FUSE
 * mount laid over an empty regular file (as qemu-storage-daemon's FUSE export
 * does). Built on libfuse's low-level API with our own pool of worker threads:
 *
 *  - every open file gets FOPEN_DIRECT_IO, so no page cache sits between the
 *    loop device and the image, and async direct I/O keeps many requests in
 *    flight (max_background is raised for that);
 *  - requests are received into buffers placed so that a WRITE's payload is
 *    page aligned, which lets an O_DIRECT image take it without a copy;
 *  - raw images opened with direct I/O take a fast path: reads and writes go
 *    to an O_DIRECT descriptor through io_uring, workers only receive and
 *    submit, one completer thread replies; other formats go through libvdisk
 *    on the worker that received the request (one worker per request in flight);
 *  - read/write -> vdisk_read/vdisk_write, fsync and flush -> vdisk_flush,
 *    fallocate -> vdisk_write_zeroes (punch hole may unmap, zero range not),
 *    SEEK_DATA/SEEK_HOLE -> vdisk_block_status.
 *
 * Shutdown: unmount; with no user left the kernel ends the connection and
 * every worker's read() fails with ENODEV. If a user lingers, the connection
 * is aborted through /sys/fs/fuse/connections (see stop_workers()).
 */
#define FUSE_USE_VERSION 34

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/falloc.h>
#include <linux/fuse.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "vdisk_fuse.h"

#define DEFAULT_THREADS      16 /* each request in flight holds a worker */
#define DEFAULT_THREADS_FAST 3  /* workers only receive and submit */
#define MAX_THREADS          64
#define PAGE                 4096u
#define MAX_IO               (1u << 20) /* max_write, and the largest read the kernel sends */
/* What libfuse reads per request: FUSE_MAX_MAX_PAGES pages plus a header page */
#define RECV_SIZE (MAX_IO + PAGE)
/* in header + write_in: a WRITE's payload starts this far into the request */
#define WRITE_HEADER (sizeof(struct fuse_in_header) + sizeof(struct fuse_write_in))
#define ATTR_TIMEOUT 1.0

/* One READ or WRITE in flight on the fast path. */
struct aio_slot {
    fuse_req_t req;
    bool write;
    size_t len;
    uint64_t off;
    char *recv;       /* receive buffer holding a WRITE's payload, until it completes */
    const char *wbuf; /* the payload, inside recv */
    void *rbuf;       /* READ data (MAX_IO, allocated on first use) */
    struct aio_slot *next;
};

#define AIO_DEPTH 128 /* requests in flight on the fast path */

struct vdisk_fuse {
    struct vdisk_image *img;
    struct fuse_session *se;
    char *mountpoint;
    uint64_t size;
    bool read_only;
    struct timespec mount_time;
    unsigned long conn_dev; /* /sys/fs/fuse/connections/<conn_dev>, 0 if unknown */

    /*
     * The fast path for images whose bytes are file bytes (raw): reads and
     * writes go to an O_DIRECT descriptor through io_uring, so a worker never
     * waits for the disk; one completer thread replies. Off when dfd < 0.
     */
    int dfd;
    unsigned dio_align;
    struct io_uring ring;
    pthread_mutex_t sq_lock; /* workers share the submission queue */
    pthread_t completer;
    bool completer_started;
    pthread_mutex_t pool_lock; /* protects the free lists and inflight below */
    pthread_cond_t pool_cond;
    struct aio_slot *slots, *free_slots;
    char **free_recv; /* stack of idle receive buffers */
    unsigned n_free_recv, n_recv;
    unsigned inflight;

    pthread_t threads[MAX_THREADS];
    unsigned nthreads;

    pthread_mutex_t lock; /* protects running, inited below */
    pthread_cond_t cond;
    unsigned running; /* workers still in their loop */
    bool inited;      /* INIT answered */
};

static int find_fuse_mount(const char *mountpoint, unsigned *major_out, unsigned *minor_out);

/* Per worker: the page-aligned buffer READ replies are read into. */
static __thread void *read_buf;
/* Per worker: the buffer the next request is received into (the fast path keeps a WRITE's). */
static __thread char *cur_recv;

/* Log an image error to stderr (the server's log) with the library's message. */
static void log_error(const char *what, int r)
{
    fprintf(stderr, "vdisk-fuse: %s: %s\n", what,
            vdisk_last_error()[0] ? vdisk_last_error() : strerror(-r));
}

static void fill_attr(const struct vdisk_fuse *fs, struct stat *st)
{
    struct vdisk_info info;

    memset(st, 0, sizeof(*st));
    st->st_ino = FUSE_ROOT_ID;
    st->st_mode = S_IFREG | (fs->read_only ? 0400 : 0600);
    st->st_nlink = 1;
    st->st_uid = getuid();
    st->st_gid = getgid();
    st->st_size = (off_t)fs->size;
    st->st_blksize = PAGE;
    /* blocks in use by the image file, for du; 0 if the library can't say */
    if (vdisk_get_info(fs->img, &info) == 0)
        st->st_blocks = (blkcnt_t)(info.allocated_bytes / 512);
    st->st_atim = st->st_mtim = st->st_ctim = fs->mount_time;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    struct vdisk_fuse *fs = userdata;

    conn->max_write = MAX_IO; /* libfuse derives max_pages from it */
    /* async direct I/O sends requests as background ones: let loop's queue fill */
    conn->max_background = 128;
    conn->congestion_threshold = 96;
    conn->want |= FUSE_CAP_ASYNC_DIO;
    conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE |
                    FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_AUTO_INVAL_DATA);
    pthread_mutex_lock(&fs->lock);
    fs->inited = true;
    pthread_cond_broadcast(&fs->cond);
    pthread_mutex_unlock(&fs->lock);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct vdisk_fuse *fs = fuse_req_userdata(req);
    struct stat st;

    (void)fi;
    if (ino != FUSE_ROOT_ID) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    fill_attr(fs, &st);
    fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

/* Only truncation to the current size (a no-op) and timestamps are accepted. */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    struct vdisk_fuse *fs = fuse_req_userdata(req);
    struct stat st;

    (void)fi;
    if (ino != FUSE_ROOT_ID) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if ((to_set & FUSE_SET_ATTR_SIZE) && (uint64_t)attr->st_size != fs->size) {
        fuse_reply_err(req, fs->read_only ? EROFS : EPERM); /* disks don't resize */
        return;
    }
    if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
        fuse_reply_err(req, EPERM);
        return;
    }
    fill_attr(fs, &st);
    fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    (void)parent, (void)name;
    fuse_reply_err(req, ENOTDIR); /* the root is a file */
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct vdisk_fuse *fs = fuse_req_userdata(req);

    if (ino != FUSE_ROOT_ID) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (fs->read_only && (fi->flags & O_ACCMODE) != O_RDONLY) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (fi->flags & O_TRUNC) {
        fuse_reply_err(req, fs->read_only ? EROFS : EPERM);
        return;
    }
    fi->direct_io = 1; /* no page cache: the loop device above has its own */
    fi->keep_cache = 0;
    fuse_reply_open(req, fi);
}

/* ---- the fast path: io_uring on an O_DIRECT descriptor of a raw image ---- */

#define RECV_ALLOC (PAGE + RECV_SIZE + PAGE)
#define MAX_RECV   (AIO_DEPTH + MAX_THREADS)

/* A receive buffer from the pool; waits while every one holds a WRITE in flight. */
static char *recv_get(struct vdisk_fuse *fs)
{
    char *b = NULL;

    pthread_mutex_lock(&fs->pool_lock);
    while (!fs->n_free_recv && fs->n_recv >= MAX_RECV)
        pthread_cond_wait(&fs->pool_cond, &fs->pool_lock);
    if (fs->n_free_recv)
        b = fs->free_recv[--fs->n_free_recv];
    else
        fs->n_recv++; /* allocated below, outside the lock */
    pthread_mutex_unlock(&fs->pool_lock);
    if (!b && posix_memalign((void **)&b, PAGE, RECV_ALLOC) != 0) {
        pthread_mutex_lock(&fs->pool_lock);
        fs->n_recv--;
        pthread_mutex_unlock(&fs->pool_lock);
        return NULL;
    }
    return b;
}

static void recv_put(struct vdisk_fuse *fs, char *b)
{
    pthread_mutex_lock(&fs->pool_lock);
    fs->free_recv[fs->n_free_recv++] = b;
    pthread_cond_broadcast(&fs->pool_cond);
    pthread_mutex_unlock(&fs->pool_lock);
}

static struct aio_slot *slot_get(struct vdisk_fuse *fs)
{
    struct aio_slot *a;

    pthread_mutex_lock(&fs->pool_lock);
    while (!fs->free_slots)
        pthread_cond_wait(&fs->pool_cond, &fs->pool_lock);
    a = fs->free_slots;
    fs->free_slots = a->next;
    fs->inflight++;
    pthread_mutex_unlock(&fs->pool_lock);
    return a;
}

static void slot_put(struct vdisk_fuse *fs, struct aio_slot *a)
{
    pthread_mutex_lock(&fs->pool_lock);
    a->next = fs->free_slots;
    fs->free_slots = a;
    fs->inflight--;
    pthread_cond_broadcast(&fs->pool_cond);
    pthread_mutex_unlock(&fs->pool_lock);
}

/* Can [OFF, OFF+LEN) from/to BUF go to the O_DIRECT descriptor? */
static bool fast_ok(const struct vdisk_fuse *fs, const void *buf, size_t len, off_t off)
{
    return fs->dfd >= 0 && len <= MAX_IO &&
           !(((uintptr_t)buf | len | (uint64_t)off) & (fs->dio_align - 1));
}

/*
 * Queue A's read or write (NULL A: the completer's stop signal). Once an SQE
 * is filled in, the request belongs to the ring: a failed submit leaves it
 * in the queue, so retry rather than fall back and complete it twice.
 */
static int aio_submit(struct vdisk_fuse *fs, struct aio_slot *a)
{
    struct io_uring_sqe *sqe;
    int r;

    pthread_mutex_lock(&fs->sq_lock);
    sqe = io_uring_get_sqe(&fs->ring);
    if (!sqe) {
        pthread_mutex_unlock(&fs->sq_lock);
        return -EBUSY;
    }
    if (!a)
        io_uring_prep_nop(sqe);
    else if (a->write)
        io_uring_prep_write(sqe, fs->dfd, a->wbuf, (unsigned)a->len, a->off);
    else
        io_uring_prep_read(sqe, fs->dfd, a->rbuf, (unsigned)a->len, a->off);
    io_uring_sqe_set_data(sqe, a);
    while ((r = io_uring_submit(&fs->ring)) < 0) {
        if (r != -EAGAIN && r != -EBUSY && r != -EINTR) {
            fprintf(stderr, "vdisk-fuse: io_uring submit: %s\n", strerror(-r));
            break; /* the next submit carries it */
        }
        usleep(100);
    }
    pthread_mutex_unlock(&fs->sq_lock);
    return 0;
}

/* Reply to a finished request; errors and short transfers are redone by the library. */
static void aio_complete(struct vdisk_fuse *fs, struct aio_slot *a, int res)
{
    if (res < 0 || (size_t)res != a->len) {
        int r = a->write ? vdisk_write(fs->img, a->wbuf, a->len, a->off, 0)
                         : vdisk_read(fs->img, a->rbuf, a->len, a->off);

        if (r < 0) {
            log_error(a->write ? "write" : "read", r);
            fuse_reply_err(a->req, -r);
            goto out;
        }
    }
    if (a->write)
        fuse_reply_write(a->req, a->len);
    else
        fuse_reply_buf(a->req, a->rbuf, a->len);
out:
    if (a->recv)
        recv_put(fs, a->recv);
    a->recv = NULL;
    slot_put(fs, a);
}

/* The completer: the only reader of the completion queue. */
static void *completer(void *arg)
{
    struct vdisk_fuse *fs = arg;

    for (;;) {
        struct io_uring_cqe *cqe;
        struct aio_slot *a;
        int res, r = io_uring_wait_cqe(&fs->ring, &cqe);

        if (r == -EINTR)
            continue;
        if (r < 0) {
            fprintf(stderr, "vdisk-fuse: io_uring: %s\n", strerror(-r));
            sleep(1);
            continue;
        }
        a = io_uring_cqe_get_data(cqe);
        res = cqe->res;
        io_uring_cqe_seen(&fs->ring, cqe);
        if (!a)
            break; /* stop: sent once nothing is in flight */
        aio_complete(fs, a, res);
    }
    return NULL;
}

/* Turn the fast path on when the image is raw and open with direct I/O. */
static void aio_setup(struct vdisk_fuse *fs)
{
    struct vdisk_info info;
    char path[64];
    uint64_t offset = 0;
    int raw = -1;

    if (vdisk_get_linear(fs->img, &raw, &offset) < 0 || offset != 0 ||
        getenv("VDISK_FUSE_NO_AIO") || vdisk_get_info(fs->img, &info) < 0 || !info.direct)
        return;
    /* a second open file description: the library's own keeps the QEMU lock */
    snprintf(path, sizeof(path), "/proc/self/fd/%d", raw);
    fs->dfd = open(path, (fs->read_only ? O_RDONLY : O_RDWR) | O_DIRECT | O_CLOEXEC);
    if (fs->dfd < 0)
        return;
    fs->dio_align = PAGE;
#ifdef STATX_DIOALIGN
    {
        struct statx stx;

        if (statx(fs->dfd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
            (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align)
            fs->dio_align = stx.stx_dio_offset_align > stx.stx_dio_mem_align
                                ? stx.stx_dio_offset_align
                                : stx.stx_dio_mem_align;
    }
#endif
    fs->slots = calloc(AIO_DEPTH, sizeof(*fs->slots));
    if (!fs->slots || io_uring_queue_init(2 * AIO_DEPTH, &fs->ring, 0) < 0)
        goto fail;
    for (unsigned i = 0; i < AIO_DEPTH; i++) {
        fs->slots[i].next = fs->free_slots;
        fs->free_slots = &fs->slots[i];
    }
    if (pthread_create(&fs->completer, NULL, completer, fs) != 0) {
        io_uring_queue_exit(&fs->ring);
        goto fail;
    }
    fs->completer_started = true;
    return;
fail:
    free(fs->slots);
    fs->slots = NULL;
    fs->free_slots = NULL;
    close(fs->dfd);
    fs->dfd = -1;
}

/* Wait for the fast path to drain, then stop the completer. */
static void aio_stop(struct vdisk_fuse *fs)
{
    if (!fs->completer_started)
        return;
    pthread_mutex_lock(&fs->pool_lock);
    while (fs->inflight)
        pthread_cond_wait(&fs->pool_cond, &fs->pool_lock);
    pthread_mutex_unlock(&fs->pool_lock);
    while (aio_submit(fs, NULL) < 0)
        usleep(1000);
    pthread_join(fs->completer, NULL);
    fs->completer_started = false;
    io_uring_queue_exit(&fs->ring);
    for (unsigned i = 0; i < AIO_DEPTH; i++)
        free(fs->slots[i].rbuf);
    free(fs->slots);
    fs->slots = NULL;
    close(fs->dfd);
    fs->dfd = -1;
}

/* Clip [off, off+*len) to the image; false if OFF is past the end. */
static bool clip(const struct vdisk_fuse *fs, off_t off, size_t *len)
{
    if (off < 0 || (uint64_t)off >= fs->size) {
        *len = 0;
        return (uint64_t)off == fs->size;
    }
    if (*len > fs->size - (uint64_t)off)
        *len = (size_t)(fs->size - (uint64_t)off);
    return true;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct vdisk_fuse *fs = fuse_req_userdata(req);
    void *buf = read_buf, *tmp = NULL;
    int r;

    (void)ino, (void)fi;
    if (off < 0) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    clip(fs, off, &size); /* at or past the end: a read of 0 bytes */
    if (size == 0) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    if (fast_ok(fs, NULL, size, off)) {
        struct aio_slot *a = slot_get(fs);

        if (a->rbuf || posix_memalign(&a->rbuf, PAGE, MAX_IO) == 0) {
            *a = (struct aio_slot){.req = req, .len = size, .off = (uint64_t)off, .rbuf = a->rbuf};
            if (aio_submit(fs, a) == 0)
                return; /* the completer replies */
        }
        slot_put(fs, a);
    }
    if (size > MAX_IO || !buf) { /* larger than negotiated: still answer */
        if (posix_memalign(&tmp, PAGE, size) != 0) {
            fuse_reply_err(req, ENOMEM);
            return;
        }
        buf = tmp;
    }
    r = vdisk_read(fs->img, buf, size, (uint64_t)off);
    if (r < 0) {
        log_error("read", r);
        fuse_reply_err(req, -r);
    } else {
        fuse_reply_buf(req, buf, size);
    }
    free(tmp);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    struct vdisk_fuse *fs = fuse_req_userdata(req);
    int r;

    (void)ino, (void)fi;
    if (fs->read_only) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (off < 0) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (size == 0) {
        fuse_reply_write(req, 0);
        return;
    }
    if (!clip(fs, off, &size) || size == 0) {
        fuse_reply_err(req, ENOSPC); /* a disk does not grow */
        return;
    }
    /* the payload sits in this worker's receive buffer: hand both to the fast path */
    if (fast_ok(fs, buf, size, off) && cur_recv && buf > cur_recv && buf < cur_recv + RECV_ALLOC) {
        struct aio_slot *a = slot_get(fs);
        void *rbuf = a->rbuf;

        *a = (struct aio_slot){.req = req,
                               .write = true,
                               .len = size,
                               .off = (uint64_t)off,
                               .recv = cur_recv,
                               .wbuf = buf,
                               .rbuf = rbuf};
        if (aio_submit(fs, a) == 0) {
            cur_recv = NULL; /* the worker takes another for the next request */
            return;
        }
        a->recv = NULL;
        slot_put(fs, a);
    }
    r = vdisk_write(fs->img, buf, size, (uint64_t)off, 0);
    if (r < 0) {
        log_error("write", r);
        fuse_reply_err(req, -r);
        return;
    }
    fuse_reply_write(req, size);
}

/* flush (every close) and fsync both reach the image's flush. */
static void do_flush(fuse_req_t req)
{
    struct vdisk_fuse *fs = fuse_req_userdata(req);
    int r = vdisk_flush(fs->img);

    if (r < 0)
        log_error("flush", r);
    fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino, (void)fi;
    do_flush(req);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)ino, (void)datasync, (void)fi;
    do_flush(req);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino, (void)fi;
    fuse_reply_err(req, 0);
}

/*
 * PUNCH_HOLE must read back as zeroes (loop maps both discard and
 * write-zeroes-with-unmap onto it), so it is a write-zeroes that may unmap;
 * ZERO_RANGE keeps the blocks allocated.
 */
static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                         struct fuse_file_info *fi)
{
    struct vdisk_fuse *fs = fuse_req_userdata(req);
    unsigned flags = 0;
    size_t n;
    int r;

    (void)ino, (void)fi;
    if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) ||
        !(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) {
        fuse_reply_err(req, EOPNOTSUPP); /* plain allocation means nothing to a disk */
        return;
    }
    if (fs->read_only) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (off < 0 || len <= 0 || (uint64_t)len > SIZE_MAX) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    n = (size_t)len;
    if (!(mode & FALLOC_FL_KEEP_SIZE) && ((uint64_t)off > fs->size || n > fs->size - off)) {
        fuse_reply_err(req, EFBIG); /* would grow the file */
        return;
    }
    clip(fs, off, &n); /* past the end there is nothing to zero */
    if (n == 0) {
        fuse_reply_err(req, 0);
        return;
    }
    if (mode & FALLOC_FL_PUNCH_HOLE)
        flags |= VDISK_ZERO_MAY_UNMAP;
    r = vdisk_write_zeroes(fs->img, (uint64_t)off, n, flags);
    if (r < 0)
        log_error("fallocate", r);
    fuse_reply_err(req, r < 0 ? -r : 0);
}

/* SEEK_DATA/SEEK_HOLE from the allocation map; the kernel does the others. */
static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                     struct fuse_file_info *fi)
{
    struct vdisk_fuse *fs = fuse_req_userdata(req);
    uint64_t pos;

    (void)ino, (void)fi;
    if (whence != SEEK_DATA && whence != SEEK_HOLE) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (off < 0 || (uint64_t)off >= fs->size) {
        fuse_reply_err(req, ENXIO);
        return;
    }
    for (pos = (uint64_t)off; pos < fs->size;) {
        struct vdisk_extent ext;
        int r = vdisk_block_status(fs->img, pos, fs->size - pos, &ext);
        bool hole;

        if (r < 0) {
            log_error("lseek", r);
            fuse_reply_err(req, -r);
            return;
        }
        hole = ext.flags & VDISK_EXTENT_HOLE;
        if (hole == (whence == SEEK_HOLE))
            break;
        pos += ext.length;
    }
    if (pos >= fs->size) { /* no data after OFF; the end counts as a hole */
        if (whence == SEEK_DATA) {
            fuse_reply_err(req, ENXIO);
            return;
        }
        pos = fs->size;
    }
    fuse_reply_lseek(req, (off_t)pos);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct vdisk_fuse *fs = fuse_req_userdata(req);
    struct statvfs sv = {
        .f_bsize = PAGE, /* loop takes its discard granularity from here */
        .f_frsize = PAGE,
        .f_blocks = fs->size / PAGE,
        .f_files = 1,
        .f_namemax = 255,
    };

    (void)ino;
    fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init,
    .lookup = op_lookup,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .statfs = op_statfs,
    .fallocate = op_fallocate,
    .lseek = op_lseek,
};

/*
 * A worker: receive a request into a buffer laid out so that a WRITE's
 * payload lands on a page boundary, then let libfuse dispatch it.
 */
static void *worker(void *arg)
{
    struct vdisk_fuse *fs = arg;

    if (posix_memalign(&read_buf, PAGE, MAX_IO) != 0) {
        fprintf(stderr, "vdisk-fuse: worker: out of memory\n");
        goto out;
    }
    while (!fuse_session_exited(fs->se)) {
        struct fuse_buf fbuf = {0};
        int r;

        if (!cur_recv && !(cur_recv = recv_get(fs))) {
            fprintf(stderr, "vdisk-fuse: worker: out of memory\n");
            break;
        }
        fbuf.mem = cur_recv + PAGE - WRITE_HEADER;
        r = fuse_session_receive_buf(fs->se, &fbuf);
        if ((r == -EINTR || r == -EAGAIN) && !fuse_session_exited(fs->se))
            continue;
        if (r <= 0) /* 0: unmounted or aborted (libfuse marks the session exited) */
            break;
        fuse_session_process_buf(fs->se, &fbuf);
    }
out:
    if (cur_recv)
        recv_put(fs, cur_recv);
    cur_recv = NULL;
    free(read_buf);
    read_buf = NULL;
    pthread_mutex_lock(&fs->lock);
    fs->running--;
    pthread_cond_broadcast(&fs->cond);
    pthread_mutex_unlock(&fs->lock);
    return NULL;
}

/* Message into ERRBUF (printf style) and return -ERR. */
static int fail(char *errbuf, size_t errlen, int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
    return -err;
}

/* Wait until COND_OK(fs) or the deadline SECONDS from now; caller holds fs->lock. */
static bool wait_until(struct vdisk_fuse *fs, bool (*cond_ok)(struct vdisk_fuse *), int seconds)
{
    struct timespec deadline;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += seconds;
    while (!cond_ok(fs))
        if (pthread_cond_timedwait(&fs->cond, &fs->lock, &deadline) == ETIMEDOUT)
            return cond_ok(fs);
    return true;
}

static bool init_done(struct vdisk_fuse *fs)
{
    return fs->inited || fs->running == 0;
}

static bool workers_gone(struct vdisk_fuse *fs)
{
    return fs->running == 0;
}

/* Write to the connection's abort file: every request pending or to come fails. */
static int abort_conn(unsigned long dev)
{
    char path[128];
    int fd, r;

    snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%lu/abort", dev);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno; /* connection already gone */
    r = write(fd, "1", 1) == 1 ? 0 : -errno;
    close(fd);
    return r;
}

static void wake_handler(int sig)
{
    (void)sig; /* only there to interrupt a worker's read() */
}

/*
 * Stop and join every worker. The session is never marked exited while the
 * connection lives: libfuse would drop the request a worker just read, and
 * whoever sent it would wait forever. Instead: unmount (with no user left the
 * kernel ends the connection and the workers' reads fail with ENODEV). If a
 * user remains (a loop device still bound), abort the connection so that its
 * requests fail rather than hang, and leave the dead mount where it is: the
 * loop device names its file by that path, and `vdisk close` cleans up.
 */
static void stop_workers(struct vdisk_fuse *fs)
{
    bool gone;

    pthread_mutex_lock(&fs->lock);
    gone = workers_gone(fs);
    pthread_mutex_unlock(&fs->lock);
    if (gone)
        goto join;
    if (umount2(fs->mountpoint, 0) == 0) {
        pthread_mutex_lock(&fs->lock);
        gone = wait_until(fs, workers_gone, 5);
        pthread_mutex_unlock(&fs->lock);
        if (gone)
            goto join;
    } else {
        fprintf(stderr, "vdisk-fuse: %s: unmount: %m; aborting the connection\n", fs->mountpoint);
    }
    if (fs->conn_dev && abort_conn(fs->conn_dev) == 0) {
        pthread_mutex_lock(&fs->lock);
        gone = wait_until(fs, workers_gone, 5);
        pthread_mutex_unlock(&fs->lock);
    }
    if (!gone) { /* last resort: interrupt the workers' reads */
        struct sigaction sa = {.sa_handler = wake_handler}; /* no SA_RESTART */

        fprintf(stderr, "vdisk-fuse: %s: cannot abort the connection; stopping workers\n",
                fs->mountpoint);
        sigaction(SIGUSR1, &sa, NULL);
        fuse_session_exit(fs->se);
        for (unsigned i = 0; i < fs->nthreads; i++)
            pthread_kill(fs->threads[i], SIGUSR1);
    }
join:
    for (unsigned i = 0; i < fs->nthreads; i++)
        pthread_join(fs->threads[i], NULL);
    fs->nthreads = 0;
}

static void free_fs(struct vdisk_fuse *fs)
{
    aio_stop(fs);
    for (unsigned i = 0; i < fs->n_free_recv; i++)
        free(fs->free_recv[i]);
    free(fs->free_recv);
    pthread_mutex_destroy(&fs->sq_lock);
    pthread_cond_destroy(&fs->pool_cond);
    pthread_mutex_destroy(&fs->pool_lock);
    if (fs->se)
        fuse_session_destroy(fs->se);
    pthread_cond_destroy(&fs->cond);
    pthread_mutex_destroy(&fs->lock);
    free(fs->mountpoint);
    free(fs);
}

int vdisk_fuse_start(struct vdisk_image *img, const char *mountpoint,
                     const struct vdisk_fuse_config *cfg, struct vdisk_fuse **fsp, char *errbuf,
                     size_t errlen)
{
    char opts[256];
    char *argv[] = {"vdisk-fuse", "-o", opts, cfg->debug ? "-d" : NULL, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(cfg->debug ? 4 : 3, argv);
    struct vdisk_fuse *fs;
    unsigned threads;
    unsigned maj, min;
    bool inited;
    int r;

    fs = calloc(1, sizeof(*fs));
    if (!fs)
        return fail(errbuf, errlen, ENOMEM, "%s: out of memory", mountpoint);
    pthread_mutex_init(&fs->lock, NULL);
    pthread_cond_init(&fs->cond, NULL);
    pthread_mutex_init(&fs->sq_lock, NULL);
    pthread_mutex_init(&fs->pool_lock, NULL);
    pthread_cond_init(&fs->pool_cond, NULL);
    fs->dfd = -1;
    fs->img = img;
    fs->size = vdisk_get_size(img);
    fs->read_only = vdisk_is_read_only(img);
    clock_gettime(CLOCK_REALTIME, &fs->mount_time);
    fs->mountpoint = strdup(mountpoint);
    fs->free_recv = calloc(MAX_RECV, sizeof(*fs->free_recv));
    if (!fs->mountpoint || !fs->free_recv) {
        free_fs(fs);
        return fail(errbuf, errlen, ENOMEM, "%s: out of memory", mountpoint);
    }
    aio_setup(fs);
    threads = cfg->threads ? cfg->threads : fs->dfd >= 0 ? DEFAULT_THREADS_FAST : DEFAULT_THREADS;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    snprintf(opts, sizeof(opts), "fsname=vdisk,subtype=vdisk,default_permissions%s",
             fs->read_only ? ",ro" : "");
    fs->se = fuse_session_new(&args, &ops, sizeof(ops), fs);
    fuse_opt_free_args(&args);
    if (!fs->se) {
        free_fs(fs);
        return fail(errbuf, errlen, EINVAL, "%s: cannot create a FUSE session", mountpoint);
    }
    if (fuse_session_mount(fs->se, mountpoint) != 0) {
        free_fs(fs);
        return fail(errbuf, errlen, EIO, "%s: FUSE mount failed (is /dev/fuse usable?)",
                    mountpoint);
    }
    /* remember the connection now: after a lazy unmount mountinfo no longer shows it */
    if (find_fuse_mount(mountpoint, &maj, &min) == 0)
        fs->conn_dev = (unsigned long)makedev(maj, min);
    for (unsigned i = 0; i < threads; i++) {
        pthread_mutex_lock(&fs->lock);
        fs->running++;
        pthread_mutex_unlock(&fs->lock);
        r = pthread_create(&fs->threads[i], NULL, worker, fs);
        if (r != 0) {
            pthread_mutex_lock(&fs->lock);
            fs->running--;
            pthread_mutex_unlock(&fs->lock);
            stop_workers(fs);
            free_fs(fs);
            return fail(errbuf, errlen, r, "%s: cannot start a worker thread: %s", mountpoint,
                        strerror(r));
        }
        fs->nthreads++;
    }
    pthread_mutex_lock(&fs->lock);
    inited = wait_until(fs, init_done, 10) && fs->inited;
    pthread_mutex_unlock(&fs->lock);
    if (!inited) {
        stop_workers(fs);
        free_fs(fs);
        return fail(errbuf, errlen, EIO, "%s: the kernel never sent FUSE INIT", mountpoint);
    }
    *fsp = fs;
    return 0;
}

bool vdisk_fuse_done(struct vdisk_fuse *fs)
{
    bool done;

    pthread_mutex_lock(&fs->lock);
    done = fs->running == 0;
    pthread_mutex_unlock(&fs->lock);
    return done;
}

void vdisk_fuse_stop(struct vdisk_fuse *fs)
{
    if (!fs)
        return;
    stop_workers(fs);
    free_fs(fs); /* closes /dev/fuse; a mount still in use stays for vdisk close */
}

/* The device number "MAJ:MIN" of the last FUSE mount at MOUNTPOINT, from mountinfo. */
static int find_fuse_mount(const char *mountpoint, unsigned *major_out, unsigned *minor_out)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char *line = NULL;
    size_t cap = 0;
    int found = -ENOENT;

    if (!f)
        return -errno;
    while (getline(&line, &cap, f) > 0) {
        unsigned maj, min;
        char mnt[4096], *sep;
        int pos = 0;

        /* id parent maj:min root mountpoint options... - fstype source ... */
        if (sscanf(line, "%*u %*u %u:%u %*s %4095s %n", &maj, &min, mnt, &pos) != 3)
            continue;
        sep = strstr(line + pos, " - ");
        if (!sep || strncmp(sep + 3, "fuse", 4) != 0)
            continue;
        /* mountinfo escapes space, tab, newline and backslash as \ooo */
        for (char *s = mnt, *d = mnt;; s++, d++) {
            if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] && s[3]) {
                *d = (char)(((s[1] - '0') << 6) | ((s[2] - '0') << 3) | (s[3] - '0'));
                s += 3;
            } else {
                *d = *s;
            }
            if (!*s)
                break;
        }
        if (strcmp(mnt, mountpoint) == 0) {
            *major_out = maj;
            *minor_out = min;
            found = 0;
        }
    }
    free(line);
    fclose(f);
    return found;
}

int vdisk_fuse_abort_mount(const char *mountpoint)
{
    unsigned maj, min;
    int r = find_fuse_mount(mountpoint, &maj, &min);

    if (r < 0)
        return r;
    /* the connection's directory is named after the superblock's dev_t */
    return abort_conn((unsigned long)makedev(maj, min));
}
