/* SPDX-License-Identifier: MIT */
/*
 * Unlock a LUKS volume: derive each active keyslot's key from the passphrase,
 * decrypt its key material, merge the anti-forensic stripes and check the
 * result against the volume key digest. Only a key that matches comes back;
 * everything in between lives in locked memory and is wiped.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "../error.h"
#include "luks.h"

/* 1 if PASS opens slot S (volume key in VK), 0 if not, -errno on I/O or header trouble. */
static int try_slot(struct vdisk_file *file, const char *path, const struct luks_meta *m,
                    const struct luks_slot *s, const uint8_t *pass, size_t pass_len, uint8_t *vk)
{
    size_t af_len = (size_t)s->key_size * s->stripes, area = (af_len + 511) / 512 * 512;
    uint8_t *dk = luks_secret_alloc(s->area_key_size), *buf = luks_secret_alloc(area);
    uint8_t calc[64];
    struct luks_cipher c;
    int r = -ENOMEM;

    if (!dk || !buf)
        goto out;
    r = luks_kdf_run(&s->kdf, pass, pass_len, dk, s->area_key_size);
    if (r < 0)
        goto out;
    r = vdisk_file_pread(file, buf, area, m->base + s->offset);
    if (r < 0)
        goto out;
    r = luks_cipher_init(&c, s->cipher, dk, s->area_key_size, 512, 0);
    if (r < 0)
        goto out;
    r = luks_cipher_run(&c, buf, area, 0, false);
    luks_cipher_free(&c);
    if (r == 0)
        r = luks_af_merge(buf, s->key_size, s->stripes, s->af_hash, vk);
    if (r == 0)
        r = luks_pbkdf2(m->digest.hash, vk, m->key_size, m->digest.salt, m->digest.salt_len,
                        m->digest.iterations, calc, m->digest.len);
    if (r == 0)
        r = CRYPTO_memcmp(calc, m->digest.value, m->digest.len) == 0;
    explicit_bzero(calc, sizeof(calc));
out:
    luks_secret_free(dk, s->area_key_size);
    luks_secret_free(buf, area);
    if (r == -ENOMEM)
        return vdisk_error(ENOMEM, "%s: keyslot %d: out of memory", path, s->id);
    return r < 0 ? vdisk_error_prefix(-r, "%s: keyslot %d", path, s->id) : r;
}

int luks_unlock(struct vdisk_file *file, const char *path, const struct luks_meta *m,
                const struct vdisk_options *opts, uint8_t *vk, int *slot)
{
    const char *only = vdisk_options_get(opts, "keyslot");
    uint8_t *pass;
    size_t pass_len, alloc;
    int r, tried = 0;

    r = luks_key_read(path, opts, &pass, &pass_len, &alloc);
    if (r < 0)
        return r;
    r = 0;
    for (int i = 0; i < m->nslots && r == 0; i++) {
        if (only && atoi(only) != m->slots[i].id)
            continue;
        tried++;
        r = try_slot(file, path, m, &m->slots[i], pass, pass_len, vk);
        if (r == 1 && slot)
            *slot = m->slots[i].id;
    }
    luks_secret_free(pass, alloc);
    if (r < 0)
        return r;
    if (r == 0 && tried == 0)
        return vdisk_error(ENOKEY, "%s: no active keyslot%s%s", path, only ? " " : "",
                           only ? only : "");
    if (r == 0)
        return vdisk_error(EACCES, "%s: wrong key: it opens none of the %d active keyslot%s", path,
                           tried, tried == 1 ? "" : "s");
    return 0;
}
