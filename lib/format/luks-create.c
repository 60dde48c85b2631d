/* SPDX-License-Identifier: MIT */
/*
 * A new LUKS2 image, laid out as cryptsetup's luksFormat does: two 16 KiB
 * headers (binary + JSON), the keyslot area from 32 KiB, the payload at
 * 16 MiB. One keyslot (0) holds a random volume key, split over 4000 stripes
 * and encrypted with the passphrase's key (argon2id by default; pbkdf2 on
 * request). Defaults: aes-xts-plain64, 512-bit key, 4096-byte sectors when
 * the size is a multiple of 4 KiB. Write order: key material, flush, then the
 * headers that point at it, flush.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "../error.h"
#include "luks.h"

#define HDR_SIZE    16384u
#define AREA_OFFSET (2 * HDR_SIZE)
#define DATA_OFFSET (16u << 20)
#define SALT_LEN    32u

/* PBKDF2 iterations of HASH that take about MS milliseconds here (at least 1000). */
uint32_t luks_pbkdf2_bench(const char *hash, uint32_t ms)
{
    const uint32_t trial = 20000;
    uint8_t out[32];
    struct timespec a, b;
    double took;
    uint64_t n;

    clock_gettime(CLOCK_MONOTONIC, &a);
    if (luks_pbkdf2(hash, (const uint8_t *)"bench", 5, (const uint8_t *)"saltsalt", 8, trial, out,
                    sizeof(out)) < 0)
        return 1000;
    clock_gettime(CLOCK_MONOTONIC, &b);
    took = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
    n = took > 0 ? (uint64_t)(trial * (ms / took)) : trial;
    return n < 1000 ? 1000 : n > LUKS_MAX_ITER ? LUKS_MAX_ITER : (uint32_t)n;
}

/* Half the RAM in KiB, capped at 1 GiB (cryptsetup's default argon2 memory). */
static uint32_t default_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    uint64_t half = pages > 0 && psize > 0 ? (uint64_t)pages * psize / 2048 : 1048576;

    return half < 1048576 ? (uint32_t)half : 1048576;
}

/* A numeric option KEY (plain decimal) into *OUT, DEF when absent. */
static int opt_u32(const struct vdisk_options *o, const char *key, uint32_t def, uint32_t *out)
{
    const char *v = vdisk_options_get(o, key);
    char *end;
    unsigned long n;

    *out = def;
    if (!v)
        return 0;
    n = strtoul(v, &end, 10);
    if (*end || !*v || n == 0 || n > UINT32_MAX)
        return vdisk_error(EINVAL, "option %s: expected a positive number, not '%s'", key, v);
    *out = (uint32_t)n;
    return 0;
}

int luks_params_get(const char *path, uint64_t size, const struct vdisk_options *o,
                    struct luks_params *p)
{
    const char *pbkdf = vdisk_options_get(o, "pbkdf");
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t bits;
    int r = 0;

