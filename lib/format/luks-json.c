/* SPDX-License-Identifier: MIT */
/*
 * The LUKS2 JSON metadata (LUKS2 On-Disk Format Specification, section 3):
 * the one crypt segment, the pbkdf2 digest bound to it, and the luks2
 * keyslots that digest names. 64-bit numbers are JSON strings there; json-c
 * parses, we check every field's type and range.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "../error.h"
#include "luks.h"

/* KEY of O as an unsigned 64-bit number: a decimal string or a JSON integer. */
static int get_u64(json_object *o, const char *key, uint64_t *out)
{
    json_object *v;
    const char *s;
    char *end;

    if (!json_object_object_get_ex(o, key, &v))
        return -EINVAL;
    if (json_object_is_type(v, json_type_int)) {
        int64_t n = json_object_get_int64(v);
        if (n < 0)
            return -EINVAL;
        *out = (uint64_t)n;
        return 0;
    }
    if (!json_object_is_type(v, json_type_string))
        return -EINVAL;
    s = json_object_get_string(v);
    if (*s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    *out = strtoull(s, &end, 10);
    return errno || *end ? -EINVAL : 0;
}

/* KEY of O as a number that fits 32 bits. */
static int get_u32(json_object *o, const char *key, uint32_t *out)
{
    uint64_t v;

    if (get_u64(o, key, &v) < 0 || v > UINT32_MAX)
        return -EINVAL;
    *out = (uint32_t)v;
    return 0;
}

/* KEY of O as a string into DST. */
static int get_str(json_object *o, const char *key, char *dst, size_t len)
{
    json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string) ||
        strlen(json_object_get_string(v)) >= len)
        return -EINVAL;
    strcpy(dst, json_object_get_string(v));
    return 0;
}

/* KEY of O as base64 into OUT (at most MAX bytes). */
static int get_b64(json_object *o, const char *key, uint8_t *out, size_t max, size_t *len)
{
    char text[256];
    uint8_t buf[192];
    size_t n;
    int dec;

    if (get_str(o, key, text, sizeof(text)) < 0)
        return -EINVAL;
    n = strlen(text);
    if (n == 0 || n % 4)
        return -EINVAL;
    dec = EVP_DecodeBlock(buf, (const unsigned char *)text, (int)n);
    if (dec < 0)
        return -EINVAL;
    /* EVP_DecodeBlock counts the padding as bytes */
    dec -= (text[n - 1] == '=') + (text[n - 2] == '=');
    if (dec <= 0 || (size_t)dec > max)
        return -EINVAL;
    memcpy(out, buf, dec);
    *len = dec;
    return 0;
}

/* Does the JSON array KEY of O hold the string ID? */
static bool names(json_object *o, const char *key, const char *id)
{
    json_object *a;

    if (!json_object_object_get_ex(o, key, &a) || !json_object_is_type(a, json_type_array))
        return false;
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        json_object *e = json_object_array_get_idx(a, i);
        if (json_object_is_type(e, json_type_string) && strcmp(json_object_get_string(e), id) == 0)
            return true;
    }
    return false;
}

/* An object member of O called KEY, or NULL. */
static json_object *get_obj(json_object *o, const char *key)
{
    json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_object))
        return NULL;
    return v;
}

