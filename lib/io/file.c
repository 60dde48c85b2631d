/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "file.h"
#include "record.h"
#include "../error.h"

/* Kernel pseudo file systems: their files are not disk images (and may block or grow). */
static const char *pseudo_fs(int fd)
{
    static const struct {
        long magic;
        const char *name;
    } fs[] = {
        {PROC_SUPER_MAGIC, "proc"},       {SYSFS_MAGIC, "sysfs"},
        {DEBUGFS_MAGIC, "debugfs"},       {TRACEFS_MAGIC, "tracefs"},
        {SECURITYFS_MAGIC, "securityfs"}, {CGROUP_SUPER_MAGIC, "cgroup"},
        {CGROUP2_SUPER_MAGIC, "cgroup2"}, {BPF_FS_MAGIC, "bpf"},
        {EFIVARFS_MAGIC, "efivarfs"},
    };
    struct statfs sfs;

    if (fstatfs(fd, &sfs) < 0)
        return NULL;
    for (size_t i = 0; i < sizeof(fs) / sizeof(fs[0]); i++)
        if ((long)sfs.f_type == fs[i].magic)
            return fs[i].name;
    return NULL;
}

/*
 * A second descriptor of the file FD has open, with OFLAGS: through
 * /proc/self/fd, so it is that file even if PATH was renamed or replaced
 * since (no check-then-use race on the path); where /proc is missing, PATH,
 * checked to be the same file. -1 with errno.
 */
static int reopen_same(int fd, const char *path, int oflags)
{
    char proc[64];
    struct stat a, b;
    int nfd;

    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    nfd = open(proc, oflags & ~(O_CREAT | O_TRUNC));
    if (nfd < 0 && (errno == ENOENT || errno == ENOTDIR))
        nfd = open(path, oflags & ~(O_CREAT | O_TRUNC));
    if (nfd < 0)
        return -1;
    if (fstat(fd, &a) < 0 || fstat(nfd, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino ||
        a.st_rdev != b.st_rdev) {
        close(nfd);
        errno = ESTALE; /* PATH is another file now */
        return -1;
    }
    return nfd;
}

/* The error of a failed writable open, with the way out when the file is read-only. */
static int open_error(const char *path, int e, bool writable)
{
    if (writable && (e == EROFS || e == EACCES || e == EPERM))
        return vdisk_error(e, "%s: %s; open it read-only", path, strerror(e));
    if (e == EISDIR)
        return vdisk_error(e, "%s: is a directory, not a disk image", path);
    return vdisk_error(e, "%s: %s", path, strerror(e));
}

/*
 * Open PATH and check what it is before any read: O_NONBLOCK so that a FIFO
 * does not hang the open, then only regular files and block devices pass.
 * A writable block device is opened O_EXCL, as mkfs does: it fails while
 * mounted or claimed. A regular file without write permission bits is not
 * written even by root.
 */
static int open_checked(const char *path, int oflags, struct stat *st)
{
    bool writable = (oflags & O_ACCMODE) != O_RDONLY;
    const char *fs;
    int fd, e;

    fd = open(path, oflags | O_NONBLOCK | O_NOCTTY, 0644);
    if (fd < 0)
        return open_error(path, errno, writable);
    if (fstat(fd, st) < 0) {
        e = vdisk_error(errno, "%s: %m", path);
        goto err;
    }
    if (S_ISDIR(st->st_mode)) {
        e = vdisk_error(EISDIR, "%s: is a directory, not a disk image", path);
        goto err;
    }
    if (!S_ISREG(st->st_mode) && !S_ISBLK(st->st_mode)) {
        e = vdisk_error(EINVAL, "%s: is a %s, not a regular file or block device", path,
                        S_ISFIFO(st->st_mode)   ? "FIFO"
                        : S_ISCHR(st->st_mode)  ? "character device"
                        : S_ISSOCK(st->st_mode) ? "socket"
                                                : "special file");
        goto err;
    }
    if (S_ISREG(st->st_mode) && (fs = pseudo_fs(fd))) {
        e = vdisk_error(
            EINVAL, "%s: is a file of %s, a kernel pseudo file system, not a disk image", path, fs);
        goto err;
    }
    if (S_ISREG(st->st_mode) && writable && !(oflags & O_CREAT) &&
        !(st->st_mode & (S_IWUSR | S_IWGRP | S_IWOTH))) {
        e = vdisk_error(EACCES, "%s: file is read-only (mode %04o); open it read-only", path,
                        (unsigned)(st->st_mode & 07777));
        goto err;
    }
    if (S_ISBLK(st->st_mode) && writable) {
        /* claim the device; the first, unclaimed descriptor goes */
        int xfd = reopen_same(fd, path, oflags | O_EXCL | O_NONBLOCK | O_NOCTTY);

        if (xfd < 0) {
            e = errno == EBUSY ? vdisk_error(EBUSY,
                                             "%s: block device is in use (mounted, or held by "
                                             "another program); it is only opened exclusively",
                                             path)
                               : open_error(path, errno, writable);
            goto err;
        }
        close(fd);
        fd = xfd;
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
        e = vdisk_error(errno, "%s: %m", path);
        goto err;
    }
    return fd;

err:
    close(fd);
    return e;
}

/* A power of two from 512 to 4096 in sysfs file PATH, or 0. */
static unsigned sysfs_sector_size(const char *path)
{
    char buf[32] = "";
    unsigned v;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return 0;
    if (read(fd, buf, sizeof(buf) - 1) < 0)
        buf[0] = 0;
    close(fd);
    v = (unsigned)strtoul(buf, NULL, 10);
    return (v >= 512 && v <= 4096 && !(v & (v - 1))) ? v : 0;
}

/*
 * The alignment direct I/O on FD needs: the logical block size of the block
 * device (or of the disk under the file system), as QEMU finds it; 4096, safe
 * for 512e and 4Kn disks alike, where the device cannot be told. A 512 here
 * lets images whose data lies at odd sectors (VHD, QEMU's VDI) use O_DIRECT.
 */
static unsigned dio_align(int fd, const struct stat *st)
{
    char path[96];
    unsigned v;
    int n;

    if (S_ISBLK(st->st_mode))
        return ioctl(fd, BLKSSZGET, &n) == 0 && n >= 512 && n <= 4096 ? (unsigned)n : 4096;
    snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/queue/logical_block_size", major(st->st_dev),
             minor(st->st_dev));
    v = sysfs_sector_size(path);
    if (!v) { /* a partition: its disk's queue */
        snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/../queue/logical_block_size",
                 major(st->st_dev), minor(st->st_dev));
        v = sysfs_sector_size(path);
    }
    return v ? v : 4096;
}

