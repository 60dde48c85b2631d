/* SPDX-License-Identifier: MIT */
/*
 * vdisk convert [-p | --progress=json] [-m THREADS] [-t CACHE] [-T CACHE] [-f FMT] -O FMT [-o
 * KEY=VAL,...] SRC DST
 *
 * Copies SRC, of any format, into a new image DST. Holes and zero blocks are
 * not written, so sparse images stay sparse. DST must not exist; if the copy
 * fails or is interrupted, DST is removed again. DST is flushed before success
 * unless -t unsafe. Cache modes, -T for SRC and -t for DST: writeback (the
 * page cache, default), none (O_DIRECT; for a cold source it saves the copy
 * through the cache), or unsafe (as writeback, but DST is never flushed:
 * qemu-img convert's default, quicker, and lost if the machine crashes soon).
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

#define USAGE                                                                                      \
    "usage: vdisk convert [-p | --progress=json] [-m THREADS] [-t CACHE] [-T CACHE] [-f FMT]\n"    \
    "                     -O FMT [-o KEY=VAL,...] SRC DST\n"                                       \
    "CACHE: none (O_DIRECT), writeback (default) or unsafe (no flush at the end)\n"

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

/*
 * The source, with the key when it takes one: one --key-file serves an
 * encrypted source, an encrypted target, or both (the same key).
 */
static int open_source(const char *path, const char *fmt, unsigned flags, struct vdisk_image **img)
{
    int r = vdisk_open(path, fmt, flags, key_options(NULL), img);

    if (key_not_taken(r))
        r = vdisk_open(path, fmt, flags, NULL, img);
    return r;
}

/* A cache mode's vdisk_open() flags, or -1. */
static int parse_cache(const char *mode)
{
    if (strcmp(mode, "none") == 0)
        return VDISK_OPEN_DIRECT;
    if (strcmp(mode, "writeback") == 0)
        return 0;
    if (strcmp(mode, "unsafe") == 0)
        return VDISK_OPEN_UNSAFE;
    return -1;
}

/*
 * Create DST of SIZE bytes; formats that count in sectors refuse an odd size,
 * so then round up to 512 as qemu-img does (the tail reads as zeroes).
 */
static int create_target(const char *path, const char *fmt, uint64_t size, const char *options)
{
    int r = vdisk_create(path, fmt, size, options);

    if (r == -EINVAL && size % 512 && access(path, F_OK) < 0)
        r = vdisk_create(path, fmt, (size | 511) + 1, options);
    return r;
}

int cmd_convert(int argc, char **argv)
{
    const char *src_fmt = NULL, *dst_fmt = NULL, *options = NULL, *src_path, *dst_path;
    struct copy_options copt = {.interrupted = &interrupted};
    struct vdisk_image *src, *dst;
    bool progress = false, dst_key;
    int src_cache = 0, dst_cache = 0;
    char msg[1024];
    static const struct option longopts[] = {{"progress", required_argument, NULL, 'P'},
                                             {"help", no_argument, NULL, 'h'},
                                             KEY_LONGOPTS,
                                             {NULL, 0, NULL, 0}};
    int c, k, r;

    while ((c = getopt_long(argc, argv, "pf:O:o:m:t:T:h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
        case OPT_KEY_STDIN:
            if (key_option(c, optarg))
                return 1;
            break;
        case 'p':
            progress = true;
            break;
        case 'P': /* --progress=json: machine-readable, terminal or not */
            if (strcmp(optarg, "json") != 0)
                return err("convert: --progress takes 'json', not '%s'", optarg);
            copt.progress_json = true;
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
        case 'T':
            src_cache = parse_cache(optarg);
            if (src_cache < 0)
                return err("convert: -T takes none, writeback or unsafe, not '%s'", optarg);
            break;
        case 't':
            dst_cache = parse_cache(optarg);
            if (dst_cache < 0)
                return err("convert: -t takes none, writeback or unsafe, not '%s'", optarg);
            break;
        case 'm':
            if (parse_threads(optarg, &copt.threads) < 0)
                return err("convert: -m wants a thread count from 1 to 64, not '%s'", optarg);
            break;
        default:
            fputs(USAGE, c == 'h' ? stdout : stderr);
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
    copt.unsafe = dst_cache & VDISK_OPEN_UNSAFE;
    copt.direct = dst_cache & VDISK_OPEN_DIRECT;

    if (key_ask_if_needed(src_path, src_fmt))
        return 1;
    if (open_source(src_path, src_fmt, VDISK_OPEN_RDONLY | (src_cache & VDISK_OPEN_DIRECT), &src) <
        0)
        return err("%s", vdisk_last_error());
    catch_signals();
    r = create_target(dst_path, dst_fmt, vdisk_get_size(src), key_options(options));
    k = key_ask_new(r, dst_path); /* an encrypted target and no key given: ask */
    if (k > 0)
        r = create_target(dst_path, dst_fmt, vdisk_get_size(src), key_options(options));
    if (k < 0) {
        r = 1;
        goto out_src;
    }
    dst_key = key_descriptor() >= 0 && !key_not_taken(r);
    if (!dst_key && key_descriptor() >= 0) /* the key was the source's */
        r = create_target(dst_path, dst_fmt, vdisk_get_size(src), options);
    if (r < 0) {
        r = err("%s", vdisk_last_error());
        goto out_src;
    }
    if (vdisk_open(dst_path, dst_fmt, dst_cache, dst_key ? key_options(NULL) : NULL, &dst) < 0) {
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
