/* SPDX-License-Identifier: MIT */
/*
 * Creating VMDK images: monolithicSparse, monolithicFlat, twoGbMaxExtentSparse,
 * twoGbMaxExtentFlat, streamOptimized and vmfs, with a descriptor (embedded or
 * its own file), extent files made through vdisk_node_create_file (a failed
 * create removes them all), and a parent (backing_file) whose CID becomes
 * our parentCID. Sparse extents get QEMU's layout: header, descriptor,
 * redundant directory and tables, directory and tables, then grains.
 */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "../error.h"
#include "../node.h"
#include "vmdk.h"

const char *const vmdk_create_options[] = {
    "subformat",    "zeroed_grain", "backing_file", "backing_fmt",
    "adapter_type", "hwversion",    "compat6",      NULL,
};

#define GRAIN      128u         /* sectors: 64 KiB grains, as VMware and QEMU make them */
#define DESC_SIZE  20u          /* sectors of an embedded descriptor */
#define MAX_SPARSE (2ull << 40) /* grain sectors are 32-bit: 2 TiB per sparse extent */

struct plan {
    const char *subformat;
    const char *type; /* extent type word */
    bool sparse, split, embedded, stream, zeroed;
    const char *adapter, *hw;
    uint32_t cid, parent_cid;
    const char *parent;
    char *base; /* file name without .vmdk */
    char *desc; /* the descriptor text */
};

/* Random CID (never the "no parent" value). */
static uint32_t new_cid(void)
{
    uint32_t c = VMDK_NO_PARENT;

    while (c == VMDK_NO_PARENT)
        if (getrandom(&c, sizeof(c), 0) != sizeof(c))
            c = (uint32_t)random();
    return c;
}

/* Extent file I's name (1-based), or the image's own name. */
static char *extent_name(const struct plan *p, unsigned i)
{
    char *s = NULL;
    int k;

    if (p->embedded)
        k = asprintf(&s, "%s.vmdk", p->base);
    else if (!p->split)
        k = asprintf(&s, "%s-flat.vmdk", p->base);
    else
        k = asprintf(&s, "%s-%c%03u.vmdk", p->base, p->sparse ? 's' : 'f', i);
    return k < 0 ? NULL : s;
}

/* The descriptor text for SIZE bytes. */
static int make_desc(struct vdisk_node *node, struct plan *p, uint64_t size)
{
    unsigned heads = strcmp(p->adapter, "ide") == 0 ? 16 : 255;
    uint64_t cyl = size / VMDK_SECTOR / (heads * 63ull), step = p->split ? VMDK_TWOGB : size;
    char *ext = strdup(""), *t;
    unsigned i = 1;

    if (cyl > 65535)
        cyl = 65535;
    for (uint64_t off = 0; ext && off < size; off += step, i++) {
        uint64_t n = size - off < step ? size - off : step;
        char *name = extent_name(p, i);

        if (!name ||
            asprintf(&t, "%sRW %llu %s \"%s\"%s\n", ext, (unsigned long long)(n / VMDK_SECTOR),
                     p->type, name, p->sparse || strcmp(p->type, "VMFS") == 0 ? "" : " 0") < 0)
            t = NULL;
        free(name);
        free(ext);
        ext = t;
    }
    if (!ext)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    t = NULL;
    if (asprintf(&t,
                 "# Disk DescriptorFile\nversion=1\nCID=%08x\nparentCID=%08x\n"
                 "createType=\"%s\"\n%s%s%s\n# Extent description\n%s\n"
                 "# The Disk Data Base\n#DDB\n\n"
                 "ddb.virtualHWVersion = \"%s\"\nddb.geometry.cylinders = \"%llu\"\n"
                 "ddb.geometry.heads = \"%u\"\nddb.geometry.sectors = \"63\"\n"
                 "ddb.adapterType = \"%s\"\n",
                 p->cid, p->parent_cid, p->subformat, p->parent ? "parentFileNameHint=\"" : "",
                 p->parent ? p->parent : "", p->parent ? "\"\n" : "", ext, p->hw,
                 (unsigned long long)cyl, heads, p->adapter) < 0)
        t = NULL;
    free(ext);
    p->desc = t;
    return t ? 0 : vdisk_error(ENOMEM, "%s: out of memory", node->path);
}