/* Open PATH, with a second buffered descriptor when direct I/O is asked for. */
int vdisk_file_open(const char *path, unsigned flags, struct vdisk_file **filep)
{
    int oflags = O_CLOEXEC | ((flags & VDISK_FILE_RDONLY) ? O_RDONLY : O_RDWR);
    struct vdisk_file *f;
    struct stat st;
    int err;

    if (flags & VDISK_FILE_CREATE)
        oflags |= O_CREAT | O_EXCL;
    f = calloc(1, sizeof(*f));
    if (!f)
        return vdisk_error(ENOMEM, "%s: out of memory", path);
    f->fd = f->fd_buffered = -1;
    f->read_only = flags & VDISK_FILE_RDONLY;
    f->align = 1;
    f->path = strdup(path);
    if (!f->path) {
        err = vdisk_error(ENOMEM, "%s: out of memory", path);
        goto err_free;
    }
    f->fd_buffered = open_checked(path, oflags, &st);
    if (f->fd_buffered < 0) {
        err = f->fd_buffered;
        goto err_free;
    }
    f->is_block_device = S_ISBLK(st.st_mode);
    f->fd = f->fd_buffered;
    f->unsafe = flags & VDISK_FILE_UNSAFE;
    if (flags & VDISK_FILE_DIRECT) {
        f->fd = reopen_same(f->fd_buffered, path, (oflags & ~(O_CREAT | O_EXCL)) | O_DIRECT);
        if (f->fd < 0) {
            err = vdisk_error(errno, "%s: cannot use direct I/O: %m", path);
            goto err_close;
        }
        f->direct = true;
        f->align = dio_align(f->fd, &st);
        /*
         * Drop the file's clean cached pages (left by whoever wrote it): a
         * direct write over a cached page cannot be done without blocking
         * (IOCB_NOWAIT), so io_uring would hand each one to a kernel worker.
         */
        if (!f->read_only)
            (void)posix_fadvise(f->fd, 0, 0, POSIX_FADV_DONTNEED);
    }
    if (vdisk_io_hooked)
        vdisk_io_opened(f);
    *filep = f;
    return 0;

err_close:
    close(f->fd_buffered);
err_free:
    free(f->path);
    free(f);
    return err;
}

