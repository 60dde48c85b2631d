/* SPDX-License-Identifier: MIT */
/*
 * vdisk open [-r] [-f FMT] [-o KEY=VAL,...] [--via WAY] [--no-direct] IMAGE [SIZE]
 * The seed's "open <file> [MB]": create the image when missing (100 MiB by
 * default), give it a block device, record it, print the device.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdisk.h"
#include "vdisk_ublk.h"
#include "../../lib/format/foreign.h" /* no raw file named .vhdx */

#define DEFAULT_SIZE (100ull << 20) /* the seed's default */

/* Format for a new image, from its file name extension; raw otherwise. */
static const char *format_from_name(const char *path)
{
    const char *dot = strrchr(path, '.');

    if (dot && !strchr(dot, '/')) {
        for (const char *const *f = vdisk_formats(); *f; f++)
            if (strcmp(dot + 1, *f) == 0)
                return *f;
        if (strcmp(dot + 1, "img") == 0)
            return "raw";
        if (vdisk_foreign_find_ext(dot + 1)) /* .vhdx: vdisk_create names what it can't make */
            return vdisk_foreign_find_ext(dot + 1)->name;
    }
    return "raw";
}

/* Look at IMAGE without locking it: its format, capabilities and virtual size. */
static int inspect(struct open_request *req, const char *format)
{
    struct vdisk_image *img;
    struct vdisk_info info;

    if (vdisk_open(req->image, format, VDISK_OPEN_RDONLY | VDISK_OPEN_NOLOCK, req->options, &img) <
        0)
        return err("%s", vdisk_last_error());
    if (vdisk_get_info(img, &info) < 0) {
        vdisk_close(img);
        return err("%s", vdisk_last_error());
    }
    req->format = info.format; /* static strings of the format table */
    req->caps = info.caps;
    req->size = info.virtual_size;
    req->linear_offset = info.linear_offset;
    vdisk_close(img);
    return 0;
}

/*
 * Refuse an image that is already recorded as open, alive or not; a ublk
 * device whose server died is taken over instead (-1: done, print it).
 */
static int check_not_open(const char *id, const char *image)
{
    struct disk_record rec;
    int r = record_load(id, &rec);
    const struct via *via;

    if (r < 0)
        return 1;
    if (r == 0)
        return 0;
    via = via_find(rec.via);
    if (via && via->alive(&rec))
        return err("%s: already open as %s (id %s); close it first", image, rec.device, id);
    if (via == &via_ublk && rec.device[0] && access(rec.device, F_OK) == 0) {
        if (ublk_recover(&rec) < 0 || record_save(&rec) < 0)
            return 1;
        printf("%s\n", rec.device);
        return -1;
    }
    return err("%s: recorded as open on %s but its %s server is gone; run 'vdisk close %s'", image,
               rec.device[0] ? rec.device : "(no device)", rec.via, id);
}

static void usage(void)
{
    fprintf(stderr, "usage: vdisk open [-r] [-f FMT] [-o KEY=VAL,...] "
                    "[--via auto|kmod|loop|ublk|nbd|fuse] [--no-direct] IMAGE [SIZE]\n");
}

