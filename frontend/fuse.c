/* SPDX-License-Identifier: MIT */
/*
 * The FUSE frontend: one image, one regular file, the root inode of a FUSE
 * mount laid over an empty regular file (as qemu-storage-daemon's FUSE export
 * does). Built on libfuse's low-level API and the request engine (vdisk_queue),
 * in the way of the kernel's ublk selftests (kublk): a few threads, each
 * owning an io_uring and a vdisk_queue on that ring, with the readiness of
 * /dev/fuse (non-blocking) polled on the same ring. A thread waits only on its
 * ring: /dev/fuse readable -> receive requests until it would block and start
 * them on the engine; the engine's CQEs -> vdisk_queue_handle_cqe(); finished
 * requests -> fuse_reply_*() from that thread. The file I/O of raw images and
 * of allocated qcow2 clusters thus goes to the kernel from the ring, with no
 * thread hand-off; the rest runs on the engine's worker threads.
 *
 *  - every open file gets FOPEN_DIRECT_IO, so no page cache sits between the
 *    loop device and the image, and async direct I/O keeps many requests in
 *    flight (max_background is raised for that);
 *  - each request in flight owns a buffer: it is received there, placed so that
 *    a WRITE's payload is page aligned (an O_DIRECT image takes it without a
 *    copy, and it stays valid until the write completes); a READ's data lands
 *    in the same buffer;
 *  - read/write -> READ/WRITE, fsync and flush -> FLUSH, fallocate ->
 *    WRITE_ZEROES (punch hole may unmap, zero range not), SEEK_DATA/SEEK_HOLE
 *    -> BLOCK_STATUS.
 *
 * Shutdown: unmount; with no user left the kernel ends the connection, the
 * poll on /dev/fuse reports it and the read fails with ENODEV; each thread
 * then waits for its requests in flight and leaves. If a user lingers, the
 * connection is aborted through /sys/fs/fuse/connections (see stop_threads()).
 */
#define FUSE_USE_VERSION 34

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/falloc.h>
#include <linux/fuse.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "vdisk_fuse.h"

#define DEFAULT_THREADS 2
#define MAX_THREADS     16
#define QUEUE_DEPTH     128 /* requests in flight per thread (the kernel sends up to ~128) */
#define RING_ENTRIES    256 /* QUEUE_DEPTH + 1 for the engine, 2 polls of our own */
#define RECV_BATCH      8   /* requests received before the thread submits what it has */
#define SEEK_EXTENTS    8   /* extents one SEEK_DATA/SEEK_HOLE step asks for */
#define PAGE            4096u
#define MAX_IO          (1u << 20) /* max_write, and the largest read the kernel sends */
/* What libfuse reads per request: FUSE_MAX_MAX_PAGES pages plus a header page */
#define RECV_SIZE (MAX_IO + PAGE)
/* A request's buffer: a WRITE's payload starts at PAGE, a READ's data goes there */
#define BUF_SIZE (PAGE + RECV_SIZE + PAGE)
/* in header + write_in: a WRITE's payload starts this far into the request */
#define WRITE_HEADER (sizeof(struct fuse_in_header) + sizeof(struct fuse_write_in))
#define ATTR_TIMEOUT 1.0

/* user_data of our own SQEs (the engine's have VDISK_QUEUE_CQE_BIT) */
#define TAG_FUSE_POLL 1
#define TAG_STOP_POLL 2

enum io_kind { IO_READ, IO_WRITE, IO_FLUSH, IO_FALLOCATE, IO_SEEK };

/* One FUSE request on the engine, and the buffer it was received into. */
struct io {
    struct vdisk_request vr;
    fuse_req_t req;
    enum io_kind kind;
    int whence; /* IO_SEEK */
    char *buf;  /* BUF_SIZE bytes, page aligned, allocated on first use */
    void *tmp;  /* a READ larger than MAX_IO */
    struct vdisk_extent ext[SEEK_EXTENTS];
    struct io *next; /* free list */
};

