/* SPDX-License-Identifier: MIT */
/*
 * vdisk rebase -b NEWBASE [-F FMT] [-u] OVERLAY
 * Put a qcow2 overlay over another base. Safe mode (as qemu-img rebase):
 * where the overlay leaves a range to its base and the old and new bases
 * differ, the old base's bytes are copied into the overlay first, so that
 * it shows the same disk after; then the header names NEWBASE. -u only
 * rewrites the name.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk.h"

#define CHUNK (1u << 20)

/* NAME as the overlay will resolve it: relative to OVERLAY's directory. malloc'd or NULL. */
static char *resolve(const char *overlay, const char *name)
{
    const char *slash = strrchr(overlay, '/');
    char *out = NULL;

    if (name[0] == '/' || !slash)
        return strdup(name);
    if (asprintf(&out, "%.*s/%s", (int)(slash - overlay), overlay, name) < 0)
        return NULL;
    return out;
}

/* Copy into IMG what the old base shows and NB (NULL: zeroes) does not. 0, or 1 with a message. */
static int copy_differences(const char *path, struct vdisk_image *img, struct vdisk_image *nb,
                            uint64_t *copied)
{
    uint64_t size = vdisk_get_size(img), nsize = nb ? vdisk_get_size(nb) : 0;
    uint8_t *old = malloc(CHUNK), *cur = malloc(CHUNK);
    struct vdisk_info info;
    uint32_t unit = 65536;
    int r = 0;

    if (vdisk_get_info(img, &info) == 0 && info.cluster_size >= 512 && info.cluster_size <= CHUNK)
        unit = info.cluster_size;
    if (!old || !cur)
        r = err("%s: out of memory", path);
    for (uint64_t off = 0, run; off < size && r == 0; off += run) {
        int a = vdisk_top_allocated(img, off, size - off < CHUNK ? size - off : CHUNK, &run);

        if (a < 0) {
            r = err("%s", vdisk_last_error());
            break;
        }
        if (a == 1)
            continue;
        uint64_t k = off >= nsize ? 0 : (nsize - off < run ? nsize - off : run);

        if (vdisk_read(img, old, run, off) < 0 || (k && vdisk_read(nb, cur, k, off) < 0)) {
            r = err("%s", vdisk_last_error());
            break;
        }
        memset(cur + k, 0, run - k);
        /* compare and copy by clusters of the overlay: a cluster is written whole or not */
        for (uint64_t p = 0; p < run && r == 0;) {
            uint64_t n = unit - (off + p) % unit;

            if (n > run - p)
                n = run - p;
            if (memcmp(old + p, cur + p, n) != 0) {
                if (vdisk_write(img, old + p, n, off + p, 0) < 0)
                    r = err("%s", vdisk_last_error());
                *copied += n;
            }
            p += n;
        }
    }
    free(old);
    free(cur);
    return r;
}

/* The format of PATH: FORMAT if given, else probed (a static string), or NULL with a message. */
static const char *format_of(const char *path, const char *format)
{
    struct vdisk_image *img;
    struct vdisk_info info;
    const char *name = NULL;

    if (vdisk_open(path, format, VDISK_OPEN_RDONLY | VDISK_OPEN_NOLOCK, NULL, &img) < 0) {
        err("%s", vdisk_last_error());
        return NULL;
    }
    if (vdisk_get_info(img, &info) == 0)
        name = info.format;
    else
        err("%s", vdisk_last_error());
    vdisk_close(img);
    return name;
}

/* Safe mode: copy, then flush and close, before the header names the new base. 0, or 1. */
static int safe_copy(const char *path, const char *newpath, const char *fmt)
{
    struct vdisk_image *img = NULL, *nb = NULL;
    uint64_t copied = 0;
    int r = 0;

    if (vdisk_open(path, NULL, 0, NULL, &img) < 0) {
        err("%s", vdisk_last_error());
        lock_hint(path);
        return 1;
    }
    if (newpath && vdisk_open(newpath, fmt, VDISK_OPEN_RDONLY, NULL, &nb) < 0) {
        r = err("%s", vdisk_last_error());
        lock_hint(newpath);
    }
    if (r == 0)
        r = copy_differences(path, img, nb, &copied);
    vdisk_close(nb);
    if (vdisk_close(img) < 0 && r == 0)
        r = err("%s", vdisk_last_error());
    if (r == 0)
        printf("%s: %" PRIu64 " bytes that differ copied from the old base\n", path, copied);
    return r;
}

int cmd_rebase(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"backing", required_argument, NULL, 'b'},
        {"backing-format", required_argument, NULL, 'F'},
        {"unsafe", no_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *name = NULL, *format = NULL, *path, *fmt = NULL;
    struct disk_record rec;
    char *newpath = NULL;
    bool unsafe = false;
    int c, r;

    while ((c = getopt_long(argc, argv, "b:F:uh", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            name = optarg;
            break;
        case 'F':
            format = optarg;
            break;
        case 'u':
            unsafe = true;
            break;
        case 'h':
            fputs(command_help("rebase"), stdout);
            return 0;
        default:
            print_usage(stderr, "rebase");
            return 2;
        }
    }
    if (argc - optind != 1 || !name) {
        print_usage(stderr, "rebase");
        return 2;
    }
    path = argv[optind];
    r = find_record(path, &rec);
    if (r < 0)
        return 1;
    if (r > 0)
        return err("%s: is open as %s; close it first", path, rec.device);
    if (*name) {
        newpath = resolve(path, name);
        if (!newpath)
            return err("%s: out of memory", path);
        fmt = unsafe && format ? format : format_of(newpath, format); /* -u: may not exist */
        if (!fmt) {
            free(newpath);
            return 1;
        }
    }
    r = unsafe ? 0 : safe_copy(path, newpath, fmt);
    if (r == 0 && vdisk_qcow2_set_backing(path, name, fmt) < 0)
        r = err("%s", vdisk_last_error());
    if (r == 0)
        printf("%s: backing file is now %s%s%s\n", path, *name ? name : "(none)",
               *name ? ", format " : "", *name ? fmt : "");
    free(newpath);
    return r;
}
