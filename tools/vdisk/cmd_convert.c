/* SPDX-License-Identifier: MIT */
/*
 * vdisk convert [-p] [-m THREADS] [-f FMT] -O FMT [-o KEY=VAL,...] SRC DST
 *
 * Copies SRC, of any format, into a new image DST. Holes and zero blocks are
 * not written, so sparse images stay sparse. DST must not exist; if the copy
 * fails or is interrupted, DST is removed again.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "copy.h"
#include "vdisk.h"

#define USAGE "usage: vdisk convert [-p] [-m THREADS] [-f FMT] -O FMT [-o KEY=VAL,...] SRC DST\n"

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Catch SIGINT, SIGTERM and SIGHUP so that a half-made DST can be removed. */
static void catch_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal};
    int sigs[] = {SIGINT, SIGTERM, SIGHUP};

    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, NULL);
}

/* Parse a thread count of 1..64. */
static int parse_threads(const char *s, unsigned *n)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > 64)
        return -1;
    *n = v;
    return 0;
}

int cmd_convert(int argc, char **argv)
{
    const char *src_fmt = NULL, *dst_fmt = NULL, *options = NULL, *src_path, *dst_path;
    struct copy_options copt = {.interrupted = &interrupted};
    struct vdisk_image *src, *dst;
    bool progress = false;
    char msg[1024];
    int c, r;

    while ((c = getopt(argc, argv, "pf:O:o:m:h")) != -1) {
        switch (c) {
        case 'p':
            progress = true;
            break;
        case 'f':
            src_fmt = optarg;
            break;
        case 'O':
            dst_fmt = optarg;
            break;
        case 'o':
            options = optarg;
            break;
        case 'm':
            if (parse_threads(optarg, &copt.threads) < 0)
                return err("convert: -m wants a thread count from 1 to 64, not '%s'", optarg);
            break;
        default:
            fputs(USAGE, stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (argc - optind != 2 || !dst_fmt) {
        fputs(USAGE, stderr);
        return 2;
    }
    src_path = argv[optind];
    dst_path = argv[optind + 1];
    /* a bar only where someone watches it */
    copt.progress = progress && isatty(STDERR_FILENO);

    if (vdisk_open(src_path, src_fmt, VDISK_OPEN_RDONLY, &src) < 0)
        return err("%s", vdisk_last_error());
    catch_signals();
    if (vdisk_create(dst_path, dst_fmt, vdisk_get_size(src), options) < 0) {
        r = err("%s", vdisk_last_error());
        goto out_src;
    }
    if (vdisk_open(dst_path, dst_fmt, 0, &dst) < 0) {
        r = err("%s", vdisk_last_error());
        goto err_unlink;
    }
    if (copy_image(src, dst, &copt, msg, sizeof(msg)) < 0) {
        r = err("convert %s to %s: %s", src_path, dst_path, msg);
        vdisk_close(dst);
        goto err_unlink;
    }
    if (vdisk_close(dst) < 0) {
        r = err("%s", vdisk_last_error());
        goto err_unlink;
    }
    if (interrupted) {
        r = err("convert %s to %s: interrupted", src_path, dst_path);
        goto err_unlink;
    }
    r = 0;
    goto out_src;

err_unlink:
    if (unlink(dst_path) < 0 && errno != ENOENT)
        warn("%s: cannot remove the unfinished image: %m", dst_path);
out_src:
    vdisk_close(src);
    return r;
}
