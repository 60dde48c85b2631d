/* SPDX-License-Identifier: MIT */
/*
 * The public image API (vdisk.h): create and open images, check every request
 * against the image's size and mode, and hand it to the top node of the
 * image's graph (node.c).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk/vdisk.h"
#include "error.h"
#include "format/foreign.h"
#include "node.h"

int vdisk_create(const char *path, const char *format, uint64_t size, const char *options)
{
    const struct vdisk_format *fmt = vdisk_format_find(format ? format : "raw");
    struct vdisk_node node = {.path = (char *)path};
    struct vdisk_options opts;
    int r;

    vdisk_error_clear();
    if (!fmt && vdisk_foreign_find(format))
        return vdisk_foreign_refuse(path, vdisk_foreign_find(format), true);
    if (!fmt)
        return vdisk_error(EINVAL, "unknown image format '%s'", format);
    if (!fmt->create)
        return vdisk_error(ENOTSUP, "format %s is read-only: cannot create %s", fmt->name, path);
    if (size > (uint64_t)INT64_MAX)
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
    node.fmt = fmt;
    node.caps = fmt->caps;
    r = vdisk_file_open(path, VDISK_FILE_CREATE, &node.file);
    if (r < 0)
        goto out_opts;
    r = fmt->create(&node, size, &opts);
    if (r == 0)
        r = vdisk_file_flush(node.file);
    for (unsigned i = 0; i < node.nfiles && r == 0; i++)
        r = vdisk_file_flush(node.files[i]);
    /* an image vdisk made is its format: a guest may not make it look like another */
    if (r == 0 && (fmt->caps & VDISK_CAP_LINEAR))
        (void)probe_remember(node.file, fmt);
    for (unsigned i = 0; i < node.nfiles; i++) {
        if (r < 0)
            unlink(node.files[i]->path); /* nothing half-made is left behind */
        vdisk_file_close(node.files[i]);
    }
    free(node.files);
    if (r < 0)
        unlink(path);
    vdisk_file_close(node.file);
out_opts:
    vdisk_options_free(&opts);
    return r;
}

/* The list of every file IMG's graph reads, top first. */
int image_list_files(struct vdisk_image *img)
{
    size_t n = 0, i = 0;

    for (struct vdisk_node *v = img->root; v; v = v->backing)
        n += 1 + v->nfiles;
    img->files = calloc(n + 1, sizeof(*img->files));
    if (!img->files)
        return vdisk_error(ENOMEM, "%s: out of memory", img->root->path);
    for (struct vdisk_node *v = img->root; v; v = v->backing) {
        img->files[i++] = v->file->path;
        for (unsigned k = 0; k < v->nfiles; k++)
            img->files[i++] = v->files[k]->path;
    }
    return 0;
}

/*
 * After a writable open: remember the format of an image whose guest owns
 * the file's first bytes, so that a probe that disagrees later is refused;
 * forget it when the user stated another format on purpose.
 */
static void remember_format(struct vdisk_image *img, bool stated)
{
    struct vdisk_node *n = img->root;

    if (n->read_only)
        return;
    /* a linear_file's guest writes another file than the probed one: remembering is harmless */
    if ((n->caps & VDISK_CAP_LINEAR) && (n->linear_offset == 0 || n->linear_file)) {
        if (probe_remember(n->file, n->fmt))
            img->format_probed = false;
    } else if (stated && probe_remembered(n->file)) {
        probe_forget(n->file);
    }
}

int vdisk_open(const char *path, const char *format, unsigned flags, const char *options,
               struct vdisk_image **imgp)
{
    const struct vdisk_format *fmt = NULL;
    struct vdisk_image *img;
    int r;

    vdisk_error_clear();
    if (format) {
        fmt = vdisk_format_find(format);
        if (!fmt && vdisk_foreign_find(format))
            return vdisk_foreign_refuse(path, vdisk_foreign_find(format), false);
        if (!fmt)
            return vdisk_error(EINVAL, "%s: unknown image format '%s'", path, format);
    }
    img = calloc(1, sizeof(*img));
    if (!img)
        return vdisk_error(ENOMEM, "%s: out of memory", path);
    r = node_open(path, fmt, flags, options, NULL, &img->root);
    if (r < 0)
        goto err_free;
    img->format_probed = img->root->probed && !probe_remembered(img->root->file);
    remember_format(img, fmt != NULL);
    r = image_list_files(img);
    if (r < 0)
        goto err_root;
    *imgp = img;
    return 0;

err_root:
    node_close(img->root);
err_free:
    free(img);
    return r;
}

int vdisk_close(struct vdisk_image *img)
{
    int r = 0;

    if (!img)
        return 0;
    vdisk_error_clear();
    if (!img->root->read_only)
        r = node_flush(img->root);
    node_close(img->root);
    free(img->files);
    free(img);
    return r;
}

uint64_t vdisk_get_size(const struct vdisk_image *img)
{
    return img->root->size;
}

bool vdisk_is_read_only(const struct vdisk_image *img)
{
    return img->root->read_only;
}

