/* SPDX-License-Identifier: MIT */
/*
 * RAM disks: `vdisk open --ram SIZE` and `vdisk save`.
 *
 * Through kmod, when the loaded vdisk.ko has them, the module keeps the pages
 * itself, as the kernel's brd does (kmod/ram.c): no file, no worker, discard
 * frees pages, close frees all; that is also the way `--via auto` picks when
 * vdisk.ko is loaded (a brd user's /dev/ramN), loop otherwise.
 *
 * Otherwise a RAM disk is a memfd: pages are allocated as they are written, discard
 * punches holes (shmem frees them). Through loop, the loop device holds the
 * only reference; through kmod, vdisk.ko does; through ublk, nbd or fuse, the
 * server opens it as a raw image by its /proc name and holds it. `vdisk close`
 * drops that last reference, and all the memory comes back. It is recorded
 * like any disk (format "ram", image "ram:ID"; through loop the memfd's name
 * as the loop's backing file), so list, info and close find it. `vdisk save` copies its content
 * into a new image, sparse.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "loopdev.h"
#include "vdisk.h"

#define RAM_PREFIX "vdisk-ram-" /* memfd name; sysfs shows "/memfd:vdisk-ram-ID (deleted)" */

/* A fresh random record id (16 hex digits). */
static int ram_id(char id[17])
{
    uint64_t v;

    if (getrandom(&v, sizeof(v), 0) != sizeof(v))
        return -err("getrandom: %m");
    snprintf(id, 17, "%016" PRIx64, v);
    return 0;
}

int ram_open(const char *size_text, const char *via_name, bool read_only)
{
    struct disk_record rec = {0};
    const struct via *via;
    char name[64], path[64];
    uint64_t size;
    int fd = -1, lock, status = 1;

    if (vdisk_parse_size(size_text, &size) < 0)
        return err("--ram %s: %s", size_text, vdisk_last_error());
    if (check_disk_size(size_text, size) < 0)
        return 1;
    if (size % 512)
        return err("--ram %s: %" PRIu64 " bytes is not a whole number of 512-byte sectors",
                   size_text, size);
    if (read_only)
        return err("--ram: a read-only RAM disk would only ever read zeroes");
    via = strcmp(via_name, "auto") != 0 ? via_find(via_name)
          : via_kmod.available()        ? &via_kmod
                                        : &via_loop;
    if (!via)
        return err("--via %s: unknown way (ways: auto, kmod, loop, ublk, nbd, fuse)", via_name);
    if (!via->available())
        return err("--ram --via %s: not available on this machine", via->name);
    if (ram_id(rec.id) < 0)
        return 1;
    lock = record_lock();
    if (lock < 0)
        return 1;
    snprintf(rec.image, sizeof(rec.image), "ram:%s", rec.id);
    snprintf(rec.format, sizeof(rec.format), "ram");
    snprintf(rec.via, sizeof(rec.via), "%s", via->name);
    rec.size = size;
    if (via == &via_kmod) {
        int r = kmod_ram_start(size_text, size, &rec);

        if (r < 0)
            goto out;
        if (r == 0)
            goto save; /* the module's page store; else an older vdisk.ko: a memfd */
    }
    snprintf(name, sizeof(name), RAM_PREFIX "%s", rec.id);
    fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0) {
        err("--ram: memfd_create: %m");
        goto out;
    }
    if (ftruncate(fd, (off_t)size) < 0) {
        err("--ram %s: %m", size_text);
        goto out;
    }
    if (via == &via_loop) {
        snprintf(rec.backing, sizeof(rec.backing), "/memfd:%s", name); /* what loop shows */
        /* buffered: shmem is memory already, and punches holes on discard */
        if (loopdev_attach(fd, 0, 0, rec.backing, false, false, rec.device, sizeof(rec.device)) < 0)
            goto out;
    } else {
        /* the way opens the memfd as a raw image by its /proc name (a forked server too) */
        struct open_request req = {
            .image = path,
            .format = "raw",
            .format_stated = true,
            .caps = VDISK_CAP_THREAD_SAFE | VDISK_CAP_LINEAR,
            /* buffered: shmem is memory already (direct measured no better) */
            .direct = false,
            .size = size};

        snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)getpid(), fd);
        if (via->start(&req, &rec) < 0)
            goto out;
    }
save:
    if (record_save(&rec) < 0) {
        if (fd >= 0)
            close(fd);
        fd = -1;
        via->stop(&rec);
        goto out;
    }
    printf("%s\n", rec.device);
    status = 0;
out:
    if (fd >= 0)
        close(fd); /* the loop device holds the only reference now */
    record_unlock(lock);
    return status;
}

int ram_info(const struct disk_record *rec, bool json)
{
    long long used = strcmp(rec->via, "kmod") == 0 ? kmod_ram_bytes(rec->device) : -1;

    if (json) {
        printf("{\"image\": ");
        json_string(stdout, rec->image);
        printf(", \"format\": \"ram\", \"ram\": true, \"virtual-size\": %" PRIu64 ", \"device\": ",
               rec->size);
        json_string(stdout, rec->device);
        printf(", \"via\": ");
        json_string(stdout, rec->via);
        printf(", \"id\": ");
        json_string(stdout, rec->id);
        if (used >= 0)
            printf(", \"memory-used\": %lld", used);
        printf(", \"read-only\": false}\n");
        return 0;
    }
    printf("image: %s\nformat: ram (a RAM disk: its content is lost on close; vdisk save keeps "
           "it)\nvirtual size: %" PRIu64 "\ndevice: %s\nvia: %s\nid: %s\nread-only: no\n",
           rec->image, rec->size, rec->device, rec->via, rec->id);
    if (used >= 0)
        printf("memory used: %lld (vdisk.ko's page store)\n", used);
    return 0;
}

int cmd_save(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *fmt = NULL, *options = NULL;
    struct disk_record rec;
    char *cargv[10];
    int c, n = 0, r, fd;

    while ((c = getopt_long(argc, argv, "O:o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'O':
            fmt = optarg;
            break;
        case 'o':
            options = optarg;
            break;
        case 'h':
            fputs(command_help("save"), stdout);
            return 0;
        default:
            print_usage(stderr, "save");
            return 2;
        }
    }
    if (argc - optind != 2 || !fmt) {
        print_usage(stderr, "save");
        return 2;
    }
    r = find_record(argv[optind], &rec);
    if (r < 0)
        return 1;
    if (r == 0 || strcmp(rec.format, "ram") != 0)
        return err("%s: not an open RAM disk (see vdisk list); vdisk convert copies images",
                   argv[optind]);
    if (!via_find(rec.via) || !via_find(rec.via)->alive(&rec))
        return err("%s: RAM disk %s is no longer served (its memory is gone)", rec.device, rec.id);
    fd = open(rec.device, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err("%s: %m", rec.device);
    fsync(fd); /* what a file system wrote through the device's cache, before reading */
    close(fd);
    /* the copy engine of convert: zero blocks are not written, holes stay holes */
    cargv[n++] = "convert";
    cargv[n++] = "-f";
    cargv[n++] = "raw";
    cargv[n++] = "-O";
    cargv[n++] = (char *)fmt;
    if (options) {
        cargv[n++] = "-o";
        cargv[n++] = (char *)options;
    }
    cargv[n++] = rec.device;
    cargv[n++] = argv[optind + 1];
    cargv[n] = NULL;
    optind = 0; /* getopt starts over for convert */
    return cmd_convert(n, cargv);
}
