/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the VMDK descriptor parser alone (text: CID, parentCID,
 * createType, extent lines, ddb keys), on the raw input. Any crash, leak or
 * sanitizer report is a bug; errors are expected.
 */
#include <stdint.h>
#include <stdlib.h>

#include "format/vmdk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vmdk_desc d;

    if (vmdk_desc_parse("fuzz", (const char *)data, size, &d) == 0)
        vmdk_desc_free(&d);
    return 0;
}
