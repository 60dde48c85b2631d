/* SPDX-License-Identifier: MIT */
/*
 * The FUSE frontend: one image, one regular file, the root inode of a FUSE
 * mount laid over an empty regular file (as qemu-storage-daemon's FUSE export
 * does), served through the request engine by a few threads (thread.c; the
 * mount in session.c). This file is the requests: libfuse's low-level
 * handlers turn them into engine requests, and finished engine requests into
 * replies, on the thread that received them.
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
 */
#include "internal.h"

/* Log an image error to stderr (the server's log) with the library's message. */
void fuse_log_error(const char *what, int r, bool lib_msg)
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

/*
 * Take the request this thread just received into (a READ's data and a
 * WRITE's payload live in its buffer until it completes); the thread gets
 * another for the next one.
 */
static struct io *io_take(fuse_req_t req, enum io_kind kind)
{
    struct io *io = fuse_self->cur;

    fuse_self->cur = NULL;
    io->req = req;
    io->kind = kind;
    return io;
}

/* Start IO's engine request; a refusal is answered at once. */
static void io_submit(struct io *io, const char *what)
{
    struct fuse_thread *t = fuse_self;
    int r;

    io->vr.user_data = io;
    r = vdisk_queue_submit(t->q, &io->vr);
    if (r < 0) {
        fuse_log_error(what, r, true);
        fuse_reply_err(io->req, -r);
        fuse_io_put(t, io);
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
            fuse_io_put(fuse_self, io);
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
                fuse_io_put(fuse_self, io);
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
    struct vdisk_fuse *fs = fuse_self->fs;

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
    uint64_t size = fuse_self->fs->size, pos = io->vr.offset;
    int n = io->vr.result;

    if (n <= 0) {
        if (n == 0)
            n = -EIO; /* no extent: would never advance */
        fuse_log_error("lseek", n, true);
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

const struct fuse_lowlevel_ops vdisk_fuse_ops = {
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

/* Answer IO's FUSE request from its finished engine request. */
void fuse_io_done(struct fuse_thread *t, struct io *io, bool lib_msg)
{
    static const char *const what[] = {"read", "write", "flush", "fallocate", "lseek"};
    int r = io->vr.result;

    if (io->kind == IO_SEEK) {
        if (seek_done(io))
            fuse_io_put(t, io);
        return;
    }
    if (r < 0) {
        fuse_log_error(what[io->kind], r, lib_msg);
        fuse_reply_err(io->req, -r);
    } else if (io->kind == IO_READ) {
        fuse_reply_buf(io->req, io->vr.buf, io->vr.length);
    } else if (io->kind == IO_WRITE) {
        fuse_reply_write(io->req, io->vr.length);
    } else {
        fuse_reply_err(io->req, 0);
    }
    fuse_io_put(t, io);
}
