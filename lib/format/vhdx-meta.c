/* SPDX-License-Identifier: MIT */
/*
 * VHDX metadata: CRC-32C, GUIDs, UTF-16, the two headers, the two region
 * tables, the metadata region's items and the BAT. Every size and offset is
 * checked against the file before anything is allocated or read.
 */
#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#include "../error.h"
#include "vhdx.h"

/* GUIDs as stored on disk (MS-VHDX 2.2, 2.6). */
const vhdx_guid VHDX_GUID_BAT = {{0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11,
                                  0x5e, 0x9b, 0xfd, 0x4a, 0x08}};
const vhdx_guid VHDX_GUID_META = {{0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57,
                                   0x5f, 0x05, 0x0f, 0x88, 0x6e}};
const vhdx_guid VHDX_GUID_FILE_PARAMS = {{0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3,
                                          0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b}};
const vhdx_guid VHDX_GUID_DISK_SIZE = {{0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11,
                                        0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8}};
const vhdx_guid VHDX_GUID_PAGE83 = {{0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45, 0x93, 0xef,
                                     0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46}};
const vhdx_guid VHDX_GUID_LOGICAL_SS = {{0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47, 0xba, 0x47,
                                         0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f}};
const vhdx_guid VHDX_GUID_PHYSICAL_SS = {{0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44, 0x9c,
                                          0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56}};
const vhdx_guid VHDX_GUID_PARENT_LOCATOR = {{0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45, 0xab,
                                             0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c}};
const vhdx_guid VHDX_GUID_LOCATOR_TYPE = {{0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a, 0xb7,
                                           0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13}};

static const char *const locator_keys[5] = {"parent_linkage", "parent_linkage2", "relative_path",
                                            "volume_path", "absolute_win32_path"};

/* The reflected Castagnoli polynomial's table, built once. */
static uint32_t crc_table[256];
static bool crc_hw; /* the CPU has SSE4.2's crc32 instruction */

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;

        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_table[i] = c;
    }
#if defined(__x86_64__)
    crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__)
/* CRC-32C (no inversions) with the crc32 instruction, 8 bytes a step: the
 * table's byte loop made region tables (64 KiB, read twice per open) cost more
 * than the rest of an open. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p,
                                                            size_t len)
{
    uint64_t c = crc, v;

    for (; len >= 8; len -= 8, p += 8) {
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
    }
    crc = (uint32_t)c;
    while (len--)
        crc = __builtin_ia32_crc32qi(crc, *p++);
    return crc;
}
#endif

uint32_t vhdx_crc32c(uint32_t crc, const void *buf, size_t len)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    const uint8_t *p = buf;

    pthread_once(&once, crc_init);
#if defined(__x86_64__)
    if (crc_hw)
        return ~crc32c_hw(~crc, p, len);
#endif
    crc = ~crc;
    while (len--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t csum_at)
{
    static const uint8_t zero[4];
    uint32_t c = vhdx_crc32c(0, buf, csum_at);

    c = vhdx_crc32c(c, zero, 4);
    return vhdx_crc32c(c, buf + csum_at + 4, len - csum_at - 4);
}

bool vhdx_guid_is_zero(const vhdx_guid *g)
{
    static const vhdx_guid z;
    return memcmp(g, &z, sizeof(z)) == 0;
}

/* A random (version 4) GUID. */
void vhdx_guid_new(vhdx_guid *g)
{
    size_t got = 0;

    while (got < sizeof(g->b)) {
        ssize_t n = getrandom(g->b + got, sizeof(g->b) - got, 0);
        if (n > 0)
            got += (size_t)n;
    }
    g->b[7] = (g->b[7] & 0x0f) | 0x40; /* data3 is little-endian: its high byte is b[7] */
    g->b[8] = (g->b[8] & 0x3f) | 0x80;
}

