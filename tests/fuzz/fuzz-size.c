/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the size parser (vdisk_parse_size, "1.5G", "512K", "4TiB"),
 * with a bare unit of MiB (the utility's) and of bytes (the options'). A size
 * it accepts must be a whole number of bytes that the parser gives again from
 * its exact decimal form. Any crash or sanitizer report is a bug.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "size.h"
#include "vdisk/vdisk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[256], again[32];
    uint64_t bytes, back;

    if (size >= sizeof(text))
        return 0;
    memcpy(text, data, size);
    text[size] = 0;
    if (vdisk_parse_size(text, &bytes) == 0) {
        snprintf(again, sizeof(again), "%" PRIu64 "B", bytes);
        if (vdisk_parse_size(again, &back) != 0 || back != bytes)
            abort(); /* "NB" must parse as N bytes */
    }
    vdisk_parse_size_unit(text, 1, &bytes);
    vdisk_parse_size_unit(text, 512, &bytes);
    return 0;
}
