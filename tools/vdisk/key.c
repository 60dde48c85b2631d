/* SPDX-License-Identifier: MIT */
/*
 * --key-file FILE / --key-stdin: the key of an encrypted image. The utility
 * reads it once into a sealed memfd and hands the library its descriptor as
 * the key-fd=N open (or create) option; a server forked for the disk keeps
 * that descriptor (server.c) and nothing else. The key never lands on a
 * command line, in the environment or in a record.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <termios.h>
#include <unistd.h>

#include "vdisk.h"

#define KEY_MAX (8u << 20) /* as cryptsetup's key files */

static int key_fd = -1;
static char key_opts[4096 + 32];

/* Copy IN into a new sealed memfd; strip one newline when STRIP; ONCE: one read (a terminal line).
 */
static int load(int in, const char *what, bool strip, bool once)
{
    char buf[65536];
    size_t total = 0;
    int fd = memfd_create("vdisk-key", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    if (fd < 0)
        return err("%s: memfd: %m", what);
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err("%s: %m", what);
            goto fail;
        }
        if (n == 0)
            break;
        if (total + n > KEY_MAX) {
            err("%s: key longer than %u bytes", what, KEY_MAX);
            goto fail;
        }
        if (write(fd, buf, n) != n) {
            err("%s: memfd: %m", what);
            goto fail;
        }
        total += n;
        if (once)
            break;
    }
    if (strip && total && pread(fd, buf, 1, total - 1) == 1 && buf[0] == '\n' &&
        ftruncate(fd, --total) < 0) {
        err("%s: memfd: %m", what);
        goto fail;
    }
    explicit_bzero(buf, sizeof(buf));
    if (total == 0) {
        close(fd);
        return err("%s: the key is empty", what);
    }
    fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
    if (key_fd >= 0)
        close(key_fd);
    /* above the descriptors a forked server sets up (0-3, server.c) */
    key_fd = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    close(fd);
    if (key_fd < 0)
        return err("%s: memfd: %m", what);
    return 0;
fail:
    explicit_bzero(buf, sizeof(buf));
    close(fd);
    return 1;
}

/* With echo off when stdin is a terminal: the passphrase as typed, one line. */
static int load_stdin(void)
{
    struct termios old, quiet;
    bool tty = tcgetattr(STDIN_FILENO, &old) == 0;
    int r;

    if (!tty)
        return load(STDIN_FILENO, "stdin", true, false);
    fputs("Passphrase: ", stderr);
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    quiet.c_lflag |= ICANON;
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    r = load(STDIN_FILENO, "terminal", true, true); /* a canonical read returns at the newline */
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    fputc('\n', stderr);
    return r;
}

int key_option(int c, const char *arg)
{
    int fd, r;

    if (c == OPT_KEY_STDIN)
        return load_stdin();
    fd = open(arg, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return err("%s: %m", arg);
    r = load(fd, arg, false, false);
    close(fd);
    return r;
}

bool key_not_taken(int r)
{
    return r == -EINVAL && key_fd >= 0 && strstr(vdisk_last_error(), "no option 'key-fd'");
}

void key_forget(void)
{
    if (key_fd >= 0)
        close(key_fd);
    key_fd = -1;
}

int key_descriptor(void)
{
    return key_fd;
}

void key_adopt(int fd)
{
    if (key_fd >= 0)
        close(key_fd);
    key_fd = fd;
}

const char *key_options(const char *options)
{
    if (key_fd < 0)
        return options;
    snprintf(key_opts, sizeof(key_opts), "%s%skey-fd=%d", options ? options : "",
             options && *options ? "," : "", key_fd);
    return key_opts;
}
