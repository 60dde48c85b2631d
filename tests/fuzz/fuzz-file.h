/* SPDX-License-Identifier: MIT */
/* The fuzz targets' image file: one per process under $TMPDIR, rewritten for each input. */
#ifndef VDISK_FUZZ_FILE_H
#define VDISK_FUZZ_FILE_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char fuzz_path[4096];

/*
 * Where stderr is /dev/null (long-run and ci pass -close_fd_mask=2), buffer it
 * fully: vdisk_check prints a line per damaged table entry, and one write()
 * each to /dev/null was a fifth of fuzz-vmdk's time. libFuzzer's own output
 * goes elsewhere then, and it flushes each message anyway.
 */
static void fuzz_quiet_stderr(void)
{
    static char buf[1 << 16];
    struct stat a, b;

    if (fstat(2, &a) == 0 && stat("/dev/null", &b) == 0 && S_ISCHR(a.st_mode) &&
        a.st_rdev == b.st_rdev)
        setvbuf(stderr, buf, _IOFBF, sizeof(buf));
}

/* Remove the file at exit: tmpfs is memory, and no trap of the caller cleans /dev/shm. */
static void fuzz_file_remove(void)
{
    unlink(fuzz_path);
}

/* The file's path, made on first use (aborts on failure: the harness is broken, not the image). */
static const char *fuzz_file_path(void)
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
        fuzz_quiet_stderr();
    }
    return path;
}

/* The file's path, holding DATA. */
static inline const char *fuzz_file(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file_path();
    int fd = open(path, O_WRONLY | O_TRUNC);

    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        abort();
    close(fd);
    return path;
}

/*
 * The file's path, holding a sparse image that DATA describes: byte 0 is the
 * file's size in MiB (0: up to the last byte written, rounded up to a MiB),
 * then records {u8 MiB, u8 4 KiB block, u16 little-endian LEN, LEN bytes},
 * each written at MiB * 1 MiB + block * 4 KiB. For formats whose structures
 * sit at MiB offsets (VHDX): a few KiB of input make an image of many MiB,
 * so libFuzzer hashes and mutates KiBs, not MiBs, per input.
 * tests/fuzz/sparse-encode turns an image into such an input.
 */
static inline const char *fuzz_sparse_file(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file_path();
    uint64_t end = 0, file_size = size ? (uint64_t)data[0] << 20 : 0;
    int fd = open(path, O_WRONLY | O_TRUNC);

    if (fd < 0)
        abort();
    if (size) {
        data++;
        size--;
    }
    while (size >= 4) {
        uint64_t off = (uint64_t)data[0] << 20 | (uint64_t)data[1] << 12;
        size_t len = data[2] | (size_t)data[3] << 8;

        data += 4;
        size -= 4;
        if (len > size)
            len = size;
        if (pwrite(fd, data, len, (off_t)off) != (ssize_t)len)
            abort();
        if (off + len > end)
            end = off + len;
        data += len;
        size -= len;
    }
    if (!file_size)
        file_size = (end + (1 << 20) - 1) & ~(uint64_t)((1 << 20) - 1);
    if (ftruncate(fd, (off_t)file_size) < 0)
        abort();
    close(fd);
    return path;
}

#endif
