/* SPDX-License-Identifier: MIT */
/*
 * qcow2 (QEMU copy-on-write v2 and v3): probe, header parsing and validation,
 * open (backing chain, dirty and autoclear handling), close and create.
 * Spec: QEMU docs/interop/qcow2.txt.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../error.h"
#include "luks.h"
#include "qcow2.h"

static const char *const qcow2_create_options[] = {
    "cluster_size",
    "compat",
    "backing_file",
    "backing_fmt",
    "lazy_refcounts",
    "extended_l2",
    "compression_type",
    "preallocation",
    "refcount_bits",
    "encrypt.format",
    "encrypt.iter-time",
    "key-file",
    "key-fd", /* LUKS: qcow2-crypt.c */
    NULL,
};

/* As QEMU names them; backing_fmt states the backing file's format where the header does not. */
static const char *const qcow2_open_options[] = {
    "l2-cache-size",
    "refcount-cache-size",
    "backing_fmt",
    "key-file", /* encrypt.format=luks: the passphrase (qcow2-crypt.c) */
    "key-fd",
    "keyslot",
    NULL,
};

static int qcow2_probe(const uint8_t *head, size_t head_len, const uint8_t *tail,
                       uint64_t file_size)
{
    (void)tail, (void)file_size;
    if (head_len >= 8 && get_be32(head) == QCOW2_MAGIC &&
        (get_be32(head + 4) == 2 || get_be32(head + 4) == 3))
        return 100;
    return 0;
}

/* Write one 64-bit header field (incompatible or autoclear features). */
int qcow2_write_header_u64(struct qcow2 *s, unsigned field, uint64_t v)
{
    uint8_t b[8];

    put_be64(b, v);
    return vdisk_file_pwrite(s->file, b, 8, field);
}

/* Read a table of N big-endian u64 at OFF into host order (padded to 512 bytes). */
static int read_table(struct qcow2 *s, uint64_t off, uint64_t n, uint64_t **out)
{
    size_t bytes = (n * 8 + 511) & ~511ull;
    uint64_t *t = qcow2_alloc_buf(bytes);
    int r;

    if (!t)
        return vdisk_error(ENOMEM, "%s: out of memory for a %zu-byte table", s->node->path, bytes);
    r = n ? vdisk_file_pread(s->file, t, n * 8, off) : 0;
    if (r < 0) {
        free(t);
        return r;
    }
    for (uint64_t i = 0; i < n; i++)
        t[i] = be64toh(t[i]);
    *out = t;
    return 0;
}

/* Header extensions from OFF to the end of cluster 0 in HDR. */
static int read_extensions(struct qcow2 *s, const uint8_t *hdr, uint64_t off, uint64_t end)
{
    while (off + 8 <= end) {
        uint32_t type = get_be32(hdr + off), len = get_be32(hdr + off + 4);

        off += 8;
        if (type == QCOW2_EXT_END)
            return 0;
        if (len > end - off)
            return vdisk_error(EINVAL,
                               "%s: header extension 0x%x of %u bytes overruns the "
                               "header cluster",
                               s->node->path, type, len);
        if (type == QCOW2_EXT_FDE && len == 16) {
            s->fde_offset = get_be64(hdr + off);
            s->fde_len = get_be64(hdr + off + 8);
        }
        if (type == QCOW2_EXT_BACKING_FMT) {
            free(s->backing_fmt);
            s->backing_fmt = strndup((const char *)hdr + off, len);
            if (!s->backing_fmt)
                return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        }
        off += ((uint64_t)len + 7) & ~7ull;
    }
    return 0;
}

/* Free everything open() made. */
static void qcow2_free(struct qcow2 *s)
{
    if (!s)
        return;
    qcow2_cache_destroy(&s->l2c);
    qcow2_cache_destroy(&s->rbc);
    free(s->l1);
    free(s->reftable);
    free(s->frees);
    free(s->inflight);
    overlap_free(&s->meta);
    overlap_free(&s->snap_meta);
    free(s->backing_name);
    free(s->backing_fmt);
    qcow2_crypt_close(s);
    pthread_rwlock_destroy(&s->lock);
    pthread_mutex_destroy(&s->inflight_lock);
    pthread_cond_destroy(&s->inflight_done);
    pthread_mutex_destroy(&s->pin_lock);
    pthread_cond_destroy(&s->pin_done);
    free(s);
}

