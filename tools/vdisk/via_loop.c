/* SPDX-License-Identifier: MIT */
/*
 * --via loop: the kernel's loop driver on a raw image, set up in one
 * LOOP_CONFIGURE call with direct I/O. The loop device keeps a reference to
 * the file we open, so the QEMU-compatible lock lives as long as the device.
 * Also used by --via fuse for the loop device on top of the FUSE file.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "vdisk.h"
#include "loopdev.h"

static bool loop_available(void)
{
    return access("/dev/loop-control", W_OK) == 0;
}

int loopdev_attach(int file_fd, uint64_t offset, uint64_t size, const char *name, bool read_only,
                   bool direct, char *device, size_t device_len)
{
    struct loop_config cfg = {.fd = (unsigned)file_fd, .block_size = 512};
    int ctl, dev = -1;

    /* partitions appear as loopNpM, as for any disk (losetup -P) */
    cfg.info.lo_flags = (read_only ? LO_FLAGS_READ_ONLY : 0) | (direct ? LO_FLAGS_DIRECT_IO : 0) |
                        LO_FLAGS_PARTSCAN;
    cfg.info.lo_offset = offset;
    cfg.info.lo_sizelimit = size;
    snprintf((char *)cfg.info.lo_file_name, sizeof(cfg.info.lo_file_name), "%s", name);
    ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0)
        return -err("/dev/loop-control: %m");
    /* another process may take the free device first: then try the next */
    for (int attempt = 0; attempt < 16; attempt++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);

        if (n < 0) {
            err("/dev/loop-control: no free loop device: %m");
            break;
        }
        snprintf(device, device_len, "/dev/loop%d", n);
        dev = open(device, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (dev < 0) {
            err("%s: %m", device);
            break;
        }
        if (ioctl(dev, LOOP_CONFIGURE, &cfg) == 0) {
            close(dev);
            close(ctl);
            return 0;
        }
        if (errno != EBUSY) {
            err("%s: LOOP_CONFIGURE: %m", device);
            break;
        }
        close(dev);
        dev = -1;
    }
    if (dev >= 0)
        close(dev);
    close(ctl);
    return -1;
}

/* The loop device's backing file as sysfs shows it (any bytes, newlines too), or "" when unbound.
 */
static void loop_backing_file(const char *device, char *buf, size_t len)
{
    char path[128];
    size_t n;
    FILE *f;

    buf[0] = '\0';
    snprintf(path, sizeof(path), "/sys/block/%s/loop/backing_file", strrchr(device, '/') + 1);
    f = fopen(path, "r");
    if (!f)
        return;
    n = fread(buf, 1, len - 1, f);
    fclose(f);
    if (n && buf[n - 1] == '\n') /* the one sysfs adds */
        n--;
    buf[n] = '\0';
}

bool loopdev_serves(const char *device, const char *file)
{
    char backing[4200];
    size_t n = strlen(file);

    if (!device[0])
        return false;
    loop_backing_file(device, backing, sizeof(backing));
    /* a deleted file shows as "PATH (deleted)": still bound to it */
    return strncmp(backing, file, n) == 0 && (backing[n] == '\0' || backing[n] == ' ');
}

int loopdev_detach(const char *device, const char *file)
{
    struct timespec tick = {0, 10 * 1000 * 1000};
    int fd;

    if (!loopdev_serves(device, file))
        return 0; /* already gone, or reused for another file: not ours */
    /* O_EXCL fails while the device is mounted or claimed */
    fd = open(device, O_RDONLY | O_EXCL | O_CLOEXEC);
    if (fd < 0) {
        if (errno == EBUSY)
            return -err("%s: device is in use (mounted?); unmount it first", device);
        return -err("%s: %m", device);
    }
    if (ioctl(fd, LOOP_CLR_FD, 0) < 0 && errno != ENXIO) {
        err("%s: LOOP_CLR_FD: %m", device);
        close(fd);
        return -1;
    }
    close(fd);
    /* the file (and with it the image lock) is let go on last close: wait for it */
    for (int i = 0; i < 500 && loopdev_serves(device, file); i++)
        nanosleep(&tick, NULL);
    if (loopdev_serves(device, file))
        return -err("%s: still bound to %s after detach", device, file);
    return 0;
}

/* The file loop reads: the image, or the data file of a descriptor (a flat VMDK). */
static const char *loop_file(const struct disk_record *rec)
{
    return rec->backing[0] ? rec->backing : rec->image;
}

/* Record in rec->backing the file behind FD when it is not IMAGE itself. */
static int linear_path(int fd, const char *image, struct disk_record *rec)
{
    char link[64], *real;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    real = realpath(link, NULL);
    if (!real)
        return -err("%s: cannot name its data file: %m", image);
    if (strcmp(real, image) != 0)
        snprintf(rec->backing, sizeof(rec->backing), "%s", real);
    free(real);
    return 0;
}

static int loop_start(const struct open_request *req, struct disk_record *rec)
{
    unsigned flags = (req->read_only ? VDISK_OPEN_RDONLY : 0);
    struct vdisk_image *img;
    uint64_t offset, limit;
    struct stat st;
    int fd, r;

    r = open_image(req, flags, &img);
    if (r < 0)
        return -err("%s", vdisk_last_error());
    r = vdisk_get_linear(img, &fd, &offset);
    if (r < 0) {
        vdisk_close(img);
        return -err("%s", vdisk_last_error());
    }
    if (kernel_way_allowed(req, img) < 0) {
        vdisk_close(img);
        return -1;
    }
    limit = vdisk_get_size(img);
    if (offset == 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_size <= limit)
        limit = 0; /* the whole file: loop follows it; else stop before a footer (fixed VHD) */
    r = linear_path(fd, req->image, rec);
    if (r == 0)
        r = loopdev_attach(fd, offset, limit, loop_file(rec), req->read_only, req->direct,
                           rec->device, sizeof(rec->device));
    vdisk_close(img); /* the loop device holds the file, and the lock, now */
    return r;
}

static int loop_stop(const struct disk_record *rec)
{
    return loopdev_detach(rec->device, loop_file(rec));
}

static bool loop_alive(const struct disk_record *rec)
{
    return loopdev_serves(rec->device, loop_file(rec));
}

const struct via via_loop = {
    .name = "loop",
    .linear_only = true,
    .available = loop_available,
    .start = loop_start,
    .stop = loop_stop,
    .alive = loop_alive,
};
