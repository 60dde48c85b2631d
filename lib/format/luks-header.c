/* SPDX-License-Identifier: MIT */
/*
 * LUKS headers into struct luks_meta. LUKS1: the 592-byte binary header
 * (cryptsetup's LUKS1 on-disk format). LUKS2: two copies of a 4 KiB binary
 * header, each followed by a JSON area and checksummed with it; the valid copy
 * with the highest seqid wins; the JSON (json-c) lists keyslots, segments and
 * digests. Everything read from the file is checked against the file size and
 * sane limits before it is used.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "../error.h"
#include "luks.h"

/* LUKS1 layout (all big-endian) */
#define L1_HDR_SIZE    592
#define L1_SLOTS       8
#define L1_SLOT_ACTIVE 0x00AC71F3u
#define L1_SLOT_DEAD   0x0000DEADu
#define L1_DIGEST_SIZE 20
#define L1_SALT_SIZE   32

static uint32_t be32_at(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return be32toh(v);
}

static uint64_t be64_at(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return be64toh(v);
}

/* Copy a NUL-padded header string of N bytes into DST (DSTLEN), refusing unterminated ones. */
static int hdr_string(char *dst, size_t dstlen, const uint8_t *src, size_t n)
{
    size_t len = strnlen((const char *)src, n);

    if (len == n || len >= dstlen)
        return -EINVAL;
    memcpy(dst, src, len);
    dst[len] = 0;
    return 0;
}

/* Does slot S's key material lie inside the file and before the payload? */
static int check_area(const char *path, const struct luks_meta *m, const struct luks_slot *s,
                      uint64_t file_size)
{
    uint64_t need = (uint64_t)s->key_size * s->stripes;

    if (s->stripes == 0 || s->stripes > 65536 || s->key_size == 0 || s->key_size > LUKS_MAX_KEY ||
        need > s->size || s->size > LUKS_MAX_AREA)
        return vdisk_error(EINVAL,
                           "%s: keyslot %d: key material (%u stripes of %u bytes) does not "
                           "fit its area of %llu bytes",
                           path, s->id, s->stripes, s->key_size, (unsigned long long)s->size);
    if (s->offset + s->size > file_size)
        return vdisk_error(EINVAL,
                           "%s: keyslot %d: area ends at %llu, past the end of the file "
                           "(%llu bytes): truncated",
                           path, s->id, (unsigned long long)(s->offset + s->size),
                           (unsigned long long)file_size);
    if (s->offset < 592 || (m->offset && s->offset + s->size > m->offset))
        return vdisk_error(EINVAL, "%s: keyslot %d: area overlaps the header or the payload", path,
                           s->id);
    return 0;
}