/* A cache size in tables: open option KEY (bytes) or DEF bytes, at least MIN tables. */
static int cache_tables(struct qcow2 *s, const char *key, uint64_t def, unsigned min,
                        unsigned *tables)
{
    uint64_t bytes, n;
    int r = vdisk_options_get_size(&s->node->opts, key, def, &bytes);

    if (r < 0)
        return vdisk_error_prefix(-r, "%s: option %s", s->node->path, key);
    n = bytes / s->cluster_size;
    if (n < min)
        n = min;
    if (n > 65536)
        n = 65536;
    *tables = (unsigned)n;
    return 0;
}

/* Parse and check the header; set the geometry fields of S. */
static int parse_header(struct qcow2 *s, const uint8_t *h, uint64_t file_size, uint32_t *hlen)
{
    const char *path = s->node->path;
    uint64_t size, l2_cover;
    uint32_t crypt;

    s->version = get_be32(h + 4);
    if (get_be32(h) != QCOW2_MAGIC)
        return vdisk_error(EINVAL, "%s: not a qcow2 image (bad magic)", path);
    if (s->version != 2 && s->version != 3)
        return vdisk_error(ENOTSUP, "%s: qcow2 version %u is not supported", path, s->version);
    s->cluster_bits = get_be32(h + 20);
    if (s->cluster_bits < QCOW2_MIN_CLUSTER_BITS || s->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
        return vdisk_error(EINVAL, "%s: cluster_bits %u out of range 9..21", path, s->cluster_bits);
    s->cluster_size = 1ull << s->cluster_bits;
    size = get_be64(h + 24);
    crypt = get_be32(h + 32);
    if (crypt == 1)
        return vdisk_error(ENOTSUP,
                           "%s: AES-encrypted qcow2 images (crypt_method 1, broken by "
                           "design) are not supported; encrypt.format=luks is",
                           path);
    if (crypt > 2)
        return vdisk_error(ENOTSUP, "%s: qcow2 crypt_method %u is not supported", path, crypt);
    s->crypt_method = crypt;
    *hlen = QCOW2_V2_HEADER;
    s->refcount_order = 4;
    if (s->version == 3) {
        *hlen = get_be32(h + 100);
        if (*hlen < QCOW2_V3_HEADER || *hlen > s->cluster_size || (*hlen & 7))
            return vdisk_error(EINVAL, "%s: invalid qcow2 header length %u", path, *hlen);
        s->incompat = get_be64(h + 72);
        s->compat = get_be64(h + 80);
        s->autoclear = get_be64(h + 88);
        s->refcount_order = get_be32(h + 96);
        if (s->refcount_order > 6)
            return vdisk_error(EINVAL, "%s: refcount order %u is over 6", path, s->refcount_order);
        if (*hlen > 104)
            s->compression = h[104];
    }
    if (s->incompat & ~QCOW2_INCOMPAT_KNOWN)
        return vdisk_error(ENOTSUP, "%s: unknown incompatible qcow2 features 0x%llx", path,
                           (unsigned long long)(s->incompat & ~QCOW2_INCOMPAT_KNOWN));
    if (s->incompat & QCOW2_INCOMPAT_DATA_FILE)
        return vdisk_error(ENOTSUP, "%s: qcow2 external data files are not supported", path);
    if (!!(s->incompat & QCOW2_INCOMPAT_COMPRESSION) != (s->compression != 0) || s->compression > 1)
        return vdisk_error(ENOTSUP, "%s: unsupported compression type %u", path, s->compression);
    s->ext_l2 = s->incompat & QCOW2_INCOMPAT_EXTL2;
    if (s->ext_l2 && s->cluster_bits < 14)
        return vdisk_error(EINVAL, "%s: extended L2 entries need clusters of 16 KiB or more", path);
    s->l2_entry_bytes = s->ext_l2 ? 16 : 8;
    s->l2_bits = s->cluster_bits - (s->ext_l2 ? 4 : 3);
    s->sc_bits = s->ext_l2 ? s->cluster_bits - 5 : s->cluster_bits;
    s->rb_bits = s->cluster_bits + 3 - s->refcount_order;
    s->rc_max = s->refcount_order == 6 ? UINT64_MAX : (1ull << (1u << s->refcount_order)) - 1;
    s->lazy = (s->compat & QCOW2_COMPAT_LAZY) && s->version >= 3;

    s->l1_size = get_be32(h + 36);
    s->l1_offset = get_be64(h + 40);
    s->rt_offset = get_be64(h + 48);
    s->rt_clusters = get_be32(h + 56);
    s->nb_snapshots = get_be32(h + 60);
    s->snapshots_offset = get_be64(h + 64);

    if (size > (uint64_t)INT64_MAX)
        return vdisk_error(EFBIG, "%s: virtual size %llu is too large", path,
                           (unsigned long long)size);
    if ((uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES)
        return vdisk_error(EFBIG, "%s: L1 table of %u entries is too large", path, s->l1_size);
    l2_cover = 1ull << (s->cluster_bits + s->l2_bits);
    if ((size + l2_cover - 1) / l2_cover > s->l1_size)
        return vdisk_error(EINVAL, "%s: L1 table of %u entries is too small for %llu bytes", path,
                           s->l1_size, (unsigned long long)size);
    if (s->l1_size && ((s->l1_offset & (s->cluster_size - 1)) || s->l1_offset == 0 ||
                       s->l1_offset >= file_size || s->l1_offset > QCOW2_OFFSET_MASK))
        return vdisk_error(EINVAL, "%s: L1 table offset %llu is invalid", path,
                           (unsigned long long)s->l1_offset);
    if ((uint64_t)s->rt_clusters << s->cluster_bits > QCOW2_MAX_RT_BYTES)
        return vdisk_error(EFBIG, "%s: refcount table of %u clusters is too large", path,
                           s->rt_clusters);
    if (s->rt_clusters == 0 || (s->rt_offset & (s->cluster_size - 1)) || s->rt_offset == 0 ||
        s->rt_offset >= file_size)
        return vdisk_error(EINVAL, "%s: refcount table offset %llu is invalid", path,
                           (unsigned long long)s->rt_offset);
    if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS)
        return vdisk_error(EINVAL, "%s: %u snapshots is too many", path, s->nb_snapshots);
    if (s->nb_snapshots &&
        ((s->snapshots_offset & (s->cluster_size - 1)) || s->snapshots_offset >= file_size))
        return vdisk_error(EINVAL, "%s: snapshot table offset %llu is invalid", path,
                           (unsigned long long)s->snapshots_offset);
    s->node->size = size;
    return 0;
}

/* Read the backing file name from the header cluster. */
static int read_backing_name(struct qcow2 *s, const uint8_t *hdr, uint64_t hdr_len)
{
    uint64_t off = get_be64(hdr + 8);
    uint32_t len = get_be32(hdr + 16);

    if (!off)
        return 0;
    if (len == 0 || len > QCOW2_MAX_BACKING_NAME || off > hdr_len || len > hdr_len - off)
        return vdisk_error(EINVAL, "%s: backing file name (%u bytes at %llu) is invalid",
                           s->node->path, len, (unsigned long long)off);
    s->backing_name = strndup((const char *)hdr + off, len);
    if (!s->backing_name)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    if (strlen(s->backing_name) != len)
        return vdisk_error(EINVAL, "%s: backing file name contains a NUL byte", s->node->path);
    return 0;
}

static int qcow2_open(struct vdisk_node *node)
{
    struct qcow2 *s = calloc(1, sizeof(*s));
    uint8_t *hdr = NULL;
    uint64_t file_size, l2_def;
    unsigned l2_tables, rb_tables;
    uint32_t hlen = 0;
    int r;

    if (!s)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    vdisk_rwlock_init(&s->lock);
    pthread_mutex_init(&s->inflight_lock, NULL);
    pthread_cond_init(&s->inflight_done, NULL);
    pthread_mutex_init(&s->pin_lock, NULL);
    pthread_cond_init(&s->pin_done, NULL);
    s->node = node;
    s->file = node->file;
    r = vdisk_file_get_size(s->file, &file_size);
    if (r < 0)
        goto err;
    s->file_size = file_size;
    if (file_size < QCOW2_V2_HEADER) {
        r = vdisk_error(EINVAL, "%s: file of %llu bytes is too small for qcow2", node->path,
                        (unsigned long long)file_size);
        goto err;
    }
    hdr = qcow2_alloc_buf(4096);
    if (!hdr) {
        r = vdisk_error(ENOMEM, "%s: out of memory", node->path);
        goto err;
    }
    r = vdisk_file_pread(s->file, hdr, QCOW2_V3_HEADER + 8, 0);
    if (r < 0)
        goto err;
    r = parse_header(s, hdr, file_size, &hlen);
    if (r < 0)
        goto err;
    if (s->cluster_size > 4096) { /* the header cluster, sized now that it is known */
        free(hdr);
        hdr = qcow2_alloc_buf(s->cluster_size);
        if (!hdr) {
            r = vdisk_error(ENOMEM, "%s: out of memory", node->path);
            goto err;
        }
    }
    r = vdisk_file_pread(s->file, hdr, s->cluster_size, 0);
    if (r == 0)
        r = read_extensions(s, hdr, hlen, s->cluster_size);
    if (r == 0)
        r = read_backing_name(s, hdr, s->cluster_size);
    if (r < 0)
        goto err;
    s->corrupt = s->incompat & QCOW2_INCOMPAT_CORRUPT;
    if (!node->read_only && s->corrupt && !(node->flags & VDISK_OPEN_REPAIR)) {
        r = vdisk_error(EACCES,
                        "%s: image is marked corrupt; it can only be opened read-only "
                        "(repair it with `vdisk check -r all`)",
                        node->path);
        goto err;
    }
    node->dirty_at_open = s->incompat & QCOW2_INCOMPAT_DIRTY;
    if (s->crypt_method == 2) {
        r = qcow2_crypt_open(s);
        if (r < 0)
            goto err;
    }

    r = read_table(s, s->l1_offset, s->l1_size, &s->l1);
    if (r == 0)
        r = read_table(s, s->rt_offset, ((uint64_t)s->rt_clusters << s->cluster_bits) / 8,
                       &s->reftable);
    if (r < 0)
        goto err;
    s->rt_size = ((uint64_t)s->rt_clusters << s->cluster_bits) / 8;
    r = qcow2_overlap_build(s, true);
    if (r < 0)
        goto err;
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t e = s->l1[i] & QCOW2_OFFSET_MASK;

        if (e & (s->cluster_size - 1)) {
            r = vdisk_error(EINVAL, "%s: L1 entry %u points to unaligned offset %llu", node->path,
                            i, (unsigned long long)e);
            goto err;
        }
    }

    /* QEMU's defaults: L2 cache covering the disk up to 32 MiB; 4 refcount blocks. */
    l2_def = (uint64_t)s->l1_size * s->cluster_size;
    if (l2_def > (32u << 20))
        l2_def = 32u << 20;
    r = cache_tables(s, "l2-cache-size", l2_def, 2, &l2_tables);
    if (r == 0)
        r = cache_tables(s, "refcount-cache-size", 4 * s->cluster_size, 2, &rb_tables);
    if (r < 0)
        goto err;
    r = qcow2_cache_init(&s->l2c, l2_tables, s->cluster_size, s->l1_size);
    if (r == 0)
        r = qcow2_cache_init(&s->rbc, rb_tables, s->cluster_size, s->rt_size);
    if (r < 0) {
        r = vdisk_error(ENOMEM, "%s: out of memory for metadata caches", node->path);
        goto err;
    }

    if (s->backing_name) {
        const char *fmt = vdisk_options_get(&node->opts, "backing_fmt");

        r = vdisk_node_open_backing(node, s->backing_name, fmt ? fmt : s->backing_fmt);
        if (r < 0)
            goto err;
    }

    node->priv = s;
    if (!node->read_only) {
        if (s->autoclear) { /* we keep no bitmaps in sync: tell others they are stale */
            s->autoclear = 0;
            r = qcow2_write_header_u64(s, QCOW2_HDR_AUTOCLEAR, 0);
            if (r == 0)
                r = qcow2_sync(s);
            if (r < 0)
                goto err_priv;
        }
        if (s->incompat & QCOW2_INCOMPAT_DIRTY) { /* refcounts may be stale: rebuild */
            struct vdisk_check_result res = {0};

            qcow2_lock_excl(s);
            r = qcow2_check_locked(s, VDISK_CHECK_REPAIR_ALL, &res);
            if (r == 0)
                r = qcow2_flush_locked(s);
            pthread_rwlock_unlock(&s->lock);
            s->incompat &= ~QCOW2_INCOMPAT_DIRTY;
            if (r == 0)
                r = qcow2_write_header_u64(s, QCOW2_HDR_INCOMPAT, s->incompat);
            if (r == 0)
                r = qcow2_sync(s);
            if (r < 0)
                goto err_priv;
        }
    }
    if (!node->read_only && !(node->flags & VDISK_OPEN_REPAIR)) { /* check -r all fixes it */
        qcow2_lock_excl(s);
        r = qcow2_overlap_open_check(s);
        pthread_rwlock_unlock(&s->lock);
        if (r < 0)
            goto err_priv;
    }
    free(hdr);
    return 0;

err_priv:
    node->priv = NULL;
err:
    free(hdr);
    qcow2_free(s);
    return r;
}

