/* SPDX-License-Identifier: MIT */
/*
 * vdisk close [--force] IMAGE|DEVICE|ID, vdisk close --all: undo what open
 * did. --force kills the server first (no flush): its device goes away and
 * waiting I/O fails, for a server that hangs.
 */
#include <getopt.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdisk.h"
#include "server.h"

int find_record(const char *what, struct disk_record *rec)
{
    char canonical[PATH_MAX], id[17];
    struct disk_record *all;
    struct stat st;
    size_t n;
    int r;

    r = record_load(what, rec); /* an id */
    if (r != 0)
        return r;
    if (!realpath(what, canonical))
        return 0;
    if (stat(canonical, &st) == 0 && S_ISBLK(st.st_mode)) { /* a device we serve? */
        if (record_list(&all, &n) < 0)
            return -1;
        r = 0;
        for (size_t i = 0; i < n && !r; i++) {
            if (strcmp(all[i].device, canonical) == 0) {
                *rec = all[i];
                r = 1;
            }
        }
        free(all);
        if (r)
            return r;
    }
    record_id(canonical, id);
    return record_load(id, rec);
}

/* Stop one disk and drop its record; FORCE: kill its server first. */
static int close_disk(const struct disk_record *rec, bool force)
{
    const struct via *via = via_find(rec->via);
    char name[32];

    if (!via)
        return err("%s: recorded with an unknown way '%s'", rec->image, rec->via);
    snprintf(name, sizeof(name), "vdisk-%s", rec->via); /* the server's comm */
    if (force && server_running(rec->pid, name)) {
        kill(rec->pid, SIGKILL);
        for (int i = 0; i < 500 && server_running(rec->pid, name); i++)
            usleep(10000);
    }
    if (via->stop(rec) < 0)
        return 1;
    return record_remove(rec->id) < 0;
}

int cmd_close(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"all", no_argument, NULL, 'a'},
        {"force", no_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct disk_record rec, *all;
    bool every = false, force = false;
    int c, lock, status = 0;
    size_t n;

    while ((c = getopt_long(argc, argv, "ah", longopts, NULL)) != -1) {
        switch (c) {
        case 'a':
            every = true;
            break;
        case 'F':
            force = true;
            break;
        case 'h':
        default:
            fprintf(stderr, "usage: vdisk close [--force] IMAGE|DEVICE|ID | --all\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (every == (optind < argc) || argc - optind > 1) {
        fprintf(stderr, "usage: vdisk close [--force] IMAGE|DEVICE|ID | --all\n");
        return 2;
    }
    lock = record_lock();
    if (lock < 0)
        return 1;
    if (every) {
        if (record_list(&all, &n) < 0) {
            status = 1;
        } else {
            for (size_t i = 0; i < n; i++)
                status |= close_disk(&all[i], force);
            free(all);
        }
    } else {
        int r = find_record(argv[optind], &rec);

        if (r < 0)
            status = 1;
        else if (r == 0)
            status = err("%s: not open (see vdisk list)", argv[optind]);
        else
            status = close_disk(&rec, force);
    }
    record_unlock(lock);
    return status;
}
