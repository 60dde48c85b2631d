/* SPDX-License-Identifier: MIT */
/*
 * VMDK resize. monolithicSparse (and a bare sparse extent): the grain
 * directory grows in its sector padding when it has room, else both
 * directories move to the end of the file (written and flushed before the
 * header points at them); new directory entries get zeroed grain tables (as
 * QEMU and VMware preallocate them), then the header's capacity, then the
 * embedded descriptor's extent line and cylinders. monolithicFlat / vmfs: the
 * flat file grows (flushed) before the descriptor says so. twoGbMaxExtentFlat
 * and twoGbMaxExtentSparse: the last extent fills to 2 GiB (as above), then new
 * -fNNN / -sNNN files are made as create names them (laid out and flushed
 * before the descriptor names them). Sizes round up to a 512-byte sector.
 * Shrinking: single extents only, and only when no grain lies past the new
 * end; the kept part of the last grain is zeroed past it, so a later grow
 * reads zeroes there (the flat file is cut when the extent ends it).
 * qemu-img resize refuses every VMDK; streamOptimized and the rest are refused.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "../error.h"
#include "../node.h"
#include "vmdk.h"

/* Bytes of N directory entries rounded up to a sector (the room the layout gives them). */
static uint64_t dir_room(uint64_t n)
{
    return (n * 4 + VMDK_SECTOR - 1) / VMDK_SECTOR * VMDK_SECTOR;
}

/* Grow the per-table arrays of SP to N entries (new entries empty). */
static int grow_arrays(struct vmdk_sparse *sp, const char *path, uint32_t n)
{
    uint32_t *gd = realloc(sp->gd, (size_t)n * 4 + 4), *rgd = NULL, **gt;
    uint8_t *dirty;

    if (gd)
        sp->gd = gd;
    if (gd && sp->rgd) {
        rgd = realloc(sp->rgd, (size_t)n * 4 + 4);
        if (rgd)
            sp->rgd = rgd;
    }
    gt = gd && (rgd || !sp->rgd) ? realloc(sp->gt, (size_t)n * sizeof(*gt)) : NULL;
    if (gt)
        sp->gt = gt;
    dirty = gt ? realloc(sp->gt_dirty, n) : NULL;
    if (!dirty)
        return vdisk_error(ENOMEM, "%s: out of memory for %u grain tables", path, n);
    sp->gt_dirty = dirty;
    for (uint32_t i = sp->gd_n; i < n; i++) {
        sp->gd[i] = 0;
        if (sp->rgd)
            sp->rgd[i] = 0;
        sp->gt[i] = NULL;
        sp->gt_dirty[i] = 0;
    }
    return 0;
}

/* The first allocated grain of SP at or past grain FIRST, as a byte offset; UINT64_MAX if none. */
static int first_grain(struct vmdk_sparse *sp, const char *path, uint64_t first, uint64_t *at)
{
    uint64_t ngr = (sp->capacity + sp->grain - 1) / sp->grain;

    *at = UINT64_MAX;
    for (uint64_t i = first / sp->gtes; i < sp->gd_n; i++) {
        uint32_t *gt;
        int r;

        if (sp->gd[i] == 0 && !sp->gt[i])
            continue;
        r = vmdk_sparse_gt(sp, path, (uint32_t)i, false, &gt);
        if (r < 0)
            return r;
        for (uint64_t j = 0; j < sp->gtes; j++) {
            uint64_t g = i * sp->gtes + j;

            if (g < first || g >= ngr)
                continue;
            if (gt[j] > 1 || (gt[j] == 1 && !sp->zero_gte)) {
                *at = g * sp->grain_bytes;
                return 0;
            }
        }
    }
    return 0;
}

/* Zero the bytes of the grain holding sector CAP from CAP on, if it is allocated. */
static int zero_tail(struct vmdk_sparse *sp, const char *path, uint64_t cap)
{
    uint64_t g = cap / sp->grain, i = g / sp->gtes, skip = (cap % sp->grain) * VMDK_SECTOR;
    uint32_t *gt;
    uint8_t *z;
    int r;

    if (i >= sp->gd_n || (sp->gd[i] == 0 && !sp->gt[i]))
        return 0;
    r = vmdk_sparse_gt(sp, path, (uint32_t)i, false, &gt);
    if (r < 0 || gt[g % sp->gtes] <= 1)
        return r;
    z = calloc(1, sp->grain_bytes - skip);
    if (!z)
        return vdisk_error(ENOMEM, "%s: out of memory", path);
    r = vdisk_file_pwrite(sp->file, z, sp->grain_bytes - skip,
                          (uint64_t)gt[g % sp->gtes] * VMDK_SECTOR + skip);
    free(z);
    return r;
}

