/* SPDX-License-Identifier: MIT */
/*
 * Partition tables read through the image (any format): MBR with its
 * extended/logical chain, and GPT (header and entry CRCs checked, the backup
 * header used when the primary is bad). Numbers as Linux gives them: MBR
 * primaries 1-4 and logicals from 5, GPT entries by their index + 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "error.h"
#include "format/bytes.h"
#include "node.h"

#define MBR_SIG_OFF           510
#define MBR_PART_OFF          446
#define GPT_MAX_ENTRIES_BYTES (1u << 20) /* 4096 entries of 256 bytes: far more than any table */

/* Read LEN bytes at OFF of the image; -ERANGE past its end. */
static int read_at(struct vdisk_image *img, void *buf, size_t len, uint64_t off)
{
    uint64_t size = img->root->size;

    if (off > size || len > size - off)
        return -ERANGE;
    return vdisk_node_read(img->root, buf, len, off);
}

static bool is_extended(uint8_t type)
{
    return type == 0x05 || type == 0x0f || type == 0x85;
}

/* Add a partition to T; false when T is full. */
static struct vdisk_partition *add(struct vdisk_partition_table *t, unsigned number)
{
    struct vdisk_partition *p;

    if (t->count >= VDISK_MAX_PARTITIONS)
        return NULL;
    p = &t->parts[t->count++];
    memset(p, 0, sizeof(*p));
    p->number = number;
    return p;
}

/* Walk the chain of EBRs of the extended partition at sector EXT (512-byte sectors). */
static int read_logical(struct vdisk_image *img, uint64_t ext, uint64_t ext_len,
                        struct vdisk_partition_table *t)
{
    uint64_t cur = ext, sectors = img->root->size / 512;
    uint8_t s[512];
    unsigned number = 5;

    for (int i = 0; i < VDISK_MAX_PARTITIONS; i++) {
        const uint8_t *e1 = s + MBR_PART_OFF, *e2 = e1 + 16;
        struct vdisk_partition *p;
        uint64_t next;
        int r = read_at(img, s, sizeof(s), cur * 512);

        if (r < 0)
            return r == -ERANGE ? 0 : r;
        if (s[MBR_SIG_OFF] != 0x55 || s[MBR_SIG_OFF + 1] != 0xaa)
            return 0;
        if (e1[4] != 0 && get_le32(e1 + 12) != 0) {
            p = add(t, number++);
            if (!p)
                return 0;
            p->start = (cur + get_le32(e1 + 8)) * 512;
            p->size = (uint64_t)get_le32(e1 + 12) * 512;
            p->bootable = e1[0] == 0x80;
            snprintf(p->type, sizeof(p->type), "%x", e1[4]);
        }
        if (!is_extended(e2[4]) || get_le32(e2 + 8) == 0)
            return 0;
        next = ext + get_le32(e2 + 8);
        /* forward only and inside the extended partition: no loops */
        if (next <= cur || next >= ext + ext_len || next >= sectors)
            return 0;
        cur = next;
    }
    return 0;
}

/* MBR in sector S (checked signature); GPT's protective MBR returns 1. */
static int read_mbr(struct vdisk_image *img, const uint8_t *s, struct vdisk_partition_table *t)
{
    for (int i = 0; i < 4; i++) {
        const uint8_t *e = s + MBR_PART_OFF + 16 * i;

        if (e[0] != 0 && e[0] != 0x80)
            return 0; /* a boot sector (FAT, NTFS), not a partition table */
        if (e[4] == 0xee)
            return 1;
    }
    snprintf(t->label, sizeof(t->label), "dos");
    snprintf(t->id, sizeof(t->id), "0x%08x", get_le32(s + 440));
    for (int i = 0; i < 4; i++) {
        const uint8_t *e = s + MBR_PART_OFF + 16 * i;
        struct vdisk_partition *p;

        if (e[4] == 0 || get_le32(e + 12) == 0)
            continue;
        p = add(t, i + 1);
        p->start = (uint64_t)get_le32(e + 8) * 512;
        p->size = (uint64_t)get_le32(e + 12) * 512;
        p->bootable = e[0] == 0x80;
        snprintf(p->type, sizeof(p->type), "%x", e[4]);
    }
    for (unsigned i = 0, n = t->count; i < n; i++) {
        int k = t->parts[i].number - 1;
        const uint8_t *e = s + MBR_PART_OFF + 16 * k;

        if (is_extended(e[4]))
            return read_logical(img, get_le32(e + 8), get_le32(e + 12), t);
    }
    return 0;
}

/* A GUID as text (its first three fields are little-endian). */
static void guid_text(const uint8_t *g, char *out, size_t len)
{
    snprintf(out, len, "%08X-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X", get_le32(g),
             get_le16(g + 4), get_le16(g + 6), g[8], g[9], g[10], g[11], g[12], g[13], g[14],
             g[15]);
}

