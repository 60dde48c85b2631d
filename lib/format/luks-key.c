/* SPDX-License-Identifier: MIT */
/*
 * The passphrase: the whole content of a key file (key-file=PATH, as
 * cryptsetup's --key-file reads it) or of a descriptor the caller hands over
 * (key-fd=N: the vdisk utility puts the key in a memfd, so that no command
 * line or environment ever holds it). Kept in locked memory. And whether an
 * image needs one at all (vdisk_luks_encrypted), from its first bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdisk/luks.h"
#include "../error.h"
#include "luks.h"

/* Read all of FD (from offset 0 when it can seek) into locked memory. */
static int read_fd(int fd, const char *what, uint8_t **pass, size_t *len, size_t *alloc)
{
    size_t cap = 64 << 10, n = 0;
    struct stat st;
    uint8_t *buf;
    bool seekable;

    if (fstat(fd, &st) < 0)
        return vdisk_error(errno, "%s: %m", what);
    if (S_ISREG(st.st_mode)) {
        if ((uint64_t)st.st_size > LUKS_MAX_PASS)
            return vdisk_error(EFBIG, "%s: key file larger than %u bytes", what, LUKS_MAX_PASS);
        cap = st.st_size;
    }
    seekable = lseek(fd, 0, SEEK_CUR) >= 0;
    buf = luks_secret_alloc(cap);
    if (!buf)
        return vdisk_error(ENOMEM, "%s: out of memory", what);
    while (n < cap) {
        ssize_t r = seekable ? pread(fd, buf + n, cap - n, n) : read(fd, buf + n, cap - n);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            luks_secret_free(buf, cap);
            return vdisk_error(e, "%s: %m", what);
        }
        if (r == 0)
            break;
        n += r;
    }
    if (n == 0) {
        luks_secret_free(buf, cap);
        return vdisk_error(EINVAL, "%s: the key is empty", what);
    }
    *pass = buf;
    *len = n;
    *alloc = cap;
    return 0;
}

int luks_key_read(const char *path, const struct vdisk_options *opts, uint8_t **pass, size_t *len,
                  size_t *alloc)
{
    const char *file = vdisk_options_get(opts, "key-file");
    const char *fdtext = vdisk_options_get(opts, "key-fd");
    char *end;
    int fd, r;

    if (file && fdtext)
        return vdisk_error(EINVAL, "%s: give key-file or key-fd, not both", path);
    if (fdtext) {
        long n = strtol(fdtext, &end, 10);

        if (*end || n < 0 || n > 65535 || fcntl((int)n, F_GETFD) < 0)
            return vdisk_error(EBADF, "%s: key-fd=%s is not an open descriptor", path, fdtext);
        return read_fd((int)n, path, pass, len, alloc);
    }
    if (!file)
        return vdisk_error(ENOKEY,
                           "%s: encrypted (LUKS): give the key (vdisk --key-file FILE or "
                           "--key-stdin; library: key-file= or key-fd= option)",
                           path);
    fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return vdisk_error(errno, "%s: key file %s: %m", path, file);
    r = read_fd(fd, file, pass, len, alloc);
    close(fd);
    return r;
}

int vdisk_luks_encrypted(const char *path, const char *format)
{
    uint8_t h[40] = {0};
    bool any = !format;
    struct stat st;
    ssize_t n;
    int fd;

    vdisk_error_clear();
    if (!any && strcmp(format, "luks") != 0 && strcmp(format, "qcow2") != 0)
        return 0; /* stated as another format (raw over a LUKS file: the ciphertext) */
    /* O_NONBLOCK: a FIFO must not hang us here; the image's own open refuses it */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return vdisk_error(errno, "%s: %m", path);
    if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
        close(fd);
        return 0;
    }
    n = pread(fd, h, sizeof(h), 0);
    close(fd);
    if (n < 0)
        return vdisk_error(errno, "%s: %m", path);
    if (memcmp(h, LUKS_MAGIC, 6) == 0)
        return any || strcmp(format, "luks") == 0;
    /* qcow2 with crypt_method 2 (LUKS) */
    if (memcmp(h, "QFI\xfb", 4) == 0 && h[32] == 0 && h[33] == 0 && h[34] == 0 && h[35] == 2)
        return any || strcmp(format, "qcow2") == 0;
    return 0;
}