static void qcow2_close(struct vdisk_node *node)
{
    struct qcow2 *s = node->priv;

    if (!node->read_only) {
        /* a second flush writes the refcounts that the first one released */
        if (qcow2_flush_locked(s) == 0 && qcow2_flush_locked(s) == 0 && s->dirty_marked) {
            if (qcow2_write_header_u64(s, QCOW2_HDR_INCOMPAT, s->incompat) == 0)
                qcow2_sync(s);
        }
    }
    qcow2_free(s);
    node->priv = NULL;
}

static int qcow2_get_info(struct vdisk_node *node, struct vdisk_info *info)
{
    struct qcow2 *s = node->priv;

    info->cluster_size = (uint32_t)s->cluster_size;
    info->backing_file = s->backing_name;
    info->backing_format = node->backing ? node->backing->fmt->name : s->backing_fmt;
    vdisk_info_add(info, "compat", "%s", s->version >= 3 ? "1.1" : "0.10");
    vdisk_info_add(info, "refcount_bits", "%u", 1u << s->refcount_order);
    vdisk_info_add(info, "compression_type", "%s", s->compression ? "zstd" : "zlib");
    vdisk_info_add(info, "lazy_refcounts", "%s", s->lazy ? "true" : "false");
    vdisk_info_add(info, "extended_l2", "%s", s->ext_l2 ? "true" : "false");
    vdisk_info_add(info, "snapshots", "%u", s->nb_snapshots);
    if (s->crypt) {
        vdisk_info_add(info, "encrypt_format", "luks");
        vdisk_info_add(info, "encrypt_cipher", "%s", s->crypt_cipher);
    }
    return 0;
}

