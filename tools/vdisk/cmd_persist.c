/* SPDX-License-Identifier: MIT */
/*
 * vdisk persist add [-r] [-f FMT] [-o KEY=VAL,...] [--via WAY] [--no-direct] IMAGE
 * vdisk persist remove IMAGE|ID
 * vdisk persist list
 * Edit the table of disks opened at boot (persist.h). It does not open or
 * close anything: `vdisk open --persist` opens and records in one go.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "persist.h"
#include "vdisk.h"

/* Fill E from the open options shared by `open --persist` and `persist add`. */
int persist_entry_set(struct persist_entry *e, const char *image, const char *format,
                      const char *options, const char *via, bool read_only, bool direct)
{
    memset(e, 0, sizeof(*e));
    if (!realpath(image, e->image))
        return -err("%s: %m", image);
    if (snprintf(e->format, sizeof(e->format), "%s", format ? format : "") >=
            (int)sizeof(e->format) ||
        snprintf(e->options, sizeof(e->options), "%s", options ? options : "") >=
            (int)sizeof(e->options) ||
        snprintf(e->via, sizeof(e->via), "%s", via ? via : "auto") >= (int)sizeof(e->via))
        return -err("%s: format, options or way too long for the persistent table", image);
    if (strcmp(e->via, "auto") != 0 && !via_find(e->via) && strcmp(e->via, "ublk") != 0)
        return -err("--via %s: unknown way", e->via);
    e->read_only = read_only;
    e->direct = direct;
    return 0;
}

static int persist_add_cmd(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"read-only", no_argument, NULL, 'r'},     {"format", required_argument, NULL, 'f'},
        {"options", required_argument, NULL, 'o'}, {"via", required_argument, NULL, 'v'},
        {"no-direct", no_argument, NULL, 'D'},     {NULL, 0, NULL, 0},
    };
    const char *format = NULL, *options = NULL, *via = "auto";
    struct persist_entry e;
    bool ro = false, direct = true;
    struct stat st;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "rf:o:", longopts, NULL)) != -1) {
        switch (c) {
        case 'r':
            ro = true;
            break;
        case 'f':
            format = optarg;
            break;
        case 'o':
            options = optarg;
            break;
        case 'v':
            via = optarg;
            break;
        case 'D':
            direct = false;
            break;
        default:
            print_usage(stderr, "persist");
            return 2;
        }
    }
    if (argc - optind != 1) {
        print_usage(stderr, "persist");
        return 2;
    }
    if (stat(argv[optind], &st) < 0)
        return err("%s: %m (a persistent disk must exist; create it first)", argv[optind]);
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return err("%s: not a regular file or block device", argv[optind]);
    if (persist_entry_set(&e, argv[optind], format, options, via, ro, direct) < 0)
        return 1;
    return persist_add(&e) < 0;
}

static int persist_list_cmd(void)
{
    struct persist_entry *all;
    size_t n;

    if (persist_load(&all, &n) < 0)
        return 1;
    for (size_t i = 0; i < n; i++) {
        char id[17];

        record_id(all[i].image, id);
        printf("%s  %-5s  %s%s%s%s%s%s  ", id, all[i].via, all[i].read_only ? "ro" : "rw",
               all[i].format[0] ? ",format=" : "", all[i].format, all[i].direct ? "" : ",no-direct",
               all[i].options[0] ? ",o=" : "", all[i].options);
        fput_escaped(stdout, all[i].image);
        putchar('\n');
    }
    free(all);
    return 0;
}

int cmd_persist(int argc, char **argv)
{
    int r;

    if (argc >= 2 && strcmp(argv[1], "add") == 0)
        return persist_add_cmd(argc - 1, argv + 1);
    if (argc == 2 && strcmp(argv[1], "list") == 0)
        return persist_list_cmd();
    if (argc == 3 && strcmp(argv[1], "remove") == 0) {
        r = persist_remove(argv[2]);
        if (r == 0)
            return err("%s: not in %s (see vdisk persist list)", argv[2], persist_table());
        return r < 0;
    }
    print_usage(stderr, "persist");
    return 2;
}
