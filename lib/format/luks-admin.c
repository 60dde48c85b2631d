/* SPDX-License-Identifier: MIT */
/*
 * Keyslots of a LUKS2 image, as cryptsetup's luksAddKey / luksRemoveKey /
 * luksDump do them (vdisk luks ...); LUKS1 keyslots in luks1-admin.c. The image file is locked for
 * writing as an open does. add-key: unlock with an existing key, put the volume key in a free
 * keyslot and a free part of the keyslot area, then bump seqid and write both header copies (key
 * material first, flushed). remove-key: the keyslot the key opens goes from the JSON first, then
 * its area is overwritten.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/rand.h>

#include "../error.h"
#include "vdisk/luks.h"
#include "luks.h"

/* An open, locked image file and its header. */
struct admin {
    struct vdisk_file *f;
    struct luks_meta m;
    uint8_t bin[LUKS2_HDR_BIN];
    json_object *json; /* LUKS2 */
};

static void admin_close(struct admin *a)
{
    if (a->json)
        json_object_put(a->json);
    if (a->f)
        vdisk_file_close(a->f);
}

/* Open PATH (for writing when WRITE) and read its header (and LUKS2 JSON for writing). */
static int admin_open(const char *path, bool write, struct admin *a)
{
    uint64_t size, hsize;
    char *text;
    int r;

    memset(a, 0, sizeof(*a));
    r = vdisk_file_open(path, write ? 0 : VDISK_FILE_RDONLY, &a->f);
    if (r == 0)
        r = vdisk_file_lock(a->f, write);
    if (r == 0)
        r = vdisk_file_get_size(a->f, &size);
    if (r == 0)
        r = luks_read_header(a->f, path, 0, size, &a->m);
    if (r == 0 && write && a->m.version == 2) {
        r = luks2_read_raw(a->f, path, 0, size, a->bin, &text, &hsize);
        if (r == 0) {
            a->json = json_tokener_parse(text);
            free(text);
            if (!a->json)
                r = vdisk_error(EINVAL, "%s: LUKS2 JSON metadata does not parse", path);
        }
    }
    if (r < 0)
        admin_close(a);
    return r;
}

/* Write A's JSON as the next header generation. */
static int admin_commit(const char *path, struct admin *a)
{
    char uuid[41];

    memcpy(uuid, a->bin + 168, 40);
    uuid[40] = 0;
    return luks2_write_headers(a->f, path, a->m.hdr_size, a->m.seqid + 1, uuid,
                               json_object_to_json_string_ext(a->json, JSON_C_TO_STRING_PLAIN));
}

/* A JSON field holding a u64 as a string (or an integer). */
static uint64_t json_u64(json_object *o, const char *key)
{
    json_object *v;

    if (!json_object_object_get_ex(o, key, &v))
        return 0;
    return json_object_is_type(v, json_type_string) ? strtoull(json_object_get_string(v), NULL, 10)
                                                    : (uint64_t)json_object_get_int64(v);
}

/* The first LEN bytes (4 KiB aligned) of the keyslot area no keyslot uses, in *OFF. */
static int free_area(const char *path, struct admin *a, uint64_t len, uint64_t *off)
{
    json_object *cfg, *slots;
    uint64_t lo = 2 * a->m.hdr_size, hi, pos = lo;
    bool moved = true;

    if (!json_object_object_get_ex(a->json, "config", &cfg) ||
        !json_object_object_get_ex(a->json, "keyslots", &slots))
        return vdisk_error(EINVAL, "%s: LUKS2 JSON: no config or keyslots", path);
    hi = lo + json_u64(cfg, "keyslots_size");
    while (moved && pos + len <= hi) {
        moved = false;
        json_object_object_foreach(slots, key, val)
        {
            json_object *area;
            uint64_t o, n;

            (void)key;
            if (!json_object_object_get_ex(val, "area", &area))
                continue;
            o = json_u64(area, "offset"), n = json_u64(area, "size");
            if (pos < o + n && o < pos + len) { /* overlaps: go past it */
                pos = (o + n + 4095) & ~4095ull;
                moved = true;
            }
        }
    }
    if (pos + len > hi)
        return vdisk_error(ENOSPC, "%s: no room for another keyslot in the keyslot area", path);
    *off = pos;
    return 0;
}

