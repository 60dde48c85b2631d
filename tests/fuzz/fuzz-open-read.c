/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: open a fuzzed image (qcow2, or FUZZ_FORMAT) read-only through libvdisk, read
 * from a few places (synchronously and through a vdisk_queue, whose mapped
 * reads go straight to io_uring), ask block status and run a check. Any crash, hang or
 * sanitizer report is a bug; errors are expected.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk/vdisk.h"
#include "fuzz-file.h"

#ifndef FUZZ_FORMAT /* another format: -DFUZZ_FORMAT='"vpc"' */
#define FUZZ_FORMAT "qcow2"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vdisk_image *img;
    struct vdisk_check_result res;
    struct vdisk_extent ext;
    static char buf[256 * 1024], qbuf[3][64 * 1024];
    struct vdisk_request rq[3], *done[3];
    struct vdisk_queue *q;
    uint64_t vsize;
    const char *path;

    path = fuzz_file(data, size);
    if (vdisk_open(path, FUZZ_FORMAT, VDISK_OPEN_RDONLY | VDISK_OPEN_NOLOCK, NULL, &img) < 0)
        return 0;
    vsize = vdisk_get_size(img);
    if (vsize) {
        uint64_t offs[3] = {0, vsize / 2, vsize - 1};

        for (int i = 0; i < 3; i++) {
            size_t n = vsize - offs[i] < sizeof(buf) ? vsize - offs[i] : sizeof(buf);

            vdisk_read(img, buf, n, offs[i]);
            vdisk_block_status(img, offs[i], n, &ext);
        }
        if (vdisk_queue_create(img, 3, 0, &q) == 0) {
            for (int i = 0; i < 3; i++) {
                uint64_t n = vsize - offs[i] < sizeof(qbuf[i]) ? vsize - offs[i] : sizeof(qbuf[i]);

                rq[i] = (struct vdisk_request){
                    .op = VDISK_OP_READ, .buf = qbuf[i], .offset = offs[i], .length = n};
                vdisk_queue_submit(q, &rq[i]);
            }
            while (vdisk_queue_inflight(q) > 0 && vdisk_queue_complete(q, done, 3, 1) >= 0)
                ;
            vdisk_queue_destroy(q);
        }
    }
    vdisk_check(img, 0, &res);
    vdisk_close(img);
    return 0;
}