/* Set the capacity of sparse extent SP to CAP sectors (tables first, then the header). */
static int resize_sparse(struct vmdk *s, struct vmdk_sparse *sp, uint64_t cap)
{
    const char *path = sp->file->path;
    uint64_t per_gt = sp->grain * sp->gtes, n64 = (cap + per_gt - 1) / per_gt, at;
    uint32_t old = sp->gd_n;
    uint8_t h[VMDK_SECTOR];
    int r;

    if (sp->stream || sp->compressed || sp->cowd || sp->se)
        return vdisk_error(ENOTSUP, "%s: resize of this kind of sparse extent is not supported",
                           path);
    if (cap > (uint64_t)UINT32_MAX || n64 > UINT32_MAX / 4)
        return vdisk_error(EFBIG, "%s: %" PRIu64 " sectors is more than a sparse extent holds",
                           path, cap);
    if (cap < sp->capacity) {
        r = first_grain(sp, path, (cap + sp->grain - 1) / sp->grain, &at);
        if (r < 0)
            return r;
        if (at != UINT64_MAX)
            return vdisk_error(EPERM,
                               "%s: data lies at offset %" PRIu64 ", past the new size %" PRIu64
                               "; not shrinking (discard it first, or choose a larger size)",
                               s->node->path, at, cap * VMDK_SECTOR);
    }
    if (cap < sp->capacity && cap % sp->grain) { /* zero the kept grain's tail past the end */
        r = zero_tail(sp, path, cap);
        if (r < 0)
            return r;
    }
    if (n64 > old) {
        r = grow_arrays(sp, path, (uint32_t)n64);
        if (r < 0)
            return r;
        if (n64 * 4 > dir_room(old)) { /* no room in place: both directories to the end */
            uint64_t bytes = dir_room(n64);

            sp->gd_off = sp->end / VMDK_SECTOR;
            sp->end += bytes;
            if (sp->rgd) {
                sp->rgd_off = sp->end / VMDK_SECTOR;
                sp->end += bytes;
            }
            if (overlap_add(&sp->meta, sp->gd_off * VMDK_SECTOR, bytes, "grain directory") < 0 ||
                (sp->rgd &&
                 overlap_add(&sp->meta, sp->rgd_off * VMDK_SECTOR, bytes, "grain directory") < 0))
                return vdisk_error(ENOMEM, "%s: out of memory", path);
            r = vdisk_file_truncate(sp->file, sp->end);
            if (r < 0)
                return r;
        }
        sp->gd_n = (uint32_t)n64;
        for (uint32_t i = old; i < sp->gd_n; i++) {
            r = vmdk_sparse_new_gt(s, sp, i);
            if (r < 0)
                return r;
        }
        sp->gd_dirty = true;
        r = vmdk_sparse_flush(s, sp); /* tables, then directories, each flushed */
        if (r < 0)
            return r;
    }
    memcpy(h, sp->hdr, sizeof(h));
    put_le64(h + 12, cap);
    put_le64(h + 56, sp->gd_off);
    if (sp->rgd)
        put_le64(h + 48, sp->rgd_off);
    r = vdisk_file_pwrite(sp->file, h, sizeof(h), 0);
    if (r == 0)
        r = vdisk_file_flush(sp->file);
    if (r < 0)
        return r;
    memcpy(sp->hdr, h, sizeof(h));
    sp->capacity = cap;
    for (uint64_t i = n64; i < sp->gd_n; i++) { /* tables past it stay in the file, unused */
        free(sp->gt[i]);
        sp->gt[i] = NULL;
        sp->gt_dirty[i] = 0;
    }
    if (n64 < sp->gd_n)
        sp->gd_n = (uint32_t)n64;
    return 0;
}

