/* SPDX-License-Identifier: MIT */
/*
 * LUKS internals shared by luks.c (the driver: open, unlock, data path),
 * luks-header.c (LUKS1 and LUKS2 headers into struct luks_meta), luks-crypto.c
 * (sector ciphers, KDFs, the anti-forensic splitter, locked key memory),
 * luks-create.c (a new LUKS2 image) and luks-key.c (the passphrase from a key
 * file or descriptor).
 *
 * Crypto is OpenSSL's libcrypto (EVP): in Debian, AES-NI and VAES code paths,
 * XTS and CBC, PBKDF2 and the digests in one well-kept library; argon2 comes
 * from libargon2 (the reference code cryptsetup also uses).
 */
#ifndef VDISK_LUKS_H
#define VDISK_LUKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../format.h"

#define LUKS_MAGIC         "LUKS\xba\xbe"
#define LUKS_MAGIC2        "SKUL\xba\xbe" /* LUKS2 secondary header */
#define LUKS_MAX_SLOTS     32
#define LUKS_MAX_KEY       128         /* volume key bytes */
#define LUKS_MAX_PASS      (8u << 20)  /* key file bytes, as cryptsetup */
#define LUKS_MAX_AREA      (64u << 20) /* keyslot area bytes we read */
#define LUKS_MAX_ITER      (1u << 26)  /* PBKDF2 iterations we run (a hostile header) */
#define LUKS_MAX_ARGON_MEM (4u << 20)  /* argon2 KiB (4 GiB, cryptsetup's limit) */
#define LUKS_MAX_ARGON_T   64
#define LUKS2_HDR_BIN      4096
#define LUKS2_MAX_HDR      (4u << 20) /* binary header + JSON area, at most */

enum luks_kdf_type { LUKS_KDF_PBKDF2, LUKS_KDF_ARGON2I, LUKS_KDF_ARGON2ID };

/* How a passphrase becomes a keyslot key. */
struct luks_kdf {
    enum luks_kdf_type type;
    char hash[32];               /* pbkdf2 */
    uint32_t iterations;         /* pbkdf2 */
    uint32_t time, memory, cpus; /* argon2: passes, KiB, lanes */
    uint8_t salt[64];
    size_t salt_len;
};

/* One active keyslot: where its split key lies and how to decrypt it. */
struct luks_slot {
    int id;
    struct luks_kdf kdf;
    uint64_t offset, size; /* key material area, bytes in the file */
    char cipher[64];       /* area encryption, dm-crypt notation */
    uint32_t area_key_size;
    uint32_t key_size; /* volume key bytes it holds */
    uint32_t stripes;
    char af_hash[32];
};

/* The volume key check: PBKDF2(hash, key, salt, iterations) == digest. */
struct luks_digest {
    char hash[32];
    uint32_t iterations;
    uint8_t salt[64];
    size_t salt_len;
    uint8_t value[64];
    size_t len;
};

/* What a header says, LUKS1 or LUKS2 alike. */
struct luks_meta {
    int version;
    uint64_t base;   /* file offset of the header (0, or where qcow2 keeps it) */
    char cipher[64]; /* payload: "aes-xts-plain64" */
    uint32_t key_size;
    uint64_t offset; /* payload, bytes */
    uint64_t size;   /* payload bytes; 0: to the end of the file */
    uint32_t sector_size;
    uint64_t iv_tweak;
    char uuid[41];
    uint64_t hdr_size, seqid; /* LUKS2 */
    struct luks_slot slots[LUKS_MAX_SLOTS];
    int nslots;
    struct luks_digest digest;
};

/* A payload or keyslot cipher with its key set up. */
struct luks_cipher {
    const void *evp;      /* EVP_CIPHER */
    const void *essiv;    /* EVP_CIPHER for ESSIV IVs, or NULL */
    int iv_mode;          /* LUKS_IV_* */
    uint32_t sector_size; /* bytes per IV step */
    uint64_t iv_tweak;
    uint8_t *key; /* locked memory */
    size_t key_len;
    uint8_t *essiv_key; /* locked memory: hash of the key */
    size_t essiv_len;
    struct luks_ctx_pool *pool; /* keyed cipher contexts, reused: no key schedule per request */
};
#define LUKS_IV_PLAIN   0
#define LUKS_IV_PLAIN64 1
#define LUKS_IV_ESSIV   2

/* luks-header.c */
/*
 * Read and check the header at BASE in FILE (PATH names it in errors) into *M;
 * SIZE bytes from BASE belong to it (offsets in the header are relative to BASE).
 */
int luks_read_header(struct vdisk_file *file, const char *path, uint64_t base, uint64_t size,
                     struct luks_meta *m);
/*
 * The valid LUKS2 header copy with the highest seqid: its binary header in BIN
 * (LUKS2_HDR_BIN bytes), its JSON text (malloc'd, NUL terminated) and its size.
 */
int luks2_read_raw(struct vdisk_file *file, const char *path, uint64_t base, uint64_t size,
                   uint8_t *bin, char **json, uint64_t *hdr_size);
/* Parse LUKS2 JSON text (LEN bytes, NUL within) into *M; PATH names it in errors. */
int luks2_parse_json(const char *json, size_t len, const char *path, struct luks_meta *m);

