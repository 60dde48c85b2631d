/* SPDX-License-Identifier: MIT */
/*
 * VHD ("vpc", also "vhd"): probe, footer and dynamic header parsing, the
 * virtual size by the creator rules QEMU follows, open, close and info.
 * A fixed VHD is one linear extent (loop and vdisk.ko can serve it).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "../error.h"
#include "vpc.h"

static const char *const vpc_create_options[] = {
    "subformat", "force_size", "backing_file", "backing_fmt", "block_size", NULL,
};

/* force_size_calc=chs|current_size overrides the creator rules, as QEMU's option. */
static const char *const vpc_open_options[] = {"force_size_calc", NULL};

/* The cookie at offset 0 (dynamic, differencing) or in the last 512 bytes (fixed). */
static int vpc_probe(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t file_size)
{
    if (head_len >= 8 && memcmp(head, "conectix", 8) == 0)
        return 100;
    /* behind the data: a nested image at offset 0 scores higher; +1: old Virtual PC's 511 */
    if (tail && file_size >= VPC_FOOTER_SIZE &&
        (memcmp(tail, "conectix", 8) == 0 || memcmp(tail + 1, "conectix", 8) == 0))
        return 90;
    return 0;
}

uint32_t vpc_checksum(const uint8_t *p, size_t len, size_t skip)
{
    uint32_t sum = 0;

    for (size_t i = 0; i < len; i++)
        if (i < skip || i >= skip + 4)
            sum += p[i];
    return ~sum;
}

/* Is F a footer with its cookie and a right checksum? */
static bool footer_ok(const uint8_t *f)
{
    return memcmp(f + VF_COOKIE, "conectix", 8) == 0 &&
           vpc_checksum(f, VPC_FOOTER_SIZE, VF_CHECKSUM) == get_be32(f + VF_CHECKSUM);
}

int vpc_read_footer(struct vdisk_file *file, uint64_t file_size, uint8_t *footer,
                    bool *end_footer_bad)
{
    uint8_t end[VPC_FOOTER_SIZE];
    int r;

    if (file_size < VPC_FOOTER_SIZE)
        return vdisk_error(EINVAL, "%s: file of %llu bytes is too small for a VHD footer",
                           file->path, (unsigned long long)file_size);
    r = vdisk_file_pread(file, footer, VPC_FOOTER_SIZE, 0);
    if (r == 0)
        r = vdisk_file_pread(file, end, VPC_FOOTER_SIZE, file_size - VPC_FOOTER_SIZE);
    if (r < 0)
        return r;
    *end_footer_bad = false;
    /* a fixed disk's footer wins over a guest's data that looks like a copy at 0 */
    if (footer_ok(end) && get_be32(end + VF_TYPE) == VPC_TYPE_FIXED) {
        memcpy(footer, end, VPC_FOOTER_SIZE);
        return 0;
    }
    if (memcmp(footer, "conectix", 8) == 0 && file_size > VPC_FOOTER_SIZE) {
        *end_footer_bad = memcmp(footer, end, VPC_FOOTER_SIZE) != 0;
        if (footer_ok(footer))
            return 0;
        if (!footer_ok(end))
            return vdisk_error(EINVAL, "%s: VHD footer: bad checksum 0x%08x (expected 0x%08x)",
                               file->path, get_be32(footer + VF_CHECKSUM),
                               vpc_checksum(footer, VPC_FOOTER_SIZE, VF_CHECKSUM));
    }
    memcpy(footer, end, VPC_FOOTER_SIZE);
    if (memcmp(footer + 1, "conectix", 8) == 0)
        return vdisk_error(ENOTSUP,
                           "%s: VHD footer of 511 bytes (an old Virtual PC bug): not supported; "
                           "append one zero byte to the file to repair it",
                           file->path);
    if (memcmp(footer, "conectix", 8) != 0)
        return vdisk_error(EINVAL, "%s: not a VHD image (no \"conectix\" footer)", file->path);
    if (!footer_ok(footer))
        return vdisk_error(EINVAL, "%s: VHD footer: bad checksum 0x%08x (expected 0x%08x)",
                           file->path, get_be32(footer + VF_CHECKSUM),
                           vpc_checksum(footer, VPC_FOOTER_SIZE, VF_CHECKSUM));
    return 0;
}

