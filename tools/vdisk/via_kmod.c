/* SPDX-License-Identifier: MIT */
/*
 * --via kmod: our own kernel driver, vdisk.ko, on a raw image. We hand the
 * driver the very descriptor libvdisk opened (vdisk_get_linear), so the
 * QEMU-compatible lock on its open file description lives as long as the
 * disk: the driver keeps a reference to the file, as loop does.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "vdisk.h"
#include "uapi/vdisk_ctl.h"

static bool kmod_available(void)
{
    return access(VDISK_CTL_DEVICE, W_OK) == 0;
}

/* Open the control device; -1 with a message on failure. */
static int ctl_open(void)
{
    int fd = open(VDISK_CTL_DEVICE, O_RDWR | O_CLOEXEC);

    if (fd < 0)
        return -err("%s: %m (is vdisk.ko loaded?)", VDISK_CTL_DEVICE);
    return fd;
}

/* A control request with its header filled in. */
static void disk_req(struct vdisk_ctl_disk *d)
{
    memset(d, 0, sizeof(*d));
    d->struct_size = sizeof(*d);
    d->version = VDISK_CTL_VERSION;
    d->block_size = 512;
    d->fd = -1;
}

/* The N of /dev/vdiskN in DEVICE, or -1. */
static int device_index(const char *device)
{
    unsigned n;
    char tail;

    if (sscanf(device, "/dev/vdisk%u%c", &n, &tail) != 1)
        return -1;
    return (int)n;
}

/* Query the disk behind REC's device; 1 if it serves REC's id, 0 if not, -1 on error. */
static int kmod_query(int ctl, const struct disk_record *rec, struct vdisk_ctl_disk *d)
{
    int n = device_index(rec->device);

    if (n < 0)
        return 0;
    disk_req(d);
    d->index = (unsigned)n;
    if (ioctl(ctl, VDISK_CTL_QUERY, d) < 0)
        return errno == ENXIO ? 0 : -1;
    return strncmp(d->id, rec->id, sizeof(d->id)) == 0;
}

/* Wait (up to a second) for the device node to appear. */
static int wait_node(const char *device)
{
    struct timespec tick = {0, 10 * 1000 * 1000};

    for (int i = 0; i < 100; i++) {
        if (access(device, F_OK) == 0)
            return 0;
        nanosleep(&tick, NULL);
    }
    return -err("%s: device node did not appear", device);
}

/* Record the disk ADD made from D and wait for its node (removing it if none comes);
 * closes CTL. 0, or -1 with a message. */
static int added(int ctl, struct vdisk_ctl_disk *d, struct disk_record *rec)
{
    int r = 0;

    snprintf(rec->device, sizeof(rec->device), "/dev/vdisk%u", d->index);
    rec->pid = 0;
    if (wait_node(rec->device) < 0) {
        ioctl(ctl, VDISK_CTL_REMOVE, d);
        r = -1;
    }
    close(ctl);
    return r;
}

