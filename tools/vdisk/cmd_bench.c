/* SPDX-License-Identifier: MIT */
/*
 * vdisk bench: libvdisk's own I/O benchmark, with the knobs of `qemu-img bench`.
 *
 * DEPTH threads each keep one request in flight against the image, so DEPTH
 * requests are outstanding at once. Requests go to OFFSET, OFFSET+STEP, ...
 * (wrapping before the end of the image), or with --random to random
 * BUFFER_SIZE-aligned places after OFFSET. Sizes are bytes unless suffixed
 * (K, M, G, T), as in qemu-img. Cache modes: none and directsync use
 * O_DIRECT (-n means none); writethrough and directsync make every write
 * durable (FUA); writeback (the default) and unsafe use the page cache.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "vdisk.h"

#define USAGE                                                                                      \
    "usage: vdisk bench [-c COUNT] [-d DEPTH] [-f FMT] [--flush-interval=N] [-i AIO] [-n]\n"       \
    "                   [--no-drain] [-o OFFSET] [--pattern=BYTE] [-q] [-s BUFFER_SIZE]\n"         \
    "                   [-S STEP] [-t CACHE] [-w] [-U] [--random] FILENAME\n"

#define MAX_DEPTH  1024
#define MAX_MEMORY (1ull << 30) /* DEPTH * BUFFER_SIZE */

struct bench {
    struct vdisk_image *img;
    uint64_t image_size, offset, step, count, flush_interval, wrap;
    size_t bufsize;
    unsigned depth, write_flags;
    bool write, random, drain;
    int pattern;

    _Atomic uint64_t next; /* next request number, without flush interval */
    pthread_mutex_t lock;  /* with a flush interval: next, inflight, flushing */
    pthread_cond_t cond;
    uint64_t inflight;
    bool flushing;

    atomic_int error; /* first failure, -errno */
    char msg[1024];
};

struct worker {
    struct bench *b;
    pthread_t tid;
    uint64_t rng;
    void *buf;
};

/* Parse a whole unsigned number with an optional K/M/G/T suffix; bare means bytes. */
static int parse_num(const char *s, bool suffix, uint64_t *out)
{
    unsigned shift = 0;
    char *end;
    uint64_t v;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno)
        return -1;
    if (suffix && *end) {
        const char *p = strchr("kmgt", *end | 0x20);

        if (!p)
            return -1;
        shift = 10 * (unsigned)(p - "kmgt" + 1);
        end++;
        if (*end == 'B' || *end == 'b')
            end++;
    }
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return -1;
    *out = v << shift;
    return 0;
}

/* Sequential position of request I: OFFSET + I*STEP, wrapped to fit in the image. */
static uint64_t seq_offset(const struct bench *b, uint64_t i)
{
    if (b->step == 0 || b->wrap == 0)
        return b->offset;
    return b->offset + (i % b->wrap) * b->step;
}

/* xorshift64*: fast, good enough to scatter requests. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static void set_error(struct bench *b, int r, const char *msg)
{
    int zero = 0;

    pthread_mutex_lock(&b->lock);
    if (atomic_compare_exchange_strong(&b->error, &zero, r))
        snprintf(b->msg, sizeof(b->msg), "%s", msg);
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

/*
 * Take the next request number. With a flush interval, the thread that takes a
 * request where the remaining count is a multiple of it first waits for the
 * queue to drain (unless --no-drain) and flushes, as qemu-img bench does.
 */
static bool take_request(struct bench *b, uint64_t *idx)
{
    uint64_t i;
    int r;

    if (!b->flush_interval) {
        i = atomic_fetch_add(&b->next, 1);
        if (i >= b->count || atomic_load(&b->error))
            return false;
        *idx = i;
        return true;
    }
    pthread_mutex_lock(&b->lock);
    while (b->flushing && !atomic_load(&b->error))
        pthread_cond_wait(&b->cond, &b->lock);
    i = atomic_load(&b->next);
    if (i >= b->count || atomic_load(&b->error)) {
        pthread_mutex_unlock(&b->lock);
        return false;
    }
    atomic_store(&b->next, i + 1);
    if (i > 0 && (b->count - i) % b->flush_interval == 0) {
        b->flushing = true;
        while (b->drain && b->inflight > 0)
            pthread_cond_wait(&b->cond, &b->lock);
        pthread_mutex_unlock(&b->lock);
        r = vdisk_flush(b->img);
        if (r < 0)
            set_error(b, r, vdisk_last_error());
        pthread_mutex_lock(&b->lock);
        b->flushing = false;
        pthread_cond_broadcast(&b->cond);
    }
    b->inflight++;
    pthread_mutex_unlock(&b->lock);
    *idx = i;
    return true;
}

