/* SPDX-License-Identifier: MIT */
/*
 * LUKS crypto: dm-crypt cipher specs ("aes-xts-plain64", "aes-cbc-essiv:sha256")
 * on OpenSSL EVP, sector by sector; PBKDF2 (OpenSSL) and argon2 (libargon2);
 * the anti-forensic splitter (LUKS1 spec, section 2.4); locked key memory.
 */
#include <argon2.h>
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "../error.h"
#include "luks.h"

/* Page-aligned, locked, kept out of core dumps; mlock failure (RLIMIT) is tolerated. */
void *luks_secret_alloc(size_t len)
{
    void *p;

    if (len == 0)
        len = 1;
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    (void)mlock(p, len);
    (void)madvise(p, len, MADV_DONTDUMP);
    return p;
}

void luks_secret_free(void *p, size_t len)
{
    if (!p)
        return;
    if (len == 0)
        len = 1;
    explicit_bzero(p, len);
    munlock(p, len);
    munmap(p, len);
}

size_t luks_hash_len(const char *hash)
{
    const EVP_MD *md = EVP_get_digestbyname(hash);

    return md ? (size_t)EVP_MD_get_size(md) : 0;
}

#define POOL_MAX 16 /* idle contexts kept per direction: enough for the engine's threads */

/* Cipher contexts with the key set up, for each direction; freed (and cleansed) with the cipher. */
struct luks_ctx_pool {
    pthread_mutex_t lock;
    EVP_CIPHER_CTX *idle[2][POOL_MAX];
    unsigned n[2];
};

/* A context keyed for C in direction ENC: an idle one, or a new one. */
static EVP_CIPHER_CTX *ctx_get(const struct luks_cipher *c, bool enc)
{
    struct luks_ctx_pool *p = c->pool;
    EVP_CIPHER_CTX *ctx = NULL;

    pthread_mutex_lock(&p->lock);
    if (p->n[enc])
        ctx = p->idle[enc][--p->n[enc]];
    pthread_mutex_unlock(&p->lock);
    if (ctx)
        return ctx;
    ctx = EVP_CIPHER_CTX_new();
    if (ctx && !EVP_CipherInit_ex(ctx, c->evp, NULL, c->key, NULL, enc)) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    if (ctx)
        EVP_CIPHER_CTX_set_padding(ctx, 0);
    return ctx;
}