/* luks-crypto.c */
/* Page-aligned memory that is locked (not swapped, not in core dumps); NULL on failure. */
void *luks_secret_alloc(size_t len);
/* Wipe and free memory from luks_secret_alloc. */
void luks_secret_free(void *p, size_t len);
/* Is SPEC with KEY_LEN bytes a cipher we do? -EINVAL with a message naming PATH if not. */
int luks_cipher_check(const char *path, const char *spec, size_t key_len);
/* Set *C up for SPEC with KEY (copied into locked memory). */
int luks_cipher_init(struct luks_cipher *c, const char *spec, const uint8_t *key, size_t key_len,
                     uint32_t sector_size, uint64_t iv_tweak);
void luks_cipher_free(struct luks_cipher *c);
/*
 * En- or decrypt LEN bytes (whole sectors) in place; SECTOR numbers the first
 * in sector_size units. The IV is its offset in 512-byte units plus iv_tweak.
 */
int luks_cipher_run(const struct luks_cipher *c, uint8_t *buf, size_t len, uint64_t sector,
                    bool enc);
/* The keyslot key for PASS: OUT_LEN bytes. */
int luks_kdf_run(const struct luks_kdf *k, const uint8_t *pass, size_t pass_len, uint8_t *out,
                 size_t out_len);
/* PBKDF2 with the named HASH. */
int luks_pbkdf2(const char *hash, const uint8_t *pass, size_t pass_len, const uint8_t *salt,
                size_t salt_len, uint32_t iter, uint8_t *out, size_t out_len);
/* Anti-forensic merge of STRIPES blocks of LEN bytes in SRC into KEY. */
int luks_af_merge(const uint8_t *src, size_t len, uint32_t stripes, const char *hash, uint8_t *key);
/* Anti-forensic split of KEY (LEN bytes) into STRIPES blocks in DST. */
int luks_af_split(const uint8_t *key, size_t len, uint32_t stripes, const char *hash, uint8_t *dst);
/* Bytes of digest HASH, or 0 if unknown. */
size_t luks_hash_len(const char *hash);

/* luks-unlock.c */
/*
 * The volume key of M (in FILE, PATH in errors) in VK (LUKS_MAX_KEY bytes):
 * the passphrase of OPTS (key-file=, key-fd=; keyslot= picks one) tried on
 * every active keyslot; -EACCES when none opens.
 */
int luks_unlock(struct vdisk_file *file, const char *path, const struct luks_meta *m,
                const struct vdisk_options *opts, uint8_t *vk, int *slot);

/* luks-key.c */
/* The passphrase the options give (key-file= or key-fd=): LEN bytes in locked memory of ALLOC. */
int luks_key_read(const char *path, const struct vdisk_options *opts, uint8_t **pass, size_t *len,
                  size_t *alloc);

/* luks-create.c */
int luks_create(struct vdisk_node *node, uint64_t size, const struct vdisk_options *opts);

/* What create (and add-key) take from their options. */
struct luks_params {
    const char *cipher;
    uint32_t key_size;
    uint32_t sector_size;
    const char *hash;
    struct luks_kdf kdf; /* with a fresh salt */
    uint32_t iter_ms;
};
#define LUKS_STRIPES 4000u
/* Options O (cipher, key-size, sector-size, hash, pbkdf, iter-time, argon2-*) for SIZE bytes. */
int luks_params_get(const char *path, uint64_t size, const struct vdisk_options *o,
                    struct luks_params *p);
/* Keyslot ID's material in AREA: VK split, encrypted with PASS's key (P's KDF and cipher). */
int luks_keyslot_make(const char *path, int id, const struct luks_params *p, const uint8_t *pass,
                      size_t pass_len, const uint8_t *vk, uint8_t *area, size_t area_len);
/* The JSON object of a keyslot with P's KDF, its area at OFF of AREA bytes. */
struct json_object *luks_keyslot_json(const struct luks_params *p, uint64_t off, uint64_t area);
/* PBKDF2 iterations of HASH that take about MS milliseconds here (at least 1000). */
uint32_t luks_pbkdf2_bench(const char *hash, uint32_t ms);
/* A random (version 4) UUID string into OUT (37 bytes). */
int luks_make_uuid(char *out);
/* luks1-create.c: bytes a LUKS1 header of KEY_SIZE-byte keys takes (QEMU's layout). */
uint64_t luks1_layout_size(uint32_t key_size);
/*
 * A LUKS1 header at BASE of F (aes-xts-plain64, 512-bit key, sha256, PBKDF2
 * taking about ITER_MS), keyslot 0 for the key OPTS give (key-file=/key-fd=).
 */
int luks1_format(struct vdisk_file *f, const char *path, uint64_t base, uint32_t iter_ms,
                 const struct vdisk_options *opts);
/* luks1-admin.c: VK in the first disabled keyslot of M (in F) for PASS (ADD: pbkdf, iter-time). */
int luks1_add_key(struct vdisk_file *f, const char *path, const struct luks_meta *m,
                  const uint8_t *vk, const uint8_t *pass, size_t pass_len,
                  const struct vdisk_options *add, int *slot);
/* luks1-admin.c: disable keyslot ID of M (in F), then overwrite its area. */
int luks1_remove_key(struct vdisk_file *f, const char *path, const struct luks_meta *m, int id);
/* Both LUKS2 header copies (SIZE bytes each, at 0 and SIZE) holding JSON, then a flush. */
int luks2_write_headers(struct vdisk_file *f, const char *path, uint64_t size, uint64_t seqid,
                        const char *uuid, const char *json);

#endif