int vdisk_get_linear(struct vdisk_image *img, int *fd, uint64_t *offset)
{
    struct vdisk_node *n = img->root;

    if (!(n->caps & VDISK_CAP_LINEAR))
        return vdisk_error(ENOTSUP, "%s: a %s image is not one linear range of a file", n->path,
                           n->fmt->name);
    *fd = (n->linear_file ? n->linear_file : n->file)->fd_buffered;
    *offset = n->linear_offset;
    return 0;
}

void vdisk_info_add(struct vdisk_info *info, const char *key, const char *fmt, ...)
{
    struct vdisk_info_detail *d;
    va_list ap;

    if (info->ndetails >= VDISK_INFO_DETAILS)
        return;
    d = &info->details[info->ndetails++];
    snprintf(d->key, sizeof(d->key), "%s", key);
    va_start(ap, fmt);
    vsnprintf(d->value, sizeof(d->value), fmt, ap);
    va_end(ap);
}

int vdisk_get_info(struct vdisk_image *img, struct vdisk_info *info)
{
    struct vdisk_node *n = img->root;
    int r;

    vdisk_error_clear();
    memset(info, 0, sizeof(*info));
    info->format = n->fmt->name;
    info->path = n->path;
    info->virtual_size = n->size;
    info->caps = n->caps;
    info->linear_offset = n->linear_offset;
    info->read_only = n->read_only;
    info->direct = n->file->direct;
    info->dirty = n->dirty_at_open;
    info->format_probed = img->format_probed;
    info->files = img->files;
    r = vdisk_file_get_size(n->file, &info->file_size);
    if (r == 0)
        r = vdisk_file_allocated(n->file, &info->allocated_bytes);
    if (r == 0 && n->fmt->get_info) {
        if (!(n->fmt->flags & VDISK_FORMAT_THREAD_SAFE))
            pthread_mutex_lock(&n->lock);
        r = n->fmt->get_info(n, info);
        if (!(n->fmt->flags & VDISK_FORMAT_THREAD_SAFE))
            pthread_mutex_unlock(&n->lock);
    }
    return r;
}

int vdisk_read(struct vdisk_image *img, void *buf, size_t len, uint64_t offset)
{
    int r = vdisk_check_range(img->root, "read", offset, len, false);

    if (r < 0 || len == 0)
        return r;
    return vdisk_node_read(img->root, buf, len, offset);
}

int vdisk_write(struct vdisk_image *img, const void *buf, size_t len, uint64_t offset,
                unsigned flags)
{
    int r = vdisk_check_range(img->root, "write", offset, len, true);

    if (r < 0 || len == 0)
        return r;
    return node_write(img->root, buf, len, offset, flags);
}

int vdisk_flush(struct vdisk_image *img)
{
    return node_flush(img->root);
}

int vdisk_discard(struct vdisk_image *img, uint64_t offset, uint64_t len)
{
    int r = vdisk_check_range(img->root, "discard", offset, len, true);

    if (r < 0 || len == 0)
        return r;
    return node_discard(img->root, offset, len);
}

int vdisk_write_zeroes(struct vdisk_image *img, uint64_t offset, uint64_t len, unsigned flags)
{
    int r = vdisk_check_range(img->root, "write zeroes", offset, len, true);

    if (r < 0 || len == 0)
        return r;
    return node_write_zeroes(img->root, offset, len, flags);
}

int vdisk_block_status(struct vdisk_image *img, uint64_t offset, uint64_t len,
                       struct vdisk_extent *ext)
{
    int r = vdisk_check_range(img->root, "block status", offset, len, false);

    if (r < 0)
        return r;
    if (len == 0)
        return vdisk_error(EINVAL, "%s: block status of 0 bytes", img->root->path);
    return node_block_status(img->root, offset, len, ext);
}

int vdisk_cache(struct vdisk_image *img, uint64_t offset, uint64_t len)
{
    int r = vdisk_check_range(img->root, "cache", offset, len, false);

    if (r < 0 || len == 0)
        return r;
    return node_cache(img->root, offset, len);
}

int vdisk_check(struct vdisk_image *img, unsigned flags, struct vdisk_check_result *res)
{
    struct vdisk_node *n = img->root;
    int r;

    vdisk_error_clear();
    memset(res, 0, sizeof(*res));
    if (!n->fmt->check)
        return vdisk_error(ENOTSUP, "%s: format %s has no metadata to check", n->path,
                           n->fmt->name);
    if ((flags & (VDISK_CHECK_REPAIR_LEAKS | VDISK_CHECK_REPAIR_ALL)) && n->read_only)
        return vdisk_error(EROFS, "%s: cannot repair an image open read-only", n->path);
    if (!(n->fmt->flags & VDISK_FORMAT_THREAD_SAFE))
        pthread_mutex_lock(&n->lock);
    r = n->fmt->check(n, flags, res);
    if (!(n->fmt->flags & VDISK_FORMAT_THREAD_SAFE))
        pthread_mutex_unlock(&n->lock);
    return r;
}