void vdisk_file_close(struct vdisk_file *f)
{
    if (!f)
        return;
    if (f->fd != f->fd_buffered)
        close(f->fd);
    close(f->fd_buffered);
    free(f->path);
    free(f);
}

/* The descriptor that can carry this request. */
static int pick_fd(const struct vdisk_file *f, const void *buf, size_t len, uint64_t off)
{
    uintptr_t mask = f->align - 1;

    if (f->direct && !(((uintptr_t)buf | len | off) & mask))
        return f->fd;
    return f->fd_buffered;
}

int vdisk_file_pread(struct vdisk_file *f, void *buf, size_t len, uint64_t off)
{
    int fd = pick_fd(f, buf, len, off);
    char *p = buf;
    int h;

    if (vdisk_io_hooked && (h = vdisk_io_before(f, VDISK_IO_READ, buf, len, off)) < 0)
        return vdisk_error(-h, "%s: read of %zu bytes at %llu: %s", f->path, len,
                           (unsigned long long)off, strerror(-h));
    while (len > 0) {
        ssize_t n = pread(fd, p, len, off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return vdisk_error(errno, "%s: read of %zu bytes at %llu: %m", f->path, len,
                               (unsigned long long)off);
        }
        if (n == 0) { /* past end of file: zeroes */
            memset(p, 0, len);
            break;
        }
        p += n;
        off += n;
        len -= n;
        if (len && fd == f->fd && f->direct)
            fd = pick_fd(f, p, len, off);
    }
    return 0;
}

int vdisk_file_pwrite(struct vdisk_file *f, const void *buf, size_t len, uint64_t off)
{
    int fd = pick_fd(f, buf, len, off);
    const char *p = buf;
    size_t len0 = len;
    uint64_t off0 = off;
    int h;

    if (vdisk_io_hooked && (h = vdisk_io_before(f, VDISK_IO_WRITE, buf, len, off)) != 0) {
        if (h < 0)
            return vdisk_error(-h, "%s: write of %zu bytes at %llu: %s", f->path, len,
                               (unsigned long long)off, strerror(-h));
        p += h; /* a short write: the rest as after a short pwrite */
        off += h;
        len -= h;
        fd = f->fd_buffered;
    }
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return vdisk_error(errno, "%s: write of %zu bytes at %llu: %m", f->path, len,
                               (unsigned long long)off);
        }
        p += n;
        off += n;
        len -= n;
        if (len && f->direct)
            fd = pick_fd(f, p, len, off);
    }
    if (vdisk_io_hooked)
        vdisk_io_after(f, VDISK_IO_WRITE, buf, len0, off0);
    return 0;
}

