/* SPDX-License-Identifier: MIT */
/*
 * Create a VHDX image: file type identifier, both headers, both region
 * tables, the log (empty), the metadata region and the BAT; fixed images get
 * every block laid out (sparse), differencing images a parent locator that
 * links to the parent's DataWriteGuid.
 *
 * Layout: headers and region tables in the first MiB, then the log, the
 * metadata region (1 MiB), the BAT, and the payload blocks.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "../error.h"
#include "../node.h"
#include "vhdx.h"

struct create_opts {
    bool fixed, zero_state;
    uint64_t block_size, log_size, lss;
    const char *backing;
};

static int parse_opts(const char *path, const struct vdisk_options *o, uint64_t size,
                      struct create_opts *c)
{
    const char *sub = vdisk_options_get(o, "subformat");
    const char *bfmt = vdisk_options_get(o, "backing_fmt");
    uint64_t def = size > (32ull << 40)    ? 64 * MiB
                   : size > (100ull << 30) ? 32 * MiB
                   : size > (1ull << 30)   ? 16 * MiB
                                           : 8 * MiB; /* as qemu-img chooses */
    int r;

    if (sub && strcmp(sub, "dynamic") != 0 && strcmp(sub, "fixed") != 0)
        return vdisk_error(EINVAL, "%s: subformat must be dynamic or fixed, not '%s'", path, sub);
    c->fixed = sub && strcmp(sub, "fixed") == 0;
    c->backing = vdisk_options_get(o, "backing_file");
    if ((r = vdisk_options_get_size(o, "block_size", def, &c->block_size)) < 0 ||
        (r = vdisk_options_get_size(o, "log_size", MiB, &c->log_size)) < 0 ||
        (r = vdisk_options_get_size(o, "logical_sector_size", 512, &c->lss)) < 0 ||
        (r = vdisk_options_get_bool(o, "block_state_zero", true, &c->zero_state)) < 0)
        return vdisk_error_prefix(-r, "%s", path);
    if (c->block_size == 0)
        c->block_size = def;
    if (c->block_size < VHDX_MIN_BLOCK || c->block_size > VHDX_MAX_BLOCK ||
        (c->block_size & (c->block_size - 1)))
        return vdisk_error(EINVAL, "%s: block_size must be a power of two from 1M to 256M", path);
    if (c->log_size < MiB || c->log_size % MiB || c->log_size > (1ull << 31))
        return vdisk_error(EINVAL, "%s: log_size must be a multiple of 1M, from 1M to 2G", path);
    if (c->lss != 512 && c->lss != 4096)
        return vdisk_error(EINVAL, "%s: logical_sector_size must be 512 or 4096", path);
    if (c->backing && c->fixed)
        return vdisk_error(EINVAL, "%s: a differencing VHDX cannot be fixed", path);
    if (c->backing && bfmt && strcmp(bfmt, "vhdx") != 0)
        return vdisk_error(EINVAL, "%s: the parent of a differencing VHDX must be a VHDX, not %s",
                           path, bfmt);
    return 0;
}

/* Append a UTF-16 key/value pair to the locator LOC (size *END so far). */
static int locator_add(uint8_t *loc, uint32_t *end, unsigned i, const char *key, const char *val)
{
    long kl = vhdx_utf8_to_utf16(key, loc + *end, 65536 - *end), vl;
    uint8_t *e = loc + 20 + 12 * i;

    if (kl <= 0)
        return -1;
    put_le32(e, *end);
    put_le16(e + 8, (uint16_t)kl);
    *end += (uint32_t)kl;
    vl = vhdx_utf8_to_utf16(val, loc + *end, 65536 - *end);
    if (vl <= 0 || vl > 65535)
        return -1;
    put_le32(e + 4, *end);
    put_le16(e + 10, (uint16_t)vl);
    *end += (uint32_t)vl;
    put_le16(loc + 18, (uint16_t)(i + 1));
    return 0;
}

/* Windows spelling of a path: slashes to backslashes. */
static char *win_path(const char *p)
{
    char *q = strdup(p);

    for (char *c = q; c && *c; c++)
        if (*c == '/')
            *c = '\\';
    return q;
}