/* A FUSE thread: its ring, its engine queue, its requests. Touched only by it once started. */
struct fuse_thread {
    struct vdisk_fuse *fs;
    pthread_t tid;
    bool started;
    struct io_uring ring;
    bool ring_ok;
    struct vdisk_queue *q;
    struct io *ios, *free;
    struct io *cur; /* the request being received and dispatched */
    unsigned inflight;
    bool poll_armed, stop_armed, readable, exiting;
    struct vdisk_queue_stats stats; /* its queue's, when it left */
};

struct vdisk_fuse {
    struct vdisk_image *img;
    struct fuse_session *se;
    char *mountpoint;
    uint64_t size;
    bool read_only;
    struct timespec mount_time;
    unsigned long conn_dev; /* /sys/fs/fuse/connections/<conn_dev>, 0 if unknown */
    int stop_efd;           /* written when threads must stop although the connection lives */

    struct fuse_thread threads[MAX_THREADS];
    unsigned nthreads;

    pthread_mutex_t lock; /* protects running, inited below */
    pthread_cond_t cond;
    unsigned running; /* threads still in their loop */
    bool inited;      /* INIT answered */
};

static int find_fuse_mount(const char *mountpoint, unsigned *major_out, unsigned *minor_out);

/* The thread running the handler libfuse calls (they run on the thread that received). */
static __thread struct fuse_thread *self;

