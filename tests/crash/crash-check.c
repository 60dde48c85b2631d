/* SPDX-License-Identifier: MIT */
/*
 * crash-check: power-cut simulation. Records a workload's file operations
 * under the formats (lib/io/record.h), then builds crash states from the log
 * and checks each one in process:
 *   - at each flush: the durable content (everything a completed flush covered)
 *     plus a subset of the writes issued since (all, none, and random ones, or
 *     every subset when there are few), applied in issue order: a disk may
 *     persist any of them, and applying a subset in order is every order in
 *     which they could have reached the disk before the cut. --torn also tears
 *     one write of a state into a random subset of its 512-byte sectors.
 *   - each state: vdisk opens it read-write (replaying the format's log), the
 *     format's check finds no corruption, and every granule reads as the model
 *     allows (crash-model.h); every Nth state qemu-img check agrees (0 or
 *     leaks only), for formats it checks.
 * Usage:
 *   crash-check run FORMAT DIR [--workload mix|seq] [--states N] [--seed S]
 *               [--qemu-every N] [--size BYTES] [--ops N] [--flush-pct P] [--torn]
 *   crash-check replay FORMAT DIR --log LOG --image NAME [--states N] [--seed S]
 *               [--qemu-every N] [--fsck-every N] [--open-options O]
 * FORMAT: raw qcow2 vpc vhdx vmdk vmdk-split vdi luks. run creates DIR/work/disk
 * and records to DIR/log; replay checks a log recorded elsewhere (e.g. a file
 * system made through a frontend: no data model, e2fsck on every Nth state).
 * Prints one "crash-check: ..." line with the figures; exits 1 on any failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vdisk/vdisk.h>

#include "crash-log.h"
#include "crash-model.h"

struct fmt {
    const char *name, *format, *create, *open, *qemu;
};

static const struct fmt fmts[] = {
    {"raw", "raw", NULL, NULL, NULL},
    {"qcow2", "qcow2", NULL, NULL, "qcow2"},
    {"vpc", "vpc", "subformat=dynamic", NULL, NULL}, /* qemu-img check does not check VHD */
    {"vhdx", "vhdx", "block_size=1M", NULL, "vhdx"},
    {"vmdk", "vmdk", NULL, NULL, "vmdk"},
    {"vmdk-split", "vmdk", "subformat=twoGbMaxExtentSparse", NULL, "vmdk"},
    {"vdi", "vdi", NULL, NULL, "vdi"},
    {"luks", "luks", "key-file=%K,pbkdf=pbkdf2,iter-time=1", "key-file=%K", NULL},
};

struct ctx {
    const struct fmt *fmt;
    const char *dir, *image;
    char *open_opts, *state_dir, *state_path;
    unsigned long states_target, qemu_every, fsck_every;
    uint64_t seed, size;
    bool torn, verify;
    struct crash_log log;
    struct crash_model model;
    uint8_t *buf;
    uint8_t *initial; /* the disk before the workload (LUKS: never written sectors are noise) */
    /* figures */
    unsigned long states, qemu_checks, fscks, failures, ops_in_states;
    size_t cut;
};

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* "%K" in TEMPLATE -> the key file in DIR. */
static char *subst(const char *tmpl, const char *dir)
{
    char *out = NULL, key[4096];
    const char *k;

    if (!tmpl)
        return NULL;
    snprintf(key, sizeof(key), "%s/key", dir);
    if (!(k = strstr(tmpl, "%K")))
        return strdup(tmpl);
    if (asprintf(&out, "%.*s%s%s", (int)(k - tmpl), tmpl, key, k + 2) < 0)
        return NULL;
    return out;
}

/* Report a failed state; the first three are kept in DIR/fail-N. */
static void state_failed(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void state_failed(struct ctx *c, const char *fmt, ...)
{
    char msg[512], cmd[8192];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->failures++;
    if (c->failures <= 3) {
        printf("crash-check: %s: state %lu (cut at log record %zu): %s\n", c->fmt->name, c->states,
               c->cut, msg);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s/fail-%lu' && cp -a '%s' '%s/fail-%lu'", c->dir,
                 c->failures, c->state_dir, c->dir, c->failures);
        if (system(cmd) != 0)
            printf("crash-check: could not keep the failed state\n");
    }
}