/* Options for create, checked. */
struct create_opts {
    uint64_t cs;
    unsigned version, order;
    bool lazy, ext_l2, prealloc;
    unsigned compression;
    const char *backing, *backing_fmt;
    bool luks;          /* encrypt.format=luks */
    uint64_t iter_ms;   /* its PBKDF2 time (encrypt.iter-time, QEMU's default 2 s) */
    uint64_t fde_bytes; /* the LUKS header's bytes */
    size_t fde_ext;     /* where its header extension lies in the header cluster */
    uint64_t fde_off;   /* where write_layout put it */
};

static int parse_create_opts(const char *path, const struct vdisk_options *o, struct create_opts *c)
{
    const char *v;
    uint64_t bits;
    int r;

    memset(c, 0, sizeof(*c));
    c->version = 3;
    r = vdisk_options_get_size(o, "cluster_size", 65536, &c->cs);
    if (r < 0)
        return r;
    if (c->cs < 512 || c->cs > (2u << 20) || (c->cs & (c->cs - 1)))
        return vdisk_error(EINVAL, "%s: cluster_size must be a power of two from 512 to 2M", path);
    v = vdisk_options_get(o, "compat");
    if (v && (!strcmp(v, "0.10") || !strcmp(v, "v2")))
        c->version = 2;
    else if (v && strcmp(v, "1.1") && strcmp(v, "v3"))
        return vdisk_error(EINVAL, "%s: compat must be 0.10, v2, 1.1 or v3, not '%s'", path, v);
    r = vdisk_options_get_size(o, "refcount_bits", 16, &bits);
    if (r < 0)
        return r;
    if (bits < 1 || bits > 64 || (bits & (bits - 1)))
        return vdisk_error(EINVAL, "%s: refcount_bits must be a power of two from 1 to 64", path);
    c->order = (unsigned)__builtin_ctzll(bits);
    r = vdisk_options_get_bool(o, "lazy_refcounts", false, &c->lazy);
    if (r == 0)
        r = vdisk_options_get_bool(o, "extended_l2", false, &c->ext_l2);
    if (r < 0)
        return r;
    v = vdisk_options_get(o, "compression_type");
    if (v && !strcmp(v, "zstd"))
        c->compression = 1;
    else if (v && strcmp(v, "zlib"))
        return vdisk_error(EINVAL, "%s: compression_type must be zlib or zstd", path);
    v = vdisk_options_get(o, "preallocation");
    if (v && !strcmp(v, "metadata"))
        c->prealloc = true;
    else if (v && strcmp(v, "off"))
        return vdisk_error(EINVAL, "%s: preallocation must be off or metadata", path);
    v = vdisk_options_get(o, "encrypt.format");
    if (v && strcmp(v, "luks"))
        return vdisk_error(EINVAL, "%s: encrypt.format must be luks, not '%s'", path, v);
    c->luks = v != NULL;
    r = vdisk_options_get_size(o, "encrypt.iter-time", 2000, &c->iter_ms);
    if (r < 0 || c->iter_ms == 0 || c->iter_ms > 100000)
        return vdisk_error(EINVAL, "%s: encrypt.iter-time must be 1 to 100000 ms", path);
    if (c->luks)
        c->fde_bytes = luks1_layout_size(64);
    c->backing = vdisk_options_get(o, "backing_file");
    c->backing_fmt = vdisk_options_get(o, "backing_fmt");
    if (c->version == 2 && (c->lazy || c->ext_l2 || c->compression || bits != 16))
        return vdisk_error(EINVAL,
                           "%s: lazy_refcounts, extended_l2, compression_type and "
                           "refcount_bits other than 16 need compat=1.1",
                           path);
    if (c->ext_l2 && c->cs < 16384)
        return vdisk_error(EINVAL, "%s: extended_l2 needs a cluster_size of 16K or more", path);
    if (c->backing && (!*c->backing || strlen(c->backing) > QCOW2_MAX_BACKING_NAME))
        return vdisk_error(EINVAL, "%s: backing_file name is empty or too long", path);
    return 0;
}