static int kmod_start(const struct open_request *req, struct disk_record *rec)
{
    unsigned flags = req->read_only ? VDISK_OPEN_RDONLY : 0;
    struct vdisk_ctl_disk d;
    struct vdisk_image *img;
    uint64_t offset;
    int ctl, fd, r;

    r = open_image(req, flags, &img);
    if (r < 0)
        return -err("%s", vdisk_last_error());
    if (vdisk_get_linear(img, &fd, &offset) < 0) {
        err("%s", vdisk_last_error());
        goto fail_img;
    }
    if (kernel_way_allowed(req, img) < 0)
        goto fail_img;
    if (offset != 0) { /* vdisk.ko serves a whole file */
        err("%s: its data starts %llu bytes into the file; vdisk.ko serves whole files "
            "(use --via loop)",
            req->image, (unsigned long long)offset);
        goto fail_img;
    }
    disk_req(&d);
    d.fd = fd;
    d.size = req->size & ~511ull; /* as loop: a partial last sector is left out */
    d.flags = (req->read_only ? VDISK_F_READ_ONLY : 0) | (req->direct ? VDISK_F_DIRECT : 0);
    snprintf(d.id, sizeof(d.id), "%s", rec->id);
    if (d.size == 0) {
        err("%s: smaller than one 512-byte sector", req->image);
        goto fail_img;
    }
    ctl = ctl_open();
    if (ctl < 0)
        goto fail_img;
    r = ioctl(ctl, VDISK_CTL_ADD, &d);
    if (r < 0 && (d.flags & VDISK_F_DIRECT) && (errno == EOPNOTSUPP || errno == EINVAL)) {
        d.flags &= ~VDISK_F_DIRECT; /* file system without (aligned) direct I/O: as loop */
        r = ioctl(ctl, VDISK_CTL_ADD, &d);
    }
    if (r < 0) {
        err("%s: %s: add: %m", req->image, VDISK_CTL_DEVICE);
        close(ctl);
        goto fail_img;
    }
    vdisk_close(img); /* the driver holds the file, and the lock, now */
    return added(ctl, &d, rec);

fail_img:
    vdisk_close(img);
    return -1;
}

static int kmod_stop(const struct disk_record *rec)
{
    struct vdisk_ctl_disk d;
    int ctl, r;

    if (access(VDISK_CTL_DEVICE, F_OK) < 0)
        return 0; /* module unloaded: its disks went with it */
    ctl = ctl_open();
    if (ctl < 0)
        return -1;
    r = kmod_query(ctl, rec, &d);
    if (r < 0) {
        err("%s: query: %m", rec->device);
    } else if (r == 1 && ioctl(ctl, VDISK_CTL_REMOVE, &d) < 0) {
        if (errno == EBUSY)
            err("%s: device is in use (mounted?); unmount it first", rec->device);
        else
            err("%s: remove: %m", rec->device);
        r = -1;
    }
    close(ctl);
    return r < 0 ? -1 : 0; /* r == 0: gone, or another image's now: not ours */
}

static bool kmod_alive(const struct disk_record *rec)
{
    struct vdisk_ctl_disk d;
    int ctl, r;

    ctl = open(VDISK_CTL_DEVICE, O_RDWR | O_CLOEXEC);
    if (ctl < 0)
        return false;
    r = kmod_query(ctl, rec, &d);
    close(ctl);
    return r == 1;
}

const struct via via_kmod = {
    .name = "kmod",
    .linear_only = true,
    .available = kmod_available,
    .start = kmod_start,
    .stop = kmod_stop,
    .alive = kmod_alive,
};

int kmod_ram_start(const char *size_text, uint64_t size, struct disk_record *rec)
{
    struct vdisk_ctl_disk d;
    int ctl, r;

    ctl = ctl_open();
    if (ctl < 0)
        return -1;
    disk_req(&d);
    d.flags = VDISK_F_RAM;
    d.size = size;
    snprintf(d.id, sizeof(d.id), "%s", rec->id);
    r = ioctl(ctl, VDISK_CTL_ADD, &d);
    if (r < 0) {
        if (errno == EINVAL) /* checked here already: a vdisk.ko without RAM disks */
            r = 1;
        else if (errno == EFBIG)
            err("--ram %s: larger than this machine's memory (%llu MiB)", size_text,
                (unsigned long long)(sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE) >> 20));
        else
            err("--ram %s: %s: add: %m", size_text, VDISK_CTL_DEVICE);
        close(ctl);
        return r;
    }
    return added(ctl, &d, rec);
}

long long kmod_ram_bytes(const char *device)
{
    char path[96];
    long long n = -1;
    FILE *f;
    int i = device_index(device);

    if (i < 0)
        return -1;
    snprintf(path, sizeof(path), "/sys/block/vdisk%d/vdisk/ram_bytes", i);
    f = fopen(path, "re");
    if (!f)
        return -1;
    if (fscanf(f, "%lld", &n) != 1)
        n = -1;
    fclose(f);
    return n;
}
