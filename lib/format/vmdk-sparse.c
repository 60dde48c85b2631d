/* SPDX-License-Identifier: MIT */
/*
 * VMDK sparse extents: the KDMV hosted sparse header (versions 1-3; a
 * stream's footer when gdOffset is all ones), the COWD header of ESX's
 * vmfsSparse, the grain directory and its redundant copy, grain tables
 * (loaded on first use, then kept), and grains: GTE 0 is unallocated, 1 a
 * zeroed grain (with the zeroed-grain flag), else the grain's sector.
 * Allocation appends grains at the end of the file and links them in memory;
 * flush() makes the data durable first, then writes the changed grain tables
 * (both copies), then the directory, then flushes again.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../error.h"
#include "vmdk.h"

void vmdk_sparse_header(uint8_t *h, uint32_t version, uint32_t flags, uint64_t capacity,
                        uint64_t grain, uint64_t desc_off, uint64_t desc_size, uint64_t rgd_off,
                        uint64_t gd_off, uint64_t overhead)
{
    memset(h, 0, VMDK_SECTOR);
    put_le32(h, VMDK_MAGIC);
    put_le32(h + 4, version);
    put_le32(h + 8, flags);
    put_le64(h + 12, capacity);
    put_le64(h + 20, grain);
    put_le64(h + 28, desc_off);
    put_le64(h + 36, desc_size);
    put_le32(h + 44, VMDK_GTES);
    put_le64(h + 48, rgd_off);
    put_le64(h + 56, gd_off);
    put_le64(h + 64, overhead);
    h[73] = '\n'; /* the line-end test VMware checks for FTP text-mode damage */
    h[74] = ' ';
    h[75] = '\r';
    h[76] = '\n';
    h[77] = (flags & VMDK_FLAG_COMPRESS) ? 1 : 0; /* compressAlgorithm: deflate */
}

/* Read a directory of N u32 at sector OFF into *OUT (host order). */
static int read_dir(struct vmdk_sparse *sp, uint64_t off, uint32_t n, uint32_t **out)
{
    uint32_t *d = malloc((size_t)n * 4 + 4);
    int r;

    if (!d)
        return vdisk_error(ENOMEM, "%s: out of memory for a grain directory of %u entries",
                           sp->file->path, n);
    r = vdisk_file_pread(sp->file, d, (size_t)n * 4, off * VMDK_SECTOR);
    if (r < 0) {
        free(d);
        return r;
    }
    for (uint32_t i = 0; i < n; i++)
        d[i] = le32toh(d[i]);
    *out = d;
    return 0;
}

/* One seSparse entry E (a directory entry when DIR) as a 32-bit GD/GT value; -errno. */
static int se_entry(struct vmdk_sparse *sp, uint64_t e, bool dir, uint32_t *out)
{
    uint64_t v;

    if (dir) {
        if (e == 0) {
            *out = 0;
            return 0;
        }
        if ((e & 0xffffffff00000000ull) != 0x1000000000000000ull)
            return vdisk_error(EINVAL, "%s: bad seSparse directory entry 0x%016llx", sp->file->path,
                               (unsigned long long)e);
        v = sp->se_gt_off + (e & 0xffffffffull) * (sp->gtes * 8ull / VMDK_SECTOR);
    } else {
        switch (e >> 60) {
        case 0:
            if (e)
                return vdisk_error(EINVAL, "%s: bad seSparse grain entry 0x%016llx", sp->file->path,
                                   (unsigned long long)e);
            *out = 0;
            return 0;
        case 1: /* unmapped */
        case 2: /* zero */
            *out = VMDK_GTE_ZERO;
            return 0;
        case 3:
            v = ((e & 0x0fff000000000000ull) >> 48) | ((e & 0x0000ffffffffffffull) << 12);
            if (v > (UINT32_MAX - sp->se_grains_off) / sp->grain)
                return vdisk_error(EFBIG, "%s: seSparse grain past 2 TiB", sp->file->path);
            v = sp->se_grains_off + v * sp->grain;
            break;
        default:
            return vdisk_error(EINVAL, "%s: bad seSparse grain entry 0x%016llx", sp->file->path,
                               (unsigned long long)e);
        }
    }
    if (v <= VMDK_GTE_ZERO || v > UINT32_MAX)
        return vdisk_error(EINVAL, "%s: seSparse entry 0x%016llx points out of range",
                           sp->file->path, (unsigned long long)e);
    *out = (uint32_t)v;
    return 0;
}

