/* SPDX-License-Identifier: MIT */
/*
 * vdisk open [-r] [-f FMT] [-o KEY=VAL,...] [--via WAY] [--no-direct] [--persist] IMAGE [SIZE]
 * vdisk open --all-persistent
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

#include "persist.h"
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
    /* the file checked here is the one every way must serve (open_image.c) */
    if (vdisk_get_info(img, &info) < 0 ||
        vdisk_file_id(img, req->image, &req->dev, &req->ino) < 0) {
        vdisk_close(img);
        return err("%s", vdisk_last_error());
    }
    req->checked = true;
    req->format = info.format; /* static strings of the format table */
    req->caps = info.caps;
    req->size = info.virtual_size;
    req->linear_offset = info.linear_offset;
    vdisk_close(img);
    if (!req->snapshot && !req->partition)
        return 0;
    /* the disk is the overlay or the partition: its size and capabilities, the base's format */
    img = NULL;
    if (open_image(req, VDISK_OPEN_RDONLY | VDISK_OPEN_NOLOCK, &img) < 0 ||
        vdisk_get_info(img, &info) < 0) {
        err("%s", vdisk_last_error());
        vdisk_close(img);
        return 1;
    }
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

/*
 * Tests: with ENV=FILE set, create FILE and wait (10 s at most) until the
 * test removes it, to change something between the checks and the serving.
 */
static void test_pause(const char *env)
{
    const char *f = getenv(env);
    FILE *p;

    if (!f || !*f || !(p = fopen(f, "w")))
        return;
    fclose(p);
    for (int i = 0; i < 1000 && access(f, F_OK) == 0; i++)
        usleep(10000);
}

static void usage(void)
{
    print_usage(stderr, "open");
}

/* What one open asks for: the command line, or a line of the persistent table. */
struct open_args {
    const char *image;
    const char *format;  /* NULL: probe */
    const char *options; /* -o */
    const char *via;     /* "auto" or a way */
    bool read_only, direct;
    bool may_create; /* create a missing image (not for the persistent table) */
    bool size_given;
    uint64_t size;
    bool snapshot;            /* --snapshot */
    const char *snapshot_dir; /* --snapshot-dir */
    unsigned partition;       /* --partition N */
};

