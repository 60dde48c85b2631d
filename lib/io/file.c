/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file.h"
#include "../error.h"

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
    f->fd_buffered = open(path, oflags, 0644);
    if (f->fd_buffered < 0) {
        err = vdisk_error(errno, "%s: %m", path);
        goto err_free;
    }
    if (fstat(f->fd_buffered, &st) < 0) {
        err = vdisk_error(errno, "%s: %m", path);
        goto err_close;
    }
    if (S_ISDIR(st.st_mode)) {
        err = vdisk_error(EISDIR, "%s: is a directory, not a disk image", path);
        goto err_close;
    }
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
        err = vdisk_error(EINVAL, "%s: not a regular file or block device", path);
        goto err_close;
    }
    f->is_block_device = S_ISBLK(st.st_mode);
    f->fd = f->fd_buffered;
    f->unsafe = flags & VDISK_FILE_UNSAFE;
    if (flags & VDISK_FILE_DIRECT) {
        f->fd = open(path, (oflags & ~(O_CREAT | O_EXCL)) | O_DIRECT);
        if (f->fd < 0) {
            err = vdisk_error(errno, "%s: cannot use direct I/O: %m", path);
            goto err_close;
        }
        f->direct = true;
        f->align = 4096; /* safe for 512e and 4Kn disks alike */
    }
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
    return 0;
}

int vdisk_file_pwrite_alloc(struct vdisk_file *f, const void *buf, size_t len, uint64_t off)
{
    /* best effort: where the file system can't, the write allocates as usual */
    if (!f->direct && !f->is_block_device && len >= VDISK_FILE_ALLOC_MIN)
        (void)fallocate(f->fd_buffered, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
    return vdisk_file_pwrite(f, buf, len, off);
}

int vdisk_file_flush(struct vdisk_file *f)
{
    if (f->unsafe)
        return 0;
    if (fdatasync(f->fd_buffered) < 0)
        return vdisk_error(errno, "%s: flush: %m", f->path);
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
    if (size > INT64_MAX)
        return vdisk_error(EFBIG, "%s: size %llu too large", f->path, (unsigned long long)size);
    if (ftruncate(f->fd_buffered, (off_t)size) < 0)
        return vdisk_error(errno, "%s: resize to %llu bytes: %m", f->path,
                           (unsigned long long)size);
    return 0;
}

int vdisk_file_preallocate(struct vdisk_file *f, uint64_t off, uint64_t len)
{
    int err = posix_fallocate(f->fd_buffered, (off_t)off, (off_t)len);

    if (err)
        return vdisk_error(err, "%s: preallocate: %m", f->path);
    return 0;
}

/* fallocate() with the right ioctl fallback for block devices. */
static int file_fallocate(struct vdisk_file *f, int mode, uint64_t off, uint64_t len)
{
    if (f->is_block_device) {
        uint64_t range[2] = {off, len};
        unsigned long req = (mode & FALLOC_FL_PUNCH_HOLE) ? BLKDISCARD : BLKZEROOUT;

        if (ioctl(f->fd_buffered, req, range) < 0)
            return -errno;
        return 0;
    }
    if (fallocate(f->fd_buffered, mode, (off_t)off, (off_t)len) < 0)
        return -errno;
    return 0;
}

int vdisk_file_punch_hole(struct vdisk_file *f, uint64_t off, uint64_t len)
{
    int r = file_fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);

    if (r < 0)
        return vdisk_error(-r, "%s: punch hole: %m", f->path);
    return 0;
}

int vdisk_file_zero_range(struct vdisk_file *f, uint64_t off, uint64_t len, bool may_unmap)
{
    int r = -EOPNOTSUPP;

    if (may_unmap && !f->is_block_device)
        r = file_fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
    if (r < 0)
        r = file_fallocate(f, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len);
    if (r < 0)
        return vdisk_error(-r, "%s: zero range: %m", f->path);
    return 0;
}

int vdisk_file_zero_alloc(struct vdisk_file *f, uint64_t off, uint64_t len)
{
    int r = -EOPNOTSUPP;

    if (!f->is_block_device)
        r = file_fallocate(f, FALLOC_FL_ZERO_RANGE, off, len);
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
