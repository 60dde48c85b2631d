/* SPDX-License-Identifier: MIT */
/*
 * libvdisk: keyslots of LUKS images (cryptsetup's luksAddKey, luksRemoveKey,
 * luksDump), for LUKS1 and LUKS2 files. Options are "key=value,..." strings:
 * UNLOCK takes key-file= or key-fd= (an existing key) and keyslot=; ADD the
 * new key's key-file= or key-fd= and its KDF (pbkdf=, iter-time=,
 * argon2-memory=, argon2-time=, argon2-cpus=, hash=). Calls return 0 or a
 * negative errno with vdisk_last_error() set.
 */
#ifndef VDISK_VDISK_LUKS_H
#define VDISK_VDISK_LUKS_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Does opening PATH as FORMAT (NULL: probed) need a key? 1 yes, 0 no, -errno when unreadable. */
int vdisk_luks_encrypted(const char *path, const char *format);
/* Add the key ADD opens to PATH with a key UNLOCK opens; *SLOT: its keyslot. */
int vdisk_luks_add_key(const char *path, const char *unlock, const char *add, int *slot);
/* Remove the keyslot the key UNLOCK opens (never the last one); *SLOT: which one. */
int vdisk_luks_remove_key(const char *path, const char *unlock, int *slot);
/* Print PATH's header and keyslots (no key needed) to OUT. */
int vdisk_luks_dump(const char *path, FILE *out);

#ifdef __cplusplus
}
#endif

#endif
