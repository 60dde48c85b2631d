/* SPDX-License-Identifier: MIT */
/*
 * A small driver of libvdisk for the shell tests:
 *   vdisk-test-io [-f FMT] [-o OPTS] COMMAND ARGS..., where COMMAND is:
 *   vdisk-test-io dump IMAGE OUT           write the guest contents to OUT (- = stdout)
 *   vdisk-test-io create [-f FMT] [-o OPTS] IMAGE SIZE
 *   vdisk-test-io script [-f FMT] IMAGE        run commands from stdin:
 *       w OFF LEN BYTE | d OFF LEN | z OFF LEN [unmap] | f | r OFF LEN BYTE (verify)
 *   vdisk-test-io crash IMAGE SEED BLOCKS LOG  random writes/discards/flushes until killed
 *   vdisk-test-io verify IMAGE LOG [BYTE]      flushed writes of a killed crash run are there
 *                                              (BYTE: what blocks held before, default 0)
 *   vdisk-test-io info IMAGE                   key=value lines from vdisk_get_info/check
 *   vdisk-test-io map IMAGE                    block status runs: OFF LEN FLAGS
 *   vdisk-test-io mt IMAGE THREADS OPS         threads race on interleaved 4k blocks; verify
 * -o gives create options to create, open options to the other commands.
 * Sizes and offsets take vdisk_parse_size suffixes (a bare number is bytes here).
 * $VDISK_TEST_OPEN_OPTIONS: the open options of every image (key-file=K for luks).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk/vdisk.h"

#define BLK 4096

static int die(const char *what, int r)
{
    fprintf(stderr, "vdisk-test-io: %s: %s (%s)\n", what, vdisk_last_error(), strerror(-r));
    exit(1);
}

static uint64_t num(const char *s)
{
    char *end;
    uint64_t v = strtoull(s, &end, 0);

    if (*end) {
        if (vdisk_parse_size(s, &v) < 0) {
            fprintf(stderr, "vdisk-test-io: bad number '%s'\n", s);
            exit(2);
        }
    }
    return v;
}

static const char *open_opts; /* -o for any command but create: open options */

static struct vdisk_image *open_img(const char *path, const char *fmt, unsigned flags)
{
    struct vdisk_image *img;
    /* open options: -o, else the environment (e.g. a parent the header does not name) */
    int r = vdisk_open(path, fmt, flags, open_opts ? open_opts : getenv("VDISK_TEST_OPEN_OPTIONS"),
                       &img);

    if (r < 0)
        die(path, r);
    return img;
}

static int cmd_dump(const char *fmt, const char *path, const char *out)
{
    struct vdisk_image *img = open_img(path, fmt, VDISK_OPEN_RDONLY);
    uint64_t size = vdisk_get_size(img), off = 0;
    int fd = strcmp(out, "-") ? open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644) : 1;
    char *buf = malloc(1 << 20);
    int ret = 0;

    if (fd < 0 || !buf) {
        perror(out);
        ret = 1;
        goto out;
    }
    while (off < size) {
        size_t n = size - off < (1 << 20) ? size - off : (1 << 20);
        int r = vdisk_read(img, buf, n, off);

        if (r < 0) { /* closed before exit: LeakSanitizer counts what exit() leaves */
            fprintf(stderr, "vdisk-test-io: read: %s (%s)\n", vdisk_last_error(), strerror(-r));
            ret = 1;
            goto out;
        }
        if (write(fd, buf, n) != (ssize_t)n) {
            perror(out);
            ret = 1;
            goto out;
        }
        off += n;
    }
out:
    free(buf);
    if (fd > 1)
        close(fd);
    return vdisk_close(img) < 0 || ret;
}