/* The one crypt segment; its id in ID. */
static int parse_segment(json_object *root, const char *path, struct luks_meta *m, char *id)
{
    json_object *segs = get_obj(root, "segments");
    json_object *seg = NULL, *v;
    char size[32];
    int n = 0;

    if (!segs)
        return vdisk_error(EINVAL, "%s: LUKS2 JSON: no segments", path);
    json_object_object_foreach(segs, key, val)
    {
        if (n++ == 0 && strlen(key) < 16) {
            strcpy(id, key);
            seg = val;
        }
    }
    if (n != 1 || !seg || !json_object_is_type(seg, json_type_object))
        return vdisk_error(ENOTSUP,
                           "%s: LUKS2: %d segments (a reencryption in progress?): only "
                           "one is supported",
                           path, n);
    if (get_str(seg, "type", size, sizeof(size)) < 0 || strcmp(size, "crypt") != 0)
        return vdisk_error(ENOTSUP, "%s: LUKS2 segment %s: not of type crypt", path, id);
    if (json_object_object_get_ex(seg, "integrity", &v))
        return vdisk_error(ENOTSUP, "%s: LUKS2 segment %s: integrity protection is not supported",
                           path, id);
    if (get_u64(seg, "offset", &m->offset) < 0 || get_u64(seg, "iv_tweak", &m->iv_tweak) < 0 ||
        get_u32(seg, "sector_size", &m->sector_size) < 0 ||
        get_str(seg, "encryption", m->cipher, sizeof(m->cipher)) < 0 ||
        get_str(seg, "size", size, sizeof(size)) < 0)
        return vdisk_error(EINVAL, "%s: LUKS2 segment %s: missing or bad field", path, id);
    if (strcmp(size, "dynamic") != 0 && get_u64(seg, "size", &m->size) < 0)
        return vdisk_error(EINVAL, "%s: LUKS2 segment %s: bad size '%s'", path, id, size);
    if (m->sector_size == 0 || m->offset % m->sector_size || m->size % m->sector_size)
        return vdisk_error(EINVAL, "%s: LUKS2 segment %s: offset or size not in whole sectors",
                           path, id);
    return 0;
}

/* The pbkdf2 digest bound to segment SEG; *DIGEST_OBJ for its keyslot list. */
static int parse_digest(json_object *root, const char *path, const char *seg, struct luks_meta *m,
                        json_object **digest_obj)
{
    json_object *digests = get_obj(root, "digests");
    struct luks_digest *d = &m->digest;
    char type[32];

    if (!digests)
        return vdisk_error(EINVAL, "%s: LUKS2 JSON: no digests", path);
    json_object_object_foreach(digests, key, val)
    {
        if (!json_object_is_type(val, json_type_object) || !names(val, "segments", seg))
            continue;
        if (get_str(val, "type", type, sizeof(type)) < 0 || strcmp(type, "pbkdf2") != 0)
            return vdisk_error(ENOTSUP, "%s: LUKS2 digest %s: type not pbkdf2", path, key);
        if (get_str(val, "hash", d->hash, sizeof(d->hash)) < 0 ||
            get_u32(val, "iterations", &d->iterations) < 0 ||
            get_b64(val, "salt", d->salt, sizeof(d->salt), &d->salt_len) < 0 ||
            get_b64(val, "digest", d->value, sizeof(d->value), &d->len) < 0 ||
            luks_hash_len(d->hash) == 0)
            return vdisk_error(EINVAL, "%s: LUKS2 digest %s: missing or bad field", path, key);
        *digest_obj = val;
        return 0;
    }
    return vdisk_error(EINVAL, "%s: LUKS2: no digest for segment %s", path, seg);
}

/* The kdf object of a keyslot. */
static int parse_kdf(json_object *kdf, struct luks_kdf *k)
{
    char type[32];

    if (!kdf || get_str(kdf, "type", type, sizeof(type)) < 0 ||
        get_b64(kdf, "salt", k->salt, sizeof(k->salt), &k->salt_len) < 0)
        return -EINVAL;
    if (strcmp(type, "pbkdf2") == 0) {
        k->type = LUKS_KDF_PBKDF2;
        return get_str(kdf, "hash", k->hash, sizeof(k->hash)) < 0 ||
                       get_u32(kdf, "iterations", &k->iterations) < 0
                   ? -EINVAL
                   : 0;
    }
    if (strcmp(type, "argon2i") == 0)
        k->type = LUKS_KDF_ARGON2I;
    else if (strcmp(type, "argon2id") == 0)
        k->type = LUKS_KDF_ARGON2ID;
    else
        return -ENOTSUP;
    return get_u32(kdf, "time", &k->time) < 0 || get_u32(kdf, "memory", &k->memory) < 0 ||
                   get_u32(kdf, "cpus", &k->cpus) < 0
               ? -EINVAL
               : 0;
}