/* The LUKS1 header in H (592 bytes). */
static int read_luks1(const uint8_t *h, const char *path, uint64_t file_size, struct luks_meta *m)
{
    char name[32], mode[32];

    m->version = 1;
    if (hdr_string(name, sizeof(name), h + 8, 32) < 0 ||
        hdr_string(mode, sizeof(mode), h + 40, 32) < 0 ||
        hdr_string(m->digest.hash, sizeof(m->digest.hash), h + 72, 32) < 0 ||
        hdr_string(m->uuid, sizeof(m->uuid), h + 168, 40) < 0)
        return vdisk_error(EINVAL, "%s: LUKS1 header: unterminated cipher, hash or uuid", path);
    snprintf(m->cipher, sizeof(m->cipher), "%s-%s", name, mode);
    m->offset = (uint64_t)be32_at(h + 104) * 512;
    m->key_size = be32_at(h + 108);
    m->sector_size = 512;
    if (m->key_size == 0 || m->key_size > LUKS_MAX_KEY)
        return vdisk_error(EINVAL, "%s: LUKS1 header: key size %u bytes", path, m->key_size);
    if (luks_hash_len(m->digest.hash) == 0)
        return vdisk_error(EINVAL, "%s: LUKS1 header: unknown hash %s", path, m->digest.hash);
    memcpy(m->digest.value, h + 112, L1_DIGEST_SIZE);
    m->digest.len = L1_DIGEST_SIZE;
    memcpy(m->digest.salt, h + 132, L1_SALT_SIZE);
    m->digest.salt_len = L1_SALT_SIZE;
    m->digest.iterations = be32_at(h + 164);
    for (int i = 0; i < L1_SLOTS; i++) {
        const uint8_t *k = h + 208 + 48 * i;
        uint32_t active = be32_at(k);
        struct luks_slot *s = &m->slots[m->nslots];

        if (active == L1_SLOT_DEAD)
            continue;
        if (active != L1_SLOT_ACTIVE)
            return vdisk_error(EINVAL, "%s: LUKS1 keyslot %d: bad state 0x%08x", path, i, active);
        memset(s, 0, sizeof(*s));
        s->id = i;
        s->kdf.type = LUKS_KDF_PBKDF2;
        snprintf(s->kdf.hash, sizeof(s->kdf.hash), "%s", m->digest.hash);
        s->kdf.iterations = be32_at(k + 4);
        memcpy(s->kdf.salt, k + 8, L1_SALT_SIZE);
        s->kdf.salt_len = L1_SALT_SIZE;
        s->offset = (uint64_t)be32_at(k + 40) * 512;
        s->stripes = be32_at(k + 44);
        s->key_size = s->area_key_size = m->key_size;
        s->size = ((uint64_t)m->key_size * s->stripes + 511) / 512 * 512;
        snprintf(s->cipher, sizeof(s->cipher), "%s", m->cipher);
        snprintf(s->af_hash, sizeof(s->af_hash), "%s", m->digest.hash);
        if (check_area(path, m, s, file_size) < 0)
            return -EINVAL;
        m->nslots++;
    }
    return 0;
}

/* Is the LUKS2 binary header copy at OFF in the file valid? Its JSON (malloc'd) in *JSON. */
static int luks2_copy(struct vdisk_file *file, uint64_t base, uint64_t off, uint64_t file_size,
                      uint8_t *bin, char **json, uint64_t *hdr_size)
{
    const EVP_MD *md;
    uint8_t csum[64], calc[EVP_MAX_MD_SIZE];
    char alg[32];
    uint8_t *all;
    unsigned int n;

    if (off + LUKS2_HDR_BIN > file_size ||
        vdisk_file_pread(file, bin, LUKS2_HDR_BIN, base + off) < 0)
        return -EINVAL;
    if (memcmp(bin, off ? LUKS_MAGIC2 : LUKS_MAGIC, 6) != 0 || (bin[6] << 8 | bin[7]) != 2 ||
        be64_at(bin + 256) != off)
        return -EINVAL;
    *hdr_size = be64_at(bin + 8);
    if (*hdr_size < 16384 || *hdr_size > LUKS2_MAX_HDR || (*hdr_size & (*hdr_size - 1)) ||
        off + *hdr_size > file_size || hdr_string(alg, sizeof(alg), bin + 72, 32) < 0)
        return -EINVAL;
    md = EVP_get_digestbyname(alg);
    if (!md || EVP_MD_get_size(md) > 64)
        return -EINVAL;
    all = malloc(*hdr_size + 1);
    if (!all)
        return -ENOMEM;
    if (vdisk_file_pread(file, all, *hdr_size, base + off) < 0) {
        free(all);
        return -EINVAL;
    }
    /* the checksum covers both parts with its own field zeroed */
    memcpy(csum, all + 448, 64);
    memset(all + 448, 0, 64);
    if (!EVP_Digest(all, *hdr_size, calc, &n, md, NULL) || memcmp(calc, csum, n) != 0) {
        free(all);
        return -EINVAL;
    }
    all[*hdr_size] = 0;
    memmove(all, all + LUKS2_HDR_BIN, *hdr_size - LUKS2_HDR_BIN + 1);
    *json = (char *)all;
    return 0;
}

