/* SPDX-License-Identifier: MIT */
/*
 * The libvdisk side of bench/qcow2.sh: the I/O pattern of `qemu-img bench`
 * (requests of SIZE bytes at consecutive offsets, wrapping at the end of the
 * image, DEPTH in flight) driven through the public API by DEPTH threads.
 * Usage: qcow2-bench [-w] [-t none|writeback] IMAGE COUNT DEPTH SIZE
 * Prints "N requests in S seconds: R requests/s".
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vdisk/vdisk.h"

static struct vdisk_image *img;
static atomic_ulong next;
static unsigned long count;
static size_t bsize;
static uint64_t isize;
static int writes;
static atomic_int errors;

static void *run(void *arg)
{
    void *buf;
    unsigned long i;

    (void)arg;
    if (posix_memalign(&buf, 4096, bsize))
        return NULL;
    memset(buf, 0xab, bsize);
    while ((i = atomic_fetch_add(&next, 1)) < count) {
        uint64_t off = (i * bsize) % (isize - isize % bsize);
        int r = writes ? vdisk_write(img, buf, bsize, off, 0) : vdisk_read(img, buf, bsize, off);

        if (r < 0)
            atomic_fetch_add(&errors, 1);
    }
    free(buf);
    return NULL;
}

int main(int argc, char **argv)
{
    unsigned flags = VDISK_OPEN_DIRECT;
    struct timespec a, b;
    pthread_t *th;
    int opt, depth, r;
    double secs;

    while ((opt = getopt(argc, argv, "wt:")) != -1) {
        if (opt == 'w')
            writes = 1;
        else if (opt == 't' && strcmp(optarg, "none"))
            flags = 0;
    }
    if (argc - optind != 4) {
        fprintf(stderr, "usage: qcow2-bench [-w] [-t none|writeback] IMAGE COUNT DEPTH SIZE\n");
        return 2;
    }
    count = strtoul(argv[optind + 1], NULL, 0);
    depth = atoi(argv[optind + 2]);
    bsize = strtoul(argv[optind + 3], NULL, 0);
    if (!writes)
        flags |= VDISK_OPEN_RDONLY;
    r = vdisk_open(argv[optind], NULL, flags, &img);
    if (r < 0) {
        fprintf(stderr, "qcow2-bench: %s\n", vdisk_last_error());
        return 1;
    }
    isize = vdisk_get_size(img);
    th = calloc(depth, sizeof(*th));
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < depth; i++)
        pthread_create(&th[i], NULL, run, NULL);
    for (int i = 0; i < depth; i++)
        pthread_join(th[i], NULL);
    if (writes)
        vdisk_flush(img);
    clock_gettime(CLOCK_MONOTONIC, &b);
    secs = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    printf("%lu requests in %.3f seconds: %.0f requests/s%s\n", count, secs, count / secs,
           errors ? " (with errors)" : "");
    vdisk_close(img);
    return errors != 0;
}