/* Log an image error to stderr (the server's log) with the library's message. */
static void log_error(const char *what, int r, bool lib_msg)
{
    fprintf(stderr, "vdisk-fuse: %s: %s\n", what,
            lib_msg && vdisk_last_error()[0] ? vdisk_last_error() : strerror(-r));
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

/* ---- requests on the engine ---- */

/* A free request with its buffer, or NULL when all are in flight. */
static struct io *io_get(struct fuse_thread *t)
{
    struct io *io = t->free;

    if (!io)
        return NULL;
    if (!io->buf && posix_memalign((void **)&io->buf, PAGE, BUF_SIZE) != 0) {
        io->buf = NULL;
        return NULL;
    }
    t->free = io->next;
    return io;
}

/* IO is done with: back on the free list (the last freed is the next used: buffers stay warm). */
static void io_put(struct fuse_thread *t, struct io *io)
{
    free(io->tmp);
    io->tmp = NULL;
    io->next = t->free;
    t->free = io;
}

/*
 * Take the request this thread just received into (a READ's data and a
 * WRITE's payload live in its buffer until it completes); the thread gets
 * another for the next one.
 */
static struct io *io_take(fuse_req_t req, enum io_kind kind)
{
    struct io *io = self->cur;

    self->cur = NULL;
    io->req = req;
    io->kind = kind;
    return io;
}

/* Start IO's engine request; a refusal is answered at once. */
static void io_submit(struct io *io, const char *what)
{
    struct fuse_thread *t = self;
    int r;

    io->vr.user_data = io;
    r = vdisk_queue_submit(t->q, &io->vr);
    if (r < 0) {
        log_error(what, r, true);
        fuse_reply_err(io->req, -r);
        io_put(t, io);
        return;
    }
    t->inflight++;
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
    struct io *io;
    void *dst;

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
    io = io_take(req, IO_READ);
    dst = io->buf + PAGE; /* the request itself is no longer needed */
    if (size > MAX_IO) {  /* larger than negotiated: still answer */
        if (posix_memalign(&io->tmp, PAGE, size) != 0) {
            io->tmp = NULL;
            fuse_reply_err(req, ENOMEM);
            io_put(self, io);
            return;
        }
        dst = io->tmp;
    }
    io->vr = (struct vdisk_request){
        .op = VDISK_OP_READ, .buf = dst, .offset = (uint64_t)off, .length = size};
    io_submit(io, "read");
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    struct vdisk_fuse *fs = fuse_req_userdata(req);
    struct io *io;

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
    io = io_take(req, IO_WRITE);
    /* the payload normally sits page aligned in the buffer it was received into */
    if (buf < io->buf || buf + size > io->buf + BUF_SIZE) {
        char *copy = io->buf + PAGE;

        if (size > MAX_IO) {
            if (posix_memalign(&io->tmp, PAGE, size) != 0) {
                io->tmp = NULL;
                fuse_reply_err(req, ENOMEM);
                io_put(self, io);
                return;
            }
            copy = io->tmp;
        }
        buf = memcpy(copy, buf, size);
    }
    io->vr = (struct vdisk_request){
        .op = VDISK_OP_WRITE, .buf = (void *)buf, .offset = (uint64_t)off, .length = size};
    io_submit(io, "write");
}

/* flush (every close) and fsync both reach the image's flush. */
static void do_flush(fuse_req_t req)
{
    struct io *io = io_take(req, IO_FLUSH);

    io->vr = (struct vdisk_request){.op = VDISK_OP_FLUSH};
    io_submit(io, "flush");
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
    struct io *io;
    size_t n;

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
    io = io_take(req, IO_FALLOCATE);
    io->vr =
        (struct vdisk_request){.op = VDISK_OP_WRITE_ZEROES,
                               .flags = (mode & FALLOC_FL_PUNCH_HOLE) ? VDISK_ZERO_MAY_UNMAP : 0,
                               .offset = (uint64_t)off,
                               .length = n};
    io_submit(io, "fallocate");
}

/* Ask for the allocation map from POS on, for IO's SEEK_DATA/SEEK_HOLE. */
static void seek_step(struct io *io, uint64_t pos)
{
    struct vdisk_fuse *fs = self->fs;

    io->vr = (struct vdisk_request){.op = VDISK_OP_BLOCK_STATUS,
                                    .buf = io->ext,
                                    .offset = pos,
                                    .length = fs->size - pos,
                                    .count = SEEK_EXTENTS};
    io_submit(io, "lseek");
}

/*
 * A step of SEEK_DATA/SEEK_HOLE came back: answer with the first extent of
 * the kind asked for, or go on after the last one. False if IO goes on.
 */
static bool seek_done(struct io *io)
{
    uint64_t size = self->fs->size, pos = io->vr.offset;
    int n = io->vr.result;

    if (n <= 0) {
        if (n == 0)
            n = -EIO; /* no extent: would never advance */
        log_error("lseek", n, true);
        fuse_reply_err(io->req, -n);
        return true;
    }
    for (int i = 0; i < n; i++) {
        bool hole = io->ext[i].flags & VDISK_EXTENT_HOLE;

        if (hole == (io->whence == SEEK_HOLE)) {
            fuse_reply_lseek(io->req, (off_t)(io->ext[i].offset > pos ? io->ext[i].offset : pos));
            return true;
        }
        pos = io->ext[i].offset + io->ext[i].length;
    }
    if (pos < size) {
        seek_step(io, pos); /* answers by itself if it fails */
        return false;
    }
    if (io->whence == SEEK_DATA) /* no data after OFF; the end counts as a hole */
        fuse_reply_err(io->req, ENXIO);
    else
        fuse_reply_lseek(io->req, (off_t)size);
    return true;
}

/* SEEK_DATA/SEEK_HOLE from the allocation map; the kernel does the others. */
static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                     struct fuse_file_info *fi)
{
    struct vdisk_fuse *fs = fuse_req_userdata(req);
    struct io *io;

    (void)ino, (void)fi;
    if (whence != SEEK_DATA && whence != SEEK_HOLE) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (off < 0 || (uint64_t)off >= fs->size) {
        fuse_reply_err(req, ENXIO);
        return;
    }
    io = io_take(req, IO_SEEK);
    io->whence = whence;
    seek_step(io, (uint64_t)off);
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

/* ---- the threads ---- */

/* Answer IO's FUSE request from its finished engine request. */
static void io_done(struct fuse_thread *t, struct io *io, bool lib_msg)
{
    static const char *const what[] = {"read", "write", "flush", "fallocate", "lseek"};
    int r = io->vr.result;

    if (io->kind == IO_SEEK) {
        if (seek_done(io))
            io_put(t, io);
        return;
    }
    if (r < 0) {
        log_error(what[io->kind], r, lib_msg);
        fuse_reply_err(io->req, -r);
    } else if (io->kind == IO_READ) {
        fuse_reply_buf(io->req, io->vr.buf, io->vr.length);
    } else if (io->kind == IO_WRITE) {
        fuse_reply_write(io->req, io->vr.length);
    } else {
        fuse_reply_err(io->req, 0);
    }
    io_put(t, io);
}

/* Answer every request the engine finished. */
static void reap(struct fuse_thread *t)
{
    struct vdisk_request *done[32];
    int n;

    while ((n = vdisk_queue_complete(t->q, done, 32, 0)) > 0) {
        int last_failed = -1;

        for (int i = 0; i < n; i++)
            if (done[i]->result < 0)
                last_failed = i;
        for (int i = 0; i < n; i++) {
            t->inflight--;
            /* vdisk_last_error() holds the message of the last failure only */
            io_done(t, done[i]->user_data, i == last_failed);
        }
    }
}

/* Receive and start requests while /dev/fuse has some and there is room for them. */
static void receive(struct fuse_thread *t)
{
    struct fuse_session *se = t->fs->se;

    for (unsigned n = 0; n < RECV_BATCH && !t->exiting; n++) {
        struct fuse_buf fbuf = {0};
        int r;

        if (!t->cur && !(t->cur = io_get(t)))
            return; /* all in flight: receive again when one completes */
        fbuf.mem = t->cur->buf + PAGE - WRITE_HEADER;
        r = fuse_session_receive_buf(se, &fbuf);
        if (r == -EAGAIN) {
            t->readable = false;
            return;
        }
        if (r == -EINTR)
            continue;
        if (r <= 0) { /* 0: unmounted or aborted (libfuse marks the session exited) */
            t->exiting = true;
            return;
        }
        fuse_session_process_buf(se, &fbuf); /* the handler may take t->cur */
    }
}

/* Put a poll for FD on T's ring; false if there is no SQE for it now. */
static bool arm_poll(struct fuse_thread *t, int fd, uint64_t tag)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);

    if (!sqe)
        return false;
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, tag);
    return true;
}