/* One luks2 keyslot ID (object O) into *S. */
static int parse_slot(json_object *o, const char *path, int id, struct luks_slot *s)
{
    json_object *af = get_obj(o, "af"), *area = get_obj(o, "area");
    char type[32];
    int r;

    memset(s, 0, sizeof(*s));
    s->id = id;
    if (get_u32(o, "key_size", &s->key_size) < 0 || !af || !area ||
        get_str(af, "type", type, sizeof(type)) < 0 || strcmp(type, "luks1") != 0 ||
        get_u32(af, "stripes", &s->stripes) < 0 ||
        get_str(af, "hash", s->af_hash, sizeof(s->af_hash)) < 0 ||
        get_str(area, "type", type, sizeof(type)) < 0 || strcmp(type, "raw") != 0 ||
        get_u64(area, "offset", &s->offset) < 0 || get_u64(area, "size", &s->size) < 0 ||
        get_str(area, "encryption", s->cipher, sizeof(s->cipher)) < 0 ||
        get_u32(area, "key_size", &s->area_key_size) < 0)
        return vdisk_error(EINVAL, "%s: LUKS2 keyslot %d: missing or bad field", path, id);
    r = parse_kdf(get_obj(o, "kdf"), &s->kdf);
    if (r < 0)
        return vdisk_error(-r, "%s: LUKS2 keyslot %d: %s kdf", path, id,
                           r == -ENOTSUP ? "unsupported" : "bad");
    if (luks_hash_len(s->af_hash) == 0 || s->area_key_size > LUKS_MAX_KEY)
        return vdisk_error(EINVAL, "%s: LUKS2 keyslot %d: bad AF hash or area key", path, id);
    return luks_cipher_check(path, s->cipher, s->area_key_size);
}

int luks2_parse_json(const char *json, size_t len, const char *path, struct luks_meta *m)
{
    json_tokener *tok = json_tokener_new();
    json_object *root, *slots, *digest = NULL;
    char seg[16];
    int r = -EINVAL;

    if (!tok)
        return vdisk_error(ENOMEM, "%s: LUKS2 JSON: out of memory", path);
    root = json_tokener_parse_ex(tok, json, (int)strnlen(json, len));
    if (!root || json_tokener_get_error(tok) != json_tokener_success ||
        !json_object_is_type(root, json_type_object)) {
        r = vdisk_error(EINVAL, "%s: LUKS2 JSON metadata does not parse", path);
        goto out;
    }
    if ((r = parse_segment(root, path, m, seg)) < 0 ||
        (r = parse_digest(root, path, seg, m, &digest)) < 0)
        goto out;
    slots = get_obj(root, "keyslots");
    if (!slots) {
        r = vdisk_error(EINVAL, "%s: LUKS2 JSON: no keyslots", path);
        goto out;
    }
    json_object_object_foreach(slots, key, val)
    {
        char type[32], *end;
        long id = strtol(key, &end, 10);

        if (*end || id < 0 || id >= LUKS_MAX_SLOTS || !json_object_is_type(val, json_type_object)) {
            r = vdisk_error(EINVAL, "%s: LUKS2 keyslot '%.16s': bad id", path, key);
            goto out;
        }
        /* a reencrypt slot or one for another digest holds no key for this segment */
        if (get_str(val, "type", type, sizeof(type)) < 0 || strcmp(type, "luks2") != 0 ||
            !names(digest, "keyslots", key) || m->nslots == LUKS_MAX_SLOTS)
            continue;
        if ((r = parse_slot(val, path, (int)id, &m->slots[m->nslots])) < 0)
            goto out;
        if (m->key_size && m->key_size != m->slots[m->nslots].key_size) {
            r = vdisk_error(EINVAL, "%s: LUKS2 keyslots disagree on the volume key size", path);
            goto out;
        }
        m->key_size = m->slots[m->nslots++].key_size;
    }
    if (m->nslots == 0)
        r = vdisk_error(ENOKEY, "%s: LUKS2: no active keyslot", path);
    else
        r = 0;
out:
    if (root)
        json_object_put(root);
    json_tokener_free(tok);
    return r;
}
