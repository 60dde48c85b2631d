/* SPDX-License-Identifier: MIT */
/*
 * The image API: finds the format, checks every request against the image's
 * size and mode, and serialises formats that are not thread safe.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk/vdisk.h"
#include "error.h"
#include "format.h"
#include "format/foreign.h"

/* Every format, most specific probe first; raw last (it matches anything). */
static const struct vdisk_format *const formats[] = {
    &vdisk_format_iso,
    &vdisk_format_qcow2,
    &vdisk_format_raw,
};
#define N_FORMATS (sizeof(formats) / sizeof(formats[0]))

/* The largest image any format may describe: off_t must hold every offset. */
#define VDISK_MAX_SIZE ((uint64_t)INT64_MAX)

const struct vdisk_format *vdisk_format_find(const char *name)
{
    for (size_t i = 0; i < N_FORMATS; i++)
        if (strcmp(formats[i]->name, name) == 0)
            return formats[i];
    return NULL;
}

const char *const *vdisk_formats(void)
{
    static const char *names[N_FORMATS + 1];

    for (size_t i = 0; i < N_FORMATS; i++)
        names[i] = formats[i]->name;
    return names;
}

/* Format of an open file, by the best probe score. */
static int probe_file(struct vdisk_file *file, const struct vdisk_format **fmtp)
{
    enum { HEAD = 65536 };
    uint8_t *head = NULL, tail[512] = {0};
    uint64_t size;
    int best = -1, r;

    r = vdisk_file_get_size(file, &size);
    if (r < 0)
        return r;
    head = calloc(1, HEAD);
    if (!head)
        return vdisk_error(ENOMEM, "%s: out of memory", file->path);
    r = vdisk_file_pread(file, head, HEAD, 0);
    if (r == 0 && size >= sizeof(tail))
        r = vdisk_file_pread(file, tail, sizeof(tail), size - sizeof(tail));
    if (r < 0)
        goto out;
    for (size_t i = 0; i < N_FORMATS; i++) {
        int score = formats[i]->probe(head, size < HEAD ? size : HEAD, tail, size);

        if (score > best) {
            best = score;
            *fmtp = formats[i];
        }
    }
    if (best <= 1) { /* only raw said yes: never serve a foreign container as raw */
        const struct vdisk_foreign *foreign =
            vdisk_foreign_probe(head, size < HEAD ? size : HEAD, tail, size);

        if (foreign)
            r = vdisk_foreign_refuse(file->path, foreign, false);
    }
out:
    free(head);
    return r;
}

int vdisk_probe(const char *path, const char **format)
{
    const struct vdisk_format *fmt = NULL;
    struct vdisk_file *file;
    int r;

    vdisk_error_clear();
    r = vdisk_file_open(path, VDISK_FILE_RDONLY, &file);
    if (r < 0)
        return r;
    r = probe_file(file, &fmt);
    vdisk_file_close(file);
    if (r == 0)
        *format = fmt->name;
    return r;
}

int vdisk_create(const char *path, const char *format, uint64_t size, const char *options)
{
    const struct vdisk_format *fmt = vdisk_format_find(format ? format : "raw");
    struct vdisk_options opts;
    struct vdisk_file *file;
    int r;

    vdisk_error_clear();
    if (!fmt && vdisk_foreign_find(format))
        return vdisk_foreign_refuse(path, vdisk_foreign_find(format), true);
    if (!fmt)
        return vdisk_error(EINVAL, "unknown image format '%s'", format);
    if (!fmt->create)
        return vdisk_error(ENOTSUP, "format %s is read-only: cannot create %s", fmt->name, path);
    if (size > VDISK_MAX_SIZE)
        return vdisk_error(EFBIG, "%s: size %llu bytes is too large", path,
                           (unsigned long long)size);
    r = vdisk_options_parse(options, fmt->create_options, fmt->name, &opts);
    if (r < 0)
        return r;
    /* size 0 with a backing file: the format takes the backing file's size */
    if (size == 0 && !vdisk_options_get(&opts, "backing_file")) {
        r = vdisk_error(EINVAL, "%s: size must be greater than zero", path);
        goto out_opts;
    }
    r = vdisk_file_open(path, VDISK_FILE_CREATE, &file);
    if (r < 0)
        goto out_opts;
    r = fmt->create(file, size, &opts);
    if (r == 0)
        r = vdisk_file_flush(file);
    if (r < 0)
        unlink(path); /* nothing half-made is left behind */
    vdisk_file_close(file);
out_opts:
    vdisk_options_free(&opts);
    return r;
}