/*
 * A thread's loop: receive while /dev/fuse is readable, answer what the
 * engine finished, then wait on the ring for either. Once the connection is
 * gone (or the stop eventfd fires), finish what is in flight and leave.
 */
static void *thread_main(void *arg)
{
    struct fuse_thread *t = arg;
    struct vdisk_fuse *fs = t->fs;
    int fuse_fd = fuse_session_fd(fs->se), r;

    self = t;
    /* io_uring_enable_rings(), missing from liburing 2.3's library */
    if ((t->ring.flags & IORING_SETUP_R_DISABLED) &&
        syscall(__NR_io_uring_register, t->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0) <
            0) {
        fprintf(stderr, "vdisk-fuse: io_uring: enable: %m\n");
        goto out;
    }
    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        bool more;

        if (t->readable && !t->exiting)
            receive(t);
        reap(t);
        if (!t->cur && t->free && !(t->cur = io_get(t)) && !t->inflight)
            usleep(10000); /* out of memory for a buffer with nothing to wait for */
        if (fuse_session_exited(fs->se))
            t->exiting = true;
        if (t->exiting && t->inflight == 0)
            break;
        /* go on without waiting: more to receive, or (no buffer) nothing to wait for */
        more = !t->exiting && (t->cur ? t->readable : !t->inflight);
        if (!t->exiting && !t->readable && !t->poll_armed && t->cur)
            t->poll_armed = arm_poll(t, fuse_fd, TAG_FUSE_POLL);
        if (!t->stop_armed)
            t->stop_armed = arm_poll(t, fs->stop_efd, TAG_STOP_POLL);
        r = more ? io_uring_submit_and_get_events(&t->ring) : io_uring_submit_and_wait(&t->ring, 1);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME) {
            fprintf(stderr, "vdisk-fuse: io_uring: %s\n", strerror(-r));
            usleep(1000);
        }
        io_uring_for_each_cqe(&t->ring, head, cqe)
        {
            seen++;
            if (cqe->user_data & VDISK_QUEUE_CQE_BIT) {
                vdisk_queue_handle_cqe(t->q, cqe->user_data, cqe->res);
            } else if (cqe->user_data == TAG_FUSE_POLL) {
                t->poll_armed = false;
                t->readable = true; /* readable, or an error the read reports */
            } else if (cqe->user_data == TAG_STOP_POLL) {
                t->exiting = true; /* stays readable: never armed again */
            }
        }
        io_uring_cq_advance(&t->ring, seen);
    }
    vdisk_queue_get_stats(t->q, &t->stats);
    vdisk_queue_destroy(t->q); /* nothing in flight: it only frees */
    t->q = NULL;