/* The parent locator item for parent NAME (linkage GUID LINK) into LOC; its length or -errno. */
static int make_locator(const char *path, const char *name, const char *real, const vhdx_guid *link,
                        uint8_t *loc)
{
    char g[39], *rel = win_path(name), *abs = real ? win_path(real) : NULL;
    uint32_t end = 20 + 12 * 3;
    int r = 0;

    vhdx_guid_format(link, g);
    memcpy(loc, &VHDX_GUID_LOCATOR_TYPE, 16);
    if (!rel || locator_add(loc, &end, 0, "parent_linkage", g) < 0 ||
        locator_add(loc, &end, 1, "relative_path", rel) < 0 ||
        (abs && locator_add(loc, &end, 2, "absolute_win32_path", abs) < 0))
        r = vdisk_error(EINVAL, "%s: parent name %s does not fit a parent locator", path, name);
    free(rel);
    free(abs);
    return r < 0 ? r : (int)end;
}

/* Read the parent's size and DataWriteGuid. */
static int parent_facts(struct vdisk_node *node, const char *name, uint64_t *size, vhdx_guid *link,
                        char **real)
{
    char *p = vdisk_node_resolve(node, name);
    struct vdisk_image *img;
    int r;

    if (!p)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    r = vdisk_open(p, "vhdx", VDISK_OPEN_RDONLY, NULL, &img);
    if (r < 0) {
        r = vdisk_error_prefix(-r, "%s: parent %s", node->path, p);
        free(p);
        return r;
    }
    *size = vdisk_get_size(img);
    *link = ((struct vhdx *)img->root->priv)->data_write_guid;
    *real = realpath(p, NULL);
    vdisk_close(img);
    free(p);
    return 0;
}

/* One metadata table entry I: item GUID G at OFF, LEN bytes, FLAGS. */
static void meta_entry(uint8_t *t, unsigned i, const vhdx_guid *g, uint32_t off, uint32_t len,
                       uint32_t flags)
{
    uint8_t *e = t + 32 + 32 * i;

    memcpy(e, g, 16);
    put_le32(e + 16, off);
    put_le32(e + 20, len);
    put_le32(e + 24, flags);
    put_le16(t + 10, (uint16_t)(i + 1));
}

/* The metadata region's first 128 KiB: table and items. */
static int make_metadata(uint8_t *m, const struct create_opts *c, uint64_t size, bool parent,
                         const uint8_t *loc, int loclen)
{
    vhdx_guid page83;

    memcpy(m, "metadata", 8);
    meta_entry(m, 0, &VHDX_GUID_FILE_PARAMS, 0x10000, 8, 4);
    put_le32(m + 0x10000, (uint32_t)c->block_size);
    put_le32(m + 0x10004, (c->fixed ? 1 : 0) | (parent ? 2 : 0));
    meta_entry(m, 1, &VHDX_GUID_DISK_SIZE, 0x10008, 8, 6);
    put_le64(m + 0x10008, size);
    meta_entry(m, 2, &VHDX_GUID_PAGE83, 0x10010, 16, 6);
    vhdx_guid_new(&page83);
    memcpy(m + 0x10010, &page83, 16);
    meta_entry(m, 3, &VHDX_GUID_LOGICAL_SS, 0x10020, 4, 6);
    put_le32(m + 0x10020, (uint32_t)c->lss);
    meta_entry(m, 4, &VHDX_GUID_PHYSICAL_SS, 0x10024, 4, 6);
    put_le32(m + 0x10024, 4096);
    if (parent) {
        meta_entry(m, 5, &VHDX_GUID_PARENT_LOCATOR, 0x10100, (uint32_t)loclen, 4);
        memcpy(m + 0x10100, loc, (size_t)loclen);
    }
    return 0;
}

/* A region table naming the BAT and the metadata region. */
static void make_regions(uint8_t *t, uint64_t bat_off, uint64_t bat_len, uint64_t meta_off)
{
    memcpy(t, "regi", 4);
    put_le32(t + 8, 2);
    memcpy(t + 16, &VHDX_GUID_BAT, 16);
    put_le64(t + 32, bat_off);
    put_le32(t + 40, (uint32_t)bat_len);
    put_le32(t + 44, 1);
    memcpy(t + 48, &VHDX_GUID_META, 16);
    put_le64(t + 64, meta_off);
    put_le32(t + 72, MiB);
    put_le32(t + 76, 1);
    put_le32(t + 4, vhdx_checksum(t, VHDX_RT_SIZE, 4));
}