int vdisk_open(const char *path, const char *format, unsigned flags, struct vdisk_image **imgp)
{
    unsigned file_flags = 0;
    struct vdisk_image *img;
    int r;

    vdisk_error_clear();
    img = calloc(1, sizeof(*img));
    if (!img)
        return vdisk_error(ENOMEM, "%s: out of memory", path);
    img->flags = flags;
    img->read_only = flags & VDISK_OPEN_RDONLY;
    if (format) {
        img->fmt = vdisk_format_find(format);
        if (!img->fmt && vdisk_foreign_find(format)) {
            r = vdisk_foreign_refuse(path, vdisk_foreign_find(format), false);
            goto err_free;
        }
        if (!img->fmt) {
            r = vdisk_error(EINVAL, "%s: unknown image format '%s'", path, format);
            goto err_free;
        }
        if (img->fmt->flags & VDISK_FORMAT_READ_ONLY)
            img->read_only = true;
    }
    img->path = strdup(path);
    if (!img->path) {
        r = vdisk_error(ENOMEM, "%s: out of memory", path);
        goto err_free;
    }
    pthread_mutex_init(&img->lock, NULL);

    if (img->read_only)
        file_flags |= VDISK_FILE_RDONLY;
    if (flags & VDISK_OPEN_DIRECT)
        file_flags |= VDISK_FILE_DIRECT;
    if (flags & VDISK_OPEN_UNSAFE)
        file_flags |= VDISK_FILE_UNSAFE;
    r = vdisk_file_open(path, file_flags, &img->file);
    if (r < 0)
        goto err_free;
    if (!img->fmt) {
        r = probe_file(img->file, &img->fmt);
        if (r < 0)
            goto err_file;
        if (img->fmt->flags & VDISK_FORMAT_READ_ONLY && !img->read_only) {
            /* reopen read-only: the format cannot be written */
            vdisk_file_close(img->file);
            img->file = NULL;
            img->read_only = true;
            r = vdisk_file_open(path, file_flags | VDISK_FILE_RDONLY, &img->file);
            if (r < 0)
                goto err_free;
        }
    }
    if (!(flags & VDISK_OPEN_NOLOCK)) {
        r = vdisk_file_lock(img->file, !img->read_only);
        if (r < 0)
            goto err_file;
    }
    r = img->fmt->open(img);
    if (r < 0)
        goto err_file;
    if (img->size > VDISK_MAX_SIZE) {
        r = vdisk_error(EFBIG, "%s: virtual size %llu is too large", path,
                        (unsigned long long)img->size);
        img->fmt->close(img);
        goto err_file;
    }
    *imgp = img;
    return 0;

err_file:
    vdisk_file_close(img->file);
err_free:
    free(img->path);
    free(img);
    return r;
}

int vdisk_close(struct vdisk_image *img)
{
    int r = 0;

    if (!img)
        return 0;
    vdisk_error_clear();
    if (!img->read_only)
        r = vdisk_flush(img);
    img->fmt->close(img);
    vdisk_file_close(img->file);
    pthread_mutex_destroy(&img->lock);
    free(img->path);
    free(img);
    return r;
}

uint64_t vdisk_get_size(const struct vdisk_image *img)
{
    return img->size;
}

bool vdisk_is_read_only(const struct vdisk_image *img)
{
    return img->read_only;
}

int vdisk_get_raw_fd(struct vdisk_image *img)
{
    if (img->fmt != &vdisk_format_raw && img->fmt != &vdisk_format_iso)
        return vdisk_error(ENOTSUP, "%s: a %s image has no raw file to hand over", img->path,
                           img->fmt->name);
    return img->file->fd_buffered;
}

/* Take the image lock for formats that need it. */
static void enter(struct vdisk_image *img)
{
    if (!(img->fmt->flags & VDISK_FORMAT_THREAD_SAFE))
        pthread_mutex_lock(&img->lock);
}

static void leave(struct vdisk_image *img)
{
    if (!(img->fmt->flags & VDISK_FORMAT_THREAD_SAFE))
        pthread_mutex_unlock(&img->lock);
}

/* Is [OFF, OFF+LEN) inside the image, for a request named WHAT? */
int vdisk_check_range(struct vdisk_image *img, const char *what, uint64_t off, uint64_t len,
                      bool write)
{
    if (write && img->read_only)
        return vdisk_error(EROFS, "%s: %s: image is open read-only", img->path, what);
    if (off > img->size || len > img->size - off)
        return vdisk_error(ENOSPC, "%s: %s of %llu bytes at %llu is past the end (%llu bytes)",
                           img->path, what, (unsigned long long)len, (unsigned long long)off,
                           (unsigned long long)img->size);
    return 0;
}

