/* SPDX-License-Identifier: MIT */
/*
 * Create a VHD: fixed (data then footer), dynamic (footer copy, dynamic
 * header, an empty BAT, footer) or differencing (backing_file: the parent's
 * UUID, name and locators in the header). Sizes follow QEMU's rules so that
 * QEMU reads the same size: without force_size the size is rounded up to a
 * CHS geometry; with it the size is exact and the CHS is at its maximum
 * (which tells readers to believe current_size; Azure wants this).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "../error.h"
#include "vpc.h"

/* CHS of a disk of TOTAL sectors, as the VHD specification's appendix computes it. */
static void geometry(uint64_t total, uint16_t *c, uint8_t *h, uint8_t *spt)
{
    uint64_t cth, heads, secs;

    if (total > VPC_MAX_GEOMETRY)
        total = VPC_MAX_GEOMETRY;
    if (total >= 65535ull * 16 * 63) {
        secs = 255;
        heads = 16;
        cth = total / secs;
    } else {
        secs = 17;
        cth = total / secs;
        heads = (cth + 1023) / 1024;
        if (heads < 4)
            heads = 4;
        if (cth >= heads * 1024 || heads > 16) {
            secs = 31;
            heads = 16;
            cth = total / secs;
        }
        if (cth >= heads * 1024) {
            secs = 63;
            heads = 16;
            cth = total / secs;
        }
    }
    *c = (uint16_t)(cth / heads);
    *h = (uint8_t)heads;
    *spt = (uint8_t)secs;
}

/* Set the geometry and size fields of footer F for SIZE bytes; *SIZE becomes the disk's. */
static int set_size(uint8_t *f, uint64_t *size, bool force, const char *path)
{
    uint64_t total = (*size + VPC_SECTOR - 1) / VPC_SECTOR, chs = 0;
    uint16_t c = 65535;
    uint8_t h = 16, s = 255;

    if (!force) { /* the smallest geometry that holds the disk */
        for (uint64_t i = 0; chs < total && total + i <= VPC_MAX_GEOMETRY; i++) {
            geometry(total + i, &c, &h, &s);
            chs = (uint64_t)c * h * s;
        }
        if (chs < total) {
            c = 65535, h = 16, s = 255;
        }
        if ((uint64_t)c * h * s != VPC_MAX_GEOMETRY)
            total = (uint64_t)c * h * s;
    }
    if (total == 0 || total > VPC_MAX_SECTORS)
        return vdisk_error(EFBIG, "%s: a VHD holds 512 bytes to 2040 GiB", path);
    *size = total * VPC_SECTOR;
    put_be64(f + VF_ORIG, *size);
    put_be64(f + VF_CURRENT, *size);
    put_be16(f + VF_CYLS, c);
    f[VF_HEADS] = h;
    f[VF_SECS] = s;
    return 0;
}

/* Seconds since 2000-01-01 UTC. */
static uint32_t vpc_now(void)
{
    time_t t = time(NULL);

    return t > (time_t)VPC_EPOCH ? (uint32_t)(t - VPC_EPOCH) : 0;
}

/* A new footer of TYPE; the caller sets the size fields, then vpc_seal(). */
static int new_footer(uint8_t *f, uint32_t type, const char *path)
{
    memset(f, 0, VPC_FOOTER_SIZE);
    memcpy(f + VF_COOKIE, "conectix", 8);
    put_be32(f + VF_FEATURES, 2);
    put_be32(f + VF_VERSION, 0x00010000);
    put_be64(f + VF_DATA_OFF, type == VPC_TYPE_FIXED ? VPC_NO_OFFSET : VPC_FOOTER_SIZE);
    put_be32(f + VF_TIME, vpc_now());
    memcpy(f + VF_APP, "vdsk", 4);
    put_be32(f + VF_APP_VER, 0x00010000);
    memcpy(f + VF_APP_OS, "Wi2k", 4); /* as QEMU: the spec knows Wi2k and Mac only */
    put_be32(f + VF_TYPE, type);
    if (getrandom(f + VF_UUID, 16, 0) != 16)
        return vdisk_error(errno, "%s: no random bytes for the disk's UUID: %m", path);
    f[VF_UUID + 6] = (f[VF_UUID + 6] & 0x0f) | 0x40; /* version 4 */
    f[VF_UUID + 8] = (f[VF_UUID + 8] & 0x3f) | 0x80;
    return 0;
}

static void seal(uint8_t *p, size_t len, size_t field)
{
    put_be32(p + field, 0);
    put_be32(p + field, vpc_checksum(p, len, field));
}

/* Parent of a differencing disk: its footer, real path and modification time. */
struct parent {
    uint8_t footer[VPC_FOOTER_SIZE];
    char *real;
    uint32_t mtime;
};