/* Append the extent line of X to *OUT. */
static int put_extent(char **out, const struct vmdk_desc_extent *x)
{
    char *t;
    int k;

    if (x->type == VMDK_EXT_ZERO)
        k = asprintf(&t, "%s%s %" PRIu64 " ZERO\n", *out, vmdk_access_name(x->access), x->sectors);
    else if (x->type == VMDK_EXT_FLAT || x->type == VMDK_EXT_VMFS)
        k = asprintf(&t, "%s%s %" PRIu64 " %s \"%s\" %" PRIu64 "\n", *out,
                     vmdk_access_name(x->access), x->sectors, vmdk_type_name(x->type), x->file,
                     x->offset);
    else
        k = asprintf(&t, "%s%s %" PRIu64 " %s \"%s\"\n", *out, vmdk_access_name(x->access),
                     x->sectors, vmdk_type_name(x->type), x->file);
    free(*out);
    *out = k < 0 ? NULL : t;
    return *out ? 0 : -ENOMEM;
}

/* Is the line at P (to END) an extent line? */
static bool extent_line(const char *p, const char *end)
{
    static const char *const words[] = {"RW ", "RDONLY ", "NOACCESS "};

    for (unsigned i = 0; i < 3; i++)
        if ((size_t)(end - p) > strlen(words[i]) && strncmp(p, words[i], strlen(words[i])) == 0)
            return true;
    return false;
}

/* The descriptor text with the extent lines of s->desc and the cylinders of SIZE bytes. */
static char *new_text(struct vmdk *s, uint64_t size)
{
    const char *p = s->desc.text, *end = p + s->desc.text_len;
    unsigned heads = s->desc.adapter_type && strcmp(s->desc.adapter_type, "ide") == 0 ? 16 : 255;
    uint64_t cyl = size / VMDK_SECTOR / (heads * 63ull);
    bool done = false;
    char *out = strdup(""), *t;

    if (cyl > 65535)
        cyl = 65535;
    while (out && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl + 1 : end;
        int k = 0;

        if (extent_line(p, e)) {
            for (unsigned i = 0; !done && out && i < s->desc.n_ext; i++)
                if (put_extent(&out, &s->desc.ext[i]) < 0)
                    return NULL;
            done = true;
        } else if (strncmp(p, "ddb.geometry.cylinders", 22) == 0) {
            k = asprintf(&t, "%sddb.geometry.cylinders = \"%" PRIu64 "\"\n", out, cyl);
        } else if (*p == '\0') {
            break; /* the embedded area's zero padding */
        } else {
            k = asprintf(&t, "%s%.*s", out, (int)(e - p), p);
        }
        if (k != 0) {
            free(out);
            out = k < 0 ? NULL : t;
        }
        p = e;
    }
    return out;
}

/* Rewrite the descriptor for SIZE bytes (in place, flushed; an embedded one must fit). */
static int write_desc(struct vmdk *s, uint64_t size)
{
    char *text;
    size_t len;
    int r;

    if (s->desc.text_len == 0) /* a bare extent has no descriptor */
        return 0;
    text = new_text(s, size);
    if (!text)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    len = strlen(text);
    if (len > s->desc_max) {
        free(text);
        return vdisk_error(
            ENOSPC, "%s: the new descriptor (%zu bytes) does not fit its %" PRIu64 " bytes of room",
            s->node->path, len, s->desc_max);
    }
    r = vdisk_file_pwrite(s->node->file, text, len, s->desc_off);
    if (r == 0 && s->embedded && len < s->desc.text_len) {
        char *zero = calloc(1, s->desc.text_len - len);

        r = zero ? vdisk_file_pwrite(s->node->file, zero, s->desc.text_len - len, s->desc_off + len)
                 : vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        free(zero);
    }
    if (r == 0 && !s->embedded)
        r = vdisk_file_truncate(s->node->file, len);
    if (r == 0)
        r = vdisk_file_flush(s->node->file);
    if (r < 0) {
        free(text);
        return r;
    }
    free(s->desc.text);
    s->desc.text = text;
    s->desc.text_len = len;
    return 0;
}

/* The name of the twoGb extent after NAME ("x-f001.vmdk" -> "x-f002.vmdk"); NULL if unlike it. */
static char *next_name(const char *name)
{
    size_t n = strlen(name);
    unsigned k;
    char *t;

    if (n < 11 || strcmp(name + n - 5, ".vmdk") != 0 || name[n - 10] != '-' ||
        (name[n - 9] != 'f' && name[n - 9] != 's') || sscanf(name + n - 8, "%3u", &k) != 1 ||
        k >= 999)
        return NULL;
    if (asprintf(&t, "%.*s%03u.vmdk", (int)(n - 8), name, k + 1) < 0)
        return NULL;
    return t;
}

