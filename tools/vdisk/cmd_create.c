/* SPDX-License-Identifier: MIT */
/* vdisk create [-f FMT] [-o KEY=VAL,...] IMAGE [SIZE]: no SIZE, the backing file's size */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "vdisk.h"

int cmd_create(int argc, char **argv)
{
    const char *format = "raw", *options = NULL;
    uint64_t size = 0;
    int c;

    while ((c = getopt(argc, argv, "f:o:h")) != -1) {
        switch (c) {
        case 'f':
            format = optarg;
            break;
        case 'o':
            options = optarg;
            break;
        default:
            fprintf(stderr, "usage: vdisk create [-f FMT] [-o KEY=VAL,...] IMAGE [SIZE]\n");
            return c == 'h' ? 0 : 2;
        }
    }
    /* SIZE may be left out only where a backing file gives it */
    if (argc - optind != 2 &&
        (argc - optind != 1 || !options || !strstr(options, "backing_file="))) {
        fprintf(stderr, "usage: vdisk create [-f FMT] [-o KEY=VAL,...] IMAGE [SIZE]\n");
        return 2;
    }
    if (argc - optind == 2 && vdisk_parse_size(argv[optind + 1], &size) < 0)
        return err("%s", vdisk_last_error());
    if (vdisk_create(argv[optind], format, size, options) < 0)
        return err("%s", vdisk_last_error());
    return 0;
}