int vdisk_file_pwrite_alloc(struct vdisk_file *f, const void *buf, size_t len, uint64_t off)
{
    /*
     * Best effort: where the file system can't, the write allocates as usual;
     * ext4 then skips block-by-block delayed allocation. Not for direct I/O:
     * fallocate waits for every direct write in flight (ext4), so one per
     * write serializes them; direct writers allocate ahead (vdisk convert).
     */
    if (!f->direct && !f->is_block_device && len >= VDISK_FILE_ALLOC_MIN)
        (void)fallocate(f->fd_buffered, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
    return vdisk_file_pwrite(f, buf, len, off);
}

/*
 * A failed fdatasync may have dropped the dirty pages it could not write, and
 * Linux reports that once: the next fdatasync succeeds. So a failure is
 * remembered and every later flush of this file fails too (as PostgreSQL
 * learned, retrying is not enough); reopening the image starts afresh.
 */
int vdisk_file_flush(struct vdisk_file *f)
{
    int h;

    if (f->unsafe)
        return 0;
    if (f->flush_failed)
        return vdisk_error(EIO, "%s: flush: an earlier flush failed, written data may be lost",
                           f->path);
    if (vdisk_io_hooked && (h = vdisk_io_before(f, VDISK_IO_FLUSH, NULL, 0, 0)) < 0) {
        f->flush_failed = true;
        return vdisk_error(-h, "%s: flush: %s", f->path, strerror(-h));
    }
    if (fdatasync(f->fd_buffered) < 0) {
        f->flush_failed = true;
        return vdisk_error(errno, "%s: flush: %m", f->path);
    }
    if (vdisk_io_hooked)
        vdisk_io_after(f, VDISK_IO_FLUSH, NULL, 0, 0);
    return 0;
}

int vdisk_file_get_size(struct vdisk_file *f, uint64_t *size)
{
    struct stat st;

    if (f->is_block_device) {
        if (ioctl(f->fd_buffered, BLKGETSIZE64, size) < 0)
            return vdisk_error(errno, "%s: BLKGETSIZE64: %m", f->path);
        return 0;
    }
    if (fstat(f->fd_buffered, &st) < 0)
        return vdisk_error(errno, "%s: stat: %m", f->path);
    *size = st.st_size;
    return 0;
}

int vdisk_file_allocated(struct vdisk_file *f, uint64_t *bytes)
{
    struct stat st;

    if (fstat(f->fd_buffered, &st) < 0)
        return vdisk_error(errno, "%s: stat: %m", f->path);
    *bytes = (uint64_t)st.st_blocks * 512;
    return 0;
}

int vdisk_file_truncate(struct vdisk_file *f, uint64_t size)
{
    int h = 0;

    if (size > INT64_MAX)
        return vdisk_error(EFBIG, "%s: size %llu too large", f->path, (unsigned long long)size);
    if (vdisk_io_hooked && (h = vdisk_io_before(f, VDISK_IO_TRUNCATE, NULL, size, 0)) < 0)
        errno = -h;
    if (h < 0 || ftruncate(f->fd_buffered, (off_t)size) < 0)
        return vdisk_error(errno, "%s: resize to %llu bytes: %m", f->path,
                           (unsigned long long)size);
    if (vdisk_io_hooked)
        vdisk_io_after(f, VDISK_IO_TRUNCATE, NULL, size, 0);
    return 0;
}

int vdisk_file_preallocate(struct vdisk_file *f, uint64_t off, uint64_t len)
{
    int err = vdisk_io_hooked ? -vdisk_io_before(f, VDISK_IO_ALLOC, NULL, len, off) : 0;

    if (!err)
        err = posix_fallocate(f->fd_buffered, (off_t)off, (off_t)len);
    if (err)
        return vdisk_error(err, "%s: preallocate: %s", f->path, strerror(err));
    if (vdisk_io_hooked)
        vdisk_io_after(f, VDISK_IO_ALLOC, NULL, len, off);
    return 0;
}

/* fallocate() with the right ioctl fallback for block devices. */
static int file_fallocate(struct vdisk_file *f, int mode, uint64_t off, uint64_t len)
{
    enum vdisk_io_op op = (mode & FALLOC_FL_PUNCH_HOLE)  ? VDISK_IO_PUNCH
                          : (mode & FALLOC_FL_KEEP_SIZE) ? VDISK_IO_ZERO
                                                         : VDISK_IO_ZERO_EXT;
    int h;

    if (vdisk_io_hooked && (h = vdisk_io_before(f, op, NULL, len, off)) < 0)
        return h;
    if (f->is_block_device) {
        uint64_t range[2] = {off, len};
        unsigned long req = (mode & FALLOC_FL_PUNCH_HOLE) ? BLKDISCARD : BLKZEROOUT;

        if (ioctl(f->fd_buffered, req, range) < 0)
            return -errno;
        return 0;
    }
    if (fallocate(f->fd_buffered, mode, (off_t)off, (off_t)len) < 0)
        return -errno;
    if (vdisk_io_hooked)
        vdisk_io_after(f, op, NULL, len, off);
    return 0;
}

int vdisk_file_punch_hole(struct vdisk_file *f, uint64_t off, uint64_t len)
{
    int r = file_fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);

    if (r < 0)
        return vdisk_error(-r, "%s: punch hole: %m", f->path);
    return 0;
}

/*
 * Zero and allocate where the file system has no FALLOC_FL_ZERO_RANGE (tmpfs):
 * punch the range, then allocate it again (zeroes, no buffers written).
 */
static int zero_by_punch(struct vdisk_file *f, uint64_t off, uint64_t len, bool keep_size)
{
    int r = file_fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);

    return r < 0 ? r : file_fallocate(f, keep_size ? FALLOC_FL_KEEP_SIZE : 0, off, len);
}

int vdisk_file_zero_range(struct vdisk_file *f, uint64_t off, uint64_t len, bool may_unmap)
{
    int r = -EOPNOTSUPP;

    if (may_unmap && !f->is_block_device)
        r = file_fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
    if (r < 0)
        r = file_fallocate(f, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len);
    if (r == -EOPNOTSUPP && !f->is_block_device)
        r = zero_by_punch(f, off, len, true);
    if (r < 0)
        return vdisk_error(-r, "%s: zero range: %m", f->path);
    return 0;
}