/* Lay out F as an empty hosted sparse extent of CAP sectors shaped like LIKE (as create does). */
static int init_sparse(struct vdisk_file *f, const struct vmdk_sparse *like, uint64_t cap)
{
    uint64_t per_gt = like->grain * VMDK_GTES, gts = (cap + per_gt - 1) / per_gt;
    uint64_t gt_sec = VMDK_GTES * 4 / VMDK_SECTOR, gd_sec = dir_room(gts) / VMDK_SECTOR;
    uint64_t rgd = 1, gd = rgd + gd_sec + gts * gt_sec;
    uint64_t over = (gd + gd_sec + gts * gt_sec + like->grain - 1) / like->grain * like->grain;
    uint8_t h[VMDK_SECTOR];
    uint32_t *dir;
    int r;

    vmdk_sparse_header(h, like->version, like->flags | VMDK_FLAG_RGD, cap, like->grain, 0, 0, rgd,
                       gd, over);
    dir = calloc(gd_sec * VMDK_SECTOR / 4, 4);
    if (!dir)
        return vdisk_error(ENOMEM, "%s: out of memory", f->path);
    r = vdisk_file_truncate(f, over * VMDK_SECTOR);
    for (uint64_t i = 0; i < gts; i++)
        dir[i] = htole32((uint32_t)(rgd + gd_sec + i * gt_sec));
    if (r == 0)
        r = vdisk_file_pwrite(f, dir, gd_sec * VMDK_SECTOR, rgd * VMDK_SECTOR);
    for (uint64_t i = 0; i < gts; i++)
        dir[i] = htole32((uint32_t)(gd + gd_sec + i * gt_sec));
    if (r == 0)
        r = vdisk_file_pwrite(f, dir, gd_sec * VMDK_SECTOR, gd * VMDK_SECTOR);
    if (r == 0)
        r = vdisk_file_flush(f); /* the tables before the header that points at them */
    if (r == 0)
        r = vdisk_file_pwrite(f, h, sizeof(h), 0);
    if (r == 0)
        r = vdisk_file_flush(f);
    free(dir);
    return r;
}

/* Append a new twoGbMaxExtent (flat or sparse, as the last one) extent file of SECTORS. */
static int add_extent(struct vmdk *s, uint64_t sectors)
{
    struct vmdk_desc_extent *dx = &s->desc.ext[s->desc.n_ext - 1], *nd;
    struct vmdk_extent *ne, *last = &s->ext[s->n_ext - 1];
    struct vmdk_sparse *sp = NULL;
    struct vmdk_retired *old;
    struct vdisk_file *f;
    char *name = next_name(dx->file);
    int r;

    if (!name)
        return vdisk_error(ENOTSUP,
                           "%s: extent %s is not named like NAME-f001.vmdk or NAME-s001.vmdk: "
                           "cannot name the next one",
                           s->node->path, dx->file);
    if (s->n_ext >= VMDK_MAX_EXTENTS) {
        free(name);
        return vdisk_error(EFBIG, "%s: too many extents", s->node->path);
    }
    nd = realloc(s->desc.ext, (s->desc.n_ext + 1) * sizeof(*nd));
    if (nd)
        s->desc.ext = nd;
    old = nd ? malloc(sizeof(*old)) : NULL;
    ne = old ? malloc((s->n_ext + 1) * sizeof(*ne)) : NULL;
    if (!ne) {
        free(old);
        free(name);
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    }
    r = vdisk_node_create_file(s->node, name, &f);
    if (r == 0 && last->sp)
        r = init_sparse(f, last->sp, sectors);
    else if (r == 0)
        r = vdisk_file_truncate(f, sectors * VMDK_SECTOR);
    if (r == 0)
        r = vdisk_file_flush(f);
    if (r == 0 && last->sp)
        r = vmdk_sparse_open(s->node, f, true, &sp);
    if (r < 0) {
        free(ne);
        free(old);
        free(name);
        return vdisk_error_prefix(-r, "%s: extent", s->node->path);
    }
    nd = &s->desc.ext[s->desc.n_ext];
    *nd = s->desc.ext[s->desc.n_ext - 1];
    nd->file = name;
    nd->sectors = sectors;
    nd->offset = 0;
    s->desc.n_ext++;
    memcpy(ne, s->ext, s->n_ext * sizeof(*ne));
    ne[s->n_ext] = *last;
    ne[s->n_ext].start = last->start + last->len;
    ne[s->n_ext].len = sectors * VMDK_SECTOR;
    ne[s->n_ext].flat_off = 0;
    ne[s->n_ext].file = f;
    ne[s->n_ext].sp = sp;
    /* unlocked readers may hold the old array: keep it until close; the array before its count */
    old->ext = s->ext;
    old->next = s->retired;
    s->retired = old;
    __atomic_store_n(&s->ext, ne, __ATOMIC_RELEASE);
    __atomic_store_n(&s->n_ext, s->n_ext + 1, __ATOMIC_RELEASE);
    return 0;
}