/* Fill refcount blocks, L1 and L2 tables of a new image and write them. */
static int write_layout(struct vdisk_file *f, struct create_opts *c, uint64_t size, uint8_t *hdr)
{
    uint64_t cs = c->cs, E = cs * 8 >> c->order, l2e = cs / (c->ext_l2 ? 16 : 8);
    uint64_t ndata = (size + cs - 1) / cs, l1_size = (ndata + l2e - 1) / l2e;
    uint64_t l1c = (l1_size * 8 + cs - 1) / cs, nl2 = 0, nd = 0, rtc = 1, nrb = 1, total;
    uint64_t nfde = (c->fde_bytes + cs - 1) / cs; /* the LUKS header's clusters, after the rest */
    uint64_t rt_at, rb_at, l1_at, l2_at, data_at;
    uint8_t *buf = NULL;
    int r = 0;

    if (l1c == 0)
        l1c = 1;
    if (l1_size * 8 > QCOW2_MAX_L1_BYTES)
        return vdisk_error(EFBIG,
                           "%s: size needs an L1 table over %u bytes: use larger "
                           "clusters",
                           f->path, QCOW2_MAX_L1_BYTES);
    if (c->prealloc) {
        nl2 = l1_size;
        nd = ndata;
    }
    for (;;) {
        uint64_t nnrb, nrtc;

        total = 1 + rtc + nrb + l1c + nl2 + nd + nfde;
        nnrb = (total + E - 1) / E;
        nrtc = (nnrb * 8 + cs - 1) / cs;
        if (nnrb == nrb && nrtc == rtc)
            break;
        nrb = nnrb;
        rtc = nrtc;
    }
    if (rtc * cs > QCOW2_MAX_RT_BYTES)
        return vdisk_error(EFBIG, "%s: refcount table too large: use larger clusters", f->path);
    rt_at = 1;
    rb_at = rt_at + rtc;
    l1_at = rb_at + nrb;
    l2_at = l1_at + l1c;
    data_at = l2_at + nl2;
    put_be32(hdr + 36, (uint32_t)l1_size);
    put_be64(hdr + 40, l1_at * cs);
    put_be64(hdr + 48, rt_at * cs);
    put_be32(hdr + 56, (uint32_t)rtc);
    put_be64(hdr + 24, size);
    if (nfde) {
        c->fde_off = (data_at + nd) * cs;
        put_be64(hdr + c->fde_ext + 8, c->fde_off);
        put_be64(hdr + c->fde_ext + 16, c->fde_bytes);
    }

    buf = qcow2_alloc_buf(cs);
    if (!buf)
        return vdisk_error(ENOMEM, "%s: out of memory", f->path);
    r = vdisk_file_pwrite(f, hdr, cs, 0);
    for (uint64_t i = 0; i < rtc && r == 0; i++) { /* reftable */
        memset(buf, 0, cs);
        for (uint64_t j = 0; j < cs / 8; j++)
            if (i * (cs / 8) + j < nrb)
                put_be64(buf + 8 * j, (rb_at + i * (cs / 8) + j) * cs);
        r = vdisk_file_pwrite(f, buf, cs, (rt_at + i) * cs);
    }
    for (uint64_t b = 0; b < nrb && r == 0; b++) { /* refcount blocks */
        memset(buf, 0, cs);
        for (uint64_t j = 0; j < E && b * E + j < total; j++)
            qcow2_rb_set(buf, j, c->order, 1);
        r = vdisk_file_pwrite(f, buf, cs, (rb_at + b) * cs);
    }
    for (uint64_t i = 0; i < l1c && r == 0; i++) { /* L1 */
        memset(buf, 0, cs);
        for (uint64_t j = 0; j < cs / 8 && c->prealloc; j++)
            if (i * (cs / 8) + j < l1_size)
                put_be64(buf + 8 * j, ((l2_at + i * (cs / 8) + j) * cs) | QCOW2_COPIED);
        r = vdisk_file_pwrite(f, buf, cs, (l1_at + i) * cs);
    }
    for (uint64_t i = 0; i < nl2 && r == 0; i++) { /* preallocated L2 tables */
        memset(buf, 0, cs);
        for (uint64_t j = 0; j < l2e && i * l2e + j < nd; j++) {
            uint8_t *p = buf + j * (c->ext_l2 ? 16 : 8);

            put_be64(p, ((data_at + i * l2e + j) * cs) | QCOW2_COPIED);
            if (c->ext_l2)
                put_be64(p + 8, 0xffffffffull);
        }
        r = vdisk_file_pwrite(f, buf, cs, (l2_at + i) * cs);
    }
    if (r == 0)
        r = vdisk_file_truncate(f, total * cs);
    free(buf);
    return r;
}

