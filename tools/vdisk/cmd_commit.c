/* SPDX-License-Identifier: MIT */
/*
 * vdisk commit [--yes] OVERLAY
 * Write what an overlay holds back into its base image (as qemu-img commit),
 * then empty the overlay. Without --yes it only says what it would do.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdisk.h"

/* What commit needs to know of the overlay before it changes anything. */
struct overlay_facts {
    char format[16];
    char backing_file[4096]; /* as the header names it */
    char backing_format[16];
    char base[4096]; /* the base's path as opened */
    uint32_t cluster_size;
    uint64_t size;
    char features[256]; /* qcow2 create options that keep its kind: compat=1.1,... */
    const char *keep;   /* why it cannot be emptied by a new one (encrypted...), or NULL */
};

/* The detail KEY of INFO, or NULL. */
static const char *detail(const struct vdisk_info *info, const char *key)
{
    for (unsigned i = 0; i < info->ndetails; i++)
        if (strcmp(info->details[i].key, key) == 0)
            return info->details[i].value;
    return NULL;
}

/* Fill *F from the open overlay IMG. 0, or 1 with a message. */
static int get_facts(const char *path, struct vdisk_image *img, struct overlay_facts *f)
{
    struct vdisk_info info;

    if (vdisk_get_info(img, &info) < 0)
        return err("%s", vdisk_last_error());
    if (!info.backing_file)
        return err("%s: has no backing file: nothing to commit into", path);
    snprintf(f->format, sizeof(f->format), "%s", info.format);
    snprintf(f->backing_file, sizeof(f->backing_file), "%s", info.backing_file);
    snprintf(f->backing_format, sizeof(f->backing_format), "%s",
             info.backing_format ? info.backing_format : "");
    snprintf(f->base, sizeof(f->base), "%s", info.files[1] ? info.files[1] : info.backing_file);
    f->cluster_size = info.cluster_size;
    f->size = info.virtual_size;
    f->keep = NULL;
    if (detail(&info, "encrypt_format"))
        f->keep = "it is encrypted";
    else if (detail(&info, "snapshots") && strcmp(detail(&info, "snapshots"), "0") != 0)
        f->keep = "it has internal snapshots";
    snprintf(f->features, sizeof(f->features),
             "compat=%s,extended_l2=%s,compression_type=%s,refcount_bits=%s,lazy_refcounts=%s",
             detail(&info, "compat") ? detail(&info, "compat") : "1.1",
             detail(&info, "extended_l2") ? detail(&info, "extended_l2") : "false",
             detail(&info, "compression_type") ? detail(&info, "compression_type") : "zlib",
             detail(&info, "refcount_bits") ? detail(&info, "refcount_bits") : "16",
             detail(&info, "lazy_refcounts") ? detail(&info, "lazy_refcounts") : "false");
    return 0;
}

/*
 * Empty the qcow2 overlay PATH: a fresh one over the same backing file
 * replaces it (rename: the old one stays whole until then). 0, or 1.
 */
static int empty_overlay(const char *path, const struct overlay_facts *f)
{
    char *tmp = NULL, *opts = NULL;
    struct stat st;
    int r;

    if (asprintf(&tmp, "%s.vdisk-commit", path) < 0 ||
        asprintf(&opts, "backing_file=%s,backing_fmt=%s,cluster_size=%u,%s", f->backing_file,
                 f->backing_format, f->cluster_size, f->features) < 0) {
        free(tmp);
        return err("%s: out of memory", path);
    }
    unlink(tmp); /* left by a commit that was cut short */
    r = vdisk_create(tmp, "qcow2", f->size, opts);
    if (r < 0)
        r = err("%s", vdisk_last_error());
    else if (stat(path, &st) == 0 && chmod(tmp, st.st_mode & 07777) < 0)
        r = err("%s: %m", tmp);
    else if (rename(tmp, path) < 0)
        r = err("%s: %m", path);
    if (r)
        unlink(tmp);
    free(opts);
    free(tmp);
    return r;
}

/* The dry run: what commit would do. Exit status 1 (nothing was done). */
static int explain(const char *path)
{
    struct vdisk_image *img;
    struct overlay_facts f;
    uint64_t bytes = 0, runs = 0;
    int r;

    if (vdisk_open(path, NULL, VDISK_OPEN_RDONLY, NULL, &img) < 0) {
        err("%s", vdisk_last_error());
        lock_hint(path);
        return 1;
    }
    r = get_facts(path, img, &f);
    if (r == 0 && vdisk_allocated_in_top(img, &bytes, &runs) < 0)
        r = err("%s", vdisk_last_error());
    vdisk_close(img);
    if (r)
        return r;
    return err("%s: would write %" PRIu64 " bytes (%" PRIu64
               " ranges) into its base %s (%s)%s; nothing done: give --yes to commit",
               path, bytes, runs, f.base, f.backing_format,
               strcmp(f.format, "qcow2") == 0 && !f.keep ? " and empty the overlay" : "");
}

int cmd_commit(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"yes", no_argument, NULL, 'y'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct disk_record rec;
    struct vdisk_image *img;
    struct overlay_facts f;
    const char *path;
    uint64_t bytes = 0;
    bool yes = false;
    int c, r;

    while ((c = getopt_long(argc, argv, "yh", longopts, NULL)) != -1) {
        switch (c) {
        case 'y':
            yes = true;
            break;
        case 'h':
            fputs(command_help("commit"), stdout);
            return 0;
        default:
            print_usage(stderr, "commit");
            return 2;
        }
    }
    if (argc - optind != 1) {
        print_usage(stderr, "commit");
        return 2;
    }
    path = argv[optind];
    r = find_record(path, &rec);
    if (r < 0)
        return 1;
    if (r > 0)
        return err("%s: is open as %s; close it first", path, rec.device);
    if (!yes)
        return explain(path);
    if (vdisk_open(path, NULL, 0, NULL, &img) < 0) {
        err("%s", vdisk_last_error());
        lock_hint(path);
        return 1;
    }
    r = get_facts(path, img, &f);
    if (r == 0 && vdisk_commit(img, &bytes) < 0) {
        r = err("%s", vdisk_last_error());
        lock_hint(f.base);
    }
    if (vdisk_close(img) < 0 && r == 0)
        r = err("%s", vdisk_last_error());
    if (r)
        return r;
    /* the base holds everything and is flushed: now the overlay may forget it */
    if (strcmp(f.format, "qcow2") == 0 && f.keep) {
        printf("%s: %" PRIu64 " bytes committed into %s; not emptied, as %s\n", path, bytes, f.base,
               f.keep);
    } else if (strcmp(f.format, "qcow2") == 0) {
        if (empty_overlay(path, &f))
            return err("%s: committed into %s, but not emptied: it still shows the same data", path,
                       f.base);
        printf("%s: %" PRIu64 " bytes committed into %s; overlay emptied\n", path, bytes, f.base);
    } else {
        printf("%s: %" PRIu64 " bytes committed into %s; a %s overlay is kept as it is\n", path,
               bytes, f.base, f.format);
    }
    return 0;
}