static int cmd_script(const char *fmt, const char *path)
{
    struct vdisk_image *img = open_img(path, fmt, 0);
    char line[256], op[8], arg[16];
    uint64_t off, len;
    unsigned byte;
    int r = 0, n;

    while (fgets(line, sizeof(line), stdin)) {
        char *buf;

        arg[0] = 0;
        n = sscanf(line, "%7s %" SCNu64 " %" SCNu64 " %15s", op, &off, &len, arg);
        if (n < 1)
            continue;
        switch (op[0]) {
        case 'w':
        case 'r':
            byte = (unsigned)strtoul(arg, NULL, 0);
            buf = malloc(len ? len : 1);
            if (op[0] == 'w') {
                memset(buf, (int)byte, len);
                r = vdisk_write(img, buf, len, off, 0);
            } else {
                r = vdisk_read(img, buf, len, off);
                for (uint64_t i = 0; r == 0 && i < len; i++)
                    if ((unsigned char)buf[i] != byte) {
                        fprintf(stderr, "mismatch at %" PRIu64 "\n", off + i);
                        r = -EIO;
                    }
            }
            free(buf);
            break;
        case 'd':
            r = vdisk_discard(img, off, len);
            break;
        case 'z':
            r = vdisk_write_zeroes(img, off, len, strcmp(arg, "unmap") ? 0 : VDISK_ZERO_MAY_UNMAP);
            break;
        case 'f':
            r = vdisk_flush(img);
            break;
        default:
            fprintf(stderr, "vdisk-test-io: unknown command %s\n", op);
            return 2;
        }
        if (r < 0)
            die(line, r);
    }
    r = vdisk_close(img);
    if (r < 0)
        die("close", r);
    return 0;
}

/* Block contents of the crash test: every 512 bytes say which block and generation. */
static void fill(char *buf, uint64_t blk, uint64_t gen)
{
    for (int i = 0; i < BLK; i += 512) {
        memset(buf + i, 0, 512);
        snprintf(buf + i, 512, "blk %" PRIu64 " gen %" PRIu64 " #", blk, gen);
        memset(buf + i + 40, (int)(gen & 0xff), 472);
    }
}

static int cmd_crash(const char *path, uint64_t seed, uint64_t blocks, const char *logpath)
{
    /* the log first: a writer killed while it opens the image leaves an empty log, not the last
     * run's */
    FILE *log = fopen(logpath, "w");
    struct vdisk_image *img;
    char buf[BLK];
    uint64_t gen = 0;

    if (!log)
        return 1;
    img = open_img(path, NULL, 0);
    setvbuf(log, NULL, _IONBF, 0);
    srandom((unsigned)seed);
    for (;;) {
        int op = random() % 100, r;
        uint64_t blk = (uint64_t)random() % blocks, nb;

        gen++;
        if (op < 80) {
            fill(buf, blk, gen);
            fprintf(log, "W %" PRIu64 " %" PRIu64 "\n", blk, gen);
            r = vdisk_write(img, buf, BLK, blk * BLK, 0);
        } else if (op < 90) {
            nb = 1 + random() % 32;
            if (blk + nb > blocks)
                nb = blocks - blk;
            fprintf(log, "D %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", blk, nb, gen);
            r = op < 85 ? vdisk_discard(img, blk * BLK, nb * BLK)
                        : vdisk_write_zeroes(img, blk * BLK, nb * BLK, VDISK_ZERO_MAY_UNMAP);
        } else {
            r = vdisk_flush(img);
            if (r == 0)
                fprintf(log, "F %" PRIu64 "\n", gen);
        }
        if (r < 0)
            die("crash writer", r);
    }
}

struct hist {
    uint64_t *gen; /* generation per op; 0 = zeroes (discard/zero) marked by flag */
    uint8_t *zero;
    size_t n, cap;
};

static void hist_add(struct hist *h, uint64_t gen, int zero)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 4;
        h->gen = realloc(h->gen, h->cap * sizeof(*h->gen));
        h->zero = realloc(h->zero, h->cap);
    }
    h->gen[h->n] = gen;
    h->zero[h->n++] = (uint8_t)zero;
}