    memset(p, 0, sizeof(*p));
    p->cipher = vdisk_options_get(o, "cipher") ? vdisk_options_get(o, "cipher") : "aes-xts-plain64";
    p->hash = vdisk_options_get(o, "hash") ? vdisk_options_get(o, "hash") : "sha256";
    r = opt_u32(o, "key-size", strncmp(p->cipher, "aes-xts-", 8) == 0 ? 512 : 256, &bits);
    if (r == 0)
        r = opt_u32(o, "sector-size", size % 4096 ? 512 : 4096, &p->sector_size);
    if (r == 0)
        r = opt_u32(o, "iter-time", 2000, &p->iter_ms);
    if (r == 0)
        r = opt_u32(o, "argon2-memory", default_memory(), &p->kdf.memory);
    if (r == 0)
        r = opt_u32(o, "argon2-time", 4, &p->kdf.time);
    if (r == 0)
        r = opt_u32(o, "argon2-cpus", cpus > 4 ? 4 : cpus < 1 ? 1 : (uint32_t)cpus, &p->kdf.cpus);
    if (r < 0)
        return vdisk_error_prefix(-r, "%s", path);
    p->key_size = bits / 8;
    if (bits % 8 || luks_cipher_check(path, p->cipher, p->key_size) < 0)
        return vdisk_error(EINVAL, "%s: cipher %s with a %u-bit key is not supported", path,
                           p->cipher, bits);
    if (luks_hash_len(p->hash) == 0)
        return vdisk_error(EINVAL, "%s: unknown hash %s", path, p->hash);
    if ((p->sector_size != 512 && p->sector_size != 1024 && p->sector_size != 2048 &&
         p->sector_size != 4096) ||
        size % p->sector_size)
        return vdisk_error(EINVAL, "%s: size %llu is not a multiple of the sector size %u", path,
                           (unsigned long long)size, p->sector_size);
    if (!pbkdf || strcmp(pbkdf, "argon2id") == 0)
        p->kdf.type = LUKS_KDF_ARGON2ID;
    else if (strcmp(pbkdf, "argon2i") == 0)
        p->kdf.type = LUKS_KDF_ARGON2I;
    else if (strcmp(pbkdf, "pbkdf2") == 0)
        p->kdf.type = LUKS_KDF_PBKDF2;
    else
        return vdisk_error(EINVAL, "%s: pbkdf must be argon2id, argon2i or pbkdf2, not '%s'", path,
                           pbkdf);
    if (p->kdf.type != LUKS_KDF_PBKDF2 &&
        (p->kdf.memory < 32 || p->kdf.memory > LUKS_MAX_ARGON_MEM ||
         p->kdf.time > LUKS_MAX_ARGON_T || p->kdf.cpus > 16))
        return vdisk_error(EINVAL,
                           "%s: argon2 cost out of range (memory 32 KiB to 4 GiB, time "
                           "up to %u, cpus up to 16)",
                           path, LUKS_MAX_ARGON_T);
    snprintf(p->kdf.hash, sizeof(p->kdf.hash), "%s", p->hash);
    p->kdf.salt_len = SALT_LEN;
    if (RAND_bytes(p->kdf.salt, SALT_LEN) != 1)
        return vdisk_error(EIO, "%s: no random bytes", path);
    if (p->kdf.type == LUKS_KDF_PBKDF2)
        p->kdf.iterations = luks_pbkdf2_bench(p->hash, p->iter_ms);
    return 0;
}

/* BYTES as base64 in a new JSON string. */
static json_object *b64(const uint8_t *bytes, size_t len)
{
    char text[256];

    EVP_EncodeBlock((unsigned char *)text, bytes, (int)len);
    return json_object_new_string(text);
}

static json_object *u64s(uint64_t v)
{
    char text[24];

    snprintf(text, sizeof(text), "%llu", (unsigned long long)v);
    return json_object_new_string(text);
}

/* One-element array ["0"]. */
static json_object *ids0(void)
{
    json_object *a = json_object_new_array();

    json_object_array_add(a, json_object_new_string("0"));
    return a;
}

/* The JSON metadata for P with digest D and a keyslot area of AREA bytes. */
struct json_object *luks_keyslot_json(const struct luks_params *p, uint64_t off, uint64_t area)
{
    json_object *slot = json_object_new_object(), *af = json_object_new_object();
    json_object *ar = json_object_new_object(), *kdf = json_object_new_object();

    json_object_object_add(slot, "type", json_object_new_string("luks2"));
    json_object_object_add(slot, "key_size", json_object_new_int(p->key_size));
    json_object_object_add(af, "type", json_object_new_string("luks1"));
    json_object_object_add(af, "stripes", json_object_new_int(LUKS_STRIPES));
    json_object_object_add(af, "hash", json_object_new_string(p->hash));
    json_object_object_add(slot, "af", af);
    json_object_object_add(ar, "type", json_object_new_string("raw"));
    json_object_object_add(ar, "offset", u64s(off));
    json_object_object_add(ar, "size", u64s(area));
    json_object_object_add(ar, "encryption", json_object_new_string(p->cipher));
    json_object_object_add(ar, "key_size", json_object_new_int(p->key_size));
    json_object_object_add(slot, "area", ar);
    if (p->kdf.type == LUKS_KDF_PBKDF2) {
        json_object_object_add(kdf, "type", json_object_new_string("pbkdf2"));
        json_object_object_add(kdf, "hash", json_object_new_string(p->hash));
        json_object_object_add(kdf, "iterations", json_object_new_int64(p->kdf.iterations));
    } else {
        json_object_object_add(
            kdf, "type",
            json_object_new_string(p->kdf.type == LUKS_KDF_ARGON2I ? "argon2i" : "argon2id"));
        json_object_object_add(kdf, "time", json_object_new_int64(p->kdf.time));
        json_object_object_add(kdf, "memory", json_object_new_int64(p->kdf.memory));
        json_object_object_add(kdf, "cpus", json_object_new_int64(p->kdf.cpus));
    }
    json_object_object_add(kdf, "salt", b64(p->kdf.salt, p->kdf.salt_len));
    json_object_object_add(slot, "kdf", kdf);
    return slot;
}