/*
 * Virtual PC and QEMU's "qemu" creator size disks by CHS; Hyper-V ("win "),
 * Disk2vhd ("d2v "), XenServer ("tap\0"), XenConverter ("CTXS") and QEMU
 * with force_size ("qem2") by current_size; so does any disk whose CHS is at
 * its maximum (CHS cannot describe it).
 */
uint64_t vpc_footer_size(const uint8_t *f, const char *force, bool *chs)
{
    static const char *const by_size[] = {"win ", "qem2", "d2v ", "CTXS"};
    uint64_t sectors = (uint64_t)get_be16(f + VF_CYLS) * f[VF_HEADS] * f[VF_SECS];
    bool use_chs = memcmp(f + VF_APP, "tap\0", 4) != 0;

    for (size_t i = 0; i < sizeof(by_size) / sizeof(by_size[0]); i++)
        if (memcmp(f + VF_APP, by_size[i], 4) == 0)
            use_chs = false;
    if (force && strcmp(force, "chs") == 0)
        use_chs = true;
    else if (force && strcmp(force, "current_size") == 0)
        use_chs = false;
    if (sectors == VPC_MAX_GEOMETRY)
        use_chs = false;
    *chs = use_chs;
    return use_chs ? sectors * VPC_SECTOR : get_be64(f + VF_CURRENT);
}

/* Free everything open() made. */
static void vpc_free(struct vpc *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; s->bitmap && i < s->nblocks; i++)
        free(s->bitmap[i]);
    free(s->bitmap);
    free(s->bstate);
    free(s->bat);
    free(s->parent);
    free(s->zero);
    pthread_rwlock_destroy(&s->lock);
    free(s);
}

bool vpc_block_ok(const struct vpc *s, uint32_t blk)
{
    uint64_t host = (uint64_t)s->bat[blk] * VPC_SECTOR;

    return host >= VPC_FOOTER_SIZE && host + s->bm_size + s->block_size <= s->file_size;
}