/*
 * After a kill: each 512-byte sector of each block must hold the last operation
 * flushed before the last completed flush, or one that came after it (it may or
 * may not be there, and a write in flight at the kill may be there in part).
 * A discard may leave old data (discard is advisory), so it also admits any
 * earlier state from the last flushed one on.
 */
static int cmd_verify(const char *path, const char *logpath, int init)
{
    struct vdisk_image *img = open_img(path, NULL, VDISK_OPEN_RDONLY);
    uint64_t blocks = vdisk_get_size(img) / BLK, flushed = 0, a, b, c;
    struct hist *h = calloc(blocks, sizeof(*h));
    FILE *log = fopen(logpath, "r");
    char line[128], buf[BLK], want[BLK], zero[BLK] = {0}, first[BLK];
    int bad = 0;

    memset(first, init, BLK); /* what the blocks held before the run (backing file) */

    if (!log || !h)
        return 1;
    while (fgets(line, sizeof(line), log)) {
        if (line[strlen(line) - 1] != '\n')
            break; /* torn last line */
        if (sscanf(line, "W %" SCNu64 " %" SCNu64, &a, &b) == 2 && a < blocks)
            hist_add(&h[a], b, 0);
        else if (sscanf(line, "D %" SCNu64 " %" SCNu64 " %" SCNu64, &a, &b, &c) == 3)
            for (uint64_t i = a; i < a + b && i < blocks; i++)
                hist_add(&h[i], c, 1);
        else if (sscanf(line, "F %" SCNu64, &a) == 1)
            flushed = a;
    }
    for (uint64_t blk = 0; blk < blocks; blk++) {
        struct hist *x = &h[blk];
        long last = -1; /* last op at or before the flush */
        int ok = 0, r = vdisk_read(img, buf, BLK, blk * BLK);

        if (r < 0)
            die("verify read", r);
        for (size_t i = 0; i < x->n; i++)
            if (x->gen[i] <= flushed)
                last = (long)i;
        /*
         * acceptable states: the flushed one, anything later; sector by sector,
         * since a write cut by the kill may have landed in part (small clusters)
         */
        ok = 1;
        for (int o = 0; o < BLK && ok; o += 512) {
            int sok = 0;

            for (long i = last < 0 ? -1 : last; i < (long)x->n && !sok; i++) {
                const char *w = i < 0 ? first : zero;

                if (i >= 0 && !x->zero[i]) {
                    fill(want, blk, x->gen[i]);
                    w = want;
                }
                if (!memcmp(buf + o, w + o, 512))
                    sok = 1;
                /* a discard at/after the flush point may have left an earlier state */
                if (!sok && i >= 0 && x->zero[i]) {
                    for (long j = i - 1; j >= -1 && !sok; j--) {
                        if (j >= 0 && !x->zero[j])
                            fill(want, blk, x->gen[j]);
                        if (!memcmp(buf + o, (j < 0 ? first : x->zero[j] ? zero : want) + o, 512))
                            sok = 1;
                        if (j >= 0 && !x->zero[j])
                            break;
                    }
                }
            }
            ok = sok;
        }
        if (!ok) {
            if (bad++ < 5)
                fprintf(stderr,
                        "block %" PRIu64 ": unexpected contents '%.30s' (flushed gen %" PRIu64
                        ", %zu ops)\n",
                        blk, buf, flushed, x->n);
        }
    }
    fclose(log);
    vdisk_close(img);
    if (bad)
        fprintf(stderr, "%d blocks lost flushed writes\n", bad);
    return bad ? 1 : 0;
}

struct mt {
    struct vdisk_image *img;
    int id, nthreads;
    uint64_t blocks, ops;
    int bad;
};