/* Does sector S of granule G (at BUF) hold one of the values the model allows there? */
static bool sector_ok(struct ctx *c, const uint8_t *buf, uint64_t g, unsigned s)
{
    const struct crash_set *sets[2] = {&c->model.dur[g], &c->model.pend[g]};
    uint8_t want[CRASH_GRANULE];

    for (unsigned k = 0; k < 2; k++) {
        if (sets[k]->any)
            return true;
        for (unsigned i = 0; i < sets[k]->n; i++) {
            uint32_t tag = sets[k]->v[i];

            if (tag == CRASH_INITIAL)
                memcpy(want, c->initial + g * CRASH_GRANULE, CRASH_GRANULE);
            else if (tag == 0)
                memset(want, 0, CRASH_GRANULE);
            else
                crash_pattern(want, tag, g);
            if (memcmp(buf + s * 512, want + s * 512, 512) == 0)
                return true;
        }
    }
    return false;
}

/* --torn: a granule may mix the values allowed there, sector by sector. */
static bool torn_ok(struct ctx *c, const uint8_t *buf, uint64_t g)
{
    for (unsigned s = 0; s < CRASH_GRANULE / 512; s++)
        if (!sector_ok(c, buf, g, s))
            return false;
    return true;
}

/* Open the state, check it, read it back against the model; then the outside checkers. */
static void check_state(struct ctx *c)
{
    struct vdisk_check_result res = {0};
    struct vdisk_image *img;
    uint64_t size, chunk = 1 << 20;
    int r, raw = -1;
    bool bad = false;

    c->states++;
    r = vdisk_open(c->state_path, c->fmt->format, 0, c->open_opts, &img);
    if (r < 0) {
        state_failed(c, "open: %s", vdisk_last_error());
        return;
    }
    r = vdisk_check(img, 0, &res);
    if (r < 0 && r != -ENOTSUP)
        state_failed(c, "check: %s", vdisk_last_error());
    else if (res.corruptions)
        state_failed(c, "check: %" PRIu64 " corruptions", res.corruptions);
    size = vdisk_get_size(img);
    bool fsck = c->fsck_every && c->states % c->fsck_every == 0;
    char raw_path[4096];

    snprintf(raw_path, sizeof(raw_path), "%s/fs.raw", c->dir);
    if (fsck && (raw = open(raw_path, O_RDWR | O_CREAT | O_TRUNC, 0600)) < 0)
        fsck = false;
    for (uint64_t off = 0; off < size && !bad && (c->verify || fsck); off += chunk) {
        uint64_t n = size - off < chunk ? size - off : chunk;

        if ((r = vdisk_read(img, c->buf, n, off)) < 0) {
            state_failed(c, "read at %" PRIu64 ": %s", off, vdisk_last_error());
            bad = true;
            break;
        }
        if (fsck && pwrite(raw, c->buf, n, (off_t)off) != (ssize_t)n)
            fsck = false;
        for (uint64_t g = 0; c->verify && g < n / CRASH_GRANULE; g++) {
            uint64_t gi = off / CRASH_GRANULE + g;
            int64_t tag = crash_decode(c->buf + g * CRASH_GRANULE, gi);

            if (gi >= c->model.ngran)
                break;
            if (tag < 0 && crash_model_allows(&c->model, gi, CRASH_INITIAL) &&
                memcmp(c->buf + g * CRASH_GRANULE, c->initial + gi * CRASH_GRANULE,
                       CRASH_GRANULE) == 0)
                continue;
            if (c->torn && torn_ok(c, c->buf + g * CRASH_GRANULE, gi))
                continue;
            if (tag < 0 || !crash_model_allows(&c->model, gi, (uint32_t)tag)) {
                const struct crash_set *d = &c->model.dur[gi];

                state_failed(c,
                             "guest granule %" PRIu64 " (byte %" PRIu64 ") reads as %s %" PRId64
                             "; durable %u (of %u values)",
                             gi, gi * CRASH_GRANULE, tag < 0 ? "garbage" : "write", tag,
                             d->n ? d->v[0] : 0, d->n);
                bad = true;
                break;
            }
        }
    }
    if (vdisk_close(img) < 0)
        state_failed(c, "close: %s", vdisk_last_error());
    if (c->fmt->qemu && c->qemu_every && c->states % c->qemu_every == 0) {
        char *argv[] = {"qemu-img", "check", "-q", "-f", (char *)c->fmt->qemu, c->state_path, NULL};

        r = crash_run_quiet(argv);
        c->qemu_checks++;
        if (r != 0 && r != 3) /* 3: leaked clusters only, as a crash may leave */
            state_failed(c, "qemu-img check -f %s: exit %d", c->fmt->qemu, r);
    }
    if (raw >= 0)
        close(raw);
    if (fsck) {
        char *jr[] = {"e2fsck", "-E", "journal_only", "-y", raw_path, NULL};
        char *ck[] = {"e2fsck", "-f", "-n", raw_path, NULL};

        c->fscks++;
        r = crash_run_quiet(jr);
        if (r != 0 && r != 1)
            state_failed(c, "e2fsck -E journal_only: exit %d", r);
        else if ((r = crash_run_quiet(ck)) != 0)
            state_failed(c, "e2fsck -fn after the journal replay: exit %d", r);
    }
}