/* Open one disk and print its device: 0, or 1 with a message. */
static int open_one(const struct open_args *a)
{
    struct open_request req = {.direct = a->direct,
                               .read_only = a->read_only,
                               .options = key_options(a->options), /* key-fd=N: servers keep it */
                               .snapshot = a->snapshot,
                               .snapshot_dir = a->snapshot_dir,
                               .partition = a->partition};
    struct disk_record rec = {0};
    const char *format = a->format, *via_name = a->via, *image = a->image;
    const struct via *via;
    char canonical[PATH_MAX];
    bool created = false;
    struct stat st;
    int lock, k, r, status = 1;

    if (strcmp(via_name, "auto") != 0 && !via_find(via_name))
        return err("--via %s: unknown way (ways: auto, kmod, loop, ublk, nbd, fuse)", via_name);
    if (key_ask_if_needed(image, format)) /* encrypted, no key given: ask on the terminal */
        return 1;
    req.options = key_options(a->options);

    lock = record_lock();
    if (lock < 0)
        return 1;
    if (stat(image, &st) < 0) {
        if (errno != ENOENT || !a->may_create) {
            err("%s: %m", image);
            goto out;
        }
        if (req.read_only) {
            err("%s: does not exist (a read-only open cannot create it)", image);
            goto out;
        }
        if (!format)
            format = format_from_name(image);
        r = vdisk_create(image, format, a->size_given ? a->size : DEFAULT_SIZE, key_options(NULL));
        k = key_ask_new(r, image); /* a new encrypted image and no key: ask for one twice */
        if (k < 0)
            goto out;
        if (k > 0) {
            r = vdisk_create(image, format, a->size_given ? a->size : DEFAULT_SIZE,
                             key_options(NULL));
            req.options = key_options(a->options);
        }
        if (key_not_taken(r)) /* a key for a format that takes none on create */
            r = vdisk_create(image, format, a->size_given ? a->size : DEFAULT_SIZE, NULL);
        if (r < 0) {
            err("%s", vdisk_last_error());
            goto out;
        }
        created = true;
    } /* not a regular file or block device: the library says what it is */
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
    if (!created && !req.read_only && !req.snapshot && !(req.caps & VDISK_CAP_READ_ONLY) &&
        check_writable(canonical) < 0)
        goto out;
    if (a->size_given && a->size != req.size &&
        !created) { /* new: the format may round (VHD CHS) */
        err("%s: image is %llu bytes, not the %llu asked for; leave SIZE out to open it as "
            "it is",
            canonical, (unsigned long long)req.size, (unsigned long long)a->size);
        goto out;
    }
    if (req.size < 512) {
        err("%s: image is %llu bytes, below one 512-byte sector: too small for a disk", canonical,
            (unsigned long long)req.size);
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
        if (via->linear_only && !(req.caps & VDISK_CAP_LINEAR) && req.snapshot) {
            err("%s: --via %s serves images whose data lies as it is in one file; a --snapshot "
                "disk is a qcow2 overlay: use ublk, nbd or fuse",
                canonical, via->name);
            goto out;
        }
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
    rec.snapshot = req.snapshot;
    rec.partition = req.partition;
    rec.file_known = req.checked; /* recover serves this file only (via_ublk.c) */
    rec.file_dev = req.dev;
    rec.file_ino = req.ino;
    test_pause("VDISK_TEST_PAUSE_BEFORE_SERVE"); /* tests: swap the path now */
    if (via->start(&req, &rec) < 0) {
        lock_hint(canonical);
        goto out;
    }
    nodes_secure(rec.device);
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

int open_entry(const struct persist_entry *e)
{
    struct open_args a = {.image = e->image,
                          .format = e->format[0] ? e->format : NULL,
                          .options = e->options[0] ? e->options : NULL,
                          .via = e->via,
                          .read_only = e->read_only,
                          .direct = e->direct};

    return open_one(&a);
}

/* Open every disk of the persistent table, in order; a failure does not stop the others. */
static int open_all_persistent(void)
{
    struct persist_entry *all;
    struct disk_record rec;
    int status = 0;
    size_t n;

    if (persist_load(&all, &n) < 0)
        return 1;
    for (size_t i = 0; i < n; i++) {
        const struct via *via;

        if (access(all[i].image, F_OK) < 0) {
            status = err("%s: %m; skipped (%s:%u)", all[i].image, persist_table(), all[i].line);
            continue;
        }
        record_id(all[i].image, rec.id);
        if (record_load(rec.id, &rec) == 1 && (via = via_find(rec.via)) && via->alive(&rec)) {
            printf("%s\n", rec.device); /* already open: nothing to do */
            continue;
        }
        if (open_entry(&all[i]) != 0)
            status = err("%s: not opened (%s:%u)", all[i].image, persist_table(), all[i].line);
    }
    free(all);
    return status;
}

/* --partition N: a partition number, 1 to 128. 0, or -1 with a message. */
static int parse_partition(const char *text, unsigned *n)
{
    char *end;
    unsigned long v = strtoul(text, &end, 10);

    if (!*text || *end || v < 1 || v > VDISK_MAX_PARTITIONS || text[0] == '-')
        return -err("--partition %s: not a partition number (1 to %d)", text, VDISK_MAX_PARTITIONS);
    *n = (unsigned)v;
    return 0;
}

/* Options that do not go together, and what --snapshot/--overlay need. 0, or -1 with a message. */
static int open_checks(struct open_args *a, const char *overlay, bool persist)
{
    if (a->snapshot_dir && !a->snapshot)
        return -err("--snapshot-dir needs --snapshot");
    if (a->snapshot && overlay)
        return -err("--snapshot and --overlay: choose one (a temporary or a kept overlay)");
    if ((a->snapshot || overlay) && a->read_only)
        return -err("-r and --%s: an overlay takes the writes; give -r alone for a read-only disk",
                    a->snapshot ? "snapshot" : "overlay");
    if (a->snapshot && persist)
        return -err("--snapshot and --persist: a snapshot's writes are gone at close, it cannot "
                    "be reopened at boot");
    if ((a->snapshot || overlay || a->partition) && persist)
        return -err("--persist takes no --snapshot, --overlay or --partition");
    if (a->snapshot || a->partition)
        a->may_create = false;
    if (a->snapshot_dir) { /* the server runs in / */
        static char dir[PATH_MAX];

        if (!realpath(a->snapshot_dir, dir))
            return -err("--snapshot-dir %s: %m", a->snapshot_dir);
        a->snapshot_dir = dir;
    }
    if (overlay && a->size_given)
        return -err("--overlay: the overlay takes its base's size; leave SIZE out");
    return 0;
}

int cmd_open(int argc, char **argv)
{
    enum {
        OPT_PERSIST = 256,
        OPT_ALL_PERSISTENT,
        OPT_SNAPSHOT,
        OPT_SNAPSHOT_DIR,
        OPT_OVERLAY,
        OPT_PARTITION,
        OPT_RAM
    };
    static const struct option longopts[] = {
        {"read-only", no_argument, NULL, 'r'},
        {"format", required_argument, NULL, 'f'},
        {"options", required_argument, NULL, 'o'},
        {"via", required_argument, NULL, 'v'},
        {"no-direct", no_argument, NULL, 'D'},
        {"persist", no_argument, NULL, OPT_PERSIST},
        {"all-persistent", no_argument, NULL, OPT_ALL_PERSISTENT},
        {"snapshot", no_argument, NULL, OPT_SNAPSHOT},
        {"snapshot-dir", required_argument, NULL, OPT_SNAPSHOT_DIR},
        {"overlay", required_argument, NULL, OPT_OVERLAY},
        {"partition", required_argument, NULL, OPT_PARTITION},
        {"ram", required_argument, NULL, OPT_RAM},
        {"help", no_argument, NULL, 'h'},
        KEY_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    struct open_args a = {.via = "auto", .direct = true, .may_create = true};
    bool persist = false, all_persistent = false, overlay_created = false;
    const char *overlay = NULL;
    const char *ram = NULL; /* --ram SIZE (cmd_ram.c) */
    struct persist_entry e;
    int c, status;

    while ((c = getopt_long(argc, argv, "rf:o:h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
        case OPT_KEY_STDIN:
            if (key_option(c, optarg))
                return 1;
            break;
        case 'r':
            a.read_only = true;
            break;
        case 'f':
            a.format = optarg;
            break;
        case 'o':
            a.options = optarg;
            break;
        case 'v':
            a.via = optarg;
            break;
        case 'D':
            a.direct = false;
            break;
        case OPT_PERSIST:
            persist = true;
            break;
        case OPT_ALL_PERSISTENT:
            all_persistent = true;
            break;
        case OPT_SNAPSHOT:
            a.snapshot = true;
            break;
        case OPT_SNAPSHOT_DIR:
            a.snapshot_dir = optarg;
            break;
        case OPT_OVERLAY:
            overlay = optarg;
            break;
        case OPT_PARTITION:
            if (parse_partition(optarg, &a.partition) < 0)
                return 1;
            break;
        case OPT_RAM:
            ram = optarg;
            break;
        case 'h':
            fputs(command_help("open"), stdout);
            return 0;
        default:
            usage();
            return 2;
        }
    }
    if (ram) {
        if (optind != argc || persist || all_persistent || a.format || a.options || a.snapshot ||
            overlay || a.partition) {
            usage();
            return 2;
        }
        return ram_open(ram, a.via, a.read_only);
    }
    if (all_persistent) {
        if (optind != argc || persist) {
            usage();
            return 2;
        }
        return open_all_persistent();
    }
    if (argc - optind < 1 || argc - optind > 2) {
        usage();
        return 2;
    }
    a.image = argv[optind];
    if (argc - optind == 2) {
        if (vdisk_parse_size(argv[optind + 1], &a.size) < 0)
            return err("%s", vdisk_last_error());
        if (check_disk_size(argv[optind + 1], a.size) < 0)
            return 1;
        a.size_given = true;
    }
    if (open_checks(&a, overlay, persist) < 0)
        return 1;
    if (overlay) { /* the disk is the overlay; -f states the base's format */
        if (overlay_prepare(overlay, a.image, a.format, &overlay_created) < 0)
            return 1;
        a.image = overlay;
        a.format = "qcow2";
        a.may_create = false;
    }
    status = open_one(&a);
    if (status != 0 && overlay_created)
        unlink(overlay); /* nothing half-made is left behind */
    if (status != 0)
        return 1;
    if (persist &&
        (persist_entry_set(&e, a.image, a.format, a.options, a.via, a.read_only, a.direct) < 0 ||
         persist_add(&e) < 0))
        return err("%s: open, but not recorded in %s", a.image, persist_table());
    return 0;
}
