/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for VMDK: the descriptor parser on the raw input, then the
 * input opened as a VMDK image read-only (a sparse, stream or COWD extent, or
 * a descriptor whose extents can only be files in the fuzz directory: the
 * path rule), reads at a few places, block status and a check. Any crash,
 * hang or sanitizer report is a bug; errors are expected.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk/vdisk.h"
#include "fuzz-file.h"
#include "format/vmdk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char buf[256 * 1024];
    struct vdisk_check_result res;
    struct vdisk_extent ext;
    struct vdisk_image *img;
    struct vmdk_desc d;
    uint64_t vsize;
    const char *path;

    if (vmdk_desc_parse("fuzz", (const char *)data, size, &d) == 0)
        vmdk_desc_free(&d);
    path = fuzz_file(data, size);
    if (vdisk_open(path, "vmdk", VDISK_OPEN_RDONLY | VDISK_OPEN_NOLOCK, NULL, &img) < 0)
        return 0;
    vsize = vdisk_get_size(img);
    if (vsize) {
        uint64_t offs[3] = {0, vsize / 2, vsize - 1};

        for (int i = 0; i < 3; i++) {
            size_t n = vsize - offs[i] < sizeof(buf) ? vsize - offs[i] : sizeof(buf);

            vdisk_read(img, buf, n, offs[i]);
            vdisk_block_status(img, offs[i], n, &ext);
        }
    }
    vdisk_check(img, 0, &res);
    vdisk_close(img);
    return 0;
}
