/* SPDX-License-Identifier: MIT */
/*
 * The key asked on the terminal, as cryptsetup does, when an encrypted image
 * gets no --key-file or --key-stdin: "Enter passphrase for IMAGE:" on
 * /dev/tty with echo off (restored if a signal ends the command), twice and
 * compared for a new key. The passphrase goes into a sealed memfd like any
 * other key (key.c); the line buffer is wiped. No terminal: a clear error.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <termios.h>
#include <unistd.h>

#include "vdisk.h"
#include "vdisk/luks.h"

#define PASS_MAX 512 /* as cryptsetup's interactive passphrase */

static const int signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
#define NSIG_SAVED (sizeof(signals) / sizeof(signals[0]))

static int tty = -1;
static struct termios tty_saved;
static volatile sig_atomic_t tty_quiet;

/* A signal while echo is off: turn echo back on, then die of the signal as before. */
static void restore_and_raise(int sig)
{
    if (tty_quiet)
        tcsetattr(tty, TCSAFLUSH, &tty_saved);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Print PROMPT on the terminal and read one line with echo off into BUF; its length, or -1. */
static int read_line(const char *prompt, char *buf, const char *what)
{
    struct sigaction sa = {.sa_handler = restore_and_raise}, old[NSIG_SAVED];
    struct termios quiet;
    size_t n = 0;
    int r = -1;

    if (tcgetattr(tty, &tty_saved) < 0)
        return err("%s: terminal: %m", what), -1;
    quiet = tty_saved;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    quiet.c_lflag |= ICANON;
    sigemptyset(&sa.sa_mask);
    for (unsigned i = 0; i < NSIG_SAVED; i++)
        sigaction(signals[i], &sa, &old[i]);
    tty_quiet = 1;
    tcsetattr(tty, TCSAFLUSH, &quiet);
    if (write(tty, prompt, strlen(prompt)) < 0)
        goto out;
    for (;;) {
        char c;
        ssize_t k = read(tty, &c, 1);

        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            err("%s: terminal: %m", what);
            goto out;
        }
        if (k == 0 || c == '\n')
            break;
        if (n == PASS_MAX) {
            err("%s: passphrase longer than %d characters", what, PASS_MAX);
            goto out;
        }
        buf[n++] = c;
    }
    r = (int)n;
out:
    tcsetattr(tty, TCSAFLUSH, &tty_saved);
    tty_quiet = 0;
    for (unsigned i = 0; i < NSIG_SAVED; i++)
        sigaction(signals[i], &old[i], NULL);
    if (write(tty, "\n", 1) < 0) {
        /* the newline that echo did not show: cosmetic */
    }
    return r;
}

/* A sealed memfd holding LEN bytes of BUF; -1 with a message printed. */
static int seal(const char *buf, size_t len, const char *what)
{
    int fd = memfd_create("vdisk-key", MFD_CLOEXEC | MFD_ALLOW_SEALING), hi;

    if (fd < 0 || write(fd, buf, len) != (ssize_t)len) {
        err("%s: memfd: %m", what);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
    hi = fcntl(fd, F_DUPFD_CLOEXEC, 10); /* above what a forked server sets up (server.c) */
    close(fd);
    if (hi < 0)
        err("%s: memfd: %m", what);
    return hi;
}

int key_ask_fd(const char *what, bool twice)
{
    char *pass =
        mmap(NULL, 2 * (PASS_MAX + 1), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char prompt[PATH_MAX + 64];
    int n, n2, fd = -1;

    if (pass == MAP_FAILED)
        return err("%s: out of memory", what), -1;
    (void)mlock(pass, 2 * (PASS_MAX + 1));
    tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (tty < 0) {
        err("%s: encrypted: give the key with --key-file FILE or --key-stdin (no terminal to ask "
            "on)",
            what);
        goto out;
    }
    snprintf(prompt, sizeof(prompt), "Enter passphrase for %s: ", what);
    n = read_line(prompt, pass, what);
    if (n < 0)
        goto out;
    if (n == 0) {
        err("%s: no passphrase given", what);
        goto out;
    }
    if (twice) {
        n2 = read_line("Verify passphrase: ", pass + PASS_MAX + 1, what);
        if (n2 < 0)
            goto out;
        if (n2 != n || memcmp(pass, pass + PASS_MAX + 1, n) != 0) {
            err("%s: passphrases do not match", what);
            goto out;
        }
    }
    fd = seal(pass, n, what);
out:
    if (tty >= 0)
        close(tty);
    tty = -1;
    explicit_bzero(pass, 2 * (PASS_MAX + 1));
    munmap(pass, 2 * (PASS_MAX + 1));
    return fd;
}

int key_ask_if_needed(const char *path, const char *format)
{
    int fd;

    if (key_descriptor() >= 0 || vdisk_luks_encrypted(path, format) <= 0)
        return 0; /* a key given, not encrypted, or unreadable: the open says why */
    fd = key_ask_fd(path, false);
    if (fd < 0)
        return 1;
    key_adopt(fd);
    return 0;
}

int key_ask_new(int r, const char *path)
{
    int fd;

    if (r != -ENOKEY || key_descriptor() >= 0)
        return 0;
    fd = key_ask_fd(path, true);
    if (fd < 0)
        return -1;
    key_adopt(fd);
    return 1;
}