int luks2_read_raw(struct vdisk_file *file, const char *path, uint64_t base, uint64_t file_size,
                   uint8_t *best_bin, char **jsonp, uint64_t *sizep)
{
    static const uint64_t offs[] = {0,      16384,  32768,   65536,   131072,
                                    262144, 524288, 1048576, 2097152, 4194304};
    uint8_t bin[LUKS2_HDR_BIN];
    char *json = NULL, *best = NULL;
    uint64_t hdr_size, best_size = 0;
    int r;

    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        r = luks2_copy(file, base, offs[i], file_size, bin, &json, &hdr_size);
        if (r == -ENOMEM) {
            free(best);
            return vdisk_error(ENOMEM, "%s: LUKS2 header: out of memory", path);
        }
        if (r < 0)
            continue;
        /* a secondary copy sits right after the primary's area */
        if (offs[i] && offs[i] != hdr_size) {
            free(json);
            continue;
        }
        if (!best || be64_at(bin + 16) > be64_at(best_bin + 16)) {
            free(best);
            best = json;
            best_size = hdr_size;
            memcpy(best_bin, bin, sizeof(bin));
        } else {
            free(json);
        }
    }
    if (!best)
        return vdisk_error(EINVAL, "%s: LUKS2 header: no copy with a valid checksum (damaged)",
                           path);
    *jsonp = best;
    *sizep = best_size;
    return 0;
}

/* The valid LUKS2 header copy with the highest seqid, parsed. */
static int read_luks2(struct vdisk_file *file, const char *path, uint64_t file_size,
                      struct luks_meta *m)
{
    uint8_t best_bin[LUKS2_HDR_BIN];
    uint64_t best_size;
    char *best;
    int r = luks2_read_raw(file, path, m->base, file_size, best_bin, &best, &best_size);

    if (r < 0)
        return r;
    m->version = 2;
    m->hdr_size = best_size;
    m->seqid = be64_at(best_bin + 16);
    if (hdr_string(m->uuid, sizeof(m->uuid), best_bin + 168, 40) < 0)
        m->uuid[0] = 0;
    r = luks2_parse_json(best, best_size - LUKS2_HDR_BIN, path, m);
    free(best);
    if (r < 0)
        return r;
    for (int i = 0; i < m->nslots; i++) {
        if (m->slots[i].offset < 2 * best_size)
            return vdisk_error(EINVAL, "%s: keyslot %d: area out of place (in the headers)", path,
                               m->slots[i].id);
        r = check_area(path, m, &m->slots[i], file_size);
        if (r < 0)
            return r;
    }
    return 0;
}

int luks_read_header(struct vdisk_file *file, const char *path, uint64_t base, uint64_t file_size,
                     struct luks_meta *m)
{
    uint8_t h[L1_HDR_SIZE];
    int r;

    memset(m, 0, sizeof(*m));
    m->base = base;
    if (file_size < L1_HDR_SIZE || vdisk_file_pread(file, h, sizeof(h), base) < 0)
        return vdisk_error(EINVAL, "%s: LUKS header: file too short", path);
    if (memcmp(h, LUKS_MAGIC, 6) != 0)
        return vdisk_error(EINVAL, "%s: not a LUKS image (no magic)", path);
    switch (h[6] << 8 | h[7]) {
    case 1:
        r = read_luks1(h, path, file_size, m);
        break;
    case 2:
        r = read_luks2(file, path, file_size, m);
        break;
    default:
        return vdisk_error(ENOTSUP, "%s: LUKS version %u is not supported", path, h[6] << 8 | h[7]);
    }
    if (r < 0)
        return r;
    if (m->sector_size != 512 && m->sector_size != 1024 && m->sector_size != 2048 &&
        m->sector_size != 4096)
        return vdisk_error(EINVAL, "%s: sector size %u", path, m->sector_size);
    if (m->offset < 592 || m->offset % 512 || m->offset > file_size)
        return vdisk_error(EINVAL, "%s: payload offset %llu is outside the file (%llu bytes)", path,
                           (unsigned long long)m->offset, (unsigned long long)file_size);
    if (m->size && m->offset + m->size > file_size)
        return vdisk_error(EINVAL,
                           "%s: payload of %llu bytes at %llu runs past the end of the file", path,
                           (unsigned long long)m->size, (unsigned long long)m->offset);
    if (m->digest.iterations == 0 || m->digest.len == 0)
        return vdisk_error(EINVAL, "%s: no volume key digest", path);
    return luks_cipher_check(path, m->cipher, m->key_size);
}