void vhdx_guid_format(const vhdx_guid *g, char out[39])
{
    const uint8_t *b = g->b;

    snprintf(out, 39, "{%08X-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X}", get_le32(b),
             get_le16(b + 4), get_le16(b + 6), b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

int vhdx_guid_parse(const char *t, vhdx_guid *g)
{
    unsigned d1, d2, d3, x[8];
    char end;

    if (*t == '{')
        t++;
    if (sscanf(t, "%8x-%4x-%4x-%2x%2x-%2x%2x%2x%2x%2x%2x%c", &d1, &d2, &d3, &x[0], &x[1], &x[2],
               &x[3], &x[4], &x[5], &x[6], &x[7], &end) < 11)
        return -EINVAL;
    put_le32(g->b, d1);
    put_le16(g->b + 4, (uint16_t)d2);
    put_le16(g->b + 6, (uint16_t)d3);
    for (int i = 0; i < 8; i++)
        g->b[8 + i] = (uint8_t)x[i];
    return 0;
}

/* Convert with iconv from FROM to TO; the result is malloc'd, NUL terminated. */
static char *convert(const char *to, const char *from, const void *in, size_t len, size_t *outlen)
{
    iconv_t cd = iconv_open(to, from);
    size_t cap = len * 2 + 4, left = cap;
    char *out, *o, *i = (char *)in;

    if (cd == (iconv_t)-1)
        return NULL;
    out = o = calloc(1, cap);
    if (out && iconv(cd, &i, &len, &o, &left) == (size_t)-1) {
        free(out);
        out = NULL;
    }
    iconv_close(cd);
    if (out && outlen)
        *outlen = cap - left;
    return out;
}

char *vhdx_utf16_to_utf8(const uint8_t *p, size_t len)
{
    char *s = convert("UTF-8", "UTF-16LE", p, len & ~(size_t)1, NULL);

    if (s && strlen(s) == 0 && len > 1 && (p[0] || p[1])) { /* an embedded NUL first */
        free(s);
        return NULL;
    }
    return s;
}

long vhdx_utf8_to_utf16(const char *text, uint8_t *out, size_t cap)
{
    size_t n = 0;
    char *w = convert("UTF-16LE", "UTF-8", text, strlen(text), &n);

    if (!w || n > cap) {
        free(w);
        return -1;
    }
    memcpy(out, w, n);
    free(w);
    return (long)n;
}

bool vhdx_overlay_hits(const struct vhdx *s, uint64_t off, uint64_t len)
{
    for (unsigned i = 0; i < s->novl; i++)
        if (off < s->ovl[i].off + s->ovl[i].len && s->ovl[i].off < off + len)
            return true;
    return false;
}

int vhdx_pread_meta(struct vhdx *s, void *buf, size_t len, uint64_t off)
{
    int r = vdisk_file_pread(s->file, buf, len, off);

    for (unsigned i = 0; r == 0 && i < s->novl; i++) { /* in log order: later entries win */
        const struct vhdx_overlay *o = &s->ovl[i];
        uint64_t a = off > o->off ? off : o->off;
        uint64_t b = off + len < o->off + o->len ? off + len : o->off + o->len;

        if (a >= b)
            continue;
        if (o->data)
            memcpy((uint8_t *)buf + (a - off), o->data + (a - o->off), b - a);
        else
            memset((uint8_t *)buf + (a - off), 0, b - a);
    }
    return r;
}

/* Is the header in H (4 KiB) valid? */
static bool header_valid(const uint8_t *h)
{
    return memcmp(h, "head", 4) == 0 && get_le32(h + 4) == vhdx_checksum(h, VHDX_HDR_SIZE, 4) &&
           get_le16(h + 66) == 1;
}

int vhdx_read_headers(struct vhdx *s)
{
    const char *path = s->node->path;
    uint8_t *h = malloc(2 * VHDX_HDR_SIZE), *cur;
    uint8_t id[520];
    bool v0, v1;
    int r;

    if (!h)
        return vdisk_error(ENOMEM, "%s: out of memory", path);
    r = vdisk_file_pread(s->file, id, sizeof(id), 0);
    if (r == 0)
        r = vdisk_file_pread(s->file, h, VHDX_HDR_SIZE, VHDX_HDR1_OFF);
    if (r == 0)
        r = vdisk_file_pread(s->file, h + VHDX_HDR_SIZE, VHDX_HDR_SIZE, VHDX_HDR2_OFF);
    if (r < 0)
        goto out;
    r = -EINVAL;
    if (memcmp(id, "vhdxfile", 8) != 0) {
        r = vdisk_error(EINVAL, "%s: not a VHDX image (no file type identifier)", path);
        goto out;
    }
    char *c = vhdx_utf16_to_utf8(id + 8, 512);
    snprintf(s->creator, sizeof(s->creator), "%s", c ? c : "");
    free(c);
    v0 = header_valid(h);
    v1 = header_valid(h + VHDX_HDR_SIZE);
    if (!v0 && !v1) {
        r = vdisk_error(EINVAL, "%s: both VHDX headers are invalid (bad signature or CRC-32C)",
                        path);
        goto out;
    }
    s->hdr_slot = (!v0 || (v1 && get_le64(h + VHDX_HDR_SIZE + 8) > get_le64(h + 8))) ? 1 : 0;
    cur = h + s->hdr_slot * VHDX_HDR_SIZE;
    s->hdr_seq = get_le64(cur + 8);
    memcpy(&s->file_write_guid, cur + 16, 16);
    memcpy(&s->data_write_guid, cur + 32, 16);
    memcpy(&s->log_guid, cur + 48, 16);
    s->log_len = get_le32(cur + 68);
    s->log_off = get_le64(cur + 72);
    if (get_le16(cur + 64) != 0) {
        r = vdisk_error(ENOTSUP, "%s: VHDX log version %u is not supported", path,
                        get_le16(cur + 64));
        goto out;
    }
    if (s->log_len % MiB || s->log_off % MiB || s->log_off < MiB ||
        s->log_off + s->log_len > s->file_size ||
        (s->log_len == 0 && !vhdx_guid_is_zero(&s->log_guid))) {
        r = vdisk_error(EINVAL, "%s: VHDX log of %u bytes at %llu lies outside the file", path,
                        s->log_len, (unsigned long long)s->log_off);
        goto out;
    }
    r = 0;
out:
    free(h);
    return r;
}

int vhdx_write_headers(struct vhdx *s)
{
    uint8_t *h = calloc(1, VHDX_HDR_SIZE);
    int r = 0;

    if (!h)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    for (int i = 0; i < 2 && r == 0; i++) { /* the stale slot first, then the other */
        unsigned slot = 1 - s->hdr_slot;

        memset(h, 0, VHDX_HDR_SIZE);
        memcpy(h, "head", 4);
        put_le64(h + 8, s->hdr_seq + 1);
        memcpy(h + 16, &s->file_write_guid, 16);
        memcpy(h + 32, &s->data_write_guid, 16);
        memcpy(h + 48, &s->log_guid, 16);
        put_le16(h + 66, 1);
        put_le32(h + 68, s->log_len);
        put_le64(h + 72, s->log_off);
        put_le32(h + 4, vhdx_checksum(h, VHDX_HDR_SIZE, 4));
        r = vdisk_file_pwrite(s->file, h, VHDX_HDR_SIZE, slot ? VHDX_HDR2_OFF : VHDX_HDR1_OFF);
        if (r == 0)
            r = vdisk_file_flush(s->file);
        if (r == 0) {
            s->hdr_slot = slot;
            s->hdr_seq++;
        }
    }
    free(h);
    return r;
}

/* Does [A, A+AL) overlap [B, B+BL)? */
static bool overlaps(uint64_t a, uint64_t al, uint64_t b, uint64_t bl)
{
    return a < b + bl && b < a + al;
}

/* Parse one region table (64 KiB at T); 0, or -EINVAL with *why set. */
static int parse_regions(struct vhdx *s, const uint8_t *t, const char **why)
{
    uint32_t n = get_le32(t + 8);
    bool bat = false, meta = false;

    if (memcmp(t, "regi", 4) != 0 || get_le32(t + 4) != vhdx_checksum(t, VHDX_RT_SIZE, 4)) {
        *why = "bad signature or CRC-32C";
        return -EINVAL;
    }
    if (n > VHDX_RT_MAX) {
        *why = "too many entries";
        return -EINVAL;
    }
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = t + 16 + 32 * i;
        uint64_t off = get_le64(e + 16);
        uint32_t len = get_le32(e + 24);
        bool required = get_le32(e + 28) & 1;

        if (off % MiB || len % MiB || off < MiB || len == 0 || off + len > s->file_size) {
            *why = "a region lies outside the file or is not MiB aligned";
            return -EINVAL;
        }
        if (memcmp(e, &VHDX_GUID_BAT, 16) == 0 && !bat) {
            s->bat_off = off, s->bat_len = len, bat = true;
        } else if (memcmp(e, &VHDX_GUID_META, 16) == 0 && !meta) {
            s->meta_off = off, s->meta_len = len, meta = true;
        } else if (required) {
            *why = "an unknown required region";
            return -ENOTSUP;
        }
    }
    if (!bat || !meta) {
        *why = "no BAT or no metadata region";
        return -EINVAL;
    }
    if (overlaps(s->bat_off, s->bat_len, s->meta_off, s->meta_len) ||
        (s->log_len && (overlaps(s->bat_off, s->bat_len, s->log_off, s->log_len) ||
                        overlaps(s->meta_off, s->meta_len, s->log_off, s->log_len)))) {
        *why = "regions overlap";
        return -EINVAL;
    }
    return 0;
}

int vhdx_read_regions(struct vhdx *s)
{
    uint8_t *t = malloc(VHDX_RT_SIZE);
    const char *why = "";
    int r;

    if (!t)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    r = vhdx_pread_meta(s, t, VHDX_RT_SIZE, VHDX_RT1_OFF);
    if (r == 0 && (r = parse_regions(s, t, &why)) < 0) {
        const char *why1 = why;

        r = vhdx_pread_meta(s, t, VHDX_RT_SIZE, VHDX_RT2_OFF);
        if (r == 0 && (r = parse_regions(s, t, &why)) < 0)
            r = vdisk_error(-r, "%s: both VHDX region tables are invalid (%s; %s)", s->node->path,
                            why1, why);
    }
    free(t);
    return r;
}

/* Read the parent locator item (LEN bytes at P) into s->locator. */
static int parse_locator(struct vhdx *s, const uint8_t *p, uint32_t len)
{
    const char *path = s->node->path;
    unsigned n;

    if (len < 20 || memcmp(p, &VHDX_GUID_LOCATOR_TYPE, 16) != 0)
        return vdisk_error(ENOTSUP, "%s: unknown VHDX parent locator type", path);
    n = get_le16(p + 18);
    if (20 + 12ull * n > len)
        return vdisk_error(EINVAL, "%s: VHDX parent locator entries overrun the item", path);
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *e = p + 20 + 12 * i;
        uint32_t ko = get_le32(e), vo = get_le32(e + 4);
        uint16_t kl = get_le16(e + 8), vl = get_le16(e + 10);
        char *key, *val;

        if ((uint64_t)ko + kl > len || (uint64_t)vo + vl > len || kl == 0 || vl == 0)
            return vdisk_error(EINVAL, "%s: VHDX parent locator entry %u lies outside the item",
                               path, i);
        key = vhdx_utf16_to_utf8(p + ko, kl);
        val = vhdx_utf16_to_utf8(p + vo, vl);
        for (int k = 0; key && val && k < 5; k++) {
            if (strcmp(key, locator_keys[k]) == 0 && !s->locator[k]) {
                s->locator[k] = val;
                val = NULL;
            }
        }
        free(key);
        free(val);
    }
    if (!s->locator[0])
        return vdisk_error(EINVAL, "%s: VHDX parent locator has no parent_linkage", path);
    return 0;
}