/* Read N 64-bit seSparse entries at sector OFF, converted, into *OUT. */
static int read_dir64(struct vmdk_sparse *sp, uint64_t off, uint32_t n, bool dir, uint32_t **out)
{
    uint64_t *raw = malloc((size_t)n * 8 + 8);
    uint32_t *d = malloc((size_t)n * 4 + 4);
    int r = raw && d ? 0 : vdisk_error(ENOMEM, "%s: out of memory", sp->file->path);

    if (r == 0)
        r = vdisk_file_pread(sp->file, raw, (size_t)n * 8, off * VMDK_SECTOR);
    for (uint32_t i = 0; r == 0 && i < n; i++)
        r = se_entry(sp, le64toh(raw[i]), dir, &d[i]);
    free(raw);
    if (r < 0) {
        free(d);
        return r;
    }
    *out = d;
    return 0;
}

/* Parse an seSparse const header H (and its volatile header). */
static int parse_se(struct vmdk_sparse *sp, const uint8_t *h)
{
    const char *path = sp->file->path;
    uint8_t vh[VMDK_SECTOR];
    uint64_t dir_sectors = get_le64(h + 136);
    int r;

    sp->se = true;
    if (get_le64(h + 8) != VMDK_SE_VERSION)
        return vdisk_error(ENOTSUP, "%s: seSparse version 0x%016llx is not supported", path,
                           (unsigned long long)get_le64(h + 8));
    if (get_le64(h + 24) != 8 || get_le64(h + 32) != 64 || get_le64(h + 40) != 0)
        return vdisk_error(ENOTSUP,
                           "%s: seSparse with grains of %llu sectors, tables of %llu sectors or "
                           "flags 0x%llx is not supported",
                           path, (unsigned long long)get_le64(h + 24),
                           (unsigned long long)get_le64(h + 32),
                           (unsigned long long)get_le64(h + 40));
    sp->capacity = get_le64(h + 16);
    sp->grain = 8;
    sp->gtes = 64 * VMDK_SECTOR / 8;
    sp->gd_off = get_le64(h + 128);
    sp->gd_n = dir_sectors > UINT32_MAX / 64 ? UINT32_MAX : (uint32_t)(dir_sectors * 64);
    sp->se_gt_off = get_le64(h + 144);
    sp->se_grains_off = get_le64(h + 192);
    sp->zero_gte = true;
    if (sp->se_grains_off > UINT32_MAX || sp->se_gt_off > UINT32_MAX)
        return vdisk_error(EINVAL, "%s: seSparse areas past 2 TiB", path);
    r = vdisk_file_pread(sp->file, vh, sizeof(vh), get_le64(h + 80) * VMDK_SECTOR);
    if (r < 0)
        return r;
    if (get_le64(vh) != VMDK_SE_VOL_MAGIC)
        return vdisk_error(EINVAL, "%s: bad seSparse volatile header", path);
    if (get_le64(vh + 24))
        return vdisk_error(ENOTSUP, "%s: seSparse journal must be replayed (by ESXi) first", path);
    return 0;
}

/* Parse a COWD (vmfsSparse) header. */
static int parse_cowd(struct vmdk_sparse *sp, const uint8_t *h)
{
    sp->cowd = true;
    sp->version = get_le32(h + 4);
    if (sp->version != 1)
        return vdisk_error(ENOTSUP, "%s: COWD version %u is not supported", sp->file->path,
                           sp->version);
    sp->capacity = get_le32(h + 12);
    sp->grain = get_le32(h + 16);
    sp->gd_off = get_le32(h + 20);
    sp->gd_n = get_le32(h + 24);
    sp->gtes = 4096;
    return 0;
}