/* The JSON metadata for P with digest D and keyslot 0 in an area of AREA bytes. */
static json_object *make_json(const struct luks_params *p, const struct luks_digest *d,
                              uint64_t area)
{
    json_object *root = json_object_new_object(), *slots = json_object_new_object();
    json_object *segs = json_object_new_object(), *seg = json_object_new_object();
    json_object *digs = json_object_new_object(), *dig = json_object_new_object();
    json_object *cfg = json_object_new_object();

    json_object_object_add(slots, "0", luks_keyslot_json(p, AREA_OFFSET, area));
    json_object_object_add(root, "keyslots", slots);
    json_object_object_add(root, "tokens", json_object_new_object());
    json_object_object_add(seg, "type", json_object_new_string("crypt"));
    json_object_object_add(seg, "offset", u64s(DATA_OFFSET));
    json_object_object_add(seg, "size", json_object_new_string("dynamic"));
    json_object_object_add(seg, "iv_tweak", json_object_new_string("0"));
    json_object_object_add(seg, "encryption", json_object_new_string(p->cipher));
    json_object_object_add(seg, "sector_size", json_object_new_int(p->sector_size));
    json_object_object_add(segs, "0", seg);
    json_object_object_add(root, "segments", segs);
    json_object_object_add(dig, "type", json_object_new_string("pbkdf2"));
    json_object_object_add(dig, "keyslots", ids0());
    json_object_object_add(dig, "segments", ids0());
    json_object_object_add(dig, "hash", json_object_new_string(d->hash));
    json_object_object_add(dig, "iterations", json_object_new_int64(d->iterations));
    json_object_object_add(dig, "salt", b64(d->salt, d->salt_len));
    json_object_object_add(dig, "digest", b64(d->value, d->len));
    json_object_object_add(digs, "0", dig);
    json_object_object_add(root, "digests", digs);
    json_object_object_add(cfg, "json_size", u64s(HDR_SIZE - LUKS2_HDR_BIN));
    json_object_object_add(cfg, "keyslots_size", u64s(DATA_OFFSET - AREA_OFFSET));
    json_object_object_add(root, "config", cfg);
    return root;
}

/* Fill HDR (SIZE bytes) as the copy at OFF of a header holding JSON, and checksum it. */
static int make_header(uint8_t *hdr, uint64_t size, uint64_t seqid, uint64_t off, const char *json,
                       const char *uuid)
{
    uint64_t be;
    unsigned int n;

    memset(hdr, 0, size);
    memcpy(hdr, off ? LUKS_MAGIC2 : LUKS_MAGIC, 6);
    hdr[7] = 2;
    be = htobe64(size);
    memcpy(hdr + 8, &be, 8);
    be = htobe64(seqid);
    memcpy(hdr + 16, &be, 8);
    strcpy((char *)hdr + 72, "sha256");
    if (RAND_bytes(hdr + 104, 64) != 1)
        return vdisk_error(EIO, "LUKS2 header: no random bytes");
    memcpy(hdr + 168, uuid, strnlen(uuid, 40));
    be = htobe64(off);
    memcpy(hdr + 256, &be, 8);
    memcpy(hdr + LUKS2_HDR_BIN, json, strlen(json));
    if (!EVP_Digest(hdr, size, hdr + 448, &n, EVP_sha256(), NULL))
        return vdisk_error(EIO, "LUKS2 header: checksum failed");
    return 0;
}

int luks2_write_headers(struct vdisk_file *f, const char *path, uint64_t size, uint64_t seqid,
                        const char *uuid, const char *json)
{
    uint8_t *hdr;
    int r = 0;

    if (strlen(json) >= size - LUKS2_HDR_BIN)
        return vdisk_error(E2BIG, "%s: LUKS2 JSON metadata does not fit its %llu-byte area", path,
                           (unsigned long long)(size - LUKS2_HDR_BIN));
    hdr = malloc(size);
    if (!hdr)
        return vdisk_error(ENOMEM, "%s: out of memory", path);
    for (uint64_t off = 0; r == 0 && off <= size; off += size) {
        r = make_header(hdr, size, seqid, off, json, uuid);
        if (r == 0)
            r = vdisk_file_pwrite(f, hdr, size, off);
    }
    free(hdr);
    return r == 0 ? vdisk_file_flush(f) : r;
}