/* Read item E of the metadata table (at META) and store what it says. */
static int parse_item(struct vhdx *s, const uint8_t *e, unsigned *seen)
{
    const char *path = s->node->path;
    uint32_t off = get_le32(e + 16), len = get_le32(e + 20);
    bool required = get_le32(e + 24) & 4;
    uint8_t small[8] = {0}, *big = NULL;
    int r;

    if (len == 0)
        return 0;
    if (off < VHDX_RT_SIZE || (uint64_t)off + len > s->meta_len)
        return vdisk_error(EINVAL,
                           "%s: VHDX metadata item of %u bytes at %u lies outside the "
                           "metadata region",
                           path, len, off);
    if (memcmp(e, &VHDX_GUID_PARENT_LOCATOR, 16) == 0) {
        if (len > VHDX_RT_SIZE)
            return vdisk_error(EINVAL, "%s: VHDX parent locator of %u bytes is too large", path,
                               len);
        big = malloc(len);
        if (!big)
            return vdisk_error(ENOMEM, "%s: out of memory", path);
        r = vhdx_pread_meta(s, big, len, s->meta_off + off);
        if (r == 0)
            r = parse_locator(s, big, len);
        free(big);
        *seen |= 32;
        return r;
    }
    r = vhdx_pread_meta(s, small, len < 8 ? len : 8, s->meta_off + off);
    if (r < 0)
        return r;
    if (memcmp(e, &VHDX_GUID_FILE_PARAMS, 16) == 0 && len >= 8) {
        s->block_size = get_le32(small);
        s->leave_alloc = get_le32(small + 4) & 1;
        s->has_parent = get_le32(small + 4) & 2;
        *seen |= 1;
    } else if (memcmp(e, &VHDX_GUID_DISK_SIZE, 16) == 0 && len >= 8) {
        s->vsize = get_le64(small);
        *seen |= 2;
    } else if (memcmp(e, &VHDX_GUID_LOGICAL_SS, 16) == 0 && len >= 4) {
        s->lss = get_le32(small);
        *seen |= 4;
    } else if (memcmp(e, &VHDX_GUID_PHYSICAL_SS, 16) == 0 && len >= 4) {
        s->pss = get_le32(small);
        *seen |= 8;
    } else if (memcmp(e, &VHDX_GUID_PAGE83, 16) == 0 && len >= 16) {
        r = vhdx_pread_meta(s, &s->page83, 16, s->meta_off + off);
        *seen |= 16;
    } else if (required) {
        char g[39];

        vhdx_guid_format((const vhdx_guid *)e, g);
        return vdisk_error(ENOTSUP, "%s: unknown required VHDX metadata item %s", path, g);
    }
    return r;
}