/* Keep CTX for the next request, or free it when enough are idle. */
static void ctx_put(const struct luks_cipher *c, bool enc, EVP_CIPHER_CTX *ctx)
{
    struct luks_ctx_pool *p = c->pool;

    pthread_mutex_lock(&p->lock);
    if (p->n[enc] < POOL_MAX) {
        p->idle[enc][p->n[enc]++] = ctx;
        ctx = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    EVP_CIPHER_CTX_free(ctx);
}

/* Split "aes-xts-plain64" into the EVP cipher for KEY_LEN, the IV mode and the ESSIV hash. */
static int parse_spec(const char *spec, size_t key_len, const EVP_CIPHER **evp, int *iv_mode,
                      const EVP_MD **essiv_md)
{
    char name[80];
    const char *iv;

    *essiv_md = NULL;
    if (strncmp(spec, "aes-xts-", 8) == 0) {
        iv = spec + 8;
        if (key_len != 32 && key_len != 64)
            return -EINVAL;
        snprintf(name, sizeof(name), "aes-%zu-xts", key_len * 4);
    } else if (strncmp(spec, "aes-cbc-", 8) == 0) {
        iv = spec + 8;
        if (key_len != 16 && key_len != 24 && key_len != 32)
            return -EINVAL;
        snprintf(name, sizeof(name), "aes-%zu-cbc", key_len * 8);
    } else {
        return -EINVAL;
    }
    if (strcmp(iv, "plain64") == 0) {
        *iv_mode = LUKS_IV_PLAIN64;
    } else if (strcmp(iv, "plain") == 0) {
        *iv_mode = LUKS_IV_PLAIN;
    } else if (strncmp(iv, "essiv:", 6) == 0) {
        *iv_mode = LUKS_IV_ESSIV;
        *essiv_md = EVP_get_digestbyname(iv + 6);
        /* the hash is the key of an AES-ECB that makes the IVs */
        if (!*essiv_md || (EVP_MD_get_size(*essiv_md) != 16 && EVP_MD_get_size(*essiv_md) != 24 &&
                           EVP_MD_get_size(*essiv_md) != 32))
            return -EINVAL;
    } else {
        return -EINVAL;
    }
    *evp = EVP_get_cipherbyname(name);
    return *evp ? 0 : -EINVAL;
}

int luks_cipher_check(const char *path, const char *spec, size_t key_len)
{
    const EVP_CIPHER *evp;
    const EVP_MD *md;
    int iv_mode;

    if (parse_spec(spec, key_len, &evp, &iv_mode, &md) < 0)
        return vdisk_error(EINVAL,
                           "%s: cipher %s with a %zu-bit key is not supported (aes-xts-plain64, "
                           "aes-cbc-essiv:sha256, aes-cbc-plain64 are)",
                           path, spec, key_len * 8);
    return 0;
}

int luks_cipher_init(struct luks_cipher *c, const char *spec, const uint8_t *key, size_t key_len,
                     uint32_t sector_size, uint64_t iv_tweak)
{
    const EVP_CIPHER *evp;
    const EVP_MD *md;
    unsigned int n;
    int r;

    memset(c, 0, sizeof(*c));
    r = parse_spec(spec, key_len, &evp, &c->iv_mode, &md);
    if (r < 0)
        return vdisk_error(EINVAL, "cipher %s: not supported", spec);
    c->evp = evp;
    c->sector_size = sector_size;
    c->iv_tweak = iv_tweak;
    c->key_len = key_len;
    c->key = luks_secret_alloc(key_len);
    c->pool = calloc(1, sizeof(*c->pool));
    if (!c->key || !c->pool) {
        luks_cipher_free(c);
        return vdisk_error(ENOMEM, "cipher key: out of memory");
    }
    pthread_mutex_init(&c->pool->lock, NULL);
    memcpy(c->key, key, key_len);
    if (md) {
        c->essiv_len = EVP_MD_get_size(md);
        c->essiv_key = luks_secret_alloc(EVP_MAX_MD_SIZE);
        if (!c->essiv_key || !EVP_Digest(key, key_len, c->essiv_key, &n, md, NULL)) {
            luks_cipher_free(c);
            return vdisk_error(ENOMEM, "cipher %s: ESSIV key failed", spec);
        }
        c->essiv = c->essiv_len == 16   ? EVP_aes_128_ecb()
                   : c->essiv_len == 24 ? EVP_aes_192_ecb()
                                        : EVP_aes_256_ecb();
    }
    return 0;
}

void luks_cipher_free(struct luks_cipher *c)
{
    if (c->pool) {
        for (int enc = 0; enc < 2; enc++)
            for (unsigned i = 0; i < c->pool->n[enc]; i++)
                EVP_CIPHER_CTX_free(c->pool->idle[enc][i]); /* cleanses the key schedule */
        pthread_mutex_destroy(&c->pool->lock);
        free(c->pool);
    }
    luks_secret_free(c->key, c->key_len);
    if (c->essiv_key)
        luks_secret_free(c->essiv_key, EVP_MAX_MD_SIZE);
    memset(c, 0, sizeof(*c));
}

int luks_cipher_run(const struct luks_cipher *c, uint8_t *buf, size_t len, uint64_t sector,
                    bool enc)
{
    EVP_CIPHER_CTX *ctx = ctx_get(c, enc), *ectx = NULL;
    uint8_t iv[16];
    int outl, r = -EIO;

    if (!ctx)
        return vdisk_error(ENOMEM, "cipher: out of memory");
    /* the key schedule is the context's; each sector only sets its IV */
    if (c->essiv) {
        ectx = EVP_CIPHER_CTX_new();
        if (!ectx || !EVP_EncryptInit_ex(ectx, c->essiv, NULL, c->essiv_key, NULL))
            goto out;
        EVP_CIPHER_CTX_set_padding(ectx, 0);
    }
    for (size_t done = 0; done < len; done += c->sector_size, sector++) {
        /* dm-crypt counts IVs in 512-byte units whatever the sector size (LUKS2 does not
         * set iv_large_sectors; checked against dm-crypt in tests/vm) */
        uint64_t n = sector * (c->sector_size / 512) + c->iv_tweak;

        memset(iv, 0, sizeof(iv));
        if (c->iv_mode == LUKS_IV_PLAIN) {
            uint32_t le = htole32((uint32_t)n);
            memcpy(iv, &le, 4);
        } else {
            uint64_t le = htole64(n);
            memcpy(iv, &le, 8);
        }
        if (c->essiv && (!EVP_EncryptUpdate(ectx, iv, &outl, iv, 16) || outl != 16))
            goto out;
        if (!EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, enc) ||
            !EVP_CipherUpdate(ctx, buf + done, &outl, buf + done, (int)c->sector_size) ||
            outl != (int)c->sector_size)
            goto out;
    }
    r = 0;
out:
    EVP_CIPHER_CTX_free(ectx);
    if (r == 0)
        ctx_put(c, enc, ctx);
    else
        EVP_CIPHER_CTX_free(ctx);
    explicit_bzero(iv, sizeof(iv));
    return r < 0 ? vdisk_error(EIO, "cipher: OpenSSL refused the operation") : 0;
}