/* Parse a KDMV header H. */
static int parse_kdmv(struct vmdk_sparse *sp, const uint8_t *h)
{
    const char *path = sp->file->path;
    uint16_t algo = (uint16_t)(h[77] | h[78] << 8);

    sp->version = get_le32(h + 4);
    sp->flags = get_le32(h + 8);
    sp->capacity = get_le64(h + 12);
    sp->grain = get_le64(h + 20);
    sp->desc_off = get_le64(h + 28);
    sp->desc_size = get_le64(h + 36);
    sp->gtes = get_le32(h + 44);
    sp->rgd_off = (sp->flags & VMDK_FLAG_RGD) ? get_le64(h + 48) : 0;
    sp->gd_off = get_le64(h + 56);
    sp->overhead = get_le64(h + 64);
    if (sp->version < 1 || sp->version > 3)
        return vdisk_error(ENOTSUP, "%s: sparse extent version %u is not supported", path,
                           sp->version);
    sp->compressed = sp->flags & VMDK_FLAG_COMPRESS;
    sp->markers = sp->flags & VMDK_FLAG_MARKERS;
    sp->zero_gte = sp->flags & VMDK_FLAG_ZERO_GTE;
    if (sp->compressed && algo != 1)
        return vdisk_error(ENOTSUP, "%s: compression algorithm %u is not supported", path, algo);
    return 0;
}

/* A stream's header says "directory at the end": take the footer's header instead. */
static int read_footer(struct vmdk_sparse *sp, uint64_t fsize)
{
    uint8_t f[3 * VMDK_SECTOR];
    int r;

    if (fsize < 4 * VMDK_SECTOR)
        return vdisk_error(EINVAL, "%s: stream has no room for its footer", sp->file->path);
    r = vdisk_file_pread(sp->file, f, sizeof(f), fsize - sizeof(f));
    if (r < 0)
        return r;
    if (get_le32(f + 12) != VMDK_MARKER_FOOTER || get_le32(f + 512) != VMDK_MAGIC)
        return vdisk_error(EINVAL,
                           "%s: stream's grain directory is in its footer, but there is no "
                           "footer at the end of the file",
                           sp->file->path);
    r = parse_kdmv(sp, f + 512);
    if (r == 0 && sp->gd_off == VMDK_GD_AT_END)
        r = vdisk_error(EINVAL, "%s: stream footer has no grain directory", sp->file->path);
    return r;
}

/* Check the geometry; set gd_n, grain_bytes. */
static int check_geometry(struct vmdk_sparse *sp, uint64_t fsize)
{
    const char *path = sp->file->path;
    uint64_t per_gt, n;

    if (sp->grain == 0 || sp->grain > VMDK_MAX_GRAIN || (sp->grain & (sp->grain - 1)))
        return vdisk_error(EINVAL,
                           "%s: grain size of %llu sectors is invalid (a power of two up to "
                           "%u sectors)",
                           path, (unsigned long long)sp->grain, VMDK_MAX_GRAIN);
    if (sp->gtes == 0 || sp->gtes > 4096)
        return vdisk_error(EINVAL, "%s: %u entries per grain table is invalid (1 to 4096)", path,
                           sp->gtes);
    if (sp->capacity == 0 || sp->capacity > (uint64_t)INT64_MAX / VMDK_SECTOR)
        return vdisk_error(EINVAL, "%s: capacity of %llu sectors is invalid", path,
                           (unsigned long long)sp->capacity);
    sp->grain_bytes = sp->grain * VMDK_SECTOR;
    per_gt = sp->grain * sp->gtes;
    n = (sp->capacity + per_gt - 1) / per_gt;
    if ((sp->cowd || sp->se) && sp->gd_n < n)
        return vdisk_error(EINVAL, "%s: %u directory entries cannot cover %llu sectors", path,
                           sp->gd_n, (unsigned long long)sp->capacity);
    if (!sp->cowd && !sp->se)
        sp->gd_n = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    if (sp->se)
        n *= 2; /* 8-byte entries */
    /* the directory lies in the file: a huge one is a damaged (or hostile) header */
    if (n * 4 > fsize || sp->gd_off > fsize / VMDK_SECTOR ||
        sp->gd_off * VMDK_SECTOR + n * 4 > fsize ||
        (sp->rgd_off &&
         (sp->rgd_off > fsize / VMDK_SECTOR || sp->rgd_off * VMDK_SECTOR + n * 4 > fsize)))
        return vdisk_error(EINVAL,
                           "%s: grain directory of %llu entries at sector %llu does not fit in "
                           "the file (%llu bytes)",
                           path, (unsigned long long)n, (unsigned long long)sp->gd_off,
                           (unsigned long long)fsize);
    if (sp->gd_off == 0)
        return vdisk_error(EINVAL, "%s: sparse header has no grain directory", path);
    return 0;
}