int cmd_open(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"read-only", no_argument, NULL, 'r'},
        {"format", required_argument, NULL, 'f'},
        {"options", required_argument, NULL, 'o'},
        {"via", required_argument, NULL, 'v'},
        {"no-direct", no_argument, NULL, 'D'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct open_request req = {.direct = true};
    struct disk_record rec = {0};
    const char *format = NULL, *via_name = "auto", *image;
    const struct via *via;
    char canonical[PATH_MAX];
    uint64_t size = 0;
    bool created = false, size_given = false;
    struct stat st;
    int c, lock, r, status = 1;

    while ((c = getopt_long(argc, argv, "rf:o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'r':
            req.read_only = true;
            break;
        case 'f':
            format = optarg;
            break;
        case 'o':
            req.options = optarg;
            break;
        case 'v':
            via_name = optarg;
            break;
        case 'D':
            req.direct = false;
            break;
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    if (argc - optind < 1 || argc - optind > 2) {
        usage();
        return 2;
    }
    image = argv[optind];
    if (argc - optind == 2) {
        if (vdisk_parse_size(argv[optind + 1], &size) < 0)
            return err("%s", vdisk_last_error());
        if (size == 0)
            return err("%s: size must be greater than zero", argv[optind + 1]);
        size_given = true;
    }
    if (strcmp(via_name, "auto") != 0 && !via_find(via_name))
        return err("--via %s: unknown way (ways: auto, kmod, loop, ublk, nbd, fuse)", via_name);

    lock = record_lock();
    if (lock < 0)
        return 1;
    if (stat(image, &st) < 0) {
        if (errno != ENOENT) {
            err("%s: %m", image);
            goto out;
        }
        if (req.read_only) {
            err("%s: does not exist (a read-only open cannot create it)", image);
            goto out;
        }
        if (!format)
            format = format_from_name(image);
        if (vdisk_create(image, format, size_given ? size : DEFAULT_SIZE, NULL) < 0) {
            err("%s", vdisk_last_error());
            goto out;
        }
        created = true;
    } else if (S_ISDIR(st.st_mode)) {
        err("%s: is a directory, not a disk image", image);
        goto out;
    } else if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
        err("%s: not a regular file or block device", image);
        goto out;
    }
    if (!realpath(image, canonical)) {
        err("%s: %m", image);
        goto out;
    }
    record_id(canonical, rec.id);
    r = check_not_open(rec.id, canonical);
    if (r < 0)
        status = 0; /* a ublk server took its device over again */
    if (r)
        goto out;
    req.image = canonical;
    req.format_stated = format != NULL;
    if (inspect(&req, format))
        goto out;
    if (size_given && size != req.size && !created) { /* new: the format may round (VHD CHS) */
        err("%s: image is %llu bytes, not the %llu asked for; leave SIZE out to open it as "
            "it is",
            canonical, (unsigned long long)req.size, (unsigned long long)size);
        goto out;
    }

    if (strcmp(via_name, "auto") == 0) {
        via = via_auto(req.caps);
        if (via && req.linear_offset && strcmp(via->name, "kmod") == 0)
            via = via_find("loop"); /* vdisk.ko serves whole files; loop takes an offset */
        if (!via) {
            err("%s: no way to serve a %s image on this machine", canonical, req.format);
            goto out;
        }
    } else {
        via = via_find(via_name);
        if (via->linear_only && !(req.caps & VDISK_CAP_LINEAR)) {
            err("%s: --via %s serves images whose data lies as it is in one file (raw), "
                "this one is %s",
                canonical, via->name, req.format);
            goto out;
        }
        if (!via->available()) {
            if (via == &via_ublk)
                err("--via ublk: %s: %m (this kernel has no ublk driver: modprobe ublk_drv, "
                    "Linux 6.0 or later)",
                    VDISK_UBLK_CONTROL);
            else
                err("--via %s: not available on this machine", via->name);
            goto out;
        }
    }
    snprintf(rec.image, sizeof(rec.image), "%s", canonical);
    snprintf(rec.format, sizeof(rec.format), "%s", req.format);
    snprintf(rec.via, sizeof(rec.via), "%s", via->name);
    rec.read_only = req.read_only || (req.caps & VDISK_CAP_READ_ONLY);
    req.read_only = rec.read_only;
    rec.size = req.size;
    if (via->start(&req, &rec) < 0)
        goto out;
    if (record_save(&rec) < 0) {
        via->stop(&rec);
        goto out;
    }
    printf("%s\n", rec.device);
    status = 0;
out:
    if (status && created)
        unlink(image); /* nothing half-made is left behind */
    record_unlock(lock);
    return status;
}
