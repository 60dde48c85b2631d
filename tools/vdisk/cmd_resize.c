/* SPDX-License-Identifier: MIT */
/*
 * vdisk resize [-f FMT] [--shrink] IMAGE|DEVICE|ID SIZE|+SIZE|-SIZE
 * Change an image's virtual size (vdisk_resize). On a raw disk open through
 * loop or vdisk.ko, the device follows at once (LOOP_SET_CAPACITY,
 * VDISK_CTL_RESIZE); on a disk of any format open through fuse or nbd, its
 * server resizes the image over its control socket and the device follows
 * (fuse: loop's LOOP_SET_CAPACITY; nbd: NBD_SET_SIZE in the server). ublk is
 * refused until its server can be told (ublk's UPDATE_SIZE needs Linux 6.16).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/loop.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdisk.h"
#include "server_ctl.h"
#include "uapi/vdisk_ctl.h"
#include "../../lib/size.h" /* a bare number is bytes here, as in qemu-img resize */

/* The new size from TEXT (SIZE, +SIZE or -SIZE) and the current size CUR: 0 or 1 with a message. */
static int target_size(const char *text, uint64_t cur, uint64_t *size)
{
    uint64_t n;
    char sign = (text[0] == '+' || text[0] == '-') ? text[0] : 0;

    if (vdisk_parse_size_unit(sign ? text + 1 : text, 1, &n) < 0)
        return err("%s", vdisk_last_error());
    if (sign == '+' && n > UINT64_MAX - cur)
        return err("%s: too large", text);
    if (sign == '-' && n >= cur)
        return err("%s: the image is only %" PRIu64 " bytes", text, cur);
    *size = sign == '+' ? cur + n : sign == '-' ? cur - n : n;
    return 0;
}

/* Tell a loop device that its file changed size. */
static int loop_set_capacity(const char *device)
{
    int fd = open(device, O_RDONLY | O_CLOEXEC), r;

    if (fd < 0)
        return err("%s: %m", device);
    r = ioctl(fd, LOOP_SET_CAPACITY, 0);
    close(fd);
    if (r < 0)
        return err("%s: LOOP_SET_CAPACITY: %m", device);
    return 0;
}

/* Tell vdisk.ko that REC's disk is SIZE bytes now (whole sectors, as open gave it). */
static int kmod_set_capacity(const struct disk_record *rec, uint64_t size)
{
    struct vdisk_ctl_disk d = {.struct_size = sizeof(d), .version = VDISK_CTL_VERSION};
    unsigned index;
    int ctl, r;

    if (sscanf(rec->device, "/dev/vdisk%u", &index) != 1)
        return err("%s: not a vdisk.ko device", rec->device);
    ctl = open(VDISK_CTL_DEVICE, O_RDWR | O_CLOEXEC);
    if (ctl < 0)
        return err("%s: %m", VDISK_CTL_DEVICE);
    d.index = index;
    r = ioctl(ctl, VDISK_CTL_QUERY, &d);
    if (r < 0 || strncmp(d.id, rec->id, sizeof(d.id)) != 0) {
        close(ctl);
        return err("%s: no longer serves %s", rec->device, rec->image);
    }
    d.size = size & ~511ull;
    r = ioctl(ctl, VDISK_CTL_RESIZE, &d);
    close(ctl);
    if (r < 0 && errno == ENOTTY)
        return err("%s: this vdisk.ko cannot resize a disk (an older module): the image is "
                   "%" PRIu64 " bytes now; close and open the disk again",
                   rec->device, size);
    if (r < 0)
        return err("%s: %s: resize: %m", rec->device, VDISK_CTL_DEVICE);
    return 0;
}

/* Resize PATH (FORMAT or probed); LOCK false: the open disk's device holds the lock. */
static int resize_image(const char *path, const char *format, bool lock, const char *text,
                        unsigned flags, uint64_t *size)
{
    struct vdisk_image *img;
    uint64_t cur;

    if (vdisk_open(path, format, lock ? 0 : VDISK_OPEN_NOLOCK, NULL, &img) < 0)
        return err("%s", vdisk_last_error());
    cur = vdisk_get_size(img);
    if (target_size(text, cur, size) || vdisk_resize(img, *size, flags) < 0) {
        if (vdisk_last_error()[0])
            err("%s", vdisk_last_error());
        vdisk_close(img);
        return 1;
    }
    *size = vdisk_get_size(img); /* the format may round (raw: whole sectors) */
    if (vdisk_close(img) < 0)
        return err("%s", vdisk_last_error());
    return 0;
}

