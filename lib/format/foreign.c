/* SPDX-License-Identifier: MIT */
/*
 * Signatures of the container formats qemu-img knows and libvdisk does not
 * serve. Written from the formats' specifications and QEMU's documented
 * behaviour; each probe reads only inside HEAD[0, head_len) and, when the
 * file has 512 bytes or more, TAIL[0, 512).
 */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "../error.h"
#include "foreign.h"

/* Does HEAD start with the LEN bytes of MAGIC? */
static bool head_has(const uint8_t *head, size_t head_len, size_t off, const void *magic,
                     size_t len)
{
    return head && head_len >= off + len && memcmp(head + off, magic, len) == 0;
}

static uint32_t le32(const uint8_t *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * VHD: the footer's cookie "conectix". Dynamic and differencing images copy
 * the footer to offset 0; a fixed one has it only in its last 512 bytes, or
 * in its last 511 (older Virtual PC wrote a footer one byte short).
 */
static int vpc_probe(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t file_size)
{
    if (head_has(head, head_len, 0, "conectix", 8))
        return 100;
    if (tail && file_size >= 512 &&
        (memcmp(tail, "conectix", 8) == 0 || memcmp(tail + 1, "conectix", 8) == 0))
        return 90; /* behind the data: a nested image at offset 0 scores higher */
    return 0;
}

/* QED: magic "QED\0". */
static int qed_probe(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t file_size)
{
    (void)tail, (void)file_size;
    return head_has(head, head_len, 0, "QED\0", 4) ? 100 : 0;
}

/* Parallels: one of two 16-byte magics, then version 2 (le32). */
static int parallels_probe(const uint8_t *head, size_t head_len, const uint8_t *tail,
                           uint64_t file_size)
{
    (void)tail, (void)file_size;
    if (!head_has(head, head_len, 0, "WithoutFreeSpace", 16) &&
        !head_has(head, head_len, 0, "WithouFreSpacExt", 16))
        return 0;
    return head_len >= 20 && le32(head + 16) == 2 ? 100 : 60;
}

/* DMG (UDIF): the 512-byte "koly" trailer, version 4, that says it is 512 bytes. */
static int dmg_probe(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t file_size)
{
    (void)head, (void)head_len;
    if (!tail || file_size < 512 || memcmp(tail, "koly", 4) != 0)
        return 0;
    return be32(tail + 4) == 4 && be32(tail + 8) == 512 ? 90 : 50;
}

/* cloop: a shell script preamble, "#!/bin/sh" then "#V<n>.0 Format". */
static int cloop_probe(const uint8_t *head, size_t head_len, const uint8_t *tail,
                       uint64_t file_size)
{
    (void)tail, (void)file_size;
    if (!head_has(head, head_len, 0, "#!/bin/sh\n#V", 12) || head_len < 23)
        return 0;
    return head[12] >= '1' && head[12] <= '9' && memcmp(head + 13, ".0 Format\n", 10) == 0 ? 100
                                                                                           : 0;
}

/* Bochs: "Bochs Virtual HD Image" (NUL padded to 32 bytes), then the type "Redolog". */
static int bochs_probe(const uint8_t *head, size_t head_len, const uint8_t *tail,
                       uint64_t file_size)
{
    static const char magic[] = "Bochs Virtual HD Image";

    (void)tail, (void)file_size;
    if (!head_has(head, head_len, 0, magic, sizeof(magic) - 1))
        return 0;
    return head_has(head, head_len, 0, magic, sizeof(magic)) &&
                   head_has(head, head_len, 32, "Redolog", 8)
               ? 100
               : 60;
}

/* LUKS of a version luks.c does not serve (it serves 1 and 2): never raw. */
static int luks_probe(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t file_size)
{
    unsigned version;

    (void)tail, (void)file_size;
    if (!head_has(head, head_len, 0, "LUKS\xba\xbe", 6))
        return 0;
    version = head_len >= 8 ? (unsigned)head[6] << 8 | head[7] : 0;
    return version == 1 || version == 2 ? 0 : 60;
}

/* QCOW version 1: the qcow2 magic "QFI\xfb" with version 1 (be32); qcow2.c serves 2 and 3. */
static int qcow_probe(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t file_size)
{
    (void)tail, (void)file_size;
    return head_has(head, head_len, 0, "QFI\xfb", 4) && head_len >= 8 && be32(head + 4) == 1 ? 100
                                                                                             : 0;
}

/* The table, with the file name extensions each format's images usually carry. */
static const struct foreign_entry {
    struct vdisk_foreign fmt;
    const char *ext[3];
} foreign[] = {
    {{"vpc", "VHD (Virtual PC)", vpc_probe}, {"vhd", "vpc"}},
    {{"qed", "QED (QEMU enhanced disk)", qed_probe}, {"qed"}},
    {{"parallels", "Parallels", parallels_probe}, {"hdd", "hds", "parallels"}},
    {{"dmg", "DMG (Apple disk image)", dmg_probe}, {"dmg"}},
    {{"cloop", "cloop (compressed loop)", cloop_probe}, {"cloop"}},
    {{"bochs", "Bochs", bochs_probe}, {"bochs"}},
    {{"luks", "LUKS (encrypted)", luks_probe}, {"luks"}},
    {{"qcow", "QCOW version 1", qcow_probe}, {"qcow"}},
};
#define N_FOREIGN (sizeof(foreign) / sizeof(foreign[0]))

const struct vdisk_foreign *vdisk_foreign_probe(const uint8_t *head, size_t head_len,
                                                const uint8_t *tail, uint64_t file_size)
{
    const struct vdisk_foreign *best = NULL;
    int best_score = 0;

    for (size_t i = 0; i < N_FOREIGN; i++) {
        int score = foreign[i].fmt.probe(head, head_len, tail, file_size);

        if (score > best_score) {
            best_score = score;
            best = &foreign[i].fmt;
        }
    }
    return best;
}

const struct vdisk_foreign *vdisk_foreign_find(const char *name)
{
    for (size_t i = 0; name && i < N_FOREIGN; i++)
        if (strcmp(foreign[i].fmt.name, name) == 0)
            return &foreign[i].fmt;
    return NULL;
}

const struct vdisk_foreign *vdisk_foreign_find_ext(const char *ext)
{
    for (size_t i = 0; ext && i < N_FOREIGN; i++)
        for (size_t j = 0; j < sizeof(foreign[i].ext) / sizeof(foreign[i].ext[0]); j++)
            if (foreign[i].ext[j] && strcasecmp(foreign[i].ext[j], ext) == 0)
                return &foreign[i].fmt;
    return NULL;
}

int vdisk_foreign_refuse(const char *path, const struct vdisk_foreign *fmt, bool create)
{
    if (create)
        return vdisk_error(ENOTSUP,
                           "%s: format %s, %s: this vdisk cannot create %s images; "
                           "create a qcow2 or raw image instead",
                           path, fmt->name, fmt->title, fmt->name);
    return vdisk_error(ENOTSUP,
                       "%s: a %s image (format %s): this vdisk cannot serve %s images; "
                       "convert it with qemu-img convert -O qcow2 or raw",
                       path, fmt->title, fmt->name, fmt->name);
}