int vmdk_sparse_open(struct vdisk_node *node, struct vdisk_file *file, bool writable,
                     struct vmdk_sparse **spp)
{
    struct vmdk_sparse *sp = calloc(1, sizeof(*sp));
    uint64_t fsize;
    int r;

    if (!sp)
        return vdisk_error(ENOMEM, "%s: out of memory", file->path);
    sp->file = file;
    r = vdisk_file_get_size(file, &fsize);
    if (r == 0)
        r = vdisk_file_pread(file, sp->hdr, VMDK_SECTOR, 0);
    if (r < 0)
        goto err;
    if (fsize < VMDK_SECTOR) {
        r = vdisk_error(EINVAL, "%s: sparse extent is truncated (%llu bytes)", file->path,
                        (unsigned long long)fsize);
        goto err;
    }
    if (get_le32(sp->hdr) == VMDK_COWD_MAGIC)
        r = parse_cowd(sp, sp->hdr);
    else if (get_le32(sp->hdr) == VMDK_MAGIC)
        r = parse_kdmv(sp, sp->hdr);
    else if (get_le64(sp->hdr) == VMDK_SE_MAGIC)
        r = parse_se(sp, sp->hdr);
    else
        r = vdisk_error(EINVAL, "%s: not a VMDK sparse extent (no KDMV, COWD or seSparse magic)",
                        file->path);
    if (r == 0 && !sp->cowd && sp->gd_off == VMDK_GD_AT_END) {
        sp->stream = true;
        r = read_footer(sp, fsize);
    }
    if (r == 0)
        r = check_geometry(sp, fsize);
    if (r == 0 && sp->se) /* only the entries the capacity needs */
        sp->gd_n = (uint32_t)((sp->capacity + sp->grain * sp->gtes - 1) / (sp->grain * sp->gtes));
    if (r == 0)
        r = sp->se ? read_dir64(sp, sp->gd_off, sp->gd_n, true, &sp->gd)
                   : read_dir(sp, sp->gd_off, sp->gd_n, &sp->gd);
    if (r == 0 && sp->rgd_off)
        r = read_dir(sp, sp->rgd_off, sp->gd_n, &sp->rgd);
    if (r < 0)
        goto err;
    sp->stream = sp->stream || (sp->compressed && sp->markers);
    sp->gt = calloc(sp->gd_n ? sp->gd_n : 1, sizeof(*sp->gt));
    sp->gt_dirty = calloc(sp->gd_n ? sp->gd_n : 1, 1);
    if (!sp->gt || !sp->gt_dirty) {
        r = vdisk_error(ENOMEM, "%s: out of memory", file->path);
        goto err;
    }
    sp->end = (fsize + 4095) & ~4095ull;
    if (writable && (sp->cowd || sp->se)) {
        r = vdisk_error(ENOTSUP, "%s: %s extents are read-only here; open with -r", file->path,
                        sp->se ? "seSparse" : "COWD (vmfsSparse)");
        goto err;
    }
    if (writable && !sp->stream) {
        r = vmdk_overlap_build(node, sp, NULL, NULL);
        if (r < 0)
            goto err;
    }
    *spp = sp;
    return 0;
err:
    vmdk_sparse_close(sp);
    return r;
}

void vmdk_sparse_close(struct vmdk_sparse *sp)
{
    if (!sp)
        return;
    vmdk_stream_free(sp);
    for (uint32_t i = 0; sp->gt && i < sp->gd_n; i++)
        free(sp->gt[i]);
    free(sp->gt);
    free(sp->gt_dirty);
    free(sp->gd);
    free(sp->rgd);
    overlap_free(&sp->meta);
    free(sp);
}

int vmdk_sparse_read_desc(struct vmdk_sparse *sp, char **text, size_t *len)
{
    uint64_t fsize;
    int r;

    *text = NULL;
    *len = 0;
    if (sp->cowd || sp->se || sp->desc_off == 0 || sp->desc_size == 0)
        return 0;
    r = vdisk_file_get_size(sp->file, &fsize);
    if (r < 0)
        return r;
    if (sp->desc_size > VMDK_MAX_DESC / VMDK_SECTOR || sp->desc_off > fsize / VMDK_SECTOR)
        return vdisk_error(EINVAL, "%s: embedded descriptor (%llu sectors at %llu) is out of range",
                           sp->file->path, (unsigned long long)sp->desc_size,
                           (unsigned long long)sp->desc_off);
    *len = sp->desc_size * VMDK_SECTOR;
    *text = calloc(1, *len + 1);
    if (!*text)
        return vdisk_error(ENOMEM, "%s: out of memory", sp->file->path);
    r = vdisk_file_pread(sp->file, *text, *len, sp->desc_off * VMDK_SECTOR);
    if (r < 0) {
        free(*text);
        *text = NULL;
    }
    return r;
}