/* Is BUF[0..LEN) all zeroes? */
static bool is_zero(const uint8_t *buf, size_t len)
{
    return len == 0 || (buf[0] == 0 && memcmp(buf, buf + 1, len - 1) == 0);
}

/*
 * Write BUF as the file's content, zero blocks as holes: a file's never
 * written ranges are holes, and a driver may treat a hole as zeroes (LUKS
 * does: zero ciphertext would decrypt to noise).
 */
static int write_sparse(int fd, const uint8_t *buf, uint64_t size)
{
    const uint64_t blk = 4096;

    for (uint64_t off = 0; off < size;) {
        uint64_t end = off;
        bool zero = is_zero(buf + off, size - off < blk ? size - off : blk);

        while (end < size && is_zero(buf + end, size - end < blk ? size - end : blk) == zero)
            end += size - end < blk ? size - end : blk;
        if (zero) {
            if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                          (off_t)(end - off)) < 0)
                return -errno;
        } else if (pwrite(fd, buf + off, end - off, (off_t)off) != (ssize_t)(end - off)) {
            return -EIO;
        }
        off = end;
    }
    return 0;
}

/* Write the state: every file's durable content, then the chosen pending ops in order. */
static int build_state(struct ctx *c, const size_t *pend, const bool *take, size_t n, size_t torn)
{
    for (unsigned i = 0; i < c->log.nfiles; i++) {
        struct crash_file *f = &c->log.files[i];
        char path[4096];
        uint64_t size = f->dsize;
        int fd, r = 0;

        snprintf(path, sizeof(path), "%s/%s", c->state_dir, f->base);
        /* over the last state's pages: cheaper than freeing and allocating them again */
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
            return -errno;
        if (ftruncate(fd, (off_t)size) < 0 || write_sparse(fd, f->dur, size) < 0)
            r = -EIO;
        for (size_t k = 0; k < n && r == 0; k++) {
            const struct crash_op *op = &c->log.ops[pend[k]];

            if (!take[k] || op->file != i)
                continue;
            if (k == torn) { /* every 512-byte sector of it, or not, at random */
                uint64_t s0 = op->off & ~511ull;

                for (uint64_t s = s0; s < op->off + op->len && r == 0; s += 512) {
                    uint64_t a = s < op->off ? op->off : s;
                    uint64_t b = s + 512 < op->off + op->len ? s + 512 : op->off + op->len;
                    struct crash_op part = *op;

                    if (rnd() & 1)
                        continue;
                    part.off = a;
                    part.len = b - a;
                    part.data = op->data + (a - op->off);
                    r = crash_fd_apply(fd, &size, &part);
                }
                continue;
            }
            r = crash_fd_apply(fd, &size, op);
        }
        close(fd);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The crash states at cut CUT (log ops before it issued): subsets of the pending ops. */
static int states_at(struct ctx *c, size_t cut, unsigned long k)
{
    size_t n = 0, cap = 64, *pend = malloc(cap * sizeof(*pend));
    bool *take = NULL;
    int r = 0;

    if (!pend)
        return -ENOMEM;
    c->cut = cut;
    for (unsigned i = 0; i < c->log.nfiles; i++) {
        struct crash_file *f = &c->log.files[i];

        for (size_t j = f->done; j < f->nops && f->ops[j] < cut; j++) {
            uint32_t t = c->log.ops[f->ops[j]].type;

            if (t == VDISK_REC_FLUSH)
                continue;
            if (n == cap) {
                size_t *p = realloc(pend, (cap *= 2) * sizeof(*pend));

                if (!p) {
                    free(pend);
                    return -ENOMEM;
                }
                pend = p;
            }
            pend[n++] = f->ops[j];
        }
    }
    /* in log order across files */
    for (size_t a = 1; a < n; a++)
        for (size_t b = a; b > 0 && pend[b - 1] > pend[b]; b--) {
            size_t t = pend[b];

            pend[b] = pend[b - 1];
            pend[b - 1] = t;
        }
    take = calloc(n + 1, sizeof(*take));
    if (!take) {
        free(pend);
        return -ENOMEM;
    }
    bool all_subsets = n < 20 && (1ul << n) <= k;
    unsigned long count = all_subsets ? 1ul << n : (n == 0 ? 1 : k);

    for (unsigned long s = 0; s < count && r == 0; s++) {
        size_t torn = SIZE_MAX;

        if (all_subsets) {
            for (size_t j = 0; j < n; j++)
                take[j] = (s >> j) & 1;
        } else if (s < 2) { /* none, then all */
            for (size_t j = 0; j < n; j++)
                take[j] = s == 1;
        } else {
            unsigned p = 1 + rnd() % 9; /* in tenths: sparse to dense subsets */

            for (size_t j = 0; j < n; j++)
                take[j] = rnd() % 10 < p;
        }
        if (c->torn && n && rnd() % 2) {
            size_t j = rnd() % n;

            if (take[j] && c->log.ops[pend[j]].type == VDISK_REC_WRITE &&
                c->log.ops[pend[j]].len > 512)
                torn = j;
        }
        for (size_t j = 0; j < n; j++)
            c->ops_in_states += take[j];
        r = build_state(c, pend, take, n, torn);
        if (r < 0) {
            fprintf(stderr, "crash-check: building a state: %s\n", strerror(-r));
            break;
        }
        check_state(c);
        if (c->states % 5000 == 0) { /* long runs: figures so far, in case they are stopped */
            printf("crash-check: %s: progress: %lu states, %lu failures\n", c->fmt->name, c->states,
                   c->failures);
            fflush(stdout);
        }
    }
    free(take);
    free(pend);
    return r;
}

/* Walk the log: states at every flush and at the end; the model follows the marks. */
static int replay(struct ctx *c, const char *log_path, const char *src_dir)
{
    unsigned long flushes = 0, k;

    char cmd[8192];
    int r;

    if ((r = crash_log_load(log_path, &c->log)) < 0)
        return r;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", c->state_dir, c->state_dir);
    if (system(cmd) != 0)
        return -EIO;
    if (src_dir) { /* files the workload never wrote (a descriptor) are as they were */
        snprintf(cmd, sizeof(cmd), "cp -a '%s'/. '%s'/", src_dir, c->state_dir);
        if (system(cmd) != 0)
            return -EIO;
    }
    for (size_t i = 0; i < c->log.nops; i++)
        flushes += c->log.ops[i].type == VDISK_REC_FLUSH;
    unsigned long left = flushes + 1; /* cut points to come */

    for (size_t i = 0; i < c->log.nops && r == 0; i++) {
        const struct crash_op *op = &c->log.ops[i];
        struct crash_file *f = &c->log.files[op->file];

        if (op->type == VDISK_REC_MARK) {
            if (c->verify)
                crash_model_mark(&c->model, op->aux, op->off, op->len);
            continue;
        }
        if (op->type != VDISK_REC_FLUSH)
            continue;
        /* what cuts with few pending writes (all their subsets) left over goes to the next */
        k = c->states < c->states_target ? (c->states_target - c->states + left - 1) / left : 1;
        r = states_at(c, i, k < 3 ? 3 : k);
        left--;
        /* the flush completed: what it covered is durable */
        while (r == 0 && f->done < f->nops && c->log.ops[f->ops[f->done]].at < op->aux)
            r = crash_file_apply(f, &c->log.ops[f->ops[f->done++]]);
    }
    k = c->states < c->states_target ? c->states_target - c->states : 1;
    if (r == 0)
        r = states_at(c, c->log.nops, k < 3 ? 3 : k);
    printf(
        "crash-check: %s: %u files, %zu log records, %lu flushes, %lu states (%lu pending writes "
        "applied), %lu qemu-img checks, %lu e2fsck runs, %lu failures\n",
        c->fmt->name, c->log.nfiles, c->log.nops, flushes, c->states, c->ops_in_states,
        c->qemu_checks, c->fscks, c->failures);
    return r;
}

/* --- workloads, recorded in process ------------------------------------------------ */

static uint32_t next_tag;
static unsigned flush_pct = 10; /* of the mix's requests */

static int w_write(struct vdisk_image *img, uint8_t *buf, uint64_t off, uint64_t len, bool fua)
{
    uint32_t tag = ++next_tag;
    int r;

    for (uint64_t g = 0; g < len / CRASH_GRANULE; g++)
        crash_pattern(buf + g * CRASH_GRANULE, tag, off / CRASH_GRANULE + g);
    vdisk_io_record_mark(MARK_WRITE | (uint64_t)tag << 8, off, len);
    r = vdisk_write(img, buf, len, off, fua ? VDISK_WRITE_FUA : 0);
    if (r == 0 && fua)
        vdisk_io_record_mark(MARK_FUA_DONE | (uint64_t)tag << 8, off, len);
    return r;
}

static int w_zero(struct vdisk_image *img, uint64_t off, uint64_t len, bool unmap)
{
    vdisk_io_record_mark(MARK_ZERO, off, len);
    return vdisk_write_zeroes(img, off, len, unmap ? VDISK_ZERO_MAY_UNMAP : 0);
}

static int w_discard(struct vdisk_image *img, uint64_t off, uint64_t len)
{
    int r;

    vdisk_io_record_mark(MARK_DISCARD, off, len);
    r = vdisk_discard(img, off, len);
    return r == -ENOTSUP || r == -EOPNOTSUPP ? 0 : r;
}

static int w_flush(struct vdisk_image *img)
{
    int r = vdisk_flush(img);

    if (r == 0)
        vdisk_io_record_mark(MARK_FLUSH_DONE, 0, 0);
    return r;
}

/* A random extent of 1 to MAXG granules (sometimes a whole MiB, for block-level paths). */
static void extent(uint64_t size, unsigned maxg, uint64_t *off, uint64_t *len)
{
    uint64_t ng = size / CRASH_GRANULE;

    if (rnd() % 8 == 0 && size >= (4u << 20)) {
        *len = 1 << 20;
        *off = (rnd() % (size >> 20)) << 20;
        return;
    }
    *len = (1 + rnd() % maxg) * CRASH_GRANULE;
    *off = (rnd() % (ng - *len / CRASH_GRANULE + 1)) * CRASH_GRANULE;
}

/* The random write / zero / discard / flush mix, or allocation-heavy sequential writes. */
static int workload(struct ctx *c, struct vdisk_image *img, const char *kind, unsigned nops)
{
    uint64_t off, len, size = c->size;
    int r = 0;

    if (strcmp(kind, "seq") == 0) {
        unsigned i = 0;

        for (off = 0; off < size && r == 0; off += 65536, i++) {
            r = w_write(img, c->buf, off, 65536, false);
            if (r == 0 && i % 4 == 3)
                r = w_flush(img);
        }
        for (i = 0; i < nops / 4 && r == 0; i++) { /* then overwrite in place */
            extent(size, 4, &off, &len);
            r = w_write(img, c->buf, off, len, i % 7 == 0);
            if (r == 0 && i % 3 == 2)
                r = w_flush(img);
        }
        return r;
    }
    for (unsigned i = 0; i < nops && r == 0; i++) {
        unsigned dice = rnd() % 100;

        extent(size, 16, &off, &len);
        if (dice < 55)
            r = w_write(img, c->buf, off, len, dice < 5);
        else if (dice < 65)
            r = w_zero(img, off, len, dice & 1);
        else if (dice < 75)
            r = w_discard(img, off, len);
        else if (dice < 75 + flush_pct)
            r = w_flush(img);
        else
            r = w_write(img, c->buf, off, len > 65536 ? 65536 : len, false);
    }
    return r;
}

/* The live image must read as the model says it is now (no crash: CUR). */
static int check_live(struct ctx *c, struct vdisk_image *img)
{
    for (uint64_t off = 0; off < c->size; off += CRASH_GRANULE) {
        uint64_t g = off / CRASH_GRANULE;
        int64_t tag;
        bool ok = false;

        if (vdisk_read(img, c->buf, CRASH_GRANULE, off) < 0)
            return -EIO;
        tag = crash_decode(c->buf, g);
        if (tag < 0 && memcmp(c->buf, c->initial + off, CRASH_GRANULE) == 0)
            tag = CRASH_INITIAL;
        for (unsigned j = 0; j < c->model.cur[g].n; j++)
            ok |= tag >= 0 && c->model.cur[g].v[j] == (uint32_t)tag;
        if (!ok) {
            printf("crash-check: %s: live image granule %" PRIu64 " reads as %" PRId64 "\n",
                   c->fmt->name, g, tag);
            return -EIO;
        }
    }
    return 0;
}

/* Create the image, record the workload, replay the model to the end for check_live. */
static int record(struct ctx *c, const char *kind, unsigned nops, char *log_path, char *img_path)
{
    struct vdisk_image *img;
    char *create = subst(c->fmt->create, c->dir), cmd[8192];
    int r;

    snprintf(cmd, sizeof(cmd), "rm -rf '%s/work' '%s' && mkdir -p '%s/work'", c->dir, log_path,
             c->dir);
    if (system(cmd) != 0)
        return -EIO;
    r = vdisk_create(img_path, c->fmt->format, c->size, create);
    free(create);
    if (r < 0) {
        printf("crash-check: %s: create: %s\n", c->fmt->name, vdisk_last_error());
        return r;
    }
    if ((r = vdisk_io_record_start(log_path)) < 0)
        return r;
    r = vdisk_open(img_path, c->fmt->format, 0, c->open_opts, &img);
    if (r < 0) {
        printf("crash-check: %s: open: %s\n", c->fmt->name, vdisk_last_error());
        vdisk_io_record_stop();
        return r;
    }
    c->initial = malloc(c->size);
    r = c->initial ? vdisk_read(img, c->initial, c->size, 0) : -ENOMEM;
    for (uint64_t g = 0; r == 0 && g < c->model.ngran; g++)
        if (crash_decode(c->initial + g * CRASH_GRANULE, g) != 0)
            c->model.dur[g].v[0] = c->model.cur[g].v[0] = CRASH_INITIAL;
    if (r == 0)
        r = workload(c, img, kind, nops);
    if (r < 0)
        printf("crash-check: %s: workload: %s\n", c->fmt->name, vdisk_last_error());
    vdisk_io_record_stop();
    if (r == 0) { /* the model up to now: read the log's marks */
        struct crash_log log;

        if ((r = crash_log_load(log_path, &log)) == 0) {
            for (size_t i = 0; i < log.nops; i++)
                if (log.ops[i].type == VDISK_REC_MARK)
                    crash_model_mark(&c->model, log.ops[i].aux, log.ops[i].off, log.ops[i].len);
            crash_log_free(&log);
            r = check_live(c, img);
        }
        for (uint64_t g = 0; g < c->model.ngran; g++) { /* back to the start, for replay */
            memset(&c->model.dur[g], 0, sizeof(c->model.dur[g]));
            c->model.dur[g].n = 1;
            if (crash_decode(c->initial + g * CRASH_GRANULE, g) != 0)
                c->model.dur[g].v[0] = CRASH_INITIAL;
            c->model.cur[g] = c->model.dur[g];
            memset(&c->model.pend[g], 0, sizeof(c->model.pend[g]));
        }
    }
    if (vdisk_close(img) < 0 && r == 0) {
        printf("crash-check: %s: close: %s\n", c->fmt->name, vdisk_last_error());
        r = -EIO;
    }
    return r;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: crash-check run FORMAT DIR [--workload mix|seq] [--states N] "
            "[--seed S] [--qemu-every N] [--size BYTES] [--ops N] [--flush-pct P] [--torn]\n"
            "       crash-check replay FORMAT DIR --log LOG --image NAME [--states N] "
            "[--seed S] [--qemu-every N] [--fsck-every N] [--open-options O]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"workload", 1, NULL, 'w'},
                                             {"states", 1, NULL, 'n'},
                                             {"seed", 1, NULL, 's'},
                                             {"qemu-every", 1, NULL, 'q'},
                                             {"fsck-every", 1, NULL, 'e'},
                                             {"size", 1, NULL, 'z'},
                                             {"ops", 1, NULL, 'o'},
                                             {"torn", 0, NULL, 't'},
                                             {"log", 1, NULL, 'l'},
                                             {"image", 1, NULL, 'i'},
                                             {"open-options", 1, NULL, 'O'},
                                             {"flush-pct", 1, NULL, 'F'},
                                             {NULL, 0, NULL, 0}};
    struct ctx c = {.states_target = 2000, .qemu_every = 50, .seed = 1, .size = 8 << 20};
    const char *kind = "mix", *log_arg = NULL, *open_arg = NULL;
    char log_path[4096], img_path[4096], state_path[4096], key[4096];
    unsigned nops = 600;
    int opt, r;
    bool replay_mode;

    if (argc < 4)
        usage();
    replay_mode = strcmp(argv[1], "replay") == 0;
    if (!replay_mode && strcmp(argv[1], "run") != 0)
        usage();
    for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++)
        if (strcmp(argv[2], fmts[i].name) == 0)
            c.fmt = &fmts[i];
    if (!c.fmt) {
        fprintf(stderr, "crash-check: %s: unknown format\n", argv[2]);
        return 2;
    }
    c.dir = argv[3];
    optind = 4;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'w':
            kind = optarg;
            break;
        case 'n':
            c.states_target = strtoul(optarg, NULL, 0);
            break;
        case 's':
            c.seed = strtoull(optarg, NULL, 0);
            break;
        case 'q':
            c.qemu_every = strtoul(optarg, NULL, 0);
            break;
        case 'e':
            c.fsck_every = strtoul(optarg, NULL, 0);
            break;
        case 'z':
            c.size = strtoull(optarg, NULL, 0) & ~(uint64_t)(CRASH_GRANULE - 1);
            break;
        case 'o':
            nops = (unsigned)strtoul(optarg, NULL, 0);
            break;
        case 't':
            c.torn = true;
            break;
        case 'l':
            log_arg = optarg;
            break;
        case 'i':
            c.image = optarg;
            break;
        case 'O':
            open_arg = optarg;
            break;
        case 'F':
            flush_pct = (unsigned)strtoul(optarg, NULL, 0) % 26;
            break;
        default:
            usage();
        }
    }
    rng_state = c.seed * 0x9e3779b97f4a7c15ull + 1;
    if (mkdir(c.dir, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, "crash-check: %s: %m\n", c.dir);
        return 2;
    }
    snprintf(key, sizeof(key), "%s/key", c.dir);
    {
        FILE *kf = fopen(key, "w");

        if (kf) {
            fputs("crash-check passphrase", kf);
            fclose(kf);
        }
    }
    c.open_opts = open_arg ? strdup(open_arg) : subst(c.fmt->open, c.dir);
    snprintf(state_path, sizeof(state_path), "%s/state", c.dir);
    c.state_dir = state_path;
    c.buf = aligned_alloc(4096, 1 << 20);
    if (!c.buf)
        return 2;
    if (replay_mode) {
        if (!log_arg || !c.image)
            usage();
        c.verify = false;
        if (asprintf(&c.state_path, "%s/%s", c.state_dir, c.image) < 0)
            return 2;
        r = replay(&c, log_arg, NULL);
    } else {
        snprintf(log_path, sizeof(log_path), "%s/log", c.dir);
        snprintf(img_path, sizeof(img_path), "%s/work/disk", c.dir);
        c.verify = true;
        if (crash_model_init(&c.model, c.size) < 0)
            return 2;
        r = record(&c, kind, nops, log_path, img_path);
        if (r == 0) {
            char src[4096];

            snprintf(src, sizeof(src), "%s/work", c.dir);
            if (asprintf(&c.state_path, "%s/disk", c.state_dir) < 0)
                return 2;
            printf("crash-check: %s: workload %s: %u guest requests recorded\n", c.fmt->name, kind,
                   next_tag);
            r = replay(&c, log_path, src);
        }
        crash_model_free(&c.model);
    }
    crash_log_free(&c.log);
    free(c.buf);
    free(c.initial);
    if (r < 0) {
        printf("crash-check: %s: %s\n", c.fmt->name, strerror(-r));
        return 2;
    }
    return c.failures ? 1 : 0;
}
