/* SPDX-License-Identifier: MIT */
/*
 * Keyslots of a LUKS1 header, as cryptsetup's luksAddKey / luksRemoveKey do
 * them (luks-admin.c unlocks and calls here). LUKS1 places its eight keyslot
 * areas when it is formatted; a disabled slot keeps its area's offset and
 * stripes. add: PBKDF2 with the header's hash (LUKS1 knows no other KDF),
 * the volume key split into the area and flushed, then the slot's 48 bytes
 * (active, iterations, salt) written and flushed. remove: the slot is
 * disabled (salt and iterations zeroed) and flushed first, then its area is
 * overwritten with random bytes.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "../error.h"
#include "luks.h"

#define L1_HDR       592
#define L1_SLOTS     8
#define L1_SLOT(i)   (208 + 48 * (i))
#define L1_ACTIVE    0x00AC71F3u
#define L1_DEAD      0x0000DEADu
#define L1_SALT_SIZE 32

static uint32_t be32_get(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return be32toh(v);
}

static void be32_set(uint8_t *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, 4);
}

/* Does [OFF, OFF+LEN) stay clear of the header, the payload and M's active keyslots? */
static bool area_fits(const struct luks_meta *m, uint64_t off, uint64_t len)
{
    if (off < L1_HDR || off + len > m->offset)
        return false;
    for (int i = 0; i < m->nslots; i++)
        if (off < m->slots[i].offset + m->slots[i].size && m->slots[i].offset < off + len)
            return false;
    return true;
}

int luks1_add_key(struct vdisk_file *f, const char *path, const struct luks_meta *m,
                  const uint8_t *vk, const uint8_t *pass, size_t pass_len,
                  const struct vdisk_options *add, int *slotp)
{
    const char *pbkdf = vdisk_options_get(add, "pbkdf"), *ms = vdisk_options_get(add, "iter-time");
    struct luks_params p = {.cipher = m->cipher, .key_size = m->key_size, .hash = m->digest.hash};
    uint8_t h[L1_HDR], *k, *area = NULL;
    uint64_t off, len = ((uint64_t)m->key_size * LUKS_STRIPES + 511) / 512 * 512;
    int r, id = -1;

    if (pbkdf && strcmp(pbkdf, "pbkdf2") != 0)
        return vdisk_error(EINVAL, "%s: LUKS1 keyslots take pbkdf=pbkdf2 only, not '%s'", path,
                           pbkdf);
    r = vdisk_file_pread(f, h, sizeof(h), m->base);
    if (r < 0)
        return r;
    for (int i = 0; i < L1_SLOTS && id < 0; i++)
        if (be32_get(h + L1_SLOT(i)) == L1_DEAD)
            id = i;
    if (id < 0)
        return vdisk_error(ENOSPC, "%s: no free keyslot (LUKS1 has 8)", path);
    k = h + L1_SLOT(id);
    off = (uint64_t)be32_get(k + 40) * 512;
    if (be32_get(k + 44) != LUKS_STRIPES || !area_fits(m, off, len))
        return vdisk_error(ENOTSUP,
                           "%s: LUKS1 keyslot %d: its area (sector %u, %u stripes) is "
                           "not where vdisk can write it",
                           path, id, be32_get(k + 40), be32_get(k + 44));
    p.kdf.type = LUKS_KDF_PBKDF2;
    snprintf(p.kdf.hash, sizeof(p.kdf.hash), "%s", m->digest.hash);
    p.kdf.salt_len = L1_SALT_SIZE;
    p.kdf.iterations = luks_pbkdf2_bench(m->digest.hash, ms ? (uint32_t)atoi(ms) : 2000);
    area = luks_secret_alloc(len);
    if (!area || RAND_bytes(p.kdf.salt, L1_SALT_SIZE) != 1) {
        r = vdisk_error(EIO, "%s: no memory or random bytes", path);
        goto out;
    }
    r = luks_keyslot_make(path, id, &p, pass, pass_len, vk, area, len);
    /* the material first, flushed; then the slot that points at it */
    if (r == 0)
        r = vdisk_file_pwrite(f, area, len, m->base + off);
    if (r == 0)
        r = vdisk_file_flush(f);
    if (r < 0)
        goto out;
    be32_set(k, L1_ACTIVE);
    be32_set(k + 4, p.kdf.iterations);
    memcpy(k + 8, p.kdf.salt, L1_SALT_SIZE);
    r = vdisk_file_pwrite(f, k, 48, m->base + L1_SLOT(id));
    if (r == 0)
        r = vdisk_file_flush(f);
    if (r == 0 && slotp)
        *slotp = id;
out:
    luks_secret_free(area, len);
    explicit_bzero(&p, sizeof(p));
    return r;
}

int luks1_remove_key(struct vdisk_file *f, const char *path, const struct luks_meta *m, int id)
{
    const struct luks_slot *s = NULL;
    uint8_t k[48], *junk;
    int r;

    for (int i = 0; i < m->nslots; i++)
        if (m->slots[i].id == id)
            s = &m->slots[i];
    if (!s || id < 0 || id >= L1_SLOTS)
        return vdisk_error(EINVAL, "%s: LUKS1 keyslot %d is not active", path, id);
    r = vdisk_file_pread(f, k, sizeof(k), m->base + L1_SLOT(id));
    if (r < 0)
        return r;
    /* disabled as cryptsetup does: state, iterations and salt; offset and stripes stay */
    be32_set(k, L1_DEAD);
    memset(k + 4, 0, 4 + L1_SALT_SIZE);
    r = vdisk_file_pwrite(f, k, sizeof(k), m->base + L1_SLOT(id));
    if (r == 0)
        r = vdisk_file_flush(f);
    if (r < 0)
        return r;
    junk = malloc(s->size);
    if (!junk || RAND_bytes(junk, (int)s->size) != 1) {
        free(junk);
        return vdisk_error(EIO,
                           "%s: keyslot %d removed, but no memory or random bytes to wipe "
                           "its area",
                           path, id);
    }
    r = vdisk_file_pwrite(f, junk, s->size, m->base + s->offset);
    if (r == 0)
        r = vdisk_file_flush(f);
    free(junk);
    return r;
}
