/* SPDX-License-Identifier: MIT */
/*
 * The slice filter: one range (a partition) of an open image as a disk of its
 * own. Its node's backing is the whole image; map() shifts the offset and
 * hands the child's answer on (file bytes stay file bytes), except what only
 * the child can serve (its backing, its driver), which the slice reads and
 * writes through the child. A slice of a linear image is linear.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "node.h"

struct slice {
    uint64_t start; /* the slice's byte 0 in the child */
};

/* The whole image under the slice. */
static struct vdisk_node *child(struct vdisk_node *node)
{
    return node->backing;
}

static uint64_t start(struct vdisk_node *node)
{
    return ((struct slice *)node->priv)->start;
}

static int slice_open(struct vdisk_node *node)
{
    (void)node;
    return 0;
}

static void slice_close(struct vdisk_node *node)
{
    free(node->priv);
    node->priv = NULL;
}

static int slice_map(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags,
                     struct vdisk_map *m)
{
    struct vdisk_node *c = child(node);
    int r = node_map(c, start(node) + off, len, flags, m);

    if (r < 0)
        return r;
    if (m->type == VDISK_MAP_UNALLOCATED || m->type == VDISK_MAP_OTHER) {
        /* the child's backing or driver serves it: through the child, at its offset */
        node_release(c, m);
        m->type = VDISK_MAP_OTHER;
        m->file = NULL;
        m->host = 0;
    }
    return 0;
}

static void slice_release(struct vdisk_node *node, const struct vdisk_map *m)
{
    struct vdisk_map copy = *m;

    node_release(child(node), &copy);
}

static int slice_read(struct vdisk_node *node, void *buf, size_t len, uint64_t off)
{
    return vdisk_node_read(child(node), buf, len, start(node) + off);
}

static int slice_write(struct vdisk_node *node, const void *buf, size_t len, uint64_t off,
                       unsigned flags)
{
    return node_write(child(node), buf, len, start(node) + off, flags);
}

static int slice_flush(struct vdisk_node *node)
{
    return node_flush(child(node));
}

static int slice_discard(struct vdisk_node *node, uint64_t off, uint64_t len)
{
    return node_discard(child(node), start(node) + off, len);
}

static int slice_write_zeroes(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags)
{
    return node_write_zeroes(child(node), start(node) + off, len, flags);
}

static int slice_get_info(struct vdisk_node *node, struct vdisk_info *info)
{
    struct vdisk_node *c = child(node);

    vdisk_info_add(info, "slice_of", "%s (%s)", c->path, c->fmt->name);
    vdisk_info_add(info, "slice_start", "%llu", (unsigned long long)start(node));
    return 0;
}

static const struct vdisk_format slice_format = {
    .name = "slice",
    .flags = VDISK_FORMAT_THREAD_SAFE, /* the child's node locks for itself */
    .open = slice_open,
    .close = slice_close,
    .map = slice_map,
    .release = slice_release,
    .read = slice_read,
    .write = slice_write,
    .flush = slice_flush,
    .discard = slice_discard,
    .write_zeroes = slice_write_zeroes,
    .get_info = slice_get_info,
};

int vdisk_image_slice(struct vdisk_image *img, uint64_t off, uint64_t len)
{
    struct vdisk_node *c = img->root, *n;
    struct slice *s;
    const char **files = img->files;
    int r;

    vdisk_error_clear();
    if (len == 0 || off > c->size || len > c->size - off)
        return vdisk_error(ERANGE,
                           "%s: range of %llu bytes at %llu is not inside the image (%llu "
                           "bytes)",
                           c->path, (unsigned long long)len, (unsigned long long)off,
                           (unsigned long long)c->size);
    n = calloc(1, sizeof(*n));
    s = calloc(1, sizeof(*s));
    if (!n || !s) {
        free(n);
        free(s);
        return vdisk_error(ENOMEM, "%s: out of memory", c->path);
    }
    /* its own descriptor of the image's file, for info; the data goes through the child */
    r = vdisk_file_open(c->file->path, VDISK_FILE_RDONLY, &n->file);
    if (r < 0) {
        free(n);
        free(s);
        return r;
    }
    n->path = strdup(c->path);
    n->real = NULL;
    s->start = off;
    n->priv = s;
    n->fmt = &slice_format;
    n->size = len;
    n->flags = c->flags;
    n->read_only = c->read_only;
    n->backing = c;
    n->caps = c->caps & (VDISK_CAP_THREAD_SAFE | VDISK_CAP_READ_ONLY | VDISK_CAP_LINEAR);
    if (n->caps & VDISK_CAP_LINEAR) {
        n->linear_file = c->linear_file ? c->linear_file : c->file;
        n->linear_offset = c->linear_offset + off;
    }
    pthread_mutex_init(&n->lock, NULL);
    pthread_mutex_init(&n->guard_lock, NULL);
    pthread_mutex_init(&n->pin_lock, NULL);
    pthread_cond_init(&n->pin_done, NULL);
    c->above = n;
    img->root = n;
    img->files = NULL;
    r = image_list_files(img);
    if (r < 0 || !n->path) {
        img->root = c;
        c->above = NULL;
        img->files = files;
        n->backing = NULL;
        node_close(n);
        return r < 0 ? r : vdisk_error(ENOMEM, "%s: out of memory", c->path);
    }
    free(files);
    return 0;
}