int vmdk_sparse_gt(struct vmdk_sparse *sp, const char *path, uint32_t i, bool nowait,
                   uint32_t **gtp)
{
    uint64_t off = (uint64_t)sp->gd[i] * VMDK_SECTOR, bytes = (uint64_t)sp->gtes * (sp->se ? 8 : 4);
    uint32_t *t;
    int r;

    if (sp->gt[i]) {
        *gtp = sp->gt[i];
        return 0;
    }
    if (nowait)
        return -EAGAIN;
    if (off + bytes > sp->end)
        return vdisk_error(EIO, "%s: extent %s: grain table %u at sector %u lies outside the file",
                           path, sp->file->path, i, sp->gd[i]);
    r = sp->se ? read_dir64(sp, sp->gd[i], sp->gtes, false, &t)
               : read_dir(sp, sp->gd[i], sp->gtes, &t);
    if (r < 0)
        return r;
    sp->gt[i] = t;
    *gtp = t;
    return 0;
}

/* The GTE of grain G, loading its table; *GTE 0 also when the table is missing. */
static int lookup(struct vmdk *s, struct vmdk_sparse *sp, uint64_t g, bool nowait, uint32_t *gte)
{
    uint64_t i = g / sp->gtes;
    uint32_t *gt;
    int r;

    if (i >= sp->gd_n)
        return vdisk_error(EIO, "%s: grain %llu is past the grain directory", s->node->path,
                           (unsigned long long)g);
    if (sp->gd[i] == 0 && !sp->gt[i]) {
        *gte = 0;
        return 0;
    }
    r = vmdk_sparse_gt(sp, s->node->path, (uint32_t)i, nowait, &gt);
    if (r < 0)
        return r;
    *gte = gt[g % sp->gtes];
    return 0;
}

/* What a GTE means: a map type; DATA's host offset in *HOST. */
static int classify(struct vmdk *s, struct vmdk_sparse *sp, uint64_t g, uint32_t gte,
                    enum vdisk_map_type *t, uint64_t *host)
{
    if (sp->ws && vmdk_stream_pending(sp, g)) {
        *t = VDISK_MAP_OTHER;
        return 0;
    }
    if (gte == 0) {
        *t = VDISK_MAP_UNALLOCATED;
        return 0;
    }
    if (gte == VMDK_GTE_ZERO && sp->zero_gte) {
        *t = VDISK_MAP_ZERO;
        return 0;
    }
    if ((uint64_t)gte * VMDK_SECTOR >= sp->end || gte < 1)
        return vdisk_error(EIO, "%s: extent %s: grain %llu points outside the file (sector %u)",
                           s->node->path, sp->file->path, (unsigned long long)g, gte);
    *t = sp->compressed ? VDISK_MAP_OTHER : VDISK_MAP_DATA;
    *host = (uint64_t)gte * VMDK_SECTOR;
    return 0;
}

