/* SPDX-License-Identifier: MIT */
/*
 * The backing file of an image: whole-buffer pread/pwrite, flush, punch hole,
 * zero range, SEEK_DATA/SEEK_HOLE and QEMU-compatible locking. With O_DIRECT,
 * unaligned requests go through a second, buffered descriptor; the kernel
 * keeps the two coherent (direct I/O writes back and invalidates the range).
 */
#ifndef VDISK_IO_FILE_H
#define VDISK_IO_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vdisk_file {
    int fd;          /* O_DIRECT when direct */
    int fd_buffered; /* same file without O_DIRECT, or fd */
    bool direct;
    bool read_only;
    bool is_block_device;
    bool unsafe;    /* flush is a no-op (cache=unsafe) */
    unsigned align; /* O_DIRECT alignment of offsets, lengths and buffers */
    char *path;
    bool flush_failed; /* a flush failed: the data it covered may be lost; every later one fails */
    int rec_id;        /* tests: id in the I/O record log (record.h), 0 when not recorded */
};

#define VDISK_FILE_RDONLY (1u << 0)
#define VDISK_FILE_DIRECT (1u << 1)
#define VDISK_FILE_CREATE (1u << 2) /* O_CREAT | O_EXCL */
#define VDISK_FILE_UNSAFE (1u << 3) /* never wait for the disk: flush does nothing */

int vdisk_file_open(const char *path, unsigned flags, struct vdisk_file **filep);
void vdisk_file_close(struct vdisk_file *f);

/* Full reads; the part past end of file reads as zeroes. */
int vdisk_file_pread(struct vdisk_file *f, void *buf, size_t len, uint64_t off);
int vdisk_file_pwrite(struct vdisk_file *f, const void *buf, size_t len, uint64_t off);
/*
 * A large buffered write that may land in a hole: allocate the range first, in
 * one go (ext4 then skips its block-by-block delayed allocation: a fifth less
 * CPU for a 1 MiB write), then write it.
 */
#define VDISK_FILE_ALLOC_MIN (1u << 20)
int vdisk_file_pwrite_alloc(struct vdisk_file *f, const void *buf, size_t len, uint64_t off);
int vdisk_file_flush(struct vdisk_file *f);
int vdisk_file_get_size(struct vdisk_file *f, uint64_t *size);
int vdisk_file_truncate(struct vdisk_file *f, uint64_t size);
/* Allocated bytes on disk (st_blocks * 512). */
int vdisk_file_allocated(struct vdisk_file *f, uint64_t *bytes);
int vdisk_file_preallocate(struct vdisk_file *f, uint64_t off, uint64_t len);
/* Deallocate; reads as zeroes after. -EOPNOTSUPP where the file system can't. */
int vdisk_file_punch_hole(struct vdisk_file *f, uint64_t off, uint64_t len);
/* Zero without writing buffers, where the file system can. */
int vdisk_file_zero_range(struct vdisk_file *f, uint64_t off, uint64_t len, bool may_unmap);
/* Zero [OFF, OFF+LEN) without writing buffers, allocated, growing the file to cover it. */
int vdisk_file_zero_alloc(struct vdisk_file *f, uint64_t off, uint64_t len);
/* Data/hole run at OFF: *is_data and the run's end (at most LIMIT). */
int vdisk_file_extent(struct vdisk_file *f, uint64_t off, uint64_t limit, bool *is_data,
                      uint64_t *end);

/*
 * Lock as QEMU does (OFD byte locks at 100+perm and 200+unshared perm), so
 * that QEMU and vdisk see each other's opens. Writers exclude other writers
 * and readers; readers exclude writers.
 */
int vdisk_file_lock(struct vdisk_file *f, bool write);

#endif