int vdisk_file_zero_alloc(struct vdisk_file *f, uint64_t off, uint64_t len)
{
    int r = -EOPNOTSUPP;

    if (!f->is_block_device)
        r = file_fallocate(f, FALLOC_FL_ZERO_RANGE, off, len);
    if (r == -EOPNOTSUPP && !f->is_block_device)
        r = zero_by_punch(f, off, len, false);
    if (r < 0)
        return vdisk_error(-r, "%s: zero range: %m", f->path);
    return 0;
}

int vdisk_file_extent(struct vdisk_file *f, uint64_t off, uint64_t limit, bool *is_data,
                      uint64_t *end)
{
    off_t next;

    if (f->is_block_device) {
        *is_data = true;
        *end = limit;
        return 0;
    }
    for (;;) {
        next = lseek(f->fd_buffered, (off_t)off, SEEK_HOLE);
        if (next < 0) {
            if (errno == ENXIO) { /* past end of file: a hole */
                *is_data = false;
                *end = limit;
                return 0;
            }
            return vdisk_error(errno, "%s: SEEK_HOLE: %m", f->path);
        }
        if ((uint64_t)next > off) {
            *is_data = true;
            break;
        }
        next = lseek(f->fd_buffered, (off_t)off, SEEK_DATA);
        if (next < 0) {
            if (errno != ENXIO)
                return vdisk_error(errno, "%s: SEEK_DATA: %m", f->path);
            next = (off_t)limit;
        }
        if ((uint64_t)next > off) {
            *is_data = false;
            break;
        }
        /* OFF became data between the two looks (a write, writeback): look again */
    }
    *end = (uint64_t)next < limit ? (uint64_t)next : limit;
    return 0;
}

/*
 * QEMU's lock bytes: 100 + bit for each permission held, 200 + bit for each
 * permission it refuses to share. Bits: 0 consistent read, 1 write,
 * 2 write unchanged, 3 resize.
 */
enum { LOCK_PERM_BASE = 100, LOCK_SHARED_BASE = 200 };
enum {
    PERM_READ = 1 << 0,
    PERM_WRITE = 1 << 1,
    PERM_WRITE_UNCHANGED = 1 << 2,
    PERM_RESIZE = 1 << 3
};

/* Is byte OFF locked by another open file description? (our own locks never conflict) */
static int byte_taken(int fd, off_t off)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1};

    if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
        return -errno;
    return fl.l_type != F_UNLCK;
}

/* Take (F_RDLCK, shared as QEMU's) or drop (F_UNLCK) byte OFF. */
static int set_byte(int fd, off_t off, short type)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = off, .l_len = 1};

    if (fcntl(fd, F_OFD_SETLK, &fl) < 0)
        return -errno;
    return 0;
}

/*
 * Take our bytes first, then look for conflicting ones: of two openers racing,
 * each sees the other's bytes (both may fail, never both succeed). Checking
 * before taking let both pass the check and then both take. Called once per
 * open file: on failure it drops every byte this file holds.
 */
int vdisk_file_lock(struct vdisk_file *f, bool write)
{
    unsigned perm = PERM_READ | (write ? PERM_WRITE : 0);
    unsigned unshared = PERM_WRITE | PERM_RESIZE;
    int fd = f->fd_buffered;
    int r = 0;

    for (int bit = 0; bit < 4 && r == 0; bit++) {
        if (perm & (1u << bit))
            r = set_byte(fd, LOCK_PERM_BASE + bit, F_RDLCK);
        if (r == 0 && (unshared & (1u << bit)))
            r = set_byte(fd, LOCK_SHARED_BASE + bit, F_RDLCK);
    }
    /* what we hold must be shared by the others, what we refuse must be unused */
    for (int bit = 0; bit < 4 && r == 0; bit++) {
        if (perm & (1u << bit))
            r = byte_taken(fd, LOCK_SHARED_BASE + bit);
        if (r == 0 && (unshared & (1u << bit)))
            r = byte_taken(fd, LOCK_PERM_BASE + bit);
    }
    if (r == 0)
        return 0;

    for (int bit = 0; bit < 4; bit++) {
        (void)set_byte(fd, LOCK_PERM_BASE + bit, F_UNLCK);
        (void)set_byte(fd, LOCK_SHARED_BASE + bit, F_UNLCK);
    }
    if (r < 0 && r != -EAGAIN && r != -EACCES)
        return vdisk_error(-r, "%s: lock: %m", f->path);
    return vdisk_error(EBUSY,
                       "%s: image is in use by another process (QEMU or vdisk holds its %s lock)",
                       f->path, write ? "write" : "read");
}