int vmdk_sparse_map(struct vmdk *s, struct vmdk_extent *e, uint64_t rel, uint64_t len,
                    unsigned flags, struct vdisk_map *m)
{
    struct vmdk_sparse *sp = e->sp;
    uint64_t gb = sp->grain_bytes, g = rel / gb, done = 0;
    bool nowait = flags & VDISK_MAP_NOWAIT;
    enum vdisk_map_type t0 = VDISK_MAP_OTHER;
    uint64_t host0 = 0;

    if (sp->ws && (flags & VDISK_MAP_WRITE)) { /* a stream only appends */
        m->type = VDISK_MAP_OTHER;
        m->len = len;
        return 0;
    }
    while (done < len) {
        uint64_t in = (rel + done) % gb, n = gb - in < len - done ? gb - in : len - done, host = 0;
        enum vdisk_map_type t;
        uint32_t gte;
        int r = lookup(s, sp, g, nowait && done == 0, &gte);

        if (r == -EAGAIN && done > 0)
            break;
        if (r == 0)
            r = classify(s, sp, g, gte, &t, &host);
        if (r < 0) {
            if (done > 0)
                break; /* answer what is known; the error comes back on the next map */
            return r;
        }
        if (flags & VDISK_MAP_WRITE && t != VDISK_MAP_DATA)
            t = VDISK_MAP_OTHER;
        if (done == 0) {
            t0 = t;
            host0 = host + in;
        } else if (t != t0 || (t == VDISK_MAP_DATA && host != host0 + done)) {
            break;
        }
        done += n;
        g++;
    }
    if ((flags & VDISK_MAP_WRITE) && t0 == VDISK_MAP_DATA &&
        vmdk_overlap_check(s->node, sp, host0, done) < 0)
        return -EIO;
    m->type = t0;
    m->len = done;
    if (t0 == VDISK_MAP_DATA) {
        m->file = sp->file;
        m->host = host0;
    }
    return 0;
}

int vmdk_read_compressed(struct vmdk_sparse *sp, const char *path, uint64_t g, uint32_t gte,
                         uint64_t end, uint8_t *buf)
{
    uint64_t off = (uint64_t)gte * VMDK_SECTOR, max = sp->grain_bytes * 2 + 4096;
    uLongf out = sp->grain_bytes;
    uint8_t mk[12], *z;
    uint64_t zlen = max;
    int r;

    if (sp->markers) {
        r = vdisk_file_pread(sp->file, mk, sizeof(mk), off);
        if (r < 0)
            return r;
        zlen = get_le32(mk + 8);
        off += sizeof(mk);
        if (zlen == 0 || zlen > max || off + zlen > end)
            return vdisk_error(EIO, "%s: extent %s: grain %llu has a bad marker (%llu bytes)", path,
                               sp->file->path, (unsigned long long)g, (unsigned long long)zlen);
    } else if (off + zlen > end) {
        zlen = end - off;
    }
    z = malloc(zlen);
    if (!z)
        return vdisk_error(ENOMEM, "%s: out of memory", path);
    r = vdisk_file_pread(sp->file, z, zlen, off);
    if (r == 0) {
        int zr = uncompress(buf, &out, z, zlen);

        if (zr != Z_OK && !(zr == Z_DATA_ERROR && !sp->markers && out == sp->grain_bytes))
            r = vdisk_error(EIO, "%s: extent %s: grain %llu does not decompress (zlib %d)", path,
                            sp->file->path, (unsigned long long)g, zr);
        else if (out < sp->grain_bytes)
            memset(buf + out, 0, sp->grain_bytes - out);
    }
    free(z);
    return r;
}

int vmdk_sparse_read(struct vmdk *s, struct vmdk_extent *e, uint8_t *buf, uint64_t len,
                     uint64_t rel, bool locked)
{
    struct vmdk_sparse *sp = e->sp;
    uint64_t gb = sp->grain_bytes;
    uint8_t *tmp = malloc(gb);
    int r = 0;

    if (!tmp)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    while (len > 0 && r == 0) {
        uint64_t g = rel / gb, in = rel % gb, n = gb - in < len ? gb - in : len, end;
        uint32_t gte;
        int pend = 0;

        /* the tables and the writer's pending grains under the lock; grains never move */
        if (!locked)
            pthread_mutex_lock(&s->lock);
        r = lookup(s, sp, g, false, &gte);
        if (r == 0 && sp->ws && (pend = vmdk_stream_read_pending(sp, g, tmp)) < 0)
            r = pend;
        end = sp->end;
        if (!locked)
            pthread_mutex_unlock(&s->lock);
        if (r < 0)
            break;
        if (pend == 1)
            memcpy(buf, tmp + in, n);
        else if (gte == 0)
            r = vdisk_node_read_backing(s->node, buf, n, e->start + rel);
        else if (gte == VMDK_GTE_ZERO && sp->zero_gte)
            memset(buf, 0, n);
        else if (sp->compressed &&
                 (r = vmdk_read_compressed(sp, s->node->path, g, gte, end, tmp)) == 0)
            memcpy(buf, tmp + in, n);
        else if (!sp->compressed)
            r = vdisk_file_pread(sp->file, buf, n, (uint64_t)gte * VMDK_SECTOR + in);
        buf += n;
        rel += n;
        len -= n;
    }
    free(tmp);
    return r;
}

