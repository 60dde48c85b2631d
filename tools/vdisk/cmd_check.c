/* SPDX-License-Identifier: MIT */
/*
 * vdisk check [-q] [-f FMT] [-r leaks|all] [--json] IMAGE
 *
 * Checks the image's metadata and reports like `qemu-img check`. Exit status,
 * as qemu-img's: 0 no problems, 1 the check could not run (I/O error, bad
 * image, bad arguments), 2 corruption left, 3 only leaked clusters left,
 * 63 the format has no metadata to check (raw, iso).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "vdisk.h"

#define USAGE                                                                                      \
    "usage: vdisk check [-q] [-f FMT] [-r leaks|all] [--json] IMAGE\n"                             \
    "exit status: 0 no errors, 1 check failed to run, 2 corruption, 3 leaked clusters,\n"          \
    "             63 the format has no metadata to check (raw, iso)\n"

enum {
    CHECK_CLEAN = 0,
    CHECK_ERROR = 1,
    CHECK_CORRUPT = 2,
    CHECK_LEAKS = 3,
    CHECK_NOT_SUPPORTED = 63,
};

static void print_json(const char *path, const char *format, const struct vdisk_check_result *r)
{
    printf("{\n    \"filename\": ");
    json_string(stdout, path);
    printf(",\n    \"format\": ");
    json_string(stdout, format);
    printf(",\n    \"check-errors\": 0,\n    \"corruptions\": %" PRIu64 ",\n    \"leaks\": %" PRIu64
           ",\n    \"corruptions-fixed\": %" PRIu64 ",\n    \"leaks-fixed\": %" PRIu64
           ",\n    \"allocated-clusters\": %" PRIu64 ",\n    \"total-clusters\": %" PRIu64 "\n}\n",
           r->corruptions - r->corruptions_fixed, r->leaks - r->leaks_fixed, r->corruptions_fixed,
           r->leaks_fixed, r->allocated_clusters, r->total_clusters);
}

static void print_text(const struct vdisk_check_result *r)
{
    uint64_t corrupt = r->corruptions - r->corruptions_fixed;
    uint64_t leaks = r->leaks - r->leaks_fixed;

    if (r->corruptions_fixed || r->leaks_fixed)
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %" PRIu64 " leaked clusters\n    %" PRIu64 " corruptions\n\n",
               r->leaks_fixed, r->corruptions_fixed);
    if (!corrupt && !leaks)
        printf("No errors were found on the image.\n");
    if (corrupt)
        printf("\n%" PRIu64 " errors were found on the image.\n"
               "Data may be corrupted, or further writes to the image may corrupt it.\n",
               corrupt);
    if (leaks)
        printf("\n%" PRIu64 " leaked clusters were found on the image.\n"
               "This means waste of disk space, but no harm to data.\n",
               leaks);
    if (r->total_clusters)
        printf("%" PRIu64 "/%" PRIu64 " = %.2f%% allocated\n", r->allocated_clusters,
               r->total_clusters, 100.0 * r->allocated_clusters / r->total_clusters);
}

int cmd_check(int argc, char **argv)
{
    static const struct option longopts[] = {{"json", no_argument, NULL, 'j'},
                                             {"repair", required_argument, NULL, 'r'},
                                             KEY_LONGOPTS,
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *format = NULL, *path;
    struct vdisk_check_result res;
    struct vdisk_image *img;
    struct vdisk_info info;
    unsigned flags = 0;
    bool json = false, quiet = false;
    int c, r;

    while ((c = getopt_long(argc, argv, "qf:r:h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
        case OPT_KEY_STDIN:
            if (key_option(c, optarg))
                return 1;
            break;
        case 'j':
            json = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'f':
            format = optarg;
            break;
        case 'r':
            if (strcmp(optarg, "leaks") == 0)
                flags = VDISK_CHECK_REPAIR_LEAKS;
            else if (strcmp(optarg, "all") == 0)
                flags = VDISK_CHECK_REPAIR_ALL;
            else
                return err("check: -r takes 'leaks' or 'all', not '%s'", optarg);
            break;
        default:
            fputs(USAGE, c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : CHECK_ERROR;
        }
    }
    if (argc - optind != 1) {
        fputs(USAGE, stderr);
        return CHECK_ERROR;
    }
    path = argv[optind];
    if (vdisk_open(path, format, flags ? VDISK_OPEN_REPAIR : VDISK_OPEN_RDONLY, key_options(NULL),
                   &img) < 0) {
        err("%s", vdisk_last_error());
        lock_hint(path);
        return CHECK_ERROR;
    }
    r = vdisk_check(img, flags, &res);
    if (r == -ENOTSUP || r == -EOPNOTSUPP) {
        err("%s", vdisk_last_error());
        vdisk_close(img);
        return CHECK_NOT_SUPPORTED;
    }
    if (r < 0) {
        err("check %s: %s", path, vdisk_last_error());
        vdisk_close(img);
        return CHECK_ERROR;
    }
    vdisk_get_info(img, &info);
    if (json)
        print_json(path, info.format, &res);
    else if (!quiet)
        print_text(&res);
    if (vdisk_close(img) < 0)
        return err("%s", vdisk_last_error());
    if (res.corruptions > res.corruptions_fixed)
        return CHECK_CORRUPT;
    if (res.leaks > res.leaks_fixed)
        return CHECK_LEAKS;
    return CHECK_CLEAN;
}