/* A random (version 4) UUID string. */
int luks_make_uuid(char *out)
{
    uint8_t u[16];

    if (RAND_bytes(u, sizeof(u)) != 1)
        return -EIO;
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
             u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
             u[14], u[15]);
    return 0;
}

int luks_keyslot_make(const char *path, int id, const struct luks_params *p, const uint8_t *pass,
                      size_t pass_len, const uint8_t *vk, uint8_t *area, size_t area_len)
{
    uint8_t *dk = luks_secret_alloc(p->key_size);
    struct luks_cipher c;
    int r = -ENOMEM;

    if (!dk)
        goto out;
    memset(area, 0, area_len);
    r = luks_kdf_run(&p->kdf, pass, pass_len, dk, p->key_size);
    if (r == 0)
        r = luks_af_split(vk, p->key_size, LUKS_STRIPES, p->hash, area);
    if (r == 0)
        r = luks_cipher_init(&c, p->cipher, dk, p->key_size, 512, 0);
    if (r == 0) {
        r = luks_cipher_run(&c, area, area_len, 0, true);
        luks_cipher_free(&c);
    }
out:
    luks_secret_free(dk, p->key_size);
    return r < 0 ? vdisk_error_prefix(-r, "%s: keyslot %d", path, id) : 0;
}

int luks_create(struct vdisk_node *node, uint64_t size, const struct vdisk_options *opts)
{
    uint64_t area_len = 0;
    uint8_t *pass = NULL, *vk = luks_secret_alloc(LUKS_MAX_KEY), *area = NULL;
    size_t pass_len, alloc = 0;
    struct luks_digest d = {.len = 32, .salt_len = SALT_LEN};
    struct luks_params p;
    json_object *json = NULL;
    char uuid[37];
    int r;

    r = luks_params_get(node->path, size, opts, &p);
    if (r == 0)
        r = luks_key_read(node->path, opts, &pass, &pass_len, &alloc);
    if (r < 0)
        goto out;
    area_len = ((uint64_t)p.key_size * LUKS_STRIPES + 4095) / 4096 * 4096;
    area = luks_secret_alloc(area_len);
    r = vdisk_error(ENOMEM, "%s: out of memory", node->path);
    if (!vk || !area)
        goto out;
    snprintf(d.hash, sizeof(d.hash), "%s", p.hash);
    d.iterations = luks_pbkdf2_bench(p.hash, p.iter_ms < 125 ? p.iter_ms : 125);
    r = vdisk_error(EIO, "%s: no random bytes", node->path);
    if (RAND_bytes(vk, p.key_size) != 1 || RAND_bytes(d.salt, SALT_LEN) != 1 ||
        luks_make_uuid(uuid))
        goto out;
    r = luks_pbkdf2(d.hash, vk, p.key_size, d.salt, SALT_LEN, d.iterations, d.value, d.len);
    if (r == 0)
        r = luks_keyslot_make(node->path, 0, &p, pass, pass_len, vk, area, area_len);
    if (r < 0)
        goto out;
    json = make_json(&p, &d, area_len);
    r = vdisk_error(ENOMEM, "%s: LUKS2 JSON metadata: out of memory or too large", node->path);
    if (!json || strlen(json_object_to_json_string_ext(json, JSON_C_TO_STRING_PLAIN)) >=
                     HDR_SIZE - LUKS2_HDR_BIN)
        goto out;
    /* key material first; the headers that point at it after a flush */
    r = vdisk_file_truncate(node->file, DATA_OFFSET + size);
    if (r == 0)
        r = vdisk_file_pwrite(node->file, area, area_len, AREA_OFFSET);
    if (r == 0)
        r = vdisk_file_flush(node->file);
    if (r == 0)
        r = luks2_write_headers(node->file, node->path, HDR_SIZE, 1, uuid,
                                json_object_to_json_string_ext(json, JSON_C_TO_STRING_PLAIN));
out:
    if (json)
        json_object_put(json);
    luks_secret_free(area, area_len);
    luks_secret_free(vk, LUKS_MAX_KEY);
    luks_secret_free(pass, alloc);
    explicit_bzero(&p, sizeof(p));
    return r;
}