out:
    pthread_mutex_lock(&fs->lock);
    fs->running--;
    pthread_cond_broadcast(&fs->cond);
    pthread_mutex_unlock(&fs->lock);
    return NULL;
}

/* T's ring, engine queue and requests; a message in ERRBUF on failure. */
static int thread_setup(struct vdisk_fuse *fs, struct fuse_thread *t, char *errbuf, size_t errlen)
{
    int r;

    t->fs = fs;
    /*
     * One thread submits and reaps: let completions run when it enters the
     * ring (no interrupting it with task work). Started disabled so that the
     * thread, not this one, becomes the ring's only submitter.
     */
    r = io_uring_queue_init(RING_ENTRIES, &t->ring,
                            IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                                IORING_SETUP_R_DISABLED);
    if (r == -EINVAL) /* a kernel before 6.1 */
        r = io_uring_queue_init(RING_ENTRIES, &t->ring, 0);
    if (r < 0) {
        snprintf(errbuf, errlen, "%s: io_uring (the FUSE server runs on it): %s", fs->mountpoint,
                 strerror(-r));
        return r;
    }
    t->ring_ok = true;
    r = vdisk_queue_create_on_ring(fs->img, QUEUE_DEPTH, &t->ring, &t->q);
    if (r < 0) {
        snprintf(errbuf, errlen, "%s", vdisk_last_error());
        return r;
    }
    t->ios = calloc(QUEUE_DEPTH, sizeof(*t->ios));
    if (!t->ios) {
        snprintf(errbuf, errlen, "%s: out of memory", fs->mountpoint);
        return -ENOMEM;
    }
    for (unsigned i = QUEUE_DEPTH; i-- > 0;) {
        t->ios[i].next = t->free;
        t->free = &t->ios[i];
    }
    t->readable = true; /* try a read first; the poll follows when it would block */
    return 0;
}

