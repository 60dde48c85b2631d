/* SPDX-License-Identifier: MIT */
/*
 * A LUKS1 header (cryptsetup's LUKS1 on-disk format), laid out as QEMU lays
 * it inside an encrypted qcow2: the 592-byte header in the first 4 KiB, then
 * eight keyslot areas of key_size * 4000 bytes rounded to 4 KiB, the payload
 * offset right after them. Keyslot 0 holds the volume key; the other seven
 * are disabled but keep their places (QEMU checks every slot's layout).
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "../error.h"
#include "luks.h"

#define KEY_SIZE 64u /* aes-xts-plain64, 512 bits */
#define SLOTS    8

static uint64_t area_size(uint32_t key_size)
{
    return ((uint64_t)key_size * LUKS_STRIPES + 4095) & ~4095ull;
}

uint64_t luks1_layout_size(uint32_t key_size)
{
    return 4096 + SLOTS * area_size(key_size);
}

static void be32_put(uint8_t *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, 4);
}

int luks1_format(struct vdisk_file *f, const char *path, uint64_t base, uint32_t iter_ms,
                 const struct vdisk_options *opts)
{
    uint64_t alen = area_size(KEY_SIZE);
    uint8_t *vk = luks_secret_alloc(KEY_SIZE), *area = luks_secret_alloc(alen), *pass = NULL;
    uint8_t h[4096], dsalt[32];
    size_t pass_len, alloc = 0;
    struct luks_params p = {.cipher = "aes-xts-plain64", .key_size = KEY_SIZE, .hash = "sha256"};
    uint32_t diter;
    char uuid[37];
    int r;

    r = luks_key_read(path, opts, &pass, &pass_len, &alloc);
    if (r < 0)
        goto out;
    r = vdisk_error(EIO, "%s: no random bytes or memory", path);
    if (!vk || !area || RAND_bytes(vk, KEY_SIZE) != 1 || RAND_bytes(dsalt, 32) != 1 ||
        RAND_bytes(p.kdf.salt, 32) != 1 || luks_make_uuid(uuid) < 0)
        goto out;
    p.kdf.type = LUKS_KDF_PBKDF2;
    p.kdf.salt_len = 32;
    snprintf(p.kdf.hash, sizeof(p.kdf.hash), "sha256");
    p.kdf.iterations = luks_pbkdf2_bench("sha256", iter_ms);
    diter = luks_pbkdf2_bench("sha256", iter_ms < 125 ? iter_ms : 125);

    memset(h, 0, sizeof(h));
    memcpy(h, LUKS_MAGIC, 6);
    h[7] = 1;
    strcpy((char *)h + 8, "aes");
    strcpy((char *)h + 40, "xts-plain64");
    strcpy((char *)h + 72, "sha256");
    be32_put(h + 104, (uint32_t)(luks1_layout_size(KEY_SIZE) / 512));
    be32_put(h + 108, KEY_SIZE);
    r = luks_pbkdf2("sha256", vk, KEY_SIZE, dsalt, 32, diter, h + 112, 20);
    if (r < 0)
        goto out;
    memcpy(h + 132, dsalt, 32);
    be32_put(h + 164, diter);
    memcpy(h + 168, uuid, 36);
    for (int i = 0; i < SLOTS; i++) {
        uint8_t *k = h + 208 + 48 * i;

        be32_put(k, i == 0 ? 0x00AC71F3u : 0x0000DEADu);
        if (i == 0) {
            be32_put(k + 4, p.kdf.iterations);
            memcpy(k + 8, p.kdf.salt, 32);
        }
        be32_put(k + 40, (uint32_t)((4096 + i * alen) / 512));
        be32_put(k + 44, LUKS_STRIPES);
    }
    r = luks_keyslot_make(path, 0, &p, pass, pass_len, vk, area, alen);
    /* the key material first, then the header that points at it */
    if (r == 0)
        r = vdisk_file_pwrite(f, area, alen, base + 4096);
    if (r == 0)
        r = vdisk_file_flush(f);
    if (r == 0)
        r = vdisk_file_pwrite(f, h, sizeof(h), base);
out:
    luks_secret_free(pass, alloc);
    luks_secret_free(area, alen);
    luks_secret_free(vk, KEY_SIZE);
    explicit_bzero(&p, sizeof(p));
    return r;
}
