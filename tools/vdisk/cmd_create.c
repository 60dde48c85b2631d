/* SPDX-License-Identifier: MIT */
/* vdisk create [-f FMT] [-o KEY=VAL,...] [--key-file F|--key-stdin] IMAGE SIZE */
#include <getopt.h>
#include <stdio.h>

#include "vdisk.h"

int cmd_create(int argc, char **argv)
{
    const char *format = "raw", *options = NULL;
    uint64_t size;
    int c;

    static const struct option longopts[] = {KEY_LONGOPTS, {NULL, 0, NULL, 0}};

    while ((c = getopt_long(argc, argv, "f:o:h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
        case OPT_KEY_STDIN:
            if (key_option(c, optarg))
                return 1;
            break;
        case 'f':
            format = optarg;
            break;
        case 'o':
            options = optarg;
            break;
        default:
            fprintf(stderr, "usage: vdisk create [-f FMT] [-o KEY=VAL,...] IMAGE SIZE\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, "usage: vdisk create [-f FMT] [-o KEY=VAL,...] IMAGE SIZE\n");
        return 2;
    }
    if (vdisk_parse_size(argv[optind + 1], &size) < 0)
        return err("%s", vdisk_last_error());
    if (vdisk_create(argv[optind], format, size, key_options(options)) < 0)
        return err("%s", vdisk_last_error());
    return 0;
}
