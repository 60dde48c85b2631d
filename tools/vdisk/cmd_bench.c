/* SPDX-License-Identifier: MIT */
/*
 * vdisk bench: libvdisk's own I/O benchmark, with the knobs of `qemu-img bench`.
 *
 * One thread keeps DEPTH requests in flight on a vdisk_queue (io_uring for
 * mapped data, worker threads for the rest), as qemu-img bench keeps DEPTH
 * requests in flight from one thread. Requests go to OFFSET, OFFSET+STEP, ...
 * (wrapping before the end of the image), or with --random to random
 * BUFFER_SIZE-aligned places after OFFSET. Sizes are bytes unless suffixed
 * (K, M, G, T), as in qemu-img. Cache modes: none and directsync use
 * O_DIRECT (-n means none); writethrough and directsync make every write
 * durable (FUA); writeback (the default) and unsafe use the page cache.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
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
    uint64_t rng;
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

/* xorshift64*: fast, good enough to scatter requests. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* Offset of request I: OFFSET + I*STEP wrapped to fit, or random with --random. */
static uint64_t request_offset(struct bench *b, uint64_t i)
{
    if (b->random)
        return b->offset +
               rng_next(&b->rng) % ((b->image_size - b->offset) / b->bufsize) * b->bufsize;
    if (b->step == 0 || b->wrap == 0)
        return b->offset;
    return b->offset + (i % b->wrap) * b->step;
}

/* The requests of a run: idle ones on a stack, DONE for collecting completions. */
struct pool {
    struct vdisk_request **idle, **done;
    unsigned nidle;
    uint64_t completed;
};

/*
 * Collect at least MIN completions and make their requests idle again; FLUSH,
 * when it completes, is not counted. 1 if FLUSH completed, 0 if not, -1 on a failure.
 */
static int collect(struct vdisk_queue *q, struct pool *p, unsigned min,
                   const struct vdisk_request *flush)
{
    int n = vdisk_queue_complete(q, p->done, vdisk_queue_inflight(q), min), seen = 0;

    /* -err(): err() returns 1, which would read as "the flush completed" */
    if (n < 0)
        return -err("bench: %s", vdisk_last_error());
    for (int i = 0; i < n; i++) {
        if (p->done[i]->result < 0)
            return -err("bench: %s", vdisk_last_error());
        if (p->done[i] == flush) {
            seen = 1;
            continue;
        }
        p->idle[p->nidle++] = p->done[i];
        p->completed++;
    }
    return seen;
}

/* Flush as qemu-img bench does: after the queue drains, unless --no-drain. */
static int flush_now(struct bench *b, struct vdisk_queue *q, struct pool *p)
{
    struct vdisk_request flush = {.op = VDISK_OP_FLUSH};
    int r = 0;

    while (b->drain && vdisk_queue_inflight(q) > 0 && r == 0)
        r = collect(q, p, 1, NULL);
    if (r < 0)
        return -1;
    if (vdisk_queue_submit(q, &flush) < 0)
        return -err("bench: %s", vdisk_last_error());
    while (r == 0)
        r = collect(q, p, 1, &flush);
    return r < 0 ? -1 : 0;
}