/* Read and check the dynamic header and the BAT. */
static int open_dynamic(struct vpc *s)
{
    const char *path = s->node->path;
    uint64_t dyn_off = get_be64(s->footer + VF_DATA_OFF), bat_bytes;
    uint32_t bs;
    int r;

    if (dyn_off > s->file_size || s->file_size - dyn_off < VPC_DYN_SIZE || (dyn_off & 511))
        return vdisk_error(EINVAL, "%s: VHD dynamic header offset %llu is invalid", path,
                           (unsigned long long)dyn_off);
    r = vdisk_file_pread(s->file, s->dyn, VPC_DYN_SIZE, dyn_off);
    if (r < 0)
        return r;
    if (memcmp(s->dyn, "cxsparse", 8) != 0)
        return vdisk_error(EINVAL, "%s: VHD dynamic header: bad cookie", path);
    if (vpc_checksum(s->dyn, VPC_DYN_SIZE, VD_CHECKSUM) != get_be32(s->dyn + VD_CHECKSUM))
        return vdisk_error(EINVAL, "%s: VHD dynamic header: bad checksum 0x%08x (expected 0x%08x)",
                           path, get_be32(s->dyn + VD_CHECKSUM),
                           vpc_checksum(s->dyn, VPC_DYN_SIZE, VD_CHECKSUM));
    bs = get_be32(s->dyn + VD_BLOCK_SIZE);
    if (bs < 4096 || bs > VPC_MAX_BLOCK || (bs & (bs - 1)))
        return vdisk_error(EINVAL, "%s: VHD block size %u is not a power of two from 4K to 256M",
                           path, bs);
    s->block_size = bs;
    s->spb = bs / VPC_SECTOR;
    s->bm_size = ((s->spb / 8) + 511) & ~511u;
    s->max_entries = get_be32(s->dyn + VD_ENTRIES);
    s->bat_off = get_be64(s->dyn + VD_TABLE_OFF);
    bat_bytes = (uint64_t)s->max_entries * 4;
    if (s->max_entries > VPC_MAX_ENTRIES || bat_bytes > s->file_size ||
        s->bat_off > s->file_size - bat_bytes || (s->bat_off & 511))
        return vdisk_error(EINVAL,
                           "%s: VHD BAT of %u entries at %llu does not fit in the file of %llu "
                           "bytes",
                           path, s->max_entries, (unsigned long long)s->bat_off,
                           (unsigned long long)s->file_size);
    if ((uint64_t)s->max_entries * bs < s->node->size)
        return vdisk_error(EINVAL,
                           "%s: VHD BAT of %u blocks of %u bytes is too small for %llu bytes", path,
                           s->max_entries, bs, (unsigned long long)s->node->size);
    s->nblocks = (uint32_t)((s->node->size + bs - 1) / bs);
    s->bat = malloc((size_t)s->nblocks * 4 + 4);
    s->bstate = calloc(s->nblocks + 1, 1);
    s->zero = calloc(1, s->bm_size);
    if (!s->bat || !s->bstate || !s->zero)
        return vdisk_error(ENOMEM, "%s: out of memory for a BAT of %u entries", path, s->nblocks);
    r = vdisk_file_pread(s->file, s->bat, (size_t)s->nblocks * 4, s->bat_off);
    if (r < 0)
        return r;
    s->meta_end = s->bat_off + ((bat_bytes + 511) & ~511ull);
    if (dyn_off + VPC_DYN_SIZE > s->meta_end)
        s->meta_end = dyn_off + VPC_DYN_SIZE;
    for (int i = 0; i < 8; i++) { /* parent locator data is metadata too */
        const uint8_t *l = s->dyn + VD_LOCATORS + 24 * i;
        uint64_t at = get_be64(l + 16), end = at + ((get_be32(l + 8) + 511ull) & ~511ull);

        if (get_be32(l) && at < s->file_size && end <= s->file_size && end > s->meta_end)
            s->meta_end = end;
    }
    s->next_block = s->meta_end;
    for (uint32_t i = 0; i < s->nblocks; i++) {
        s->bat[i] = be32toh(s->bat[i]);
        if (s->bat[i] != VPC_BAT_FREE && !vpc_block_ok(s, i) && !s->node->read_only &&
            !(s->node->flags & VDISK_OPEN_REPAIR)) /* check -r all drops it */
            return vdisk_error(EINVAL,
                               "%s: VHD BAT entry %u (sector %u) points past the end of the file: "
                               "new blocks could land under it; open it read-only",
                               path, i, s->bat[i]);
        if (s->bat[i] != VPC_BAT_FREE && vpc_block_ok(s, i)) {
            uint64_t end = (uint64_t)s->bat[i] * VPC_SECTOR + s->bm_size + bs;

            if (end > s->next_block)
                s->next_block = end;
        }
    }
    return 0;
}

static int vpc_open(struct vdisk_node *node)
{
    struct vpc *s = calloc(1, sizeof(*s));
    const char *force = vdisk_options_get(&node->opts, "force_size_calc");
    uint64_t size;
    int r;

    if (!s)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    vdisk_rwlock_init(&s->lock);
    s->node = node;
    s->file = node->file;
    if (force && strcmp(force, "chs") && strcmp(force, "current_size")) {
        r = vdisk_error(EINVAL, "%s: force_size_calc must be chs or current_size, not '%s'",
                        node->path, force);
        goto err;
    }
    r = vdisk_file_get_size(s->file, &s->file_size);
    if (r == 0)
        r = vpc_read_footer(s->file, s->file_size, s->footer, &s->end_footer_bad);
    if (r < 0)
        goto err;
    s->type = get_be32(s->footer + VF_TYPE);
    size = vpc_footer_size(s->footer, force, &s->use_chs);
    if (size > VPC_MAX_SECTORS * VPC_SECTOR || (size & 511)) {
        r = vdisk_error(EFBIG, "%s: VHD virtual size %llu is over 2040 GiB or not in sectors",
                        node->path, (unsigned long long)size);
        goto err;
    }
    node->size = size;
    switch (s->type) {
    case VPC_TYPE_FIXED:
        if (size > s->file_size - VPC_FOOTER_SIZE) {
            r = vdisk_error(EINVAL, "%s: fixed VHD of %llu bytes is larger than its file",
                            node->path, (unsigned long long)size);
            goto err;
        }
        s->end_footer_bad = false;
        node->caps |= VDISK_CAP_LINEAR;
        node->linear_offset = 0;
        break;
    case VPC_TYPE_DYN:
    case VPC_TYPE_DIFF:
        r = open_dynamic(s);
        if (r == 0 && s->type == VPC_TYPE_DIFF)
            r = vpc_open_parent(s);
        if (r == 0 && s->end_footer_bad && !node->read_only) /* torn by a crash: the copy holds */
            r = vpc_repair_footers(s);
        if (r == 0 && !node->read_only) /* blocks over metadata: no writes (vpc-overlap.c) */
            r = vpc_overlap_scan(s);
        if (r < 0)
            goto err;
        break;
    default:
        r = vdisk_error(ENOTSUP,
                        "%s: VHD disk type %u is not fixed (2), dynamic (3) or "
                        "differencing (4)",
                        node->path, s->type);
        goto err;
    }
    node->priv = s;
    return 0;
err:
    vpc_free(s);
    return r;
}

