/* SPDX-License-Identifier: MIT */
/*
 * VMDK: probe, open (descriptor, extent files, parent), the map over the
 * extents, writes, flush, close and info. A descriptor is a text file or the
 * text embedded in a monolithic sparse file; its extents are flat files,
 * zero ranges or sparse files (vmdk-sparse.c), each opened relative to the
 * descriptor. Path rule (docs/vmdk.md): an extent or parent path must be
 * relative and resolve (symlinks included) inside the descriptor's directory,
 * unless the user opens with -o extent-paths=any.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "../error.h"
#include "vmdk.h"

static const char *const vmdk_open_options[] = {"extent-paths", NULL};

/* Is the first line of text in HEAD, past blanks and comments, a descriptor's? */
static int probe_descriptor(const uint8_t *head, size_t head_len)
{
    const char *p = (const char *)head, *end = p + (head_len < 4096 ? head_len : 4096);

    while (p < end) {
        const char *nl = memchr(p, '\n', end - p), *eol = nl ? nl : end;

        if (memchr(p, '\0', eol - p))
            return 0;
        while (p < eol && (*p == ' ' || *p == '\t' || *p == '\r'))
            p++;
        if (p < eol && *p == '#') {
            for (p++; p < eol && *p == ' '; p++)
                ;
            if (eol - p >= 19 && strncasecmp(p, "disk descriptorfile", 19) == 0)
                return 100;
        } else if (eol - p >= 9 && strncmp(p, "version=", 8) == 0 && p[8] >= '1' && p[8] <= '3') {
            return 100;
        } else if (p < eol) {
            return 0;
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    return 0;
}

static int vmdk_probe(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t file_size)
{
    (void)tail, (void)file_size;
    if (head_len >= 4 && (get_le32(head) == VMDK_MAGIC || get_le32(head) == VMDK_COWD_MAGIC))
        return 100;
    if (head_len >= 16 && get_le64(head) == VMDK_SE_MAGIC && get_le64(head + 8) == VMDK_SE_VERSION)
        return 100;
    return probe_descriptor(head, head_len);
}

/*
 * The path of extent or parent NAME under the path rule; WHAT names it in
 * errors. A missing file is an error naming it.
 */
static int rule_path(struct vmdk *s, const char *what, const char *name, char **out)
{
    const char *mode = vdisk_options_get(&s->node->opts, "extent-paths");
    const char *path = s->node->path;
    char *p, *real = NULL, *copy = NULL, *dir = NULL;
    size_t dl;
    int r = 0;

    if (mode && strcmp(mode, "any") != 0 && strcmp(mode, "inside") != 0)
        return vdisk_error(EINVAL, "%s: extent-paths must be inside or any, not '%s'", path, mode);
    if (name[0] == '/' && !(mode && strcmp(mode, "any") == 0))
        return vdisk_error(EPERM,
                           "%s: %s %s: an absolute path; extent and parent paths must be "
                           "relative and stay in the descriptor's directory (open with -o "
                           "extent-paths=any to allow it)",
                           path, what, name);
    p = vdisk_node_resolve(s->node, name);
    if (!p)
        return vdisk_error(ENOMEM, "%s: out of memory", path);
    real = realpath(p, NULL);
    if (!real) {
        r = vdisk_error(errno, "%s: %s %s: %m", path, what, p);
        goto out;
    }
    if (mode && strcmp(mode, "any") == 0)
        goto out;
    copy = strdup(path);
    dir = copy ? realpath(dirname(copy), NULL) : NULL;
    if (!dir) {
        r = vdisk_error(errno ? errno : ENOMEM, "%s: cannot resolve its directory: %m", path);
        goto out;
    }
    dl = strlen(dir);
    if (strncmp(real, dir, dl) != 0 || (real[dl] != '/' && strcmp(dir, "/") != 0))
        r = vdisk_error(EPERM,
                        "%s: %s %s resolves to %s, outside the descriptor's directory %s "
                        "(open with -o extent-paths=any to allow it)",
                        path, what, name, real, dir);
out:
    free(real);
    free(copy);
    free(dir);
    if (r == 0)
        *out = p;
    else
        free(p);
    return r;
}

/* Open the file of extent X (the node's own file when it names itself). */
static int open_extent_file(struct vmdk *s, const struct vmdk_desc_extent *x,
                            struct vdisk_file **fp)
{
    char *p, *real;
    int r = rule_path(s, "extent file", x->file, &p);

    if (r < 0)
        return r;
    real = realpath(p, NULL);
    if (real && s->node->real && strcmp(real, s->node->real) == 0) {
        /* a guest writing its descriptor could point it at other files */
        r = vdisk_error(EINVAL, "%s: extent file %s is the descriptor itself", s->node->path,
                        x->file);
    } else {
        r = vdisk_node_open_file(s->node, x->file, fp);
        if (r < 0)
            r = vdisk_error_prefix(-r, "%s: extent file %s", s->node->path, x->file);
    }
    free(real);
    free(p);
    return r;
}

/* Open extent I of the descriptor at guest byte START. */
static int open_extent(struct vmdk *s, unsigned i, uint64_t start)
{
    const struct vmdk_desc_extent *x = &s->desc.ext[i];
    struct vmdk_extent *e = &s->ext[i];
    uint64_t fsize;
    int r;

    e->type = x->type;
    e->access = x->access;
    e->start = start;
    e->len = x->sectors * VMDK_SECTOR;
    if (x->type == VMDK_EXT_ZERO)
        return 0;
    r = open_extent_file(s, x, &e->file);
    if (r < 0)
        return r;
    if (x->type == VMDK_EXT_FLAT || x->type == VMDK_EXT_VMFS) {
        e->flat_off = x->offset * VMDK_SECTOR;
        r = vdisk_file_get_size(e->file, &fsize);
        if (r == 0 && (e->flat_off > fsize || e->len > fsize - e->flat_off))
            r = vdisk_error(EINVAL,
                            "%s: extent %s: %llu bytes at offset %llu do not fit in the file "
                            "(%llu bytes)",
                            s->node->path, x->file, (unsigned long long)e->len,
                            (unsigned long long)e->flat_off, (unsigned long long)fsize);
        return r;
    }
    r = vmdk_sparse_open(s->node, e->file, !s->node->read_only && x->access == VMDK_RW, &e->sp);
    if (r < 0)
        return vdisk_error_prefix(-r, "%s: extent %s", s->node->path, x->file);
    if (x->sectors > e->sp->capacity)
        return vdisk_error(EINVAL,
                           "%s: extent %s: the descriptor says %llu sectors, its header %llu",
                           s->node->path, x->file, (unsigned long long)x->sectors,
                           (unsigned long long)e->sp->capacity);
    return 0;
}

/* Read a descriptor file (the node's own file) into *TEXT. */
static int read_desc_file(struct vmdk *s, char **text, size_t *len)
{
    uint64_t size;
    int r = vdisk_file_get_size(s->node->file, &size);

    if (r < 0)
        return r;
    if (size > VMDK_MAX_DESC)
        return vdisk_error(EFBIG, "%s: a descriptor of %llu bytes is too large", s->node->path,
                           (unsigned long long)size);
    *text = calloc(1, size + 1);
    if (!*text)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    *len = size;
    s->desc_off = 0;
    s->desc_max = VMDK_MAX_DESC;
    return vdisk_file_pread(s->node->file, *text, size, 0);
}

/* A bare sparse extent with no descriptor: one extent, itself. */
static int self_descriptor(struct vmdk *s, struct vmdk_sparse *sp)
{
    struct vmdk_desc *d = &s->desc;

    memset(d, 0, sizeof(*d));
    d->cid = d->parent_cid = VMDK_NO_PARENT;
    d->create_type = strdup(sp->se ? "seSparse" : sp->cowd ? "vmfsSparse" : "monolithicSparse");
    d->ext = calloc(1, sizeof(*d->ext));
    d->text = strdup("");
    if (d->ext)
        d->ext->file = strdup(s->node->path);
    if (!d->create_type || !d->ext || !d->text || !d->ext->file)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    d->n_ext = 1;
    d->ext->type = sp->se ? VMDK_EXT_SESPARSE : sp->cowd ? VMDK_EXT_VMFSSPARSE : VMDK_EXT_SPARSE;
    d->ext->sectors = sp->capacity;
    return 0;
}

/* Open the parent named by the descriptor; its CID must be our parentCID. */
static int open_parent(struct vmdk *s)
{
    struct vdisk_node *n = s->node;
    struct vmdk *p;
    char *path;
    int r = rule_path(s, "parent", s->desc.parent_hint, &path);

    if (r < 0)
        return r;
    r = vdisk_node_open_backing(n, s->desc.parent_hint, "vmdk"); /* the rule checked it */
    free(path);
    if (r < 0)
        return r;
    p = n->backing->priv;
    if (p->desc.cid != s->desc.parent_cid)
        return vdisk_error(EINVAL,
                           "%s: parentCID %08x does not match the CID %08x of its parent %s "
                           "(the parent changed since this image was made)",
                           n->path, s->desc.parent_cid, p->desc.cid, n->backing->path);
    return 0;
}

static void vmdk_free(struct vmdk *s)
{
    struct vmdk_sparse *self = NULL;

    if (!s)
        return;
    for (unsigned i = 0; s->ext && i < s->n_ext; i++) {
        if (s->ext[i].sp && s->ext[i].file == s->node->file) {
            if (s->ext[i].sp == self)
                continue;
            self = s->ext[i].sp;
        }
        vmdk_sparse_close(s->ext[i].sp);
    }
    free(s->ext);
    while (s->retired) { /* vmdk-resize.c */
        struct vmdk_retired *o = s->retired;

        s->retired = o->next;
        free(o->ext);
        free(o);
    }
    vmdk_desc_free(&s->desc);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Open the descriptor: embedded in a sparse file, or the whole file. */
static int open_descriptor(struct vmdk *s, struct vmdk_sparse **selfp)
{
    struct vdisk_node *n = s->node;
    uint8_t magic[4];
    char *text = NULL;
    size_t len = 0;
    int r = vdisk_file_pread(n->file, magic, 4, 0);

    if (r < 0)
        return r;
    if (get_le32(magic) == VMDK_MAGIC || get_le32(magic) == VMDK_COWD_MAGIC ||
        get_le32(magic) == (uint32_t)VMDK_SE_MAGIC) {
        r = vmdk_sparse_open(n, n->file, !n->read_only, selfp);
        if (r == 0)
            r = vmdk_sparse_read_desc(*selfp, &text, &len);
        if (r < 0)
            return r;
        if (!text)
            return self_descriptor(s, *selfp);
        s->embedded = true;
        s->desc_off = (*selfp)->desc_off * VMDK_SECTOR;
        s->desc_max = len;
    } else {
        r = read_desc_file(s, &text, &len);
        if (r < 0) {
            free(text);
            return r;
        }
    }
    r = vmdk_desc_parse(n->path, text, len, &s->desc);
    free(text);
    return r;
}

static int vmdk_open(struct vdisk_node *n)
{
    struct vmdk *s = calloc(1, sizeof(*s));
    struct vmdk_sparse *self = NULL;
    uint64_t start = 0;
    bool mono;
    int r;

    if (!s)
        return vdisk_error(ENOMEM, "%s: out of memory", n->path);
    s->node = n;
    pthread_mutex_init(&s->lock, NULL);
    n->priv = s;
    r = open_descriptor(s, &self);
    if (r < 0)
        goto err;
    s->ext = calloc(s->desc.n_ext, sizeof(*s->ext));
    if (!s->ext) {
        r = vdisk_error(ENOMEM, "%s: out of memory", n->path);
        goto err;
    }
    s->n_ext = s->desc.n_ext;
    mono = self != NULL;
    if (self) {
        /* a sparse file with its descriptor inside is itself the one extent, whatever
         * name its extent line gives (it may have been renamed since) */
        s->n_ext = 1;
        s->ext[0] = (struct vmdk_extent){.type = VMDK_EXT_SPARSE,
                                         .access = s->desc.ext[0].access,
                                         .len = self->capacity * VMDK_SECTOR,
                                         .file = n->file,
                                         .sp = self};
        start = s->ext[0].len;
        self = NULL; /* owned by the extent now */
    }
    for (unsigned i = 0; i < s->n_ext && !mono; i++) {
        r = open_extent(s, i, start);
        if (r < 0)
            goto err;
        start += s->ext[i].len;
        if (start > (uint64_t)INT64_MAX) {
            r = vdisk_error(EFBIG, "%s: extents add up to more than 2^63 bytes", n->path);
            goto err;
        }
    }
    n->size = start;
    if (s->desc.parent_hint && s->desc.parent_cid != VMDK_NO_PARENT) {
        r = open_parent(s);
        if (r < 0)
            goto err;
    }
    /* one flat extent: the guest's bytes are one range of one file */
    if (s->n_ext == 1 && (s->ext[0].type == VMDK_EXT_FLAT || s->ext[0].type == VMDK_EXT_VMFS) &&
        (s->ext[0].access == VMDK_RW || (n->read_only && s->ext[0].access == VMDK_RDONLY))) {
        n->caps |= VDISK_CAP_LINEAR;
        n->linear_offset = s->ext[0].flat_off;
        n->linear_file = s->ext[0].file;
    }
    return 0;
err:
    vmdk_sparse_close(self);
    vmdk_free(s);
    n->priv = NULL;
    return r;
}

static void vmdk_close(struct vdisk_node *n)
{
    vmdk_free(n->priv);
    n->priv = NULL;
}

/* The extent holding guest byte OFF. */
static struct vmdk_extent *find_extent(struct vmdk *s, uint64_t off)
{
    /* count before array: a live resize publishes the array first, so a new count
     * always comes with the array that holds it (vmdk-resize.c add_extent) */
    unsigned lo = 0, hi = __atomic_load_n(&s->n_ext, __ATOMIC_ACQUIRE);
    struct vmdk_extent *ext = __atomic_load_n(&s->ext, __ATOMIC_ACQUIRE);

    while (hi - lo > 1) {
        unsigned mid = (lo + hi) / 2;

        if (ext[mid].start <= off)
            lo = mid;
        else
            hi = mid;
    }
    return &ext[lo];
}

/* Before the first write: a new CID in the descriptor, as VMware does. */
static int touch(struct vmdk *s)
{
    uint32_t cid = s->desc.cid;
    char *text;
    size_t len;
    int r;

    if (s->cid_changed || s->desc.text_len == 0) /* a bare extent has no descriptor */
        return 0;
    while (cid == s->desc.cid || cid == VMDK_NO_PARENT)
        if (getrandom(&cid, sizeof(cid), 0) != sizeof(cid))
            cid = (uint32_t)random();
    text = vmdk_desc_with_cid(&s->desc, cid, &len);
    if (!text)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    if (len > s->desc_max) {
        free(text);
        return vdisk_error(ENOSPC, "%s: no room for the new descriptor", s->node->path);
    }
    r = vdisk_file_pwrite(s->node->file, text, len, s->desc_off);
    if (r == 0 && s->embedded && len < s->desc.text_len) {
        char zero[64] = {0};

        r = vdisk_file_pwrite(s->node->file, zero, s->desc.text_len - len, s->desc_off + len);
    }
    if (r == 0 && !s->embedded)
        r = vdisk_file_truncate(s->node->file, len);
    if (r < 0) {
        free(text);
        return r;
    }
    free(s->desc.text);
    s->desc.text = text;
    s->desc.text_len = len;
    s->desc.cid = cid;
    s->cid_changed = true;
    return 0;
}

static int vmdk_map(struct vdisk_node *n, uint64_t off, uint64_t len, unsigned flags,
                    struct vdisk_map *m)
{
    struct vmdk *s = n->priv;
    struct vmdk_extent *e;
    uint64_t rel;
    int r = 0;

    if (flags & VDISK_MAP_NOWAIT) {
        if (pthread_mutex_trylock(&s->lock) != 0)
            return -EAGAIN;
    } else {
        pthread_mutex_lock(&s->lock);
    }
    if ((flags & VDISK_MAP_WRITE) && !s->cid_changed)
        r = (flags & VDISK_MAP_NOWAIT) ? -EAGAIN : touch(s);
    if (r < 0)
        goto out;
    e = find_extent(s, off);
    rel = off - e->start;
    if (len > e->len - rel)
        len = e->len - rel;
    m->len = len;
    switch (e->type) {
    case VMDK_EXT_ZERO:
        m->type = (flags & VDISK_MAP_WRITE) ? VDISK_MAP_OTHER : VDISK_MAP_ZERO;
        break;
    case VMDK_EXT_FLAT:
    case VMDK_EXT_VMFS:
        if (e->access == VMDK_NOACCESS || (e->access != VMDK_RW && (flags & VDISK_MAP_WRITE))) {
            m->type = VDISK_MAP_OTHER; /* read() or write() says why not */
        } else {
            m->type = VDISK_MAP_DATA;
            m->file = e->file;
            m->host = e->flat_off + rel;
        }
        break;
    default:
        if (e->access == VMDK_NOACCESS || (e->access != VMDK_RW && (flags & VDISK_MAP_WRITE)))
            m->type = VDISK_MAP_OTHER;
        else
            r = vmdk_sparse_map(s, e, rel, len, flags, m);
        break;
    }
out:
    pthread_mutex_unlock(&s->lock);
    return r;
}

/* Refuse I/O to extent E that its access or type does not allow. */
static int refuse(struct vmdk *s, struct vmdk_extent *e, bool write)
{
    const char *file = s->desc.ext[e - s->ext].file;

    if (e->type == VMDK_EXT_ZERO)
        return vdisk_error(EROFS, "%s: a ZERO extent cannot be written", s->node->path);
    return vdisk_error(write ? EROFS : EACCES, "%s: extent %s is %s", s->node->path,
                       file ? file : "", vmdk_access_name(e->access));
}

static int vmdk_read(struct vdisk_node *n, void *buf, size_t len, uint64_t off)
{
    struct vmdk *s = n->priv;
    uint8_t *p = buf;
    int r = 0;

    /* unlocked: a resize adds extents in a new array (the old one kept); a sparse extent
     * locks per grain, inflates unlocked */
    while (len > 0 && r == 0) {
        struct vmdk_extent *e = find_extent(s, off);
        uint64_t rel = off - e->start, k = e->len - rel < len ? e->len - rel : len;

        if (e->access == VMDK_NOACCESS)
            r = refuse(s, e, false);
        else if (e->sp)
            r = vmdk_sparse_read(s, e, p, k, rel, false);
        else if (e->type == VMDK_EXT_ZERO)
            memset(p, 0, k);
        else
            r = vdisk_file_pread(e->file, p, k, e->flat_off + rel);
        p += k;
        off += k;
        len -= k;
    }
    return r;
}

/* Make writes durable: each sparse extent orders its grains before its tables. */
static int vmdk_flush(struct vdisk_node *n)
{
    struct vmdk *s = n->priv;
    int r = 0;

    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; i < s->n_ext && r == 0; i++) {
        struct vmdk_extent *e = &s->ext[i];

        if (e->access != VMDK_RW || !e->file)
            continue;
        if (e->sp && e->sp->ws)
            r = vmdk_stream_finish(s, e->sp);
        else if (e->sp)
            r = vmdk_sparse_flush(s, e->sp);
        else
            r = vdisk_file_flush(e->file);
    }
    if (r == 0)
        r = vdisk_file_flush(n->file);
    pthread_mutex_unlock(&s->lock);
    return r;
}

static int vmdk_write(struct vdisk_node *n, const void *buf, size_t len, uint64_t off,
                      unsigned flags)
{
    struct vmdk *s = n->priv;
    const uint8_t *p = buf;
    int r;

    pthread_mutex_lock(&s->lock);
    r = touch(s);
    pthread_mutex_unlock(&s->lock);
    while (len > 0 && r == 0) {
        struct vmdk_extent *e = find_extent(s, off);
        uint64_t rel = off - e->start, k = e->len - rel < len ? e->len - rel : len;

        if (e->access != VMDK_RW || e->type == VMDK_EXT_ZERO) {
            r = refuse(s, e, true);
        } else if (e->sp && e->sp->compressed) {
            r = vmdk_stream_write(s, e, p, k, rel); /* compresses unlocked, then locks */
        } else {
            pthread_mutex_lock(&s->lock);
            if (e->sp)
                r = vmdk_sparse_write(s, e, p, k, rel);
            else
                r = vdisk_file_pwrite(e->file, p, k, e->flat_off + rel);
            pthread_mutex_unlock(&s->lock);
        }
        p += k;
        off += k;
        len -= k;
    }
    if (r == 0 && (flags & VDISK_WRITE_FUA))
        r = vmdk_flush(n);
    return r;
}

/* Zeroes without data where every extent of the range has zeroed-grain entries. */
static int vmdk_write_zeroes(struct vdisk_node *n, uint64_t off, uint64_t len, unsigned flags)
{
    struct vmdk *s = n->priv;
    int r = 0;

    pthread_mutex_lock(&s->lock);
    for (uint64_t o = off; o < off + len;) {
        struct vmdk_extent *e = find_extent(s, o);

        if (e->access != VMDK_RW || !e->sp || !e->sp->zero_gte || e->sp->compressed) {
            pthread_mutex_unlock(&s->lock);
            return -ENOTSUP; /* the image layer writes zero buffers */
        }
        o = e->start + e->len;
    }
    r = touch(s);
    while (len > 0 && r == 0) {
        struct vmdk_extent *e = find_extent(s, off);
        uint64_t rel = off - e->start, k = e->len - rel < len ? e->len - rel : len;

        r = vmdk_sparse_zero(s, e, rel, k);
        off += k;
        len -= k;
    }
    pthread_mutex_unlock(&s->lock);
    if (r == 0 && (flags & VDISK_ZERO_FUA))
        r = vmdk_flush(n);
    return r;
}

static int vmdk_get_info(struct vdisk_node *n, struct vdisk_info *info)
{
    struct vmdk *s = n->priv;
    struct vmdk_sparse *sp = NULL;

    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; i < s->n_ext && !sp; i++)
        sp = s->ext[i].sp;
    vdisk_info_add(info, "create_type", "%s", s->desc.create_type);
    vdisk_info_add(info, "cid", "%08x", s->desc.cid);
    vdisk_info_add(info, "parent_cid", "%08x", s->desc.parent_cid);
    if (s->desc.adapter_type)
        vdisk_info_add(info, "adapter_type", "%s", s->desc.adapter_type);
    if (s->desc.hwversion)
        vdisk_info_add(info, "hwversion", "%s", s->desc.hwversion);
    if (sp) {
        info->cluster_size = (uint32_t)sp->grain_bytes;
        vdisk_info_add(info, "grain_size", "%llu", (unsigned long long)sp->grain_bytes);
        vdisk_info_add(info, "sparse_version", "%u", sp->version);
        vdisk_info_add(info, "compressed", "%s", sp->compressed ? "true" : "false");
        vdisk_info_add(info, "zeroed_grain", "%s", sp->zero_gte ? "true" : "false");
    }
    vdisk_info_add(info, "extents", "%u", s->n_ext);
    for (unsigned i = 0; i < s->desc.n_ext && i < 9; i++) {
        const struct vmdk_desc_extent *x = &s->desc.ext[i];
        char key[16];

        snprintf(key, sizeof(key), "extent_%u", i + 1);
        vdisk_info_add(info, key, "%s %llu %s%s%s%s", vmdk_access_name(x->access),
                       (unsigned long long)x->sectors, vmdk_type_name(x->type),
                       x->file ? " \"" : "", x->file ? x->file : "", x->file ? "\"" : "");
    }
    if (n->backing) {
        info->backing_file = s->desc.parent_hint;
        info->backing_format = "vmdk";
    }
    pthread_mutex_unlock(&s->lock);
    return 0;
}

const struct vdisk_format vdisk_format_vmdk = {
    .name = "vmdk",
    .flags = VDISK_FORMAT_THREAD_SAFE,
    .caps = VDISK_CAP_THREAD_SAFE,
    .create_options = vmdk_create_options,
    .open_options = vmdk_open_options,
    .probe = vmdk_probe,
    .create = vmdk_create,
    .open = vmdk_open,
    .close = vmdk_close,
    .map = vmdk_map,
    .read = vmdk_read,
    .write = vmdk_write,
    .flush = vmdk_flush,
    .write_zeroes = vmdk_write_zeroes,
    .get_info = vmdk_get_info,
    .check = vmdk_check,
    .resize = vmdk_resize, /* vmdk-resize.c */
};