int vhdx_read_metadata(struct vhdx *s)
{
    const char *path = s->node->path;
    uint8_t *t = malloc(VHDX_RT_SIZE);
    unsigned n, seen = 0;
    int r;

    if (!t)
        return vdisk_error(ENOMEM, "%s: out of memory", path);
    r = vhdx_pread_meta(s, t, VHDX_RT_SIZE, s->meta_off);
    if (r < 0)
        goto out;
    n = get_le16(t + 10);
    if (memcmp(t, "metadata", 8) != 0 || n > VHDX_META_MAX) {
        r = vdisk_error(EINVAL, "%s: invalid VHDX metadata table", path);
        goto out;
    }
    for (unsigned i = 0; i < n && r == 0; i++)
        r = parse_item(s, t + 32 + 32 * i, &seen);
    if (r < 0)
        goto out;
    r = -EINVAL;
    if ((seen & 15) != 15)
        vdisk_error(EINVAL, "%s: VHDX metadata lacks a required item", path);
    else if (s->block_size < VHDX_MIN_BLOCK || s->block_size > VHDX_MAX_BLOCK ||
             (s->block_size & (s->block_size - 1)))
        vdisk_error(EINVAL, "%s: VHDX block size %u is not a power of two from 1 to 256 MiB", path,
                    s->block_size);
    else if (s->lss != 512 && s->lss != 4096)
        vdisk_error(EINVAL, "%s: VHDX logical sector size %u is not 512 or 4096", path, s->lss);
    else if (s->pss != 512 && s->pss != 4096)
        vdisk_error(EINVAL, "%s: VHDX physical sector size %u is not 512 or 4096", path, s->pss);
    else if (s->vsize == 0 || s->vsize % s->lss || s->vsize > VHDX_MAX_SIZE)
        vdisk_error(EINVAL,
                    "%s: VHDX virtual size %llu is invalid (0, over 64 TiB or not whole "
                    "sectors)",
                    path, (unsigned long long)s->vsize);
    else if (s->has_parent && !(seen & 32))
        vdisk_error(EINVAL, "%s: differencing VHDX without a parent locator", path);
    else
        r = 0;
out:
    free(t);
    return r;
}

