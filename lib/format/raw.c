/* SPDX-License-Identifier: MIT */
/*
 * raw (and iso): the image file is the disk, byte for byte. Sparse on create; discard
 * punches holes; the allocation map comes from SEEK_DATA/SEEK_HOLE.
 */
#include <errno.h>
#include <string.h>

#include "../error.h"
#include "../format.h"

static const char *const raw_create_options[] = {"preallocation", NULL};

/* Anything can be raw; every other format outbids it. */
static int raw_probe(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t file_size)
{
    (void)head, (void)head_len, (void)tail, (void)file_size;
    return 1;
}

/* Set the size; preallocation=off (sparse, the default), falloc or full. */
static int raw_create(struct vdisk_file *file, uint64_t size, const struct vdisk_options *opts)
{
    const char *prealloc = vdisk_options_get(opts, "preallocation");
    int r = vdisk_file_truncate(file, size);

    if (r < 0 || !prealloc || strcmp(prealloc, "off") == 0)
        return r;
    if (strcmp(prealloc, "falloc") == 0 || strcmp(prealloc, "full") == 0)
        return vdisk_file_preallocate(file, 0, size);
    return vdisk_error(EINVAL, "%s: preallocation must be off, falloc or full, not '%s'",
                       file->path, prealloc);
}

static int raw_open(struct vdisk_image *img)
{
    return vdisk_file_get_size(img->file, &img->size);
}

static void raw_close(struct vdisk_image *img)
{
    (void)img;
}

static int raw_read(struct vdisk_image *img, void *buf, size_t len, uint64_t off)
{
    return vdisk_file_pread(img->file, buf, len, off);
}

static int raw_write(struct vdisk_image *img, const void *buf, size_t len, uint64_t off,
                     unsigned flags)
{
    int r = vdisk_file_pwrite_alloc(img->file, buf, len, off);

    if (r == 0 && (flags & VDISK_WRITE_FUA))
        r = vdisk_file_flush(img->file);
    return r;
}

static int raw_flush(struct vdisk_image *img)
{
    return vdisk_file_flush(img->file);
}

/* Discard is advisory: a file system that cannot punch holes keeps the data. */
static int raw_discard(struct vdisk_image *img, uint64_t off, uint64_t len)
{
    int r = vdisk_file_punch_hole(img->file, off, len);

    return (r == -EOPNOTSUPP || r == -ENOTSUP) ? 0 : r;
}

static int raw_write_zeroes(struct vdisk_image *img, uint64_t off, uint64_t len, unsigned flags)
{
    int r = vdisk_file_zero_range(img->file, off, len, flags & VDISK_ZERO_MAY_UNMAP);

    if (r == 0 && (flags & VDISK_ZERO_FUA))
        r = vdisk_file_flush(img->file);
    return r;
}

static int raw_block_status(struct vdisk_image *img, uint64_t off, uint64_t len,
                            struct vdisk_extent *ext)
{
    bool data;
    uint64_t end;
    int r = vdisk_file_extent(img->file, off, off + len, &data, &end);

    if (r < 0)
        return r;
    ext->length = end - off;
    ext->flags = data ? 0 : VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO;
    return 0;
}

/* Guest bytes are file bytes: every range maps, and always will. */
static int raw_map(struct vdisk_image *img, uint64_t off, uint64_t len, bool write, unsigned flags,
                   uint64_t *host)
{
    (void)img, (void)len, (void)write, (void)flags;
    *host = off;
    return 0;
}

const struct vdisk_format vdisk_format_raw = {
    .name = "raw",
    .flags = VDISK_FORMAT_THREAD_SAFE,
    .create_options = raw_create_options,
    .probe = raw_probe,
    .create = raw_create,
    .open = raw_open,
    .close = raw_close,
    .read = raw_read,
    .write = raw_write,
    .flush = raw_flush,
    .discard = raw_discard,
    .write_zeroes = raw_write_zeroes,
    .block_status = raw_block_status,
    .map = raw_map,
};

/* iso: an ISO 9660 image is raw data that is never written. */
static int iso_probe(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t file_size)
{
    (void)tail, (void)file_size;
    /* "CD001" in the primary volume descriptor at 32 KiB + 1 */
    if (head_len >= 32769 + 5 && memcmp(head + 32769, "CD001", 5) == 0)
        return 50;
    return 0;
}

const struct vdisk_format vdisk_format_iso = {
    .name = "iso",
    .flags = VDISK_FORMAT_THREAD_SAFE | VDISK_FORMAT_READ_ONLY,
    .probe = iso_probe,
    .open = raw_open,
    .close = raw_close,
    .read = raw_read,
    .write = raw_write,
    .flush = raw_flush,
    .block_status = raw_block_status,
    .map = raw_map,
};
