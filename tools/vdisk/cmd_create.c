/* SPDX-License-Identifier: MIT */
/* vdisk create [-f FMT] [-o KEY=VAL,...] [--key-file F|--key-stdin] IMAGE [SIZE]: no SIZE, the
 * backing file's size */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "vdisk.h"

int cmd_create(int argc, char **argv)
{
    static const struct option longopts[] = {{"format", required_argument, NULL, 'f'},
                                             {"options", required_argument, NULL, 'o'},
                                             {"help", no_argument, NULL, 'h'},
                                             KEY_LONGOPTS,
                                             {NULL, 0, NULL, 0}};
    const char *format = "raw", *options = NULL;
    uint64_t size = 0;
    int c, k, r;

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
            print_usage(c == 'h' ? stdout : stderr, "create");
            return c == 'h' ? 0 : 2;
        }
    }
    /* SIZE may be left out only where a backing file gives it */
    if (argc - optind != 2 &&
        (argc - optind != 1 || !options || !strstr(options, "backing_file="))) {
        print_usage(stderr, "create");
        return 2;
    }
    if (argc - optind == 2 && vdisk_parse_size(argv[optind + 1], &size) < 0)
        return err("%s", vdisk_last_error());
    /* 0 is the library's to judge: a qcow2 overlay takes its backing file's size */
    if (size && check_disk_size(argv[optind + 1], size) < 0)
        return 1;
    r = vdisk_create(argv[optind], format, size, key_options(options));
    k = key_ask_new(r, argv[optind]); /* encrypted, no key given: ask on the terminal */
    if (k > 0)
        r = vdisk_create(argv[optind], format, size, key_options(options));
    if (k < 0)
        return 1;
    if (r < 0)
        return err("%s", vdisk_last_error());
    return 0;
}