static void finish_request(struct bench *b)
{
    if (!b->flush_interval)
        return;
    pthread_mutex_lock(&b->lock);
    if (--b->inflight == 0)
        pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

/* One slot of the queue: issue requests one after another until none are left. */
static void *run_worker(void *arg)
{
    struct worker *w = arg;
    struct bench *b = w->b;
    uint64_t i, off, slots = (b->image_size - b->offset) / b->bufsize;
    int r;

    while (take_request(b, &i)) {
        off = b->random ? b->offset + rng_next(&w->rng) % slots * b->bufsize : seq_offset(b, i);
        if (b->write)
            r = vdisk_write(b->img, w->buf, b->bufsize, off, b->write_flags);
        else
            r = vdisk_read(b->img, w->buf, b->bufsize, off);
        finish_request(b);
        if (r < 0) {
            set_error(b, r, vdisk_last_error());
            break;
        }
    }
    return NULL;
}

/* Start DEPTH workers, wait for them; returns the elapsed seconds or -1. */
static double run(struct bench *b, struct worker *ws)
{
    struct timespec t0, t1;
    unsigned started = 0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (; started < b->depth; started++) {
        int r = pthread_create(&ws[started].tid, NULL, run_worker, &ws[started]);

        if (r) {
            set_error(b, -r, "cannot start a benchmark thread");
            break;
        }
    }
    for (unsigned i = 0; i < started; i++)
        pthread_join(ws[i].tid, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
}

/* Set *direct and b->write_flags from a qemu cache mode name. */
static int parse_cache(const char *mode, bool *direct, struct bench *b)
{
    if (strcmp(mode, "none") == 0 || strcmp(mode, "directsync") == 0)
        *direct = true;
    else if (strcmp(mode, "writeback") == 0 || strcmp(mode, "writethrough") == 0 ||
             strcmp(mode, "unsafe") == 0)
        *direct = false;
    else
        return -1;
    b->write_flags = (strcmp(mode, "writethrough") == 0 || strcmp(mode, "directsync") == 0)
                         ? VDISK_WRITE_FUA
                         : 0;
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    enum { OPT_PATTERN = 256, OPT_FLUSH, OPT_NO_DRAIN, OPT_RANDOM };
    static const struct option longopts[] = {{"pattern", required_argument, NULL, OPT_PATTERN},
                                             {"flush-interval", required_argument, NULL, OPT_FLUSH},
                                             {"no-drain", no_argument, NULL, OPT_NO_DRAIN},
                                             {"random", no_argument, NULL, OPT_RANDOM},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    struct bench b = {.count = 75000, .depth = 64, .bufsize = 4096, .drain = true};
    const char *format = NULL, *cache = NULL, *path;
    uint64_t v, step = 0;
    bool direct = false, native = false, quiet = false, step_set = false, nolock = false;
    struct worker *ws = NULL;
    double secs;
    int c, r = 1;

    while ((c = getopt_long(argc, argv, "c:d:f:i:no:qs:S:t:wUh", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (parse_num(optarg, false, &v) < 0 || v == 0)
                return err("bench: invalid request count '%s' (want a number above 0)", optarg);
            b.count = v;
            break;
        case 'd':
            if (parse_num(optarg, false, &v) < 0 || v == 0 || v > MAX_DEPTH)
                return err("bench: invalid queue depth '%s' (want 1 to %d)", optarg, MAX_DEPTH);
            b.depth = v;
            break;
        case 'f':
            format = optarg;
            break;
        case 'i':
            /* one engine here: threads over libvdisk; accept qemu's names */
            if (strcmp(optarg, "threads") && strcmp(optarg, "native") && strcmp(optarg, "io_uring"))
                return err("bench: invalid aio '%s' (threads, native or io_uring)", optarg);
            break;
        case 'n':
            native = true;
            break;
        case 'o':
            if (parse_num(optarg, true, &b.offset) < 0)
                return err("bench: invalid offset '%s'", optarg);
            break;
        case 'q':
            quiet = true;
            break;
        case 's':
            if (parse_num(optarg, true, &v) < 0 || v == 0 || v > (1u << 30))
                return err("bench: invalid buffer size '%s' (want 1 byte to 1G)", optarg);
            b.bufsize = v;
            break;
        case 'S':
            if (parse_num(optarg, true, &step) < 0)
                return err("bench: invalid step size '%s'", optarg);
            step_set = true;
            break;
        case 't':
            cache = optarg;
            break;
        case 'w':
            b.write = true;
            break;
        case 'U':
            nolock = true;
            break;
        case OPT_PATTERN:
            if (parse_num(optarg, false, &v) < 0 || v > 0xff)
                return err("bench: invalid pattern byte '%s' (want 0 to 255)", optarg);
            b.pattern = v;
            break;
        case OPT_FLUSH:
            if (parse_num(optarg, false, &b.flush_interval) < 0)
                return err("bench: invalid flush interval '%s'", optarg);
            break;
        case OPT_NO_DRAIN:
            b.drain = false;
            break;
        case OPT_RANDOM:
            b.random = true;
            break;
        default:
            fputs(USAGE, stderr);
            return c == 'h' ? 0 : 1;
        }
    }
    if (argc - optind != 1) {
        fputs(USAGE, stderr);
        return 1;
    }
    path = argv[optind];
    if (cache && parse_cache(cache, &direct, &b) < 0)
        return err("bench: invalid cache mode '%s' (none, directsync, writeback, "
                   "writethrough, unsafe)",
                   cache);
    if (native && !cache)
        direct = true; /* -n alone means cache=none here */
    if (native && !direct)
        return err("bench: -n (native AIO) needs -t none or -t directsync");
    if (b.flush_interval && !b.write)
        return err("bench: --flush-interval is only for write tests (-w)");
    if (!b.drain && !b.flush_interval)
        return err("bench: --no-drain only makes sense with --flush-interval");
    if ((uint64_t)b.depth * b.bufsize > MAX_MEMORY)
        return err("bench: depth %u x buffer size %zu needs more than 1 GiB of buffers", b.depth,
                   b.bufsize);
    b.step = step_set ? step : b.bufsize;

    if (vdisk_open(path, format,
                   (b.write ? 0 : VDISK_OPEN_RDONLY) | (direct ? VDISK_OPEN_DIRECT : 0) |
                       (nolock ? VDISK_OPEN_NOLOCK : 0),
                   &b.img) < 0)
        return err("%s", vdisk_last_error());
    b.image_size = vdisk_get_size(b.img);
    if (b.offset > b.image_size || b.bufsize > b.image_size - b.offset) {
        err("bench: %s: a %zu-byte request at offset %" PRIu64 " does not fit in %" PRIu64 " bytes",
            path, b.bufsize, b.offset, b.image_size);
        goto out;
    }
    if (b.step)
        b.wrap = (b.image_size - b.offset - b.bufsize) / b.step + 1;
    pthread_mutex_init(&b.lock, NULL);
    pthread_cond_init(&b.cond, NULL);

    ws = calloc(b.depth, sizeof(*ws));
    if (!ws) {
        err("bench: out of memory");
        goto out_sync;
    }
    for (unsigned i = 0; i < b.depth; i++) {
        ws[i].b = &b;
        ws[i].rng = 0x9e3779b97f4a7c15ull * (i + 1);
        if (posix_memalign(&ws[i].buf, 4096, b.bufsize) != 0) {
            err("bench: out of memory for %u buffers of %zu bytes", b.depth, b.bufsize);
            goto out_free;
        }
        memset(ws[i].buf, b.pattern, b.bufsize);
    }

    if (!quiet) {
        if (b.random)
            printf("Sending %" PRIu64 " %s requests, %zu bytes each, %u in parallel "
                   "(random offsets from %" PRIu64 ")\n",
                   b.count, b.write ? "write" : "read", b.bufsize, b.depth, b.offset);
        else
            printf("Sending %" PRIu64 " %s requests, %zu bytes each, %u in parallel "
                   "(starting at offset %" PRIu64 ", step size %" PRIu64 ")\n",
                   b.count, b.write ? "write" : "read", b.bufsize, b.depth, b.offset, b.step);
        if (b.flush_interval)
            printf("Sending flush every %" PRIu64 " requests\n", b.flush_interval);
        fflush(stdout);
    }
    secs = run(&b, ws);
    if (atomic_load(&b.error)) {
        err("bench: %s", b.msg);
        goto out_free;
    }
    if (!quiet) {
        printf("Run completed in %.3f seconds.\n", secs);
        printf("%.0f requests/s, %.1f MiB/s\n", b.count / secs,
               b.count * (double)b.bufsize / secs / (1 << 20));
    }
    r = 0;

out_free:
    for (unsigned i = 0; i < b.depth; i++)
        free(ws[i].buf);
    free(ws);
out_sync:
    pthread_cond_destroy(&b.cond);
    pthread_mutex_destroy(&b.lock);
out:
    if (vdisk_close(b.img) < 0 && r == 0)
        r = err("%s", vdisk_last_error());
    return r;
}
