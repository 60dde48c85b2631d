/* SPDX-License-Identifier: MIT */
/*
 * Keyslot administration of LUKS images for `vdisk luks` (luks-admin.c).
 * Options are "key=value,..." strings: UNLOCK takes key-file=, key-fd= (an
 * existing key) and keyslot=; ADD the new key's key-file= or key-fd= and its
 * KDF (pbkdf=, iter-time=, argon2-memory=, argon2-time=, argon2-cpus=, hash=).
 */
#ifndef VDISK_LUKS_ADMIN_H
#define VDISK_LUKS_ADMIN_H

#include <stdio.h>

/* Add the key ADD opens to PATH (LUKS2) with a key UNLOCK opens; *SLOT: its keyslot. */
int luks_add_key(const char *path, const char *unlock, const char *add, int *slot);
/* Remove the keyslot the key UNLOCK opens (never the last one); *SLOT: which one. */
int luks_remove_key(const char *path, const char *unlock, int *slot);
/* Print PATH's header and keyslots (no key needed) to OUT. */
int luks_dump(const char *path, FILE *out);

#endif