static int qcow2_create(struct vdisk_node *node, uint64_t size, const struct vdisk_options *o)
{
    struct vdisk_file *f = node->file;
    struct create_opts c;
    uint8_t *hdr = NULL;
    uint64_t off;
    const char *fmt;
    char *bpath = NULL;
    int r = parse_create_opts(f->path, o, &c);

    if (r < 0)
        return r;
    fmt = c.backing_fmt;
    if (c.backing) { /* the backing image must exist, in the format stated */
        if (!fmt)
            return vdisk_error(EINVAL,
                               "%s: backing_file needs backing_fmt (vdisk never probes a "
                               "backing file, as qemu-img -F)",
                               f->path);
        bpath = vdisk_node_resolve(node, c.backing);
        if (!bpath)
            return vdisk_error(ENOMEM, "%s: out of memory", f->path);
        if (access(bpath, R_OK) < 0) {
            r = vdisk_error(errno, "%s: backing file %s: %m", f->path, bpath);
            goto out;
        }
        if (size == 0) { /* as large as the backing file */
            struct vdisk_image *b;

            r = vdisk_open(bpath, fmt, VDISK_OPEN_RDONLY, NULL, &b);
            if (r < 0) {
                r = vdisk_error_prefix(-r, "%s: backing file %s", f->path, bpath);
                goto out;
            }
            size = vdisk_get_size(b);
            vdisk_close(b);
        }
        if (!vdisk_format_find(fmt)) {
            r = vdisk_error(EINVAL, "%s: backing_fmt %s is not a format vdisk knows", f->path, fmt);
            goto out;
        }
        if (vdisk_format_find(fmt)->qemu_name) /* the header is for QEMU too */
            fmt = vdisk_format_find(fmt)->qemu_name;
    }
    if (size == 0 || (size & 511)) {
        r = vdisk_error(EINVAL, "%s: qcow2 size must be a non-zero multiple of 512 bytes", f->path);
        goto out;
    }
    hdr = qcow2_alloc_buf(c.cs);
    if (!hdr) {
        r = vdisk_error(ENOMEM, "%s: out of memory", f->path);
        goto out;
    }
    put_be32(hdr, QCOW2_MAGIC);
    put_be32(hdr + 4, c.version);
    put_be32(hdr + 20, (uint32_t)__builtin_ctzll(c.cs));
    off = QCOW2_V2_HEADER;
    if (c.version == 3) {
        uint64_t incompat = (c.ext_l2 ? QCOW2_INCOMPAT_EXTL2 : 0) |
                            (c.compression ? QCOW2_INCOMPAT_COMPRESSION : 0);

        put_be64(hdr + 72, incompat);
        put_be64(hdr + 80, c.lazy ? QCOW2_COMPAT_LAZY : 0);
        put_be32(hdr + 96, c.order);
        put_be32(hdr + 100, 112);
        hdr[104] = (uint8_t)c.compression;
        off = 112;
    }
    if (c.luks) { /* crypt_method 2 and the full disk encryption header pointer */
        put_be32(hdr + 32, 2);
        c.fde_ext = off;
        put_be32(hdr + off, QCOW2_EXT_FDE);
        put_be32(hdr + off + 4, 16);
        off += 8 + 16;
        if (!c.backing)
            off += 8; /* end of extensions: zeroes */
    }
    if (c.backing) {
        size_t flen = strlen(fmt), blen = strlen(c.backing);

        if (off + 8 + ((flen + 7) & ~7ull) + 8 + blen > c.cs) {
            r = vdisk_error(EINVAL, "%s: backing file name does not fit in a %llu-byte cluster",
                            f->path, (unsigned long long)c.cs);
            goto out;
        }
        put_be32(hdr + off, QCOW2_EXT_BACKING_FMT);
        put_be32(hdr + off + 4, (uint32_t)flen);
        memcpy(hdr + off + 8, fmt, flen);
        off += 8 + ((flen + 7) & ~7ull);
        off += 8; /* end of extensions: zeroes */
        memcpy(hdr + off, c.backing, blen);
        put_be64(hdr + 8, off);
        put_be32(hdr + 16, (uint32_t)blen);
    }
    r = write_layout(f, &c, size, hdr);
    if (r == 0 && c.luks)
        r = luks1_format(f, f->path, c.fde_off, (uint32_t)c.iter_ms, o);
out:
    free(hdr);
    free(bpath);
    return r;
}

const struct vdisk_format vdisk_format_qcow2 = {
    .name = "qcow2",
    .flags = VDISK_FORMAT_THREAD_SAFE,
    .caps = VDISK_CAP_THREAD_SAFE,
    .create_options = qcow2_create_options,
    .open_options = qcow2_open_options,
    .probe = qcow2_probe,
    .create = qcow2_create,
    .open = qcow2_open,
    .close = qcow2_close,
    .map = qcow2_map,
    .transform = qcow2_crypt_transform,
    .release = qcow2_release,
    .read = qcow2_read,
    .write = qcow2_write,
    .flush = qcow2_flush,
    .discard = qcow2_discard,
    .write_zeroes = qcow2_write_zeroes,
    .get_info = qcow2_get_info,
    .check = qcow2_check,
    .resize = qcow2_resize, /* qcow2-resize.c */
};
