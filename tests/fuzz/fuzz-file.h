/* SPDX-License-Identifier: MIT */
/* The fuzz targets' image file: one per process under $TMPDIR, rewritten for each input. */
#ifndef VDISK_FUZZ_FILE_H
#define VDISK_FUZZ_FILE_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char fuzz_path[4096];

/* Remove the file at exit: tmpfs is memory, and no trap of the caller cleans /dev/shm. */
static void fuzz_file_remove(void)
{
    unlink(fuzz_path);
}

/* The file's path, holding DATA (aborts on failure: the harness is broken, not the image). */
static const char *fuzz_file(const uint8_t *data, size_t size)
{
    char *path = fuzz_path;
    int fd;

    if (!path[0]) { /* a file of its own: concurrent fuzz runs must not share or delete each
                       other's. On tmpfs (FUZZ_TMPDIR, else /dev/shm, else $TMPDIR): truncating
                       and syncing a disk file per input made the image targets 10x slower */
        const char *dir = getenv("FUZZ_TMPDIR");

        if (!dir)
            dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        snprintf(path, sizeof(fuzz_path), "%s/vdisk-fuzz-XXXXXX", dir ? dir : "/tmp");
        fd = mkstemp(path);
        if (fd < 0)
            abort();
        close(fd);
        atexit(fuzz_file_remove);
    }
    fd = open(path, O_WRONLY | O_TRUNC);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        abort();
    close(fd);
    return path;
}

#endif