/*
 * --via fuse and nbd: the server resizes the image through its open engine
 * (server_ctl.c). nbd: it sets the device's size too. fuse: it sets its file's
 * size; a stat then loads that into the kernel's inode, which
 * LOOP_SET_CAPACITY reads.
 */
static int server_resize(struct disk_record *rec, const char *text, unsigned flags, uint64_t *size)
{
    struct stat st;
    char path[4200];

    if (target_size(text, rec->size, size))
        return 1;
    server_ctl_path(rec->id, path, sizeof(path));
    if (server_ctl_resize(path, rec->image, size, flags))
        return 1;
    if (strcmp(rec->via, "nbd") == 0)
        return 0;
    if (stat(rec->backing, &st) < 0)
        return err("%s: %m", rec->backing);
    if ((uint64_t)st.st_size != *size)
        return err("%s: the image is %" PRIu64 " bytes now, but its FUSE file still shows %lld",
                   rec->backing, *size, (long long)st.st_size);
    return loop_set_capacity(rec->device);
}

/* Why the way of REC cannot follow a new size live. */
static const char *why_not_live(const struct disk_record *rec)
{
    if (strcmp(rec->via, "ublk") == 0)
        return "ublk's UPDATE_SIZE needs Linux 6.16";
    return "only a raw image grows live";
}

int cmd_resize(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"format", required_argument, NULL, 'f'},
        {"shrink", no_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *format = NULL, *what, *text, *minus = NULL;
    struct disk_record rec;
    unsigned flags = 0;
    uint64_t size;
    int c, open, lock, status = 1;
    bool kmod, served;

    /* -SIZE is no option: take it out first, as qemu-img resize does */
    if (argc > 2 && argv[argc - 1][0] == '-' &&
        (isdigit((unsigned char)argv[argc - 1][1]) || argv[argc - 1][1] == '.'))
        minus = argv[--argc];
    while ((c = getopt_long(argc, argv, "f:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            format = optarg;
            break;
        case 's':
            flags |= VDISK_RESIZE_SHRINK;
            break;
        case 'h':
            fputs(command_help("resize"), stdout);
            return 0;
        default:
            print_usage(stderr, "resize");
            return 2;
        }
    }
    if (argc - optind != (minus ? 1 : 2)) {
        print_usage(stderr, "resize");
        return 2;
    }
    what = argv[optind];
    text = minus ? minus : argv[optind + 1];
    lock = record_lock(); /* no open or close of this disk meanwhile */
    if (lock < 0)
        return 1;
    open = find_record(what, &rec);
    if (open < 0)
        goto out;
    if (!open) {
        if (resize_image(what, format, true, text, flags, &size) == 0)
            status = 0;
        goto out;
    }
    if (strcmp(rec.format, "ram") == 0) {
        err("%s: a RAM disk cannot be resized; save it and open the image instead", rec.device);
        goto out;
    }
    kmod = strcmp(rec.via, "kmod") == 0;
    /* any format: its server resizes it */
    served = strcmp(rec.via, "fuse") == 0 || strcmp(rec.via, "nbd") == 0;
    if (!served && (!(kmod || (strcmp(rec.via, "loop") == 0 && !rec.backing[0])) ||
                    strcmp(rec.format, "raw") != 0)) {
        err("%s: open on %s through --via %s, which cannot follow a new size yet (%s); "
            "close it, resize, and open it again",
            rec.image, rec.device, rec.via, why_not_live(&rec));
        goto out;
    }
    if (flags & VDISK_RESIZE_SHRINK) { /* a mounted file system would lose its end */
        err("%s: shrinking an open disk is refused; close it (after shrinking its file "
            "system) and resize it offline",
            rec.image);
        goto out;
    }
    if (rec.read_only) {
        err("%s: open read-only on %s: cannot resize it", rec.image, rec.device);
        goto out;
    }
    if (served ? server_resize(&rec, text, flags, &size)
               : resize_image(rec.image, rec.format, false, text, flags, &size) ||
                     (kmod ? kmod_set_capacity(&rec, size) : loop_set_capacity(rec.device)))
        goto out;
    rec.size = size;
    if (record_save(&rec) < 0)
        goto out;
    status = 0;
out:
    record_unlock(lock);
    if (status == 0)
        printf("%s: %" PRIu64 " bytes%s%s\n", open > 0 ? rec.image : what, size,
               open > 0 ? ", device " : "", open > 0 ? rec.device : "");
    return status;
}