int vmdk_sparse_new_gt(struct vmdk *s, struct vmdk_sparse *sp, uint64_t i)
{
    uint64_t bytes = ((uint64_t)sp->gtes * 4 + VMDK_SECTOR - 1) & ~(uint64_t)(VMDK_SECTOR - 1);

    sp->gt[i] = calloc(sp->gtes, 4);
    if (!sp->gt[i])
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    sp->gd[i] = (uint32_t)(sp->end / VMDK_SECTOR);
    sp->end += bytes;
    if (sp->rgd) {
        sp->rgd[i] = (uint32_t)(sp->end / VMDK_SECTOR);
        sp->end += bytes;
    }
    sp->gt_dirty[i] = 1;
    sp->gd_dirty = true;
    if (overlap_add(&sp->meta, (uint64_t)sp->gd[i] * VMDK_SECTOR, bytes, "grain table") < 0 ||
        (sp->rgd &&
         overlap_add(&sp->meta, (uint64_t)sp->rgd[i] * VMDK_SECTOR, bytes, "grain table") < 0))
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    return vdisk_file_truncate(sp->file, sp->end);
}

/* The table of grain G for writing (a new one when missing). */
static int gt_for_write(struct vmdk *s, struct vmdk_sparse *sp, uint64_t g, uint32_t **gtp)
{
    uint64_t i = g / sp->gtes;
    int r;

    if (i >= sp->gd_n)
        return vdisk_error(EIO, "%s: grain %llu is past the grain directory", s->node->path,
                           (unsigned long long)g);
    if (sp->gd[i] == 0 && !sp->gt[i]) {
        r = vmdk_sparse_new_gt(s, sp, i);
        if (r < 0)
            return r;
    }
    r = vmdk_sparse_gt(sp, s->node->path, (uint32_t)i, false, gtp);
    if (r == 0)
        *gtp += g % sp->gtes;
    return r;
}

/* Allocate grain G at the end of the file holding BUF (a whole grain); link it in memory. */
static int append_grains(struct vmdk *s, struct vmdk_sparse *sp, uint64_t g, uint64_t k,
                         const uint8_t *buf)
{
    uint64_t at = sp->end;
    int r = vmdk_overlap_check(s->node, sp, at, k * sp->grain_bytes);

    if (r == 0)
        r = vdisk_file_pwrite_alloc(sp->file, buf, k * sp->grain_bytes, at);

    if (r < 0)
        return r;
    sp->end += k * sp->grain_bytes;
    for (uint64_t j = 0; j < k; j++) {
        uint32_t *gte;

        r = gt_for_write(s, sp, g + j, &gte);
        if (r < 0)
            return r;
        if (at / VMDK_SECTOR + j * sp->grain > UINT32_MAX)
            return vdisk_error(EFBIG, "%s: extent %s is full (grains past 2 TiB)", s->node->path,
                               sp->file->path);
        *gte = (uint32_t)(at / VMDK_SECTOR + j * sp->grain);
        sp->gt_dirty[(g + j) / sp->gtes] = 1;
    }
    return 0;
}

/* Whole unallocated grains from G covered by LEN bytes: how many in a row. */
static uint64_t whole_run(struct vmdk *s, struct vmdk_sparse *sp, uint64_t g, uint64_t len)
{
    uint64_t k = 0;

    while ((k + 1) * sp->grain_bytes <= len && k < 1024) {
        uint32_t gte;

        if (lookup(s, sp, g + k, false, &gte) < 0 || gte > VMDK_GTE_ZERO ||
            (gte == VMDK_GTE_ZERO && !sp->zero_gte))
            break;
        k++;
    }
    return k;
}