int vhdx_read_bat(struct vhdx *s)
{
    const char *path = s->node->path;
    size_t bytes;
    int r;

    s->chunk_ratio = ((1ull << 23) * s->lss) / s->block_size;
    s->sectors_per_block = s->block_size / s->lss;
    s->data_blocks = (s->vsize + s->block_size - 1) / s->block_size;
    s->nchunks = (s->data_blocks + s->chunk_ratio - 1) / s->chunk_ratio;
    if (s->has_parent)
        s->bat_entries = s->nchunks * (s->chunk_ratio + 1);
    else
        s->bat_entries = s->data_blocks + (s->data_blocks - 1) / s->chunk_ratio;
    if (s->bat_entries * 8 > s->bat_len)
        return vdisk_error(EINVAL,
                           "%s: VHDX BAT region of %u bytes is too small for %llu "
                           "entries",
                           path, s->bat_len, (unsigned long long)s->bat_entries);
    bytes = (s->bat_entries * 8 + VHDX_PAGE - 1) & ~(uint64_t)(VHDX_PAGE - 1);
    s->bat = calloc(1, bytes);
    s->bat_page_dirty = calloc(1, bytes / VHDX_PAGE);
    s->sb = calloc(s->nchunks, sizeof(*s->sb));
    if (!s->bat || !s->bat_page_dirty || !s->sb)
        return vdisk_error(ENOMEM, "%s: out of memory for a BAT of %zu bytes", path, bytes);
    r = vhdx_pread_meta(s, s->bat, s->bat_entries * 8, s->bat_off);
    if (r < 0)
        return r;
    s->alloc_end = s->file_size;
    for (uint64_t i = 0; i < s->bat_entries; i++) {
        uint64_t e = vhdx_entry(s, i), end = BAT_OFFSET(e) + s->block_size;
        unsigned st = BAT_STATE(e);
        bool sb = (i % (s->chunk_ratio + 1)) == s->chunk_ratio;

        (void)st; /* a bad state is refused where it is used, and reported by check */
        if (sb)
            end = BAT_OFFSET(e) + VHDX_SB_SIZE;
        if (BAT_OFFSET(e) && end > s->alloc_end)
            s->alloc_end = end;
    }
    s->alloc_end = (s->alloc_end + MiB - 1) & ~(MiB - 1);
    return 0;
}

int vhdx_sb_get(struct vhdx *s, uint64_t c, uint8_t **bm)
{
    uint64_t e = vhdx_entry(s, vhdx_sb_index(s, c));
    int r;

    *bm = s->sb[c];
    if (*bm || BAT_STATE(e) != SB_PRESENT)
        return 0;
    if (BAT_OFFSET(e) == 0 || BAT_OFFSET(e) + VHDX_SB_SIZE > s->file_size)
        return vdisk_error(EIO, "%s: VHDX sector bitmap %llu lies outside the file", s->node->path,
                           (unsigned long long)c);
    s->sb[c] = malloc(VHDX_SB_SIZE);
    if (!s->sb[c])
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    r = vhdx_pread_meta(s, s->sb[c], VHDX_SB_SIZE, BAT_OFFSET(e));
    if (r < 0) {
        free(s->sb[c]);
        s->sb[c] = NULL;
        return r;
    }
    *bm = s->sb[c];
    return 0;
}