int vhdx_create(struct vdisk_node *node, uint64_t size, const struct vdisk_options *o)
{
    const char *path = node->path;
    struct create_opts c;
    struct vhdx s = {.node = node, .file = node->file, .hdr_slot = 1};
    uint8_t *buf = NULL, *loc = NULL;
    uint64_t meta_off, bat_off, bat_len, data_off, blocks, cr, entries, pos;
    char *real = NULL;
    vhdx_guid link;
    int loclen = 0, r = parse_opts(path, o, size, &c);

    if (r < 0)
        return r;
    if (c.backing) {
        uint64_t psize = 0;

        r = parent_facts(node, c.backing, &psize, &link, &real);
        if (r < 0)
            return r;
        if (size == 0)
            size = psize;
        loc = calloc(1, 65536);
        r = loc ? make_locator(path, c.backing, real, &link, loc)
                : vdisk_error(ENOMEM, "%s: out of memory", path);
        if (r < 0)
            goto out;
        loclen = r;
    }
    if (size == 0 || size % c.lss || size > VHDX_MAX_SIZE) {
        r = vdisk_error(EINVAL, "%s: VHDX size must be a multiple of %llu bytes, up to 64 TiB",
                        path, (unsigned long long)c.lss);
        goto out;
    }
    blocks = (size + c.block_size - 1) / c.block_size;
    cr = ((1ull << 23) * c.lss) / c.block_size;
    entries = c.backing ? ((blocks + cr - 1) / cr) * (cr + 1) : blocks + (blocks - 1) / cr;
    bat_len = (entries * 8 + MiB - 1) & ~(MiB - 1);
    meta_off = MiB + c.log_size;
    bat_off = meta_off + MiB;
    data_off = bat_off + bat_len;
    buf = calloc(1, bat_len > 2 * VHDX_RT_SIZE ? bat_len : 2 * VHDX_RT_SIZE);
    if (!buf) {
        r = vdisk_error(ENOMEM, "%s: out of memory", path);
        goto out;
    }
    /* the BAT first, then what points at it */
    pos = data_off;
    for (uint64_t b = 0; b < blocks; b++) {
        uint64_t e = c.backing      ? PAYLOAD_NOT_PRESENT
                     : c.fixed      ? pos | PAYLOAD_FULLY_PRESENT
                     : c.zero_state ? PAYLOAD_ZERO
                                    : PAYLOAD_NOT_PRESENT;

        put_le64(buf + 8 * (b + b / cr), e);
        if (c.fixed)
            pos += c.block_size;
    }
    r = vdisk_file_truncate(node->file, pos);
    if (r == 0 && (c.fixed || (c.zero_state && !c.backing))) /* else all zero: left sparse */
        r = vdisk_file_pwrite(node->file, buf, bat_len, bat_off);
    if (r < 0)
        goto out;
    memset(buf, 0, 2 * VHDX_RT_SIZE);
    make_metadata(buf, &c, size, c.backing != NULL, loc, loclen);
    r = vdisk_file_pwrite(node->file, buf, 2 * VHDX_RT_SIZE, meta_off);
    if (r < 0)
        goto out;
    memset(buf, 0, 2 * VHDX_RT_SIZE);
    make_regions(buf, bat_off, bat_len, meta_off);
    r = vdisk_file_pwrite(node->file, buf, VHDX_RT_SIZE, VHDX_RT1_OFF);
    if (r == 0)
        r = vdisk_file_pwrite(node->file, buf, VHDX_RT_SIZE, VHDX_RT2_OFF);
    if (r < 0)
        goto out;
    memset(buf, 0, 520);
    memcpy(buf, "vhdxfile", 8);
    vhdx_utf8_to_utf16("vdisk", buf + 8, 512);
    r = vdisk_file_pwrite(node->file, buf, 520, 0);
    if (r == 0)
        r = vdisk_file_flush(node->file);
    if (r < 0)
        goto out;
    /* the headers last: until they are valid, the file is no VHDX */
    vhdx_guid_new(&s.file_write_guid);
    vhdx_guid_new(&s.data_write_guid);
    s.log_len = (uint32_t)c.log_size;
    s.log_off = MiB;
    r = vhdx_write_headers(&s);
out:
    free(buf);
    free(loc);
    free(real);
    return r;
}