/* One thread of cmd_mt: random ops on blocks id, id+n, id+2n...; then verify. */
static void *mt_run(void *arg)
{
    struct mt *m = arg;
    uint64_t mine = (m->blocks - m->id + m->nthreads - 1) / m->nthreads;
    uint8_t *want = calloc(mine, 1), *maybe0 = calloc(mine, 1);
    unsigned seed = (unsigned)m->id * 7919 + 1;
    char buf[BLK];

    for (uint64_t i = 0; i < m->ops && !m->bad; i++) {
        uint64_t k = (uint64_t)rand_r(&seed) % mine, off = (k * m->nthreads + m->id) * BLK;
        int op = rand_r(&seed) % 100, r;

        if (op < 70) {
            uint8_t v = (uint8_t)(1 + rand_r(&seed) % 255);

            memset(buf, v, BLK);
            r = vdisk_write(m->img, buf, BLK, off, 0);
            want[k] = v;
            maybe0[k] = 0;
        } else if (op < 80) {
            r = vdisk_write_zeroes(m->img, off, BLK, 0);
            want[k] = 0;
            maybe0[k] = 0;
        } else if (op < 90) {
            r = vdisk_discard(m->img, off, BLK); /* advisory: old data or zeroes */
            maybe0[k] = 1;
        } else if (op < 95) {
            r = vdisk_flush(m->img);
        } else {
            r = vdisk_read(m->img, buf, BLK, off);
            if (r == 0 && !((uint8_t)buf[0] == want[k] || (maybe0[k] && buf[0] == 0)))
                m->bad++;
        }
        if (r < 0) {
            fprintf(stderr, "thread %d: %s\n", m->id, vdisk_last_error());
            m->bad++;
        }
    }
    for (uint64_t k = 0; k < mine && !m->bad; k++) {
        uint64_t off = (k * m->nthreads + m->id) * BLK;

        if (vdisk_read(m->img, buf, BLK, off) < 0)
            m->bad++;
        for (int j = 0; j < BLK && !m->bad; j++)
            if (!((uint8_t)buf[j] == want[k] || (maybe0[k] && buf[j] == 0) ||
                  (maybe0[k] && (uint8_t)buf[j] == (uint8_t)buf[0]))) {
                fprintf(stderr, "thread %d block %" PRIu64 " byte %d: %u, want %u\n", m->id,
                        k * m->nthreads + m->id, j, (uint8_t)buf[j], want[k]);
                m->bad++;
            }
    }
    free(want);
    free(maybe0);
    return NULL;
}

/* THREADS threads do OPS random ops each on interleaved 4k blocks, then verify. */
static int cmd_mt(const char *path, int nthreads, uint64_t ops)
{
    struct vdisk_image *img = open_img(path, NULL, 0);
    pthread_t th[64];
    struct mt m[64];
    int bad = 0;

    if (nthreads < 1 || nthreads > 64)
        return 2;
    for (int i = 0; i < nthreads; i++) {
        m[i] = (struct mt){img, i, nthreads, vdisk_get_size(img) / BLK, ops, 0};
        pthread_create(&th[i], NULL, mt_run, &m[i]);
    }
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        bad += m[i].bad;
    }
    if (vdisk_close(img) < 0)
        bad++;
    return bad ? 1 : 0;
}

static int cmd_info(const char *fmt, const char *path)
{
    struct vdisk_image *img = open_img(path, fmt, VDISK_OPEN_RDONLY);
    struct vdisk_info info;
    struct vdisk_check_result res;
    int r = vdisk_get_info(img, &info);

    if (r < 0)
        die("info", r);
    printf("format=%s\nvirtual_size=%" PRIu64 "\ncluster_size=%u\ndirty=%d\n", info.format,
           info.virtual_size, info.cluster_size, info.dirty);
    printf("backing_file=%s\nbacking_format=%s\n", info.backing_file ? info.backing_file : "",
           info.backing_format ? info.backing_format : "");
    r = vdisk_check(img, 0, &res);
    if (r == 0)
        printf("corruptions=%" PRIu64 "\nleaks=%" PRIu64 "\nallocated=%" PRIu64 "\n",
               res.corruptions, res.leaks, res.allocated_clusters);
    vdisk_close(img);
    return 0;
}

