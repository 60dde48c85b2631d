/* SPDX-License-Identifier: MIT */
/*
 * raw (and iso): the image file is the disk, byte for byte (VDISK_CAP_LINEAR).
 * Sparse on create; discard punches holes; every range maps to the file, so
 * the image layer does all reads and writes itself; the allocation map comes
 * from the file's holes (node.c).
 */
#include <errno.h>
#include <string.h>

#include "../error.h"
#include "../format.h"

int raw_resize(struct vdisk_node *node, uint64_t size, unsigned flags);

static const char *const raw_create_options[] = {"preallocation", NULL};

/* Anything can be raw; every other format outbids it. */
static int raw_probe(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t file_size)
{
    (void)head, (void)head_len, (void)tail, (void)file_size;
    return 1;
}

/* Set the size; preallocation=off (sparse, the default), falloc or full. */
static int raw_create(struct vdisk_node *node, uint64_t size, const struct vdisk_options *opts)
{
    const char *prealloc = vdisk_options_get(opts, "preallocation");
    int r = vdisk_file_truncate(node->file, size);

    if (r < 0 || !prealloc || strcmp(prealloc, "off") == 0)
        return r;
    if (strcmp(prealloc, "falloc") == 0 || strcmp(prealloc, "full") == 0)
        return vdisk_file_preallocate(node->file, 0, size);
    return vdisk_error(EINVAL, "%s: preallocation must be off, falloc or full, not '%s'",
                       node->path, prealloc);
}

static int raw_open(struct vdisk_node *node)
{
    return vdisk_file_get_size(node->file, &node->size);
}

static void raw_close(struct vdisk_node *node)
{
    (void)node;
}

/* Guest bytes are file bytes: every range maps, and always will. */
static int raw_map(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags,
                   struct vdisk_map *m)
{
    (void)flags;
    m->type = VDISK_MAP_DATA;
    m->len = len;
    m->file = node->file;
    m->host = off;
    return 0;
}

/* Only writes the image layer checks first come here (the probe window of a probed image). */
static int raw_write(struct vdisk_node *node, const void *buf, size_t len, uint64_t off,
                     unsigned flags)
{
    int r = vdisk_file_pwrite_alloc(node->file, buf, len, off);

    if (r == 0 && (flags & VDISK_WRITE_FUA))
        r = vdisk_file_flush(node->file);
    return r;
}

/* Discard is advisory: a file system that cannot punch holes keeps the data. */
static int raw_discard(struct vdisk_node *node, uint64_t off, uint64_t len)
{
    int r = vdisk_file_punch_hole(node->file, off, len);

    return (r == -EOPNOTSUPP || r == -ENOTSUP) ? 0 : r;
}

static int raw_write_zeroes(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags)
{
    int r = vdisk_file_zero_range(node->file, off, len, flags & VDISK_ZERO_MAY_UNMAP);

    if (r == 0 && (flags & VDISK_ZERO_FUA))
        r = vdisk_file_flush(node->file);
    return r;
}

const struct vdisk_format vdisk_format_raw = {
    .name = "raw",
    .flags = VDISK_FORMAT_THREAD_SAFE,
    .caps = VDISK_CAP_THREAD_SAFE | VDISK_CAP_LINEAR,
    .create_options = raw_create_options,
    .probe = raw_probe,
    .create = raw_create,
    .open = raw_open,
    .close = raw_close,
    .map = raw_map,
    .write = raw_write,
    .discard = raw_discard,
    .write_zeroes = raw_write_zeroes,
    .resize = raw_resize, /* raw-resize.c */
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
    .qemu_name = "raw", /* QEMU reads an ISO as raw */
    .flags = VDISK_FORMAT_THREAD_SAFE,
    .caps = VDISK_CAP_THREAD_SAFE | VDISK_CAP_LINEAR | VDISK_CAP_READ_ONLY,
    .probe = iso_probe,
    .open = raw_open,
    .close = raw_close,
    .map = raw_map,
};