/* The smallest keyslot id the JSON does not use. */
static int free_id(json_object *slots)
{
    for (int id = 0; id < LUKS_MAX_SLOTS; id++) {
        char key[16];

        snprintf(key, sizeof(key), "%d", id);
        if (!json_object_object_get_ex(slots, key, NULL))
            return id;
    }
    return -1;
}

/* The first digest object (vdisk serves LUKS2 images of one segment, so one digest). */
static json_object *digest_of(json_object *root)
{
    json_object *digs;

    if (!json_object_object_get_ex(root, "digests", &digs))
        return NULL;
    json_object_object_foreach(digs, key, val)
    {
        (void)key;
        if (json_object_is_type(val, json_type_object))
            return val;
    }
    return NULL;
}

/* add-key with parsed options. */
static int add_key(const char *path, const struct vdisk_options *unlock,
                   const struct vdisk_options *add, int *slotp)
{
    uint8_t *vk = luks_secret_alloc(LUKS_MAX_KEY), *pass = NULL, *area = NULL;
    size_t pass_len, alloc = 0, area_len = 0;
    json_object *slots, *dig, *ids;
    struct luks_params p;
    struct admin a;
    uint64_t off = 0;
    char key[16];
    int r, id;

    if (!vk)
        return vdisk_error(ENOMEM, "%s: out of memory", path);
    r = admin_open(path, true, &a);
    if (r < 0)
        goto out_vk;
    r = luks_unlock(a.f, path, &a.m, unlock, vk, NULL);
    if (r == 0)
        r = luks_key_read(path, add, &pass, &pass_len, &alloc);
    if (r == 0 && a.m.version == 1) {
        r = luks1_add_key(a.f, path, &a.m, vk, pass, pass_len, add, slotp);
        goto out;
    }
    if (r == 0)
        r = luks_params_get(path, 0, add, &p);
    if (r < 0)
        goto out;
    p.cipher = a.m.cipher; /* the keyslot area as cryptsetup does it: the segment's cipher */
    p.key_size = a.m.key_size;
    json_object_object_get_ex(a.json, "keyslots", &slots);
    dig = digest_of(a.json);
    id = free_id(slots);
    if (id < 0 || !dig || !json_object_object_get_ex(dig, "keyslots", &ids)) {
        r = vdisk_error(ENOSPC, "%s: no free keyslot", path);
        goto out;
    }
    area_len = ((uint64_t)p.key_size * LUKS_STRIPES + 4095) & ~4095ull;
    r = free_area(path, &a, area_len, &off);
    if (r < 0)
        goto out;
    area = luks_secret_alloc(area_len);
    r = area ? luks_keyslot_make(path, id, &p, pass, pass_len, vk, area, area_len)
             : vdisk_error(ENOMEM, "%s: out of memory", path);
    /* the material first, flushed; then the headers that point at it */
    if (r == 0)
        r = vdisk_file_pwrite(a.f, area, area_len, off);
    if (r == 0)
        r = vdisk_file_flush(a.f);
    if (r < 0)
        goto out;
    snprintf(key, sizeof(key), "%d", id);
    json_object_object_add(slots, key, luks_keyslot_json(&p, off, area_len));
    json_object_array_add(ids, json_object_new_string(key));
    r = admin_commit(path, &a);
    if (r == 0 && slotp)
        *slotp = id;
out:
    luks_secret_free(area, area_len);
    luks_secret_free(pass, alloc);
    admin_close(&a);
out_vk:
    luks_secret_free(vk, LUKS_MAX_KEY);
    return r;
}

/* Drop the string ID from the JSON array ARR. */
static void array_drop(json_object *arr, const char *id)
{
    for (size_t i = 0; i < json_object_array_length(arr); i++)
        if (strcmp(json_object_get_string(json_object_array_get_idx(arr, i)), id) == 0) {
            json_object_array_del_idx(arr, i, 1);
            return;
        }
}