int vdisk_get_info(struct vdisk_image *img, struct vdisk_info *info)
{
    int r;

    vdisk_error_clear();
    memset(info, 0, sizeof(*info));
    info->format = img->fmt->name;
    info->path = img->path;
    info->virtual_size = img->size;
    info->read_only = img->read_only;
    info->direct = img->file->direct;
    info->dirty = img->dirty_at_open;
    r = vdisk_file_get_size(img->file, &info->file_size);
    if (r == 0)
        r = vdisk_file_allocated(img->file, &info->allocated_bytes);
    if (r == 0 && img->fmt->get_info) {
        enter(img);
        r = img->fmt->get_info(img, info);
        leave(img);
    }
    return r;
}

int vdisk_read(struct vdisk_image *img, void *buf, size_t len, uint64_t offset)
{
    int r = vdisk_check_range(img, "read", offset, len, false);

    if (r < 0 || len == 0)
        return r;
    enter(img);
    r = img->fmt->read(img, buf, len, offset);
    leave(img);
    return r;
}

int vdisk_write(struct vdisk_image *img, const void *buf, size_t len, uint64_t offset,
                unsigned flags)
{
    int r = vdisk_check_range(img, "write", offset, len, true);

    if (r < 0 || len == 0)
        return r;
    enter(img);
    r = img->fmt->write(img, buf, len, offset, flags);
    leave(img);
    return r;
}

int vdisk_flush(struct vdisk_image *img)
{
    int r;

    if (img->read_only)
        return 0;
    enter(img);
    r = img->fmt->flush(img);
    leave(img);
    return r;
}

int vdisk_discard(struct vdisk_image *img, uint64_t offset, uint64_t len)
{
    int r = vdisk_check_range(img, "discard", offset, len, true);

    if (r < 0 || len == 0 || !img->fmt->discard)
        return r;
    enter(img);
    r = img->fmt->discard(img, offset, len);
    leave(img);
    return r;
}

/* Write zero buffers, for formats that cannot do better. */
static int write_zero_buffers(struct vdisk_image *img, uint64_t off, uint64_t len, unsigned flags)
{
    enum { CHUNK = 1 << 20 };
    void *zero = calloc(1, CHUNK);
    int r = 0;

    if (!zero)
        return vdisk_error(ENOMEM, "%s: out of memory", img->path);
    while (len > 0 && r == 0) {
        size_t n = len < CHUNK ? len : CHUNK;

        r = img->fmt->write(img, zero, n, off, flags & VDISK_WRITE_FUA);
        off += n;
        len -= n;
    }
    free(zero);
    return r;
}

int vdisk_write_zeroes(struct vdisk_image *img, uint64_t offset, uint64_t len, unsigned flags)
{
    int r = vdisk_check_range(img, "write zeroes", offset, len, true);

    if (r < 0 || len == 0)
        return r;
    enter(img);
    r = -ENOTSUP;
    if (img->fmt->write_zeroes)
        r = img->fmt->write_zeroes(img, offset, len, flags);
    if (r == -ENOTSUP || r == -EOPNOTSUPP) {
        if (flags & VDISK_ZERO_NO_FALLBACK)
            r = vdisk_error(ENOTSUP, "%s: fast zeroing is not supported", img->path);
        else
            r = write_zero_buffers(img, offset, len, flags);
    }
    leave(img);
    return r;
}

int vdisk_block_status(struct vdisk_image *img, uint64_t offset, uint64_t len,
                       struct vdisk_extent *ext)
{
    int r = vdisk_check_range(img, "block status", offset, len, false);

    if (r < 0)
        return r;
    if (len == 0)
        return vdisk_error(EINVAL, "%s: block status of 0 bytes", img->path);
    ext->offset = offset;
    ext->length = len;
    ext->flags = 0;
    if (!img->fmt->block_status)
        return 0;
    enter(img);
    r = img->fmt->block_status(img, offset, len, ext);
    leave(img);
    if (r == 0 && (ext->length == 0 || ext->length > len))
        return vdisk_error(EIO, "%s: format %s returned a bad extent", img->path, img->fmt->name);
    return r;
}

int vdisk_check(struct vdisk_image *img, unsigned flags, struct vdisk_check_result *res)
{
    int r;

    vdisk_error_clear();
    memset(res, 0, sizeof(*res));
    if (!img->fmt->check)
        return vdisk_error(ENOTSUP, "%s: format %s has no metadata to check", img->path,
                           img->fmt->name);
    if ((flags & (VDISK_CHECK_REPAIR_LEAKS | VDISK_CHECK_REPAIR_ALL)) && img->read_only)
        return vdisk_error(EROFS, "%s: cannot repair an image open read-only", img->path);
    enter(img);
    r = img->fmt->check(img, flags, res);
    leave(img);
    return r;
}