static void vpc_close(struct vdisk_node *node)
{
    vpc_free(node->priv);
    node->priv = NULL;
}

/* Four characters of a creator field, printable. */
static void fourcc(const uint8_t *p, char *out)
{
    for (int i = 0; i < 4; i++)
        out[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : ' ';
    out[4] = '\0';
}

/* A UUID as text, in the byte order of the file. */
static void uuid_text(const uint8_t *u, char *out)
{
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
             u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
             u[14], u[15]);
}

static int vpc_get_info(struct vdisk_node *node, struct vdisk_info *info)
{
    static const char *const types[] = {"", "", "fixed", "dynamic", "differencing"};
    struct vpc *s = node->priv;
    const uint8_t *f = s->footer;
    char app[5], os[5], uuid[37];
    uint32_t ver = get_be32(f + VF_APP_VER);

    fourcc(f + VF_APP, app);
    fourcc(f + VF_APP_OS, os);
    uuid_text(f + VF_UUID, uuid);
    info->cluster_size = s->block_size;
    info->backing_file = s->parent;
    info->backing_format = s->parent ? "vpc" : NULL;
    vdisk_info_add(info, "disk_type", "%s", types[s->type]);
    vdisk_info_add(info, "creator_app", "%s", app);
    vdisk_info_add(info, "creator_version", "%u.%u", ver >> 16, ver & 0xffff);
    vdisk_info_add(info, "creator_os", "%s", os);
    vdisk_info_add(info, "uuid", "%s", uuid);
    vdisk_info_add(info, "geometry", "%u/%u/%u", get_be16(f + VF_CYLS), f[VF_HEADS], f[VF_SECS]);
    vdisk_info_add(info, "size_from", "%s", s->use_chs ? "chs" : "current_size");
    vdisk_info_add(info, "current_size", "%llu", (unsigned long long)get_be64(f + VF_CURRENT));
    if (s->type != VPC_TYPE_FIXED)
        vdisk_info_add(info, "block_size", "%u", s->block_size);
    if (s->type == VPC_TYPE_DIFF) {
        uint32_t t = get_be32(s->dyn + VD_PARENT_TIME);
        struct stat st;

        uuid_text(s->dyn + VD_PARENT_UUID, uuid);
        vdisk_info_add(info, "parent_uuid", "%s", uuid);
        vdisk_info_add(info, "parent_timestamp", "%llu", (unsigned long long)(t + VPC_EPOCH));
        /* informative only: copying a parent changes its time, not its content */
        if (node->backing && fstat(node->backing->file->fd_buffered, &st) == 0)
            vdisk_info_add(info, "parent_modified_since", "%s",
                           (uint64_t)st.st_mtime > t + VPC_EPOCH ? "yes" : "no");
    }
    return 0;
}

const struct vdisk_format vdisk_format_vpc = {
    .name = "vpc",
    .flags = VDISK_FORMAT_THREAD_SAFE,
    .caps = VDISK_CAP_THREAD_SAFE, /* open() adds VDISK_CAP_LINEAR for fixed disks */
    .create_options = vpc_create_options,
    .open_options = vpc_open_options,
    .probe = vpc_probe,
    .create = vpc_create,
    .open = vpc_open,
    .close = vpc_close,
    .map = vpc_map,
    .write = vpc_write,
    .discard = vpc_discard,
    .write_zeroes = vpc_write_zeroes,
    .get_info = vpc_get_info,
    .check = vpc_check,
    .resize = vpc_resize, /* vpc-resize.c */
};