int luks_pbkdf2(const char *hash, const uint8_t *pass, size_t pass_len, const uint8_t *salt,
                size_t salt_len, uint32_t iter, uint8_t *out, size_t out_len)
{
    const EVP_MD *md = EVP_get_digestbyname(hash);

    if (!md)
        return vdisk_error(EINVAL, "pbkdf2: unknown hash %s", hash);
    if (iter == 0 || iter > LUKS_MAX_ITER)
        return vdisk_error(EINVAL, "pbkdf2: %u iterations out of range (1 to %u)", iter,
                           LUKS_MAX_ITER);
    if (!PKCS5_PBKDF2_HMAC((const char *)pass, (int)pass_len, salt, (int)salt_len, (int)iter, md,
                           (int)out_len, out))
        return vdisk_error(EIO, "pbkdf2: OpenSSL failed");
    return 0;
}

int luks_kdf_run(const struct luks_kdf *k, const uint8_t *pass, size_t pass_len, uint8_t *out,
                 size_t out_len)
{
    int r;

    if (k->type == LUKS_KDF_PBKDF2)
        return luks_pbkdf2(k->hash, pass, pass_len, k->salt, k->salt_len, k->iterations, out,
                           out_len);
    if (k->time == 0 || k->time > LUKS_MAX_ARGON_T || k->memory < 8 ||
        k->memory > LUKS_MAX_ARGON_MEM || k->cpus == 0 || k->cpus > 16)
        return vdisk_error(EINVAL, "argon2: cost out of range (time %u, memory %u KiB, cpus %u)",
                           k->time, k->memory, k->cpus);
    r = argon2_hash(k->time, k->memory, k->cpus, pass, pass_len, k->salt, k->salt_len, out, out_len,
                    NULL, 0, k->type == LUKS_KDF_ARGON2I ? Argon2_i : Argon2_id, ARGON2_VERSION_13);
    if (r != ARGON2_OK)
        return vdisk_error(r == ARGON2_MEMORY_ALLOCATION_ERROR ? ENOMEM : EINVAL, "argon2: %s",
                           argon2_error_message(r));
    return 0;
}

