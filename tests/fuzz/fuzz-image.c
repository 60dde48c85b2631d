/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for one image format (FUZZ_FORMAT, default qcow2; another:
 * -DFUZZ_FORMAT='"vpc"'): open the fuzzed image read-only through libvdisk,
 * read from a few places (synchronously and through a vdisk_queue, whose
 * mapped reads go straight to io_uring), ask block status and run a check;
 * then open it read-write (the per-process copy, never the input), write,
 * zero, discard and flush at a few places, check, close, and reopen it
 * read-only to read the written bytes back. Any crash, hang or sanitizer
 * report is a bug; errors are expected.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk/vdisk.h"
#include "fuzz-file.h"

#ifndef FUZZ_FORMAT
#define FUZZ_FORMAT "qcow2"
#endif

static char buf[256 * 1024], qbuf[3][64 * 1024];

/* LEN bytes at OFF, cut to the image's SIZE and to CAP. */
static size_t clip(uint64_t size, uint64_t off, size_t cap)
{
    return size - off < cap ? size - off : cap;
}

/* The read-only pass: reads, block status, queued reads, check. */
static void read_pass(const char *path)
{
    struct vdisk_request rq[3], *done[3];
    struct vdisk_check_result res;
    struct vdisk_image *img;
    struct vdisk_extent ext;
    struct vdisk_queue *q;
    uint64_t vsize;

    if (vdisk_open(path, FUZZ_FORMAT, VDISK_OPEN_RDONLY | VDISK_OPEN_NOLOCK, NULL, &img) < 0)
        return;
    vsize = vdisk_get_size(img);
    if (vsize) {
        uint64_t offs[3] = {0, vsize / 2, vsize - 1};

        for (int i = 0; i < 3; i++) {
            vdisk_read(img, buf, clip(vsize, offs[i], sizeof(buf)), offs[i]);
            vdisk_block_status(img, offs[i], clip(vsize, offs[i], sizeof(buf)), &ext);
        }
        if (vdisk_queue_create(img, 3, 0, &q) == 0) {
            for (int i = 0; i < 3; i++) {
                rq[i] = (struct vdisk_request){.op = VDISK_OP_READ,
                                               .buf = qbuf[i],
                                               .offset = offs[i],
                                               .length = clip(vsize, offs[i], sizeof(qbuf[i]))};
                vdisk_queue_submit(q, &rq[i]);
            }
            while (vdisk_queue_inflight(q) > 0 && vdisk_queue_complete(q, done, 3, 1) >= 0)
                ;
            vdisk_queue_destroy(q);
        }
    }
    vdisk_check(img, 0, &res);
    vdisk_close(img);
}

/* The read-write pass: writes, zeroes, discard, flush, check; then read back. */
static void write_pass(const char *path)
{
    struct vdisk_check_result res;
    struct vdisk_image *img;
    uint64_t vsize, offs[3];
    int ok[3] = {0};
    size_t n;

    if (vdisk_open(path, FUZZ_FORMAT, VDISK_OPEN_NOLOCK | VDISK_OPEN_UNSAFE, NULL, &img) < 0)
        return;
    vsize = vdisk_get_size(img);
    if (!vsize || vdisk_is_read_only(img)) {
        vdisk_close(img);
        return;
    }
    offs[0] = 0;
    offs[1] = vsize / 2 & ~511ull;
    offs[2] = vsize > 5000 ? vsize - 5000 : 0;
    for (int i = 0; i < 3; i++) {
        n = clip(vsize, offs[i], 5000);
        memset(buf, 0x5a + i, n);
        ok[i] = vdisk_write(img, buf, n, offs[i], i == 1 ? VDISK_WRITE_FUA : 0) == 0;
    }
    if (vsize > 3 * 65536) {
        vdisk_write_zeroes(img, 65536, 65536, VDISK_ZERO_MAY_UNMAP);
        vdisk_discard(img, 2 * 65536, 65536);
    }
    vdisk_flush(img);
    vdisk_check(img, 0, &res);
    if (vdisk_close(img) < 0)
        return;
    if (vdisk_open(path, FUZZ_FORMAT, VDISK_OPEN_RDONLY | VDISK_OPEN_NOLOCK, NULL, &img) < 0)
        return;
    for (int i = 0; i < 3; i++)
        if (ok[i] && vdisk_get_size(img) == vsize)
            vdisk_read(img, buf, clip(vsize, offs[i], 5000), offs[i]);
    vdisk_close(img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
#ifdef FUZZ_SPARSE /* the input describes a sparse image (fuzz-file.h) */
    const char *path = fuzz_sparse_file(data, size);
#else
    const char *path = fuzz_file(data, size);
#endif

    read_pass(path);
    write_pass(path);
    return 0;
}
