/* SPDX-License-Identifier: MIT */
/*
 * vdisk recover IMAGE|DEVICE|ID: a ublk disk whose server died keeps its
 * device, with its I/O waiting; start a new server that takes it over.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "vdisk.h"

int cmd_recover(int argc, char **argv)
{
    struct disk_record rec;
    int c, lock, r, status = 1;

    while ((c = getopt(argc, argv, "h")) != -1) {
        fprintf(stderr, "usage: vdisk recover IMAGE|DEVICE|ID\n");
        return c == 'h' ? 0 : 2;
    }
    if (argc - optind != 1) {
        fprintf(stderr, "usage: vdisk recover IMAGE|DEVICE|ID\n");
        return 2;
    }
    lock = record_lock();
    if (lock < 0)
        return 1;
    r = find_record(argv[optind], &rec);
    if (r == 0)
        err("%s: not open (see vdisk list)", argv[optind]);
    else if (r > 0 && strcmp(rec.via, "ublk") != 0)
        err("%s: served by %s: only ublk devices can be recovered (close and open it again)",
            argv[optind], rec.via);
    else if (r > 0 && ublk_recover(&rec) == 0 && record_save(&rec) == 0) {
        printf("%s\n", rec.device);
        status = 0;
    }
    record_unlock(lock);
    return status;
}