/* Lay out a hosted sparse extent of CAP sectors in F (DESC embedded when not NULL). */
static int init_sparse(struct vmdk_sparse *tmp, struct vdisk_file *f, uint64_t cap,
                       const struct plan *p, const char *desc)
{
    uint64_t per_gt = (uint64_t)GRAIN * VMDK_GTES, gts = (cap + per_gt - 1) / per_gt;
    uint64_t gt_sec = VMDK_GTES * 4 / VMDK_SECTOR,
             gd_sec = (gts * 4 + VMDK_SECTOR - 1) / VMDK_SECTOR;
    uint64_t desc_off = desc ? 1 : 0, desc_size = desc ? DESC_SIZE : 0;
    uint64_t rgd = 1 + desc_size, gd = rgd + gd_sec + gts * gt_sec;
    uint64_t over = (gd + gd_sec + gts * gt_sec + GRAIN - 1) / GRAIN * GRAIN;
    uint32_t flags = VMDK_FLAG_NL_TEST | VMDK_FLAG_RGD | (p->zeroed ? VMDK_FLAG_ZERO_GTE : 0);
    uint8_t h[VMDK_SECTOR];
    uint32_t *dir;
    int r;

    if (p->stream) {
        flags = VMDK_FLAG_NL_TEST | VMDK_FLAG_COMPRESS | VMDK_FLAG_MARKERS;
        over = VMDK_STREAM_OVERHEAD;
        vmdk_sparse_header(h, 3, flags, cap, GRAIN, desc_off, desc_size, 0, VMDK_GD_AT_END, over);
    } else {
        vmdk_sparse_header(h, p->zeroed ? 2 : 1, flags, cap, GRAIN, desc_off, desc_size, rgd, gd,
                           over);
    }
    r = vdisk_file_truncate(f, over * VMDK_SECTOR);
    if (r == 0)
        r = vdisk_file_pwrite(f, h, sizeof(h), 0);
    if (r == 0 && desc)
        r = vdisk_file_pwrite(f, desc, strlen(desc), VMDK_SECTOR);
    if (r < 0)
        return r;
    if (p->stream) { /* an empty stream: no tables, an empty directory, footer, EOS */
        memset(tmp, 0, sizeof(*tmp));
        tmp->file = f;
        tmp->gtes = VMDK_GTES;
        tmp->gd_n = (uint32_t)gts;
        tmp->gd = calloc(gts ? gts : 1, 4);
        tmp->gt = calloc(gts ? gts : 1, sizeof(*tmp->gt));
        memcpy(tmp->hdr, h, sizeof(h));
        r = tmp->gd && tmp->gt ? vmdk_stream_write_tail(tmp, f->path, over * VMDK_SECTOR)
                               : vdisk_error(ENOMEM, "%s: out of memory", f->path);
        free(tmp->gd);
        free(tmp->gt);
        return r;
    }
    dir = calloc(gd_sec * VMDK_SECTOR / 4, 4);
    if (!dir)
        return vdisk_error(ENOMEM, "%s: out of memory", f->path);
    for (uint64_t i = 0; i < gts; i++)
        dir[i] = htole32((uint32_t)(rgd + gd_sec + i * gt_sec));
    r = vdisk_file_pwrite(f, dir, gd_sec * VMDK_SECTOR, rgd * VMDK_SECTOR);
    for (uint64_t i = 0; i < gts; i++)
        dir[i] = htole32((uint32_t)(gd + gd_sec + i * gt_sec));
    if (r == 0)
        r = vdisk_file_pwrite(f, dir, gd_sec * VMDK_SECTOR, gd * VMDK_SECTOR);
    free(dir);
    return r;
}

/* Make every extent file (and lay out the monolithic one in the node's own file). */
static int make_extents(struct vdisk_node *node, const struct plan *p, uint64_t size)
{
    uint64_t step = p->split ? VMDK_TWOGB : size;
    struct vmdk_sparse tmp;
    unsigned i = 1;
    int r = 0;

    if (p->embedded)
        return init_sparse(&tmp, node->file, size / VMDK_SECTOR, p, p->desc);
    r = vdisk_file_pwrite(node->file, p->desc, strlen(p->desc), 0);
    for (uint64_t off = 0; r == 0 && off < size; off += step, i++) {
        uint64_t n = size - off < step ? size - off : step;
        char *name = extent_name(p, i);
        struct vdisk_file *f;

        if (!name)
            return vdisk_error(ENOMEM, "%s: out of memory", node->path);
        r = vdisk_node_create_file(node, name, &f);
        if (r < 0)
            r = vdisk_error_prefix(-r, "%s: extent %s", node->path, name);
        free(name);
        if (r < 0)
            break;
        r = p->sparse ? init_sparse(&tmp, f, n / VMDK_SECTOR, p, NULL) : vdisk_file_truncate(f, n);
    }
    return r;
}

/* The parent named by backing_file: its CID and size. */
static int parent_facts(struct vdisk_node *node, const char *name, uint32_t *cid, uint64_t *size)
{
    char *path = vdisk_node_resolve(node, name);
    struct vdisk_image *img;
    int r;

    if (!path)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    r = vdisk_open(path, "vmdk", VDISK_OPEN_RDONLY, NULL, &img);
    if (r < 0) {
        r = vdisk_error_prefix(-r, "%s: backing file %s", node->path, path);
        free(path);
        return r;
    }
    free(path);
    *cid = ((struct vmdk *)img->root->priv)->desc.cid;
    *size = vdisk_get_size(img);
    vdisk_close(img);
    return 0;
}