/* Resize a descriptor's extents to SEC sectors: the last one grows (to 2 GiB when SPLIT), then
 * new ones follow; a single one shrinks. */
static int resize_extents(struct vmdk *s, uint64_t sec, bool split)
{
    struct vmdk_extent *e = &s->ext[s->n_ext - 1];
    struct vmdk_desc_extent *x = &s->desc.ext[s->desc.n_ext - 1];
    uint64_t old = s->node->size / VMDK_SECTOR, fsize, want, max = VMDK_TWOGB / VMDK_SECTOR;
    int r;

    if (sec < old && (s->n_ext != 1 || split))
        return vdisk_error(ENOTSUP, "%s: shrinking a VMDK of several extents is not supported",
                           s->node->path);
    want = sec < old ? sec : x->sectors + (sec - old);
    if (split && want > max)
        want = max > x->sectors ? max : x->sectors;
    if (e->sp) {
        r = want != x->sectors ? resize_sparse(s, e->sp, want) : 0;
    } else {
        r = vdisk_file_get_size(e->file, &fsize);
        /* grow the file; shrink it only when the extent ends it (a later grow reads zeroes) */
        if (r == 0 && (fsize < e->flat_off + want * VMDK_SECTOR ||
                       (want < x->sectors && fsize == e->flat_off + e->len)))
            r = vdisk_file_truncate(e->file, e->flat_off + want * VMDK_SECTOR);
        if (r == 0)
            r = vdisk_file_flush(e->file);
    }
    if (r < 0)
        return r;
    old = old - x->sectors + want;
    x->sectors = want;
    e->len = want * VMDK_SECTOR;
    while (old < sec && r == 0) {
        uint64_t n = sec - old < max ? sec - old : max;

        r = add_extent(s, n);
        old += n;
    }
    return r;
}

int vmdk_resize(struct vdisk_node *node, uint64_t size, unsigned flags)
{
    struct vmdk *s = node->priv;
    const char *type = s->desc.create_type ? s->desc.create_type : "";
    uint64_t sec = (size + VMDK_SECTOR - 1) / VMDK_SECTOR;
    struct vmdk_extent *e = &s->ext[s->n_ext - 1];
    int r;

    (void)flags;
    if (strcmp(type, "streamOptimized") == 0 || (e->sp && e->sp->stream))
        return vdisk_error(ENOTSUP,
                           "%s: resize of a streamOptimized VMDK is not supported: convert it "
                           "first",
                           node->path);
    if (node->backing && sec < node->size / VMDK_SECTOR)
        return vdisk_error(ENOTSUP,
                           "%s: a VMDK with a parent is not shrunk (a dropped grain would show "
                           "its parent's data after a grow)",
                           node->path);
    pthread_mutex_lock(&s->lock);
    if (strcmp(type, "monolithicSparse") == 0 && s->n_ext == 1 && e->sp && e->file == node->file) {
        r = resize_sparse(s, e->sp, sec);
        if (r == 0) {
            s->desc.ext[0].sectors = sec;
            e->len = sec * VMDK_SECTOR;
        }
    } else if ((strcmp(type, "monolithicFlat") == 0 || strcmp(type, "vmfs") == 0) &&
               s->n_ext == 1 && !e->sp && e->file) {
        r = resize_extents(s, sec, false);
    } else if ((strcmp(type, "twoGbMaxExtentFlat") == 0 && !e->sp && e->file) ||
               (strcmp(type, "twoGbMaxExtentSparse") == 0 && e->sp && e->type == VMDK_EXT_SPARSE &&
                e->sp->gtes == VMDK_GTES)) {
        r = resize_extents(s, sec, true);
    } else {
        r = vdisk_error(ENOTSUP, "%s: resize of a %s VMDK is not supported: convert it first",
                        node->path, *type ? type : "(unknown type)");
    }
    if (r == 0)
        r = write_desc(s, sec * VMDK_SECTOR);
    if (r == 0)
        node->size = sec * VMDK_SECTOR;
    pthread_mutex_unlock(&s->lock);
    return r;
}