/* The AF diffusion: each digest-sized chunk becomes H(be32(index) || chunk), on CTX. */
static int diffuse(uint8_t *buf, size_t len, const EVP_MD *md, EVP_MD_CTX *ctx)
{
    size_t dlen = EVP_MD_get_size(md);
    uint8_t out[EVP_MAX_MD_SIZE];
    int r = 0;

    for (uint32_t i = 0; (size_t)i * dlen < len; i++) {
        size_t n = len - (size_t)i * dlen < dlen ? len - (size_t)i * dlen : dlen;
        uint32_t be = htobe32(i);

        if (!EVP_DigestInit_ex(ctx, md, NULL) || !EVP_DigestUpdate(ctx, &be, 4) ||
            !EVP_DigestUpdate(ctx, buf + (size_t)i * dlen, n) ||
            !EVP_DigestFinal_ex(ctx, out, NULL)) {
            r = -EIO;
            break;
        }
        memcpy(buf + (size_t)i * dlen, out, n);
    }
    explicit_bzero(out, sizeof(out));
    return r;
}

/*
 * D = diffuse(... diffuse(S0) ^ S1 ...) over the first STRIPES-1 blocks of SRC.
 * The digest is fetched once and one context serves every stripe: an init with
 * a digest from EVP_get_digestbyname() fetches it from the provider again,
 * under a lock (4000 stripes: 1.3 ms instead of 0.4).
 */
static int af_fold(const uint8_t *src, size_t len, uint32_t stripes, const char *hash, uint8_t *d)
{
    EVP_MD *fetched = EVP_MD_fetch(NULL, hash, NULL);
    const EVP_MD *md = fetched ? fetched : EVP_get_digestbyname(hash);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int r = ctx ? 0 : -ENOMEM;

    memset(d, 0, len);
    for (uint32_t s = 0; r == 0 && s + 1 < stripes; s++) {
        for (size_t i = 0; i < len; i++)
            d[i] ^= src[(size_t)s * len + i];
        r = diffuse(d, len, md, ctx);
    }
    EVP_MD_CTX_free(ctx);
    EVP_MD_free(fetched);
    return r;
}

int luks_af_merge(const uint8_t *src, size_t len, uint32_t stripes, const char *hash, uint8_t *key)
{
    uint8_t *d;
    int r;

    if (!EVP_get_digestbyname(hash) || stripes == 0)
        return vdisk_error(EINVAL, "AF merge: unknown hash %s or no stripes", hash);
    d = luks_secret_alloc(len);
    if (!d)
        return vdisk_error(ENOMEM, "AF merge: out of memory");
    r = af_fold(src, len, stripes, hash, d);
    for (size_t i = 0; r == 0 && i < len; i++)
        key[i] = d[i] ^ src[(size_t)(stripes - 1) * len + i];
    luks_secret_free(d, len);
    return r < 0 ? vdisk_error(EIO, "AF merge: hash failed") : 0;
}

int luks_af_split(const uint8_t *key, size_t len, uint32_t stripes, const char *hash, uint8_t *dst)
{
    uint8_t *d;
    int r;

    if (!EVP_get_digestbyname(hash) || stripes == 0)
        return vdisk_error(EINVAL, "AF split: unknown hash %s or no stripes", hash);
    if (RAND_bytes(dst, (int)(len * (stripes - 1))) != 1)
        return vdisk_error(EIO, "AF split: no random bytes");
    d = luks_secret_alloc(len);
    if (!d)
        return vdisk_error(ENOMEM, "AF split: out of memory");
    r = af_fold(dst, len, stripes, hash, d);
    for (size_t i = 0; r == 0 && i < len; i++)
        dst[(size_t)(stripes - 1) * len + i] = d[i] ^ key[i];
    luks_secret_free(d, len);
    return r < 0 ? vdisk_error(EIO, "AF split: hash failed") : 0;
}