/* Read the options into P. */
static int read_options(struct vdisk_node *node, const struct vdisk_options *o, struct plan *p)
{
    const char *sub = vdisk_options_get(o, "subformat"), *fmt = vdisk_options_get(o, "backing_fmt");
    const char *ad = vdisk_options_get(o, "adapter_type");
    bool compat6 = false;
    int r;

    p->subformat = sub ? sub : "monolithicSparse";
    if (strcmp(p->subformat, "monolithicSparse") == 0)
        p->sparse = p->embedded = true;
    else if (strcmp(p->subformat, "twoGbMaxExtentSparse") == 0)
        p->sparse = p->split = true;
    else if (strcmp(p->subformat, "streamOptimized") == 0)
        p->sparse = p->embedded = p->stream = true;
    else if (strcmp(p->subformat, "twoGbMaxExtentFlat") == 0)
        p->split = true;
    else if (strcmp(p->subformat, "monolithicFlat") != 0 && strcmp(p->subformat, "vmfs") != 0)
        return vdisk_error(EINVAL,
                           "%s: subformat must be monolithicSparse, monolithicFlat, "
                           "twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized or vmfs, "
                           "not '%s'",
                           node->path, p->subformat);
    p->type = p->sparse ? "SPARSE" : strcmp(p->subformat, "vmfs") == 0 ? "VMFS" : "FLAT";
    r = vdisk_options_get_bool(o, "zeroed_grain", false, &p->zeroed);
    if (r == 0)
        r = vdisk_options_get_bool(o, "compat6", false, &compat6);
    if (r < 0)
        return vdisk_error_prefix(-r, "%s", node->path);
    p->adapter = ad ? ad : "ide";
    if (strcmp(p->adapter, "ide") && strcmp(p->adapter, "buslogic") &&
        strcmp(p->adapter, "lsilogic") && strcmp(p->adapter, "legacyESX"))
        return vdisk_error(EINVAL,
                           "%s: adapter_type must be ide, buslogic, lsilogic or legacyESX, not "
                           "'%s'",
                           node->path, p->adapter);
    p->hw = vdisk_options_get(o, "hwversion");
    if (p->hw && compat6)
        return vdisk_error(EINVAL, "%s: give compat6 or hwversion, not both", node->path);
    if (p->hw && (strspn(p->hw, "0123456789") != strlen(p->hw) || !*p->hw))
        return vdisk_error(EINVAL, "%s: hwversion must be a number, not '%s'", node->path, p->hw);
    if (!p->hw)
        p->hw = compat6 ? "6" : "4";
    if (p->zeroed && !p->sparse)
        return vdisk_error(EINVAL, "%s: zeroed_grain needs a sparse subformat", node->path);
    if (fmt && strcmp(fmt, "vmdk") != 0)
        return vdisk_error(EINVAL, "%s: a VMDK's parent must be a VMDK, not %s", node->path, fmt);
    p->parent = vdisk_options_get(o, "backing_file");
    if (p->parent && !p->sparse)
        return vdisk_error(EINVAL,
                           "%s: a %s image has no unallocated bytes: it cannot have a "
                           "backing file",
                           node->path, p->subformat);
    return 0;
}

int vmdk_create(struct vdisk_node *node, uint64_t size, const struct vdisk_options *opts)
{
    struct plan p = {0};
    char *copy = strdup(node->path), *b, *dot;
    int r;

    if (!copy)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    r = read_options(node, opts, &p);
    if (r < 0)
        goto out;
    p.cid = new_cid();
    p.parent_cid = VMDK_NO_PARENT;
    if (p.parent) {
        uint64_t psize = 0;

        r = parent_facts(node, p.parent, &p.parent_cid, &psize);
        if (r < 0)
            goto out;
        if (size == 0)
            size = psize;
    }
    if (size == 0 || size % VMDK_SECTOR) {
        r = vdisk_error(EINVAL, "%s: size must be a positive multiple of 512 bytes", node->path);
        goto out;
    }
    if (p.sparse && !p.split && size > MAX_SPARSE) {
        r = vdisk_error(EFBIG, "%s: a %s image holds at most 2 TiB", node->path, p.subformat);
        goto out;
    }
    b = basename(copy);
    dot = strrchr(b, '.');
    if (dot && strcasecmp(dot, ".vmdk") == 0)
        *dot = '\0';
    p.base = b;
    r = make_desc(node, &p, size);
    if (r == 0 && p.embedded && strlen(p.desc) > DESC_SIZE * VMDK_SECTOR)
        r = vdisk_error(EINVAL, "%s: the descriptor does not fit in %u sectors", node->path,
                        DESC_SIZE);
    if (r == 0)
        r = make_extents(node, &p, size);
out:
    free(p.desc);
    free(copy);
    return r;
}