int vmdk_sparse_write(struct vmdk *s, struct vmdk_extent *e, const uint8_t *buf, uint64_t len,
                      uint64_t rel)
{
    struct vmdk_sparse *sp = e->sp;
    uint64_t gb = sp->grain_bytes;
    int r = 0;

    while (len > 0 && r == 0) {
        uint64_t g = rel / gb, in = rel % gb, n = gb - in < len ? gb - in : len, k;
        uint32_t gte;
        uint8_t *tmp;

        r = lookup(s, sp, g, false, &gte);
        if (r < 0)
            break;
        if (gte > VMDK_GTE_ZERO || (gte == VMDK_GTE_ZERO && !sp->zero_gte)) {
            enum vdisk_map_type t;
            uint64_t host;

            r = classify(s, sp, g, gte, &t, &host);
            if (r == 0)
                r = vmdk_overlap_check(s->node, sp, host, gb);
            if (r == 0)
                r = vdisk_file_pwrite(sp->file, buf, n, host + in);
        } else if (in == 0 && (k = whole_run(s, sp, g, len)) > 0) {
            n = k * gb;
            r = append_grains(s, sp, g, k, buf);
        } else {
            /* part of a grain: the rest from the parent, or zeroes */
            tmp = malloc(gb);
            if (!tmp)
                return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
            if (gte == VMDK_GTE_ZERO)
                memset(tmp, 0, gb);
            else
                r = vdisk_node_read_backing(s->node, tmp, gb, e->start + g * gb);
            if (r == 0) {
                memcpy(tmp + in, buf, n);
                r = append_grains(s, sp, g, 1, tmp);
            }
            free(tmp);
        }
        buf += n;
        rel += n;
        len -= n;
    }
    return r;
}

/* Write table T (N entries, host order) at sector AT. */
static int write_table(struct vmdk_sparse *sp, const uint32_t *t, uint32_t n, uint64_t at)
{
    size_t bytes = ((size_t)n * 4 + VMDK_SECTOR - 1) & ~(size_t)(VMDK_SECTOR - 1);
    uint32_t *le = calloc(1, bytes);
    int r;

    if (!le)
        return vdisk_error(ENOMEM, "%s: out of memory", sp->file->path);
    for (uint32_t i = 0; i < n; i++)
        le[i] = htole32(t[i]);
    r = vdisk_file_pwrite(sp->file, le, (size_t)n * 4, at * VMDK_SECTOR);
    free(le);
    return r;
}

int vmdk_sparse_flush(struct vmdk *s, struct vmdk_sparse *sp)
{
    bool dirty = sp->gd_dirty;
    int r;

    (void)s;
    for (uint32_t i = 0; i < sp->gd_n && !dirty; i++)
        dirty = sp->gt_dirty[i];
    if (!dirty)
        return vdisk_file_flush(sp->file);
    r = vdisk_file_flush(sp->file); /* the grains, before the tables that point at them */
    for (uint32_t i = 0; i < sp->gd_n && r == 0; i++) {
        if (!sp->gt_dirty[i])
            continue;
        r = write_table(sp, sp->gt[i], sp->gtes, sp->gd[i]);
        if (r == 0 && sp->rgd && sp->rgd[i])
            r = write_table(sp, sp->gt[i], sp->gtes, sp->rgd[i]);
        if (r == 0)
            sp->gt_dirty[i] = 0;
    }
    if (r == 0 && sp->gd_dirty) {
        r = vdisk_file_flush(sp->file); /* new tables, before the directory */
        if (r == 0)
            r = write_table(sp, sp->gd, sp->gd_n, sp->gd_off);
        if (r == 0 && sp->rgd)
            r = write_table(sp, sp->rgd, sp->gd_n, sp->rgd_off);
        if (r == 0)
            sp->gd_dirty = false;
    }
    if (r == 0)
        r = vdisk_file_flush(sp->file);
    return r;
}

int vmdk_sparse_zero(struct vmdk *s, struct vmdk_extent *e, uint64_t rel, uint64_t len)
{
    struct vmdk_sparse *sp = e->sp;
    uint64_t gb = sp->grain_bytes;
    uint8_t *zero = NULL;
    int r = 0;

    while (len > 0 && r == 0) {
        uint64_t in = rel % gb, n = gb - in < len ? gb - in : len;
        uint32_t *gte;

        if (n == gb) { /* a whole grain: the zeroed-grain entry (an old grain is left unused) */
            r = gt_for_write(s, sp, rel / gb, &gte);
            if (r == 0 && *gte != VMDK_GTE_ZERO) {
                *gte = VMDK_GTE_ZERO;
                sp->gt_dirty[rel / gb / sp->gtes] = 1;
            }
        } else {
            if (!zero && !(zero = calloc(1, gb)))
                return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
            r = vmdk_sparse_write(s, e, zero, n, rel);
        }
        rel += n;
        len -= n;
    }
    free(zero);
    return r;
}