/* Free what thread_setup made (the thread has left, with nothing in flight). */
static void thread_free(struct fuse_thread *t)
{
    vdisk_queue_destroy(t->q);
    t->q = NULL;
    if (t->ring_ok)
        io_uring_queue_exit(&t->ring);
    t->ring_ok = false;
    if (t->ios)
        for (unsigned i = 0; i < QUEUE_DEPTH; i++) {
            free(t->ios[i].buf);
            free(t->ios[i].tmp);
        }
    free(t->ios);
    t->ios = NULL;
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

static bool threads_gone(struct vdisk_fuse *fs)
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

/*
 * Stop and join every thread. The session is never marked exited while the
 * connection lives: libfuse would drop the request a thread just read, and
 * whoever sent it would wait forever. Instead: unmount (with no user left the
 * kernel ends the connection: the threads see it on their polls and reads).
 * If a user remains (a loop device still bound), abort the connection so that
 * its requests fail rather than hang, and leave the dead mount where it is:
 * the loop device names its file by that path, and `vdisk close` cleans up.
 * Either way each thread finishes its requests in flight before it leaves.
 */
static void stop_threads(struct vdisk_fuse *fs)
{
    bool gone;

    pthread_mutex_lock(&fs->lock);
    gone = threads_gone(fs);
    pthread_mutex_unlock(&fs->lock);
    if (gone)
        goto join;
    if (umount2(fs->mountpoint, 0) == 0) {
        pthread_mutex_lock(&fs->lock);
        gone = wait_until(fs, threads_gone, 5);
        pthread_mutex_unlock(&fs->lock);
        if (gone)
            goto join;
    } else {
        fprintf(stderr, "vdisk-fuse: %s: unmount: %m; aborting the connection\n", fs->mountpoint);
    }
    if (fs->conn_dev && abort_conn(fs->conn_dev) == 0) {
        pthread_mutex_lock(&fs->lock);
        gone = wait_until(fs, threads_gone, 5);
        pthread_mutex_unlock(&fs->lock);
    }
    if (!gone) { /* last resort: tell the threads to stop receiving */
        uint64_t one = 1;

        fprintf(stderr, "vdisk-fuse: %s: cannot abort the connection; stopping threads\n",
                fs->mountpoint);
        fuse_session_exit(fs->se);
        if (write(fs->stop_efd, &one, sizeof(one)) != sizeof(one))
            fprintf(stderr, "vdisk-fuse: stop eventfd: %m\n");
    }
join:
    for (unsigned i = 0; i < fs->nthreads; i++)
        if (fs->threads[i].started)
            pthread_join(fs->threads[i].tid, NULL);
    for (unsigned i = 0; i < fs->nthreads; i++)
        fs->threads[i].started = false;
}

/* Log what the engine did for this mount (the server's log; tests read it). */
static void log_stats(struct vdisk_fuse *fs)
{
    struct vdisk_queue_stats sum = {0};

    for (unsigned i = 0; i < fs->nthreads; i++) {
        const struct vdisk_queue_stats st = fs->threads[i].stats;

        sum.requests += st.requests;
        sum.ring += st.ring;
        sum.workers += st.workers;
        sum.ring_ios += st.ring_ios;
    }
    fprintf(stderr,
            "vdisk-fuse: engine: %llu requests, %llu on the ring (%llu file I/Os), "
            "%llu at its workers, %u threads\n",
            (unsigned long long)sum.requests, (unsigned long long)sum.ring,
            (unsigned long long)sum.ring_ios, (unsigned long long)sum.workers, fs->nthreads);
}

static void free_fs(struct vdisk_fuse *fs)
{
    for (unsigned i = 0; i < fs->nthreads; i++)
        thread_free(&fs->threads[i]);
    if (fs->se)
        fuse_session_destroy(fs->se);
    if (fs->stop_efd >= 0)
        close(fs->stop_efd);
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
    int r, fd;

    fs = calloc(1, sizeof(*fs));
    if (!fs)
        return fail(errbuf, errlen, ENOMEM, "%s: out of memory", mountpoint);
    pthread_mutex_init(&fs->lock, NULL);
    pthread_cond_init(&fs->cond, NULL);
    fs->img = img;
    fs->size = vdisk_get_size(img);
    fs->read_only = vdisk_is_read_only(img);
    clock_gettime(CLOCK_REALTIME, &fs->mount_time);
    fs->mountpoint = strdup(mountpoint);
    fs->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!fs->mountpoint || fs->stop_efd < 0) {
        r = errno;
        free_fs(fs);
        return fail(errbuf, errlen, r, "%s: %s", mountpoint, strerror(r));
    }
    threads = cfg->threads ? cfg->threads : DEFAULT_THREADS;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    for (; fs->nthreads < threads; fs->nthreads++) {
        r = thread_setup(fs, &fs->threads[fs->nthreads], errbuf, errlen);
        if (r < 0) {
            fs->nthreads++; /* free what it made */
            free_fs(fs);
            return r;
        }
    }
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
    /* the threads wait on their rings, never in read(): reads must not block */
    fd = fuse_session_fd(fs->se);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        r = errno;
        fuse_session_unmount(fs->se);
        free_fs(fs);
        return fail(errbuf, errlen, r, "%s: /dev/fuse: %s", mountpoint, strerror(r));
    }
    /* remember the connection now: after a lazy unmount mountinfo no longer shows it */
    if (find_fuse_mount(mountpoint, &maj, &min) == 0)
        fs->conn_dev = (unsigned long)makedev(maj, min);
    for (unsigned i = 0; i < fs->nthreads; i++) {
        struct fuse_thread *t = &fs->threads[i];

        pthread_mutex_lock(&fs->lock);
        fs->running++;
        pthread_mutex_unlock(&fs->lock);
        r = pthread_create(&t->tid, NULL, thread_main, t);
        if (r != 0) {
            pthread_mutex_lock(&fs->lock);
            fs->running--;
            pthread_mutex_unlock(&fs->lock);
            stop_threads(fs);
            free_fs(fs);
            return fail(errbuf, errlen, r, "%s: cannot start a FUSE thread: %s", mountpoint,
                        strerror(r));
        }
        t->started = true;
    }
    pthread_mutex_lock(&fs->lock);
    inited = wait_until(fs, init_done, 10) && fs->inited;
    pthread_mutex_unlock(&fs->lock);
    if (!inited) {
        stop_threads(fs);
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
    stop_threads(fs);
    log_stats(fs);
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
