/* SPDX-License-Identifier: MIT */
/*
 * vdisk luks dump IMAGE
 * vdisk luks add-key [--key-file F|--key-stdin] [--new-key-file N] [-o KDF-OPTS] IMAGE
 * vdisk luks remove-key [--key-file F|--key-stdin] IMAGE
 * Keyslots of a LUKS1 or LUKS2 image, as cryptsetup's luksDump/luksAddKey/luksRemoveKey;
 * keys not given are asked on the terminal (key-ask.c).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vdisk.h"
#include "vdisk/luks.h"

#define USAGE                                                                                      \
    "usage: vdisk luks dump IMAGE\n"                                                               \
    "       vdisk luks add-key [--key-file F|--key-stdin] [--new-key-file N] [-o KDF-OPTS] "       \
    "IMAGE\n"                                                                                      \
    "       vdisk luks remove-key [--key-file F|--key-stdin] IMAGE\n"                              \
    "KDF-OPTS: pbkdf=argon2id|argon2i|pbkdf2,iter-time=MS,argon2-memory=KIB,argon2-time=N\n"

int cmd_luks(int argc, char **argv)
{
    enum { OPT_NEW_KEY = 256 };
    static const struct option longopts[] = {
        KEY_LONGOPTS,
        {"new-key-file", required_argument, NULL, OPT_NEW_KEY},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *sub, *path, *new_key = NULL, *kdf = NULL;
    char add[4200];
    int c, slot = -1;

    if (argc < 2) {
        fputs(USAGE, stderr);
        return 2;
    }
    sub = argv[1];
    argc--, argv++;
    while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
        case OPT_KEY_STDIN:
            if (key_option(c, optarg))
                return 1;
            break;
        case OPT_NEW_KEY:
            new_key = optarg;
            break;
        case 'o':
            kdf = optarg;
            break;
        default:
            fputs(USAGE, c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (argc - optind != 1) {
        fputs(USAGE, stderr);
        return 2;
    }
    path = argv[optind];
    if (strcmp(sub, "dump") == 0)
        return vdisk_luks_dump(path, stdout) < 0 ? err("%s", vdisk_last_error()) : 0;
    if (strcmp(sub, "add-key") != 0 && strcmp(sub, "remove-key") != 0)
        return err("luks: unknown subcommand '%s' (dump, add-key, remove-key)", sub);
    if (key_descriptor() < 0) { /* no key given: ask on the terminal, as cryptsetup does */
        int fd = key_ask_fd(path, false);

        if (fd < 0)
            return 1;
        key_adopt(fd);
    }
    if (strcmp(sub, "add-key") == 0) {
        int r, new_fd = -1;

        if (new_key && strchr(new_key, ','))
            return err("luks add-key: %s: a key file name with a comma", new_key);
        if (!new_key) {
            new_fd = key_ask_fd("the new key", true);
            if (new_fd < 0)
                return 1;
            snprintf(add, sizeof(add), "key-fd=%d", new_fd);
        } else {
            snprintf(add, sizeof(add), "key-file=%s", new_key);
        }
        if (kdf)
            snprintf(add + strlen(add), sizeof(add) - strlen(add), ",%s", kdf);
        r = vdisk_luks_add_key(path, key_options(NULL), add, &slot);
        if (new_fd >= 0)
            close(new_fd);
        if (r < 0)
            return err("%s", vdisk_last_error());
        printf("key added to keyslot %d\n", slot);
        return 0;
    }
    if (strcmp(sub, "remove-key") == 0) {
        if (vdisk_luks_remove_key(path, key_options(NULL), &slot) < 0)
            return err("%s", vdisk_last_error());
        printf("keyslot %d removed\n", slot);
        return 0;
    }
    return err("luks: unknown subcommand '%s' (dump, add-key, remove-key)", sub);
}