/* A GPT name (UTF-16LE, 36 units) as UTF-8. */
static void name_text(const uint8_t *u, char *out, size_t len)
{
    size_t o = 0;

    for (int i = 0; i < 36; i++) {
        uint32_t c = get_le16(u + 2 * i);

        if (c == 0)
            break;
        if (c >= 0xd800 && c < 0xdc00 && i + 1 < 36) {
            uint32_t lo = get_le16(u + 2 * i + 2);

            if (lo >= 0xdc00 && lo < 0xe000) {
                c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
                i++;
            }
        }
        if (c < 0x80 && o + 1 < len) {
            out[o++] = (char)c;
        } else if (c < 0x800 && o + 2 < len) {
            out[o++] = (char)(0xc0 | (c >> 6));
            out[o++] = (char)(0x80 | (c & 0x3f));
        } else if (c < 0x10000 && o + 3 < len) {
            out[o++] = (char)(0xe0 | (c >> 12));
            out[o++] = (char)(0x80 | ((c >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (c & 0x3f));
        } else if (o + 4 < len) {
            out[o++] = (char)(0xf0 | (c >> 18));
            out[o++] = (char)(0x80 | ((c >> 12) & 0x3f));
            out[o++] = (char)(0x80 | ((c >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (c & 0x3f));
        }
    }
    out[o] = 0;
}

/* A GPT header at sector LBA (sector size SS) and its entries: 0 valid, 1 not, -errno. */
static int read_gpt_at(struct vdisk_image *img, unsigned ss, uint64_t lba,
                       struct vdisk_partition_table *t)
{
    uint64_t sectors = img->root->size / ss, entries_lba, first, last;
    uint32_t hsize, crc, n, esize;
    uint8_t h[4096], *ents;
    int r = read_at(img, h, ss, lba * ss);

    if (r < 0)
        return r == -ERANGE ? 1 : r;
    if (memcmp(h, "EFI PART", 8) != 0)
        return 1;
    hsize = get_le32(h + 12);
    if (hsize < 92 || hsize > ss)
        return 1;
    crc = get_le32(h + 16);
    memset(h + 16, 0, 4);
    if (crc32(0, h, hsize) != crc || get_le64(h + 24) != lba)
        return 1;
    first = get_le64(h + 40);
    last = get_le64(h + 48);
    entries_lba = get_le64(h + 72);
    n = get_le32(h + 80);
    esize = get_le32(h + 84);
    if (esize < 128 || esize % 8 || n == 0 || (uint64_t)n * esize > GPT_MAX_ENTRIES_BYTES ||
        entries_lba >= sectors || first > last || last >= sectors)
        return 1;
    ents = malloc((size_t)n * esize);
    if (!ents)
        return vdisk_error(ENOMEM, "%s: out of memory", img->root->path);
    r = read_at(img, ents, (size_t)n * esize, entries_lba * ss);
    if (r < 0 || crc32(0, ents, n * esize) != get_le32(h + 88)) {
        free(ents);
        return r < 0 && r != -ERANGE ? r : 1;
    }
    snprintf(t->label, sizeof(t->label), "gpt");
    guid_text(h + 56, t->id, sizeof(t->id));
    t->first_lba = first;
    t->last_lba = last;
    t->sector_size = ss;
    t->count = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = ents + (size_t)i * esize;
        static const uint8_t unused[16];
        struct vdisk_partition *p;
        uint64_t a = get_le64(e + 32), b = get_le64(e + 40);

        if (memcmp(e, unused, 16) == 0 || b < a || b >= sectors)
            continue;
        p = add(t, i + 1);
        if (!p)
            break;
        p->start = a * ss;
        p->size = (b - a + 1) * ss;
        guid_text(e, p->type, sizeof(p->type));
        guid_text(e + 16, p->uuid, sizeof(p->uuid));
        name_text(e + 56, p->name, sizeof(p->name));
    }
    free(ents);
    return 0;
}

/* GPT with sector size SS: the primary header, else the backup at the last sector. */
static int read_gpt(struct vdisk_image *img, unsigned ss, struct vdisk_partition_table *t)
{
    int r = read_gpt_at(img, ss, 1, t);

    if (r == 1 && img->root->size / ss > 1)
        r = read_gpt_at(img, ss, img->root->size / ss - 1, t);
    return r;
}

int vdisk_get_partitions(struct vdisk_image *img, struct vdisk_partition_table *t)
{
    uint8_t s[512];
    int r;

    vdisk_error_clear();
    memset(t, 0, sizeof(*t));
    t->sector_size = 512;
    if (img->root->size < 1024)
        return 0;
    r = read_at(img, s, sizeof(s), 0);
    if (r < 0)
        return r;
    if (s[MBR_SIG_OFF] != 0x55 || s[MBR_SIG_OFF + 1] != 0xaa)
        return 0;
    r = read_mbr(img, s, t);
    if (r != 1)
        return r;
    r = read_gpt(img, 512, t);
    if (r == 1)
        r = read_gpt(img, 4096, t);
    if (r == 1)
        return vdisk_error(EINVAL,
                           "%s: protective MBR, but neither GPT header (primary, backup) is valid",
                           img->root->path);
    return r;
}

int vdisk_select_partition(struct vdisk_image *img, unsigned number)
{
    struct vdisk_partition_table *t = malloc(sizeof(*t));
    int r;

    if (!t)
        return vdisk_error(ENOMEM, "%s: out of memory", img->root->path);
    r = vdisk_get_partitions(img, t);
    if (r == 0 && !t->label[0])
        r = vdisk_error(ENOENT, "%s: has no partition table (MBR or GPT)", img->root->path);
    if (r == 0) {
        r = vdisk_error(ENOENT, "%s: has no partition %u (%s table)", img->root->path, number,
                        t->label);
        for (unsigned i = 0; i < t->count; i++) {
            const struct vdisk_partition *p = &t->parts[i];

            if (p->number != number)
                continue;
            if (strcmp(t->label, "dos") == 0 && is_extended((uint8_t)strtoul(p->type, NULL, 16)))
                r = vdisk_error(EINVAL,
                                "%s: partition %u is the extended partition (a container "
                                "of the logical ones), not a file system",
                                img->root->path, number);
            else
                r = vdisk_image_slice(img, p->start, p->size);
            break;
        }
    }
    free(t);
    return r;
}