/* Read the parent NAME (relative to NODE) as a VHD. */
static int read_parent(struct vdisk_node *node, const char *name, struct parent *p)
{
    char *path = vdisk_node_resolve(node, name);
    struct vdisk_file *f = NULL;
    struct stat st;
    uint64_t size;
    bool bad;
    int r;

    if (!path)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    r = vdisk_file_open(path, VDISK_FILE_RDONLY, &f);
    if (r == 0)
        r = vdisk_file_get_size(f, &size);
    if (r == 0)
        r = vpc_read_footer(f, size, p->footer, &bad);
    if (r == 0 && fstat(f->fd_buffered, &st) < 0)
        r = vdisk_error(errno, "%s: %m", path);
    if (r == 0) {
        p->mtime = st.st_mtime > (time_t)VPC_EPOCH ? (uint32_t)(st.st_mtime - VPC_EPOCH) : 0;
        p->real = realpath(path, NULL);
        if (!p->real)
            r = vdisk_error(errno, "%s: %m", path);
    }
    if (r < 0)
        r = vdisk_error_prefix(-r, "%s: backing file %s", node->path, name);
    vdisk_file_close(f);
    free(path);
    return r;
}

/* Write locator I of header D: UTF-16LE TEXT with platform CODE at file offset *AT. */
static int put_locator(struct vdisk_file *f, uint8_t *d, int i, uint32_t code, const char *text,
                       uint64_t *at)
{
    uint8_t *buf = calloc(1, 8192), *l = d + VD_LOCATORS + 24 * i;
    int n = buf ? vpc_to_utf16(text, false, buf, 8192) : -ENOMEM;
    uint32_t space;
    int r;

    if (n < 0) {
        free(buf);
        return vdisk_error(-n, "%s: parent path '%s' cannot be a locator", f->path, text);
    }
    space = ((uint32_t)n + 511) & ~511u;
    r = vdisk_file_pwrite(f, buf, space, *at);
    free(buf);
    put_be32(l, code);
    put_be32(l + 4, space / VPC_SECTOR); /* the spec counts sectors */
    put_be32(l + 8, (uint32_t)n);
    put_be64(l + 16, *at);
    *at += space;
    return r;
}

/* Relative locator text for NAME: Windows style, ".\dir\file". */
static char *relative_text(const char *name)
{
    size_t n = strlen(name);
    char *t = malloc(n + 3);

    if (!t)
        return NULL;
    strcpy(t, name[0] == '.' ? "" : ".\\");
    strcat(t, name);
    for (char *c = t; *c; c++)
        if (*c == '/')
            *c = '\\';
    return t;
}

/* The parent part of a differencing header: UUID, time, name, locators at *AT. */
static int set_parent(struct vdisk_file *f, uint8_t *d, const char *name, const struct parent *p,
                      uint64_t *at)
{
    char *rel = relative_text(name);
    int r, n;

    if (!rel)
        return vdisk_error(ENOMEM, "%s: out of memory", f->path);
    memcpy(d + VD_PARENT_UUID, p->footer + VF_UUID, 16);
    put_be32(d + VD_PARENT_TIME, p->mtime);
    n = vpc_to_utf16(name, true, d + VD_PARENT_NAME, 510);
    r = n < 0 ? vdisk_error(-n, "%s: parent name '%s' does not fit the header", f->path, name) : 0;
    if (r == 0 && name[0] != '/') /* a name given absolute has only the absolute locator */
        r = put_locator(f, d, 0, VPC_PLAT_W2RU, rel, at);
    if (r == 0)
        r = put_locator(f, d, name[0] != '/', VPC_PLAT_W2KU, p->real, at);
    free(rel);
    return r;
}

/* The dynamic header, BAT and footers of a dynamic or differencing disk. */
static int write_dynamic(struct vdisk_file *f, uint8_t *foot, uint64_t size, uint32_t bs,
                         const char *parent_name, const struct parent *p)
{
    uint32_t entries = (uint32_t)((size + bs - 1) / bs);
    uint64_t bat_bytes = ((uint64_t)entries * 4 + 511) & ~511ull, at = 1536 + bat_bytes;
    uint8_t d[VPC_DYN_SIZE] = {0}, *bat = malloc(bat_bytes);
    int r;

    if (!bat)
        return vdisk_error(ENOMEM, "%s: out of memory", f->path);
    memset(bat, 0xff, bat_bytes);
    memcpy(d, "cxsparse", 8);
    put_be64(d + VD_DATA_OFF, VPC_NO_OFFSET);
    put_be64(d + VD_TABLE_OFF, 1536);
    put_be32(d + VD_VERSION, 0x00010000);
    put_be32(d + VD_ENTRIES, entries);
    put_be32(d + VD_BLOCK_SIZE, bs);
    r = vdisk_file_pwrite(f, bat, bat_bytes, 1536);
    if (r == 0 && parent_name)
        r = set_parent(f, d, parent_name, p, &at);
    seal(d, VPC_DYN_SIZE, VD_CHECKSUM);
    seal(foot, VPC_FOOTER_SIZE, VF_CHECKSUM);
    if (r == 0)
        r = vdisk_file_pwrite(f, d, VPC_DYN_SIZE, VPC_FOOTER_SIZE);
    if (r == 0)
        r = vdisk_file_pwrite(f, foot, VPC_FOOTER_SIZE, 0);
    if (r == 0)
        r = vdisk_file_pwrite(f, foot, VPC_FOOTER_SIZE, at);
    free(bat);
    return r;
}