/* Keep DEPTH requests in flight on one queue until COUNT are done; elapsed seconds or -1. */
static double run(struct bench *b, struct vdisk_request *reqs, struct pool *p)
{
    uint64_t issued = 0, flushed_at = 0;
    struct timespec t0, t1;
    struct vdisk_queue *q;
    double secs = -1;

    for (p->nidle = 0; p->nidle < b->depth; p->nidle++)
        p->idle[p->nidle] = &reqs[p->nidle];
    if (vdisk_queue_create(b->img, b->depth, 0, &q) < 0) {
        err("bench: %s", vdisk_last_error());
        return -1;
    }
    /* pages pinned once for the run, not at each O_DIRECT request; without, plain I/O */
    if (!getenv("VDISK_BENCH_NO_FIXED"))
        (void)vdisk_queue_fixed_buffers(q, reqs[0].buf, b->bufsize, b->bufsize, b->depth);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (p->completed < b->count) {
        while (issued < b->count && p->nidle > 0) {
            struct vdisk_request *rq;

            if (b->flush_interval && issued > 0 && issued != flushed_at &&
                (b->count - issued) % b->flush_interval == 0) {
                flushed_at = issued;
                if (flush_now(b, q, p) < 0)
                    goto out;
                continue;
            }
            rq = p->idle[--p->nidle];
            rq->offset = request_offset(b, issued);
            if (vdisk_queue_submit(q, rq) < 0) {
                err("bench: %s", vdisk_last_error());
                goto out;
            }
            issued++;
        }
        if (collect(q, p, 1, NULL) < 0)
            goto out;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
out:
    vdisk_queue_destroy(q);
    return secs;
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
                                             KEY_LONGOPTS,
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    struct bench b = {.count = 75000, .depth = 64, .bufsize = 4096, .drain = true};
    const char *format = NULL, *cache = NULL, *path;
    uint64_t v, step = 0;
    bool direct = false, native = false, quiet = false, step_set = false, nolock = false;
    struct vdisk_request *reqs = NULL;
    void *bufs = NULL;
    struct pool pool = {0};
    double secs;
    int c, r = 1;

    while ((c = getopt_long(argc, argv, "c:d:f:i:no:qs:S:t:wUh", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
        case OPT_KEY_STDIN:
            if (key_option(c, optarg))
                return 1;
            break;
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
            /* one engine here, the vdisk_queue; accept qemu's names */
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
            fputs(USAGE, c == 'h' ? stdout : stderr);
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
                   key_options(NULL), &b.img) < 0)
        return err("%s", vdisk_last_error());
    b.image_size = vdisk_get_size(b.img);
    if (b.offset > b.image_size || b.bufsize > b.image_size - b.offset) {
        err("bench: %s: a %zu-byte request at offset %" PRIu64 " does not fit in %" PRIu64 " bytes",
            path, b.bufsize, b.offset, b.image_size);
        goto out;
    }
    if (b.step)
        b.wrap = (b.image_size - b.offset - b.bufsize) / b.step + 1;
    b.rng = 0x9e3779b97f4a7c15ull;
    reqs = calloc(b.depth, sizeof(*reqs));
    pool.idle = calloc(b.depth, sizeof(*pool.idle));
    pool.done = calloc(b.depth, sizeof(*pool.done));
    if (!reqs || !pool.idle || !pool.done) {
        err("bench: out of memory");
        goto out_free;
    }
    /* one area, so that it can be registered as fixed buffers */
    if (posix_memalign(&bufs, 4096, (size_t)b.depth * b.bufsize) != 0) {
        bufs = NULL;
        err("bench: out of memory for %u buffers of %zu bytes", b.depth, b.bufsize);
        goto out_free;
    }
    memset(bufs, b.pattern, (size_t)b.depth * b.bufsize);
    for (unsigned i = 0; i < b.depth; i++) {
        reqs[i].op = b.write ? VDISK_OP_WRITE : VDISK_OP_READ;
        reqs[i].flags = b.write ? b.write_flags : 0;
        reqs[i].length = b.bufsize;
        reqs[i].buf = (uint8_t *)bufs + (size_t)i * b.bufsize;
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
    secs = run(&b, reqs, &pool);
    if (secs < 0)
        goto out_free;
    if (!quiet) {
        printf("Run completed in %.3f seconds.\n", secs);
        printf("%.0f requests/s, %.1f MiB/s\n", b.count / secs,
               b.count * (double)b.bufsize / secs / (1 << 20));
    }
    r = 0;

out_free:
    free(bufs);
    free(reqs);
    free(pool.idle);
    free(pool.done);
out:
    if (vdisk_close(b.img) < 0 && r == 0)
        r = err("%s", vdisk_last_error());
    return r;
}
