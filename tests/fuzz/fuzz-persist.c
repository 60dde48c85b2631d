/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the utility's own files, which a person may edit or a
 * crash may leave half written: the table of persistent disks
 * ($VDISK_CONF_DIR/disks) and an open disk's record ($VDISK_RUN_DIR/ID.rec),
 * both parsed from the fuzzed bytes. Any crash or sanitizer report is a bug.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "persist.h"
#include "vdisk.h"

#define ID "0123456789abcdef"

/* The utility's message function, which the parsers call (main.c has it). */
int err(const char *fmt, ...)
{
    (void)fmt;
    return 1;
}

/* Write DATA to DIR/NAME. */
static void put(const char *dir, const char *name, const uint8_t *data, size_t size)
{
    char path[4200];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        abort();
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dir[4096];
    struct persist_entry *all;
    struct disk_record rec;
    size_t n;

    if (!dir[0]) {
        snprintf(dir, sizeof(dir), "%s/vdisk-fuzz-conf-XXXXXX",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(dir))
            abort();
        setenv("VDISK_CONF_DIR", dir, 1);
        setenv("VDISK_RUN_DIR", dir, 1);
    }
    put(dir, "disks", data, size);
    if (persist_load(&all, &n) == 0)
        free(all);
    put(dir, ID ".rec", data, size);
    record_load(ID, &rec);
    return 0;
}