int vpc_create(struct vdisk_node *node, uint64_t size, const struct vdisk_options *o)
{
    struct vdisk_file *f = node->file;
    const char *sub = vdisk_options_get(o, "subformat");
    const char *backing = vdisk_options_get(o, "backing_file");
    const char *bfmt = vdisk_options_get(o, "backing_fmt");
    struct parent p = {.real = NULL};
    uint8_t foot[VPC_FOOTER_SIZE];
    uint64_t bs;
    bool force;
    uint32_t type = VPC_TYPE_DYN;
    int r;

    r = vdisk_options_get_bool(o, "force_size", false, &force);
    if (r == 0)
        r = vdisk_options_get_size(o, "block_size", VPC_DEFAULT_BLOCK, &bs);
    if (r < 0)
        return r;
    if (bs < 4096 || bs > VPC_MAX_BLOCK || (bs & (bs - 1)))
        return vdisk_error(EINVAL, "%s: block_size must be a power of two from 4K to 256M",
                           f->path);
    if (sub && strcmp(sub, "fixed") == 0)
        type = VPC_TYPE_FIXED;
    else if (sub && strcmp(sub, "dynamic") != 0)
        return vdisk_error(EINVAL, "%s: subformat must be dynamic or fixed, not '%s'", f->path,
                           sub);
    if (backing) {
        if (type == VPC_TYPE_FIXED)
            return vdisk_error(EINVAL, "%s: a fixed VHD cannot have a backing file", f->path);
        if (bfmt && strcmp(bfmt, "vpc") && strcmp(bfmt, "vhd"))
            return vdisk_error(EINVAL, "%s: the parent of a VHD is a VHD, not %s", f->path, bfmt);
        type = VPC_TYPE_DIFF;
    }
    r = new_footer(foot, type, f->path);
    if (r == 0 && type == VPC_TYPE_DIFF)
        r = read_parent(node, backing, &p);
    if (r < 0)
        goto out;
    if (type == VPC_TYPE_DIFF) { /* the parent's size fields: every reader sizes both alike */
        bool chs;
        uint64_t psize = vpc_footer_size(p.footer, NULL, &chs);

        uint8_t scratch[VPC_FOOTER_SIZE];
        uint64_t rounded = size;

        if (size && size != psize && set_size(scratch, &rounded, force, f->path) == 0 &&
            rounded == psize)
            size = psize; /* the same size once rounded to CHS as the parent was */
        if (size && size != psize) {
            r = vdisk_error(EINVAL, "%s: a differencing VHD has its parent's size (%llu bytes)",
                            f->path, (unsigned long long)psize);
            goto out;
        }
        size = psize;
        memcpy(foot + VF_ORIG, p.footer + VF_ORIG, 20); /* sizes and geometry */
        memcpy(foot + VF_APP, p.footer + VF_APP, 4);    /* the creator rule that sized it */
    } else {
        r = set_size(foot, &size, force, f->path);
        if (r < 0)
            goto out;
    }
    if (type != VPC_TYPE_FIXED && (size + bs - 1) / bs > VPC_MAX_ENTRIES) {
        r = vdisk_error(EFBIG, "%s: %llu blocks of %llu bytes: too many; use a larger block_size",
                        f->path, (unsigned long long)((size + bs - 1) / bs),
                        (unsigned long long)bs);
        goto out;
    }
    if (type == VPC_TYPE_FIXED) {
        seal(foot, VPC_FOOTER_SIZE, VF_CHECKSUM);
        r = vdisk_file_truncate(f, size);
        if (r == 0)
            r = vdisk_file_pwrite(f, foot, VPC_FOOTER_SIZE, size);
    } else {
        r = write_dynamic(f, foot, size, (uint32_t)bs, backing, &p);
    }
out:
    free(p.real);
    return r;
}

/* For vpc-resize.c: set_size. */
int vpc_footer_set_size(uint8_t *f, uint64_t *size, bool force, const char *path)
{
    return set_size(f, size, force, path);
}