/* remove-key with parsed options. */
static int remove_key(const char *path, const struct vdisk_options *opts, int *slotp)
{
    uint8_t *vk = luks_secret_alloc(LUKS_MAX_KEY), *junk = NULL;
    json_object *slots, *dig, *ids;
    const struct luks_slot *s = NULL;
    struct admin a;
    char key[16];
    int r, id = -1;

    if (!vk)
        return vdisk_error(ENOMEM, "%s: out of memory", path);
    r = admin_open(path, true, &a);
    if (r < 0)
        goto out_vk;
    r = luks_unlock(a.f, path, &a.m, opts, vk, &id);
    if (r < 0)
        goto out;
    if (a.m.nslots == 1) {
        r = vdisk_error(EPERM,
                        "%s: keyslot %d is the last one: without it nothing opens the "
                        "image again",
                        path, id);
        goto out;
    }
    if (a.m.version == 1) {
        r = luks1_remove_key(a.f, path, &a.m, id);
        if (r == 0 && slotp)
            *slotp = id;
        goto out;
    }
    for (int i = 0; i < a.m.nslots; i++)
        if (a.m.slots[i].id == id)
            s = &a.m.slots[i];
    snprintf(key, sizeof(key), "%d", id);
    json_object_object_get_ex(a.json, "keyslots", &slots);
    dig = digest_of(a.json);
    json_object_object_del(slots, key);
    if (dig && json_object_object_get_ex(dig, "keyslots", &ids))
        array_drop(ids, key);
    /* the headers forget the slot first; then its material is overwritten */
    r = admin_commit(path, &a);
    junk = s ? malloc(s->size) : NULL;
    if (r == 0 && junk && RAND_bytes(junk, (int)s->size) == 1) {
        r = vdisk_file_pwrite(a.f, junk, s->size, s->offset);
        if (r == 0)
            r = vdisk_file_flush(a.f);
    }
    free(junk);
    if (r == 0 && slotp)
        *slotp = id;
out:
    admin_close(&a);
out_vk:
    luks_secret_free(vk, LUKS_MAX_KEY);
    return r;
}

static const char *const unlock_keys[] = {"key-file", "key-fd", "keyslot", NULL};
static const char *const add_keys[] = {"key-file",    "key-fd",      "pbkdf",
                                       "hash",        "iter-time",   "argon2-memory",
                                       "argon2-time", "argon2-cpus", NULL};

int vdisk_luks_add_key(const char *path, const char *unlock_text, const char *add_text, int *slotp)
{
    struct vdisk_options unlock, add;
    int r;

    vdisk_error_clear();
    r = vdisk_options_parse(unlock_text, unlock_keys, "luks", &unlock);

    if (r < 0)
        return r;
    r = vdisk_options_parse(add_text, add_keys, "luks add-key", &add);
    if (r == 0) {
        r = add_key(path, &unlock, &add, slotp);
        vdisk_options_free(&add);
    }
    vdisk_options_free(&unlock);
    return r;
}

int vdisk_luks_remove_key(const char *path, const char *unlock_text, int *slotp)
{
    struct vdisk_options unlock;
    int r;

    vdisk_error_clear();
    r = vdisk_options_parse(unlock_text, unlock_keys, "luks", &unlock);
    if (r == 0) {
        r = remove_key(path, &unlock, slotp);
        vdisk_options_free(&unlock);
    }
    return r;
}

int vdisk_luks_dump(const char *path, FILE *out)
{
    struct admin a;
    int r;

    vdisk_error_clear();
    r = admin_open(path, false, &a);

    if (r < 0)
        return r;
    fprintf(out, "version: %d\nuuid: %s\ncipher: %s\nkey bits: %u\nsector size: %u\n", a.m.version,
            a.m.uuid, a.m.cipher, a.m.key_size * 8, a.m.sector_size);
    fprintf(out, "payload offset: %llu\n", (unsigned long long)a.m.offset);
    if (a.m.version == 2)
        fprintf(out, "header size: %llu\nseqid: %llu\n", (unsigned long long)a.m.hdr_size,
                (unsigned long long)a.m.seqid);
    fprintf(out, "digest: pbkdf2 %s, %u iterations\n", a.m.digest.hash, a.m.digest.iterations);
    for (int i = 0; i < a.m.nslots; i++) {
        const struct luks_slot *s = &a.m.slots[i];

        fprintf(out, "keyslot %d: ", s->id);
        if (s->kdf.type == LUKS_KDF_PBKDF2)
            fprintf(out, "pbkdf2 %s, %u iterations", s->kdf.hash, s->kdf.iterations);
        else
            fprintf(out, "%s, time %u, memory %u KiB, %u threads",
                    s->kdf.type == LUKS_KDF_ARGON2I ? "argon2i" : "argon2id", s->kdf.time,
                    s->kdf.memory, s->kdf.cpus);
        fprintf(out, "; area %llu+%llu, %s, %u stripes\n", (unsigned long long)s->offset,
                (unsigned long long)s->size, s->cipher, s->stripes);
    }
    admin_close(&a);
    return 0;
}
