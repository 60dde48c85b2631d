/* SPDX-License-Identifier: MIT */
/* The fuzz targets' image file: one per process under $TMPDIR, rewritten for each input. */
#ifndef VDISK_FUZZ_FILE_H
#define VDISK_FUZZ_FILE_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The file's path, holding DATA (aborts on failure: the harness is broken, not the image). */
static const char *fuzz_file(const uint8_t *data, size_t size)
{
    static char path[4096];
    int fd;

    if (!path[0]) { /* under $TMPDIR: concurrent fuzz runs must not share or delete each other's
                       file */
        snprintf(path, sizeof(path), "%s/vdisk-fuzz-XXXXXX",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        fd = mkstemp(path);
        if (fd < 0)
            abort();
        close(fd);
    }
    fd = open(path, O_WRONLY | O_TRUNC);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        abort();
    close(fd);
    return path;
}

#endif
