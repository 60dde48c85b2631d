/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: LUKS headers. Parse a fuzzed file as a LUKS1/LUKS2 header
 * (binary headers, checksums, the JSON metadata) and, when the input starts
 * with '{', the JSON parser alone. When every keyslot's KDF is cheap, open it
 * through libvdisk with a key (AF merge, digest, ciphers), read a little, then
 * open it read-write and write a sector.
 * Any crash, hang or sanitizer report is a bug; errors are expected.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/luks.h"
#include "vdisk/vdisk.h"

static char path[4096], keypath[4096], opts[4200];

/* Two files under $TMPDIR: the image and the key "pw". */
static void make_paths(void)
{
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    int fd;

    if (path[0])
        return;
    snprintf(path, sizeof(path), "%s/vdisk-fuzz-luks-XXXXXX", dir);
    snprintf(keypath, sizeof(keypath), "%s/vdisk-fuzz-key-XXXXXX", dir);
    fd = mkstemp(path);
    if (fd < 0)
        abort();
    close(fd);
    fd = mkstemp(keypath);
    if (fd < 0 || write(fd, "pw", 2) != 2)
        abort();
    close(fd);
    snprintf(opts, sizeof(opts), "key-file=%s", keypath);
}

/* Would unlocking M cost more than a few milliseconds? */
static bool costly(const struct luks_meta *m)
{
    if (m->digest.iterations > 2000)
        return true;
    for (int i = 0; i < m->nslots; i++) {
        const struct luks_kdf *k = &m->slots[i].kdf;

        if (k->type == LUKS_KDF_PBKDF2 ? k->iterations > 2000 : k->memory > 256 || k->time > 4)
            return true;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char buf[64 * 1024];
    struct vdisk_image *img;
    struct vdisk_file *f;
    struct luks_meta m;
    uint64_t fsize;
    int fd, r;

    make_paths();
    if (size && data[0] == '{') {
        char *text = malloc(size + 1);

        if (!text)
            abort();
        memcpy(text, data, size);
        text[size] = 0;
        memset(&m, 0, sizeof(m));
        luks2_parse_json(text, size, "fuzz", &m);
        free(text);
        return 0;
    }
    fd = open(path, O_WRONLY | O_TRUNC);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        abort();
    close(fd);
    if (vdisk_file_open(path, VDISK_FILE_RDONLY, &f) < 0)
        return 0;
    r = vdisk_file_get_size(f, &fsize);
    if (r == 0)
        r = luks_read_header(f, path, 0, fsize, &m);
    vdisk_file_close(f);
    if (r < 0 || costly(&m))
        return 0;
    if (vdisk_open(path, "luks", VDISK_OPEN_RDONLY | VDISK_OPEN_NOLOCK, opts, &img) < 0)
        return 0;
    if (vdisk_get_size(img))
        vdisk_read(img, buf, vdisk_get_size(img) < sizeof(buf) ? vdisk_get_size(img) : 1000, 0);
    vdisk_close(img);
    /* read-write: encrypt a sector and read it back */
    if (vdisk_open(path, "luks", VDISK_OPEN_NOLOCK | VDISK_OPEN_UNSAFE, opts, &img) < 0)
        return 0;
    if (vdisk_get_size(img) >= 4096 && vdisk_write(img, buf, 4096, 0, 0) == 0)
        vdisk_read(img, buf, 4096, 0);
    vdisk_close(img);
    return 0;
}
