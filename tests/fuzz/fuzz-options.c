/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: "key=value,..." option strings. The generic parser with
 * its size and on/off getters on every key, then the text given as creation
 * options to a format (the first byte picks it), which checks each value its
 * own way (cluster sizes, subformats, backing files, ciphers). Any crash,
 * leak or sanitizer report is a bug; errors are expected.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "options.h"
#include "vdisk/vdisk.h"

static const char *const keys[] = {"size",         "cluster_size", "subformat", "compat", "on",
                                   "backing_file", "block_size",   "x",         NULL};
static const char *const formats[] = {"raw", "qcow2", "vpc", "vhdx", "vmdk", "vdi", "luks"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[4096];
    struct vdisk_options o;
    uint64_t v;
    bool b;
    char *text;

    if (size < 1 || size > 4096)
        return 0;
    if (!path[0])
        snprintf(path, sizeof(path), "%s/vdisk-fuzz-opt-%d",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    text = malloc(size);
    if (!text)
        abort();
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    if (vdisk_options_parse(text, keys, "fuzz", &o) == 0) {
        for (int i = 0; i < o.count; i++) {
            vdisk_options_get_size(&o, o.key[i], 0, &v);
            vdisk_options_get_bool(&o, o.key[i], false, &b);
        }
        vdisk_options_free(&o);
    }
    /* a cheap creation only: a small image, and no LUKS key derivation to time */
    if (!strstr(text, "iter") && !strstr(text, "key")) {
        unlink(path);
        vdisk_create(path, formats[data[0] % (sizeof(formats) / sizeof(*formats))], 1 << 20, text);
        unlink(path);
    }
    free(text);
    return 0;
}