static int cmd_check(const char *path, const char *mode)
{
    unsigned flags = !strcmp(mode, "leaks") ? VDISK_CHECK_REPAIR_LEAKS
                     : !strcmp(mode, "all") ? VDISK_CHECK_REPAIR_ALL
                                            : 0;
    struct vdisk_image *img = open_img(path, NULL, flags ? 0 : VDISK_OPEN_RDONLY);
    struct vdisk_check_result res;
    int r = vdisk_check(img, flags, &res);

    if (r < 0)
        die("check", r);
    printf("corruptions=%" PRIu64 " leaks=%" PRIu64 " corruptions_fixed=%" PRIu64
           " leaks_fixed=%" PRIu64 "\n",
           res.corruptions, res.leaks, res.corruptions_fixed, res.leaks_fixed);
    vdisk_close(img);
    return res.corruptions > res.corruptions_fixed ? 2 : res.leaks > res.leaks_fixed ? 3 : 0;
}

static int cmd_map(const char *path)
{
    struct vdisk_image *img = open_img(path, NULL, VDISK_OPEN_RDONLY);
    uint64_t size = vdisk_get_size(img), off = 0;
    struct vdisk_extent e, run = {0, 0, 0};

    while (off < size) {
        int r = vdisk_block_status(img, off, size - off, &e);

        if (r < 0)
            die("block status", r);
        if (run.length && run.flags == e.flags) {
            run.length += e.length;
        } else {
            if (run.length)
                printf("%" PRIu64 " %" PRIu64 " %u\n", run.offset, run.length, run.flags);
            run = e;
        }
        off += e.length;
    }
    if (run.length)
        printf("%" PRIu64 " %" PRIu64 " %u\n", run.offset, run.length, run.flags);
    vdisk_close(img);
    return 0;
}

int main(int argc, char **argv)
{
    const char *fmt = NULL, *opts = NULL;
    int i = 1;

    while (i + 1 < argc && argv[i][0] == '-' && argv[i][1]) {
        if (!strcmp(argv[i], "-f"))
            fmt = argv[i + 1];
        else if (!strcmp(argv[i], "-o"))
            opts = argv[i + 1];
        i += 2;
    }
    argv += i - 1;
    argc -= i - 1;
    if (argc < 3) {
        fprintf(stderr, "usage: see the comment at the top of vdisk-test-io.c\n");
        return 2;
    }
    if (strcmp(argv[1], "create") != 0)
        open_opts = opts;
    if (!strcmp(argv[1], "dump") && argc == 4)
        return cmd_dump(fmt, argv[2], argv[3]);
    if (!strcmp(argv[1], "create") && argc == 4) {
        int r = vdisk_create(argv[2], fmt ? fmt : "qcow2", num(argv[3]), opts);

        return r < 0 ? die(argv[2], r) : 0;
    }
    if (!strcmp(argv[1], "script") && argc == 3)
        return cmd_script(fmt, argv[2]);
    if (!strcmp(argv[1], "crash") && argc == 6)
        return cmd_crash(argv[2], num(argv[3]), num(argv[4]), argv[5]);
    if (!strcmp(argv[1], "verify") && (argc == 4 || argc == 5))
        return cmd_verify(argv[2], argv[3], argc == 5 ? (int)num(argv[4]) : 0);
    if (!strcmp(argv[1], "info") && argc == 3)
        return cmd_info(fmt, argv[2]);
    if (!strcmp(argv[1], "check") && argc == 4)
        return cmd_check(argv[2], argv[3]);
    if (!strcmp(argv[1], "mt") && argc == 5)
        return cmd_mt(argv[2], (int)num(argv[3]), num(argv[4]));
    if (!strcmp(argv[1], "map") && argc == 3)
        return cmd_map(argv[2]);
    fprintf(stderr, "vdisk-test-io: bad arguments\n");
    return 2;
}
