/* SPDX-License-Identifier: MIT */
/*
 * vdisk_queue: arguments, errors, and random mixes of requests in flight on
 * raw and qcow2 images (with another thread doing synchronous I/O on the same
 * image), checked against an in-memory model and by reading back after reopen.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <liburing.h>

#include "testutil.h"
#include "vdisk/vdisk.h"

#define IMG_SIZE (8u << 20)
#define HALF     (IMG_SIZE / 2)
#define DEPTH    16
#define MAX_LEN  (256u << 10)

/* xorshift64*, seeded per test for repeatable runs. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static void test_arguments(void **state)
{
    char *path = test_path(*state, "a.raw");
    struct vdisk_request rq[3], *done[4];
    struct vdisk_image *img;
    struct vdisk_queue *q;
    uint8_t buf[3][512];

    assert_int_equal(vdisk_create(path, "raw", 1 << 20, NULL), 0);
    assert_int_equal(vdisk_open(path, "raw", VDISK_OPEN_RDONLY, NULL, &img), 0);
    assert_int_equal(vdisk_queue_create(img, 0, 0, &q), -EINVAL);
    assert_int_equal(vdisk_queue_create(img, 5000, 0, &q), -EINVAL);
    assert_int_equal(vdisk_queue_create(img, 4, 1, &q), -EINVAL);
    assert_int_equal(vdisk_queue_create(img, 2, 0, &q), 0);
    /* fixed buffers need a layout: each inside its stride */
    assert_int_equal(vdisk_queue_fixed_buffers(q, buf, 512, 1024, 1), -EINVAL);
    assert_int_equal(vdisk_queue_fixed_buffers(q, NULL, 512, 512, 1), -EINVAL);
    assert_int_equal(vdisk_queue_fixed_buffers(q, buf, 512, 512, 0), 0);
    assert_int_equal(vdisk_queue_complete(q, done, 4, 0), 0);
    assert_int_equal(vdisk_queue_complete(q, done, 4, 3), 0); /* nothing in flight: no wait */

    for (int i = 0; i < 3; i++)
        rq[i] = (struct vdisk_request){.op = VDISK_OP_READ, .buf = buf[i], .length = 512};
    rq[0].offset = 1 << 20; /* past the end */
    assert_int_equal(vdisk_queue_submit(q, &rq[0]), -ENOSPC);
    assert_non_null(strstr(vdisk_last_error(), "past the end"));
    rq[0].offset = 0;
    rq[0].op = VDISK_OP_WRITE;
    assert_int_equal(vdisk_queue_submit(q, &rq[0]), -EROFS);
    rq[0].op = (enum vdisk_op)42;
    assert_int_equal(vdisk_queue_submit(q, &rq[0]), -EINVAL);
    rq[0].op = VDISK_OP_READ;
    assert_int_equal(vdisk_queue_submit(q, &rq[0]), 0);
    assert_int_equal(vdisk_queue_submit(q, &rq[1]), 0);
    assert_int_equal(vdisk_queue_submit(q, &rq[2]), -EAGAIN); /* depth 2 */
    assert_int_equal(vdisk_queue_inflight(q), 2);
    assert_int_equal(vdisk_queue_complete(q, done, 4, 2), 2);
    assert_int_equal(done[0]->result, 0);
    assert_int_equal(done[1]->result, 0);
    assert_int_equal(vdisk_queue_inflight(q), 0);
    vdisk_queue_destroy(q);
    assert_int_equal(vdisk_close(img), 0);
    free(path);
}

/* Requests left in flight are waited for by destroy (and it does not hang). */
static void test_destroy_waits(void **state)
{
    char *path = test_path(*state, "d.qcow2");
    struct vdisk_request rq[8];
    struct vdisk_image *img;
    struct vdisk_queue *q;
    static uint8_t buf[8][65536];
    uint8_t back[65536];

    assert_int_equal(vdisk_create(path, "qcow2", 1 << 20, NULL), 0);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &img), 0);
    assert_int_equal(vdisk_queue_create(img, 8, 0, &q), 0);
    for (int i = 0; i < 8; i++) {
        memset(buf[i], 'a' + i, sizeof(buf[i]));
        rq[i] = (struct vdisk_request){
            .op = VDISK_OP_WRITE, .buf = buf[i], .length = 65536, .offset = i * 65536ull};
        assert_int_equal(vdisk_queue_submit(q, &rq[i]), 0);
    }
    vdisk_queue_destroy(q);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(vdisk_read(img, back, sizeof(back), i * 65536ull), 0);
        assert_memory_equal(back, buf[i], sizeof(back));
    }
    assert_int_equal(vdisk_close(img), 0);
    free(path);
}

/*
 * A small write to a file in the page cache is done at submit (complete()
 * returns it without the ring); a FUA, a large or an O_DIRECT one goes to
 * the ring. Each lands.
 */
static void test_inline_writes(void **state)
{
    char *path = test_path(*state, "w.raw");
    static uint8_t buf[4][1 << 20];
    struct vdisk_request rq, *done[1];
    struct vdisk_queue_stats st;
    struct vdisk_image *img;
    struct vdisk_queue *q;
    uint8_t *back = malloc(1 << 20);
    const struct {
        unsigned open_flags, write_flags;
        uint64_t len;
        bool inline_;
    } cases[] = {
        {0, 0, 4096, true},
        {0, 0, 65536, true},
        {0, VDISK_WRITE_FUA, 4096, false},
        {0, 0, 1 << 20, false},
        {VDISK_OPEN_DIRECT, 0, 4096, false},
    };

    assert_non_null(back);
    assert_int_equal(vdisk_create(path, "raw", 4 << 20, NULL), 0);
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t *b = buf[i % 4];

        assert_int_equal(vdisk_open(path, "raw", cases[i].open_flags, NULL, &img), 0);
        assert_int_equal(vdisk_queue_create(img, 4, 0, &q), 0);
        memset(b, 'A' + (int)i, cases[i].len);
        rq = (struct vdisk_request){.op = VDISK_OP_WRITE,
                                    .flags = cases[i].write_flags,
                                    .buf = b,
                                    .offset = i * (1ull << 20) / 2,
                                    .length = cases[i].len};
        assert_int_equal(vdisk_queue_submit(q, &rq), 0);
        /* done at submit: there without waiting and with nothing sent to the ring */
        vdisk_queue_get_stats(q, &st);
        if (cases[i].inline_) {
            assert_int_equal(st.ring_ios, 0);
            assert_int_equal(vdisk_queue_inflight(q), 1);
            assert_int_equal(vdisk_queue_complete(q, done, 1, 0), 1);
        } else {
            assert_int_equal(st.ring_ios, 1);
            assert_int_equal(vdisk_queue_complete(q, done, 1, 1), 1);
        }
        assert_int_equal(st.ring, 1);
        assert_ptr_equal(done[0], &rq);
        assert_int_equal(rq.result, 0);
        vdisk_queue_destroy(q);
        assert_int_equal(vdisk_read(img, back, cases[i].len, rq.offset), 0);
        assert_memory_equal(back, b, cases[i].len);
        assert_int_equal(vdisk_close(img), 0);
    }
    free(back);
    free(path);
}

/*
 * A caller polling: vdisk_queue_poll_fd() turns readable when requests
 * complete, complete(min 0) collects them without waiting, and the fd quiets
 * down once they are collected; with its own ring and with none (no
 * io_uring). A queue on the caller's ring has no fd of its own.
 */
static void test_poll_fd(void **state)
{
    char *path = test_path(*state, "p.raw");
    static uint8_t buf[8][4096];
    struct vdisk_request rq[8], *done[8];
    struct vdisk_image *img;
    struct vdisk_queue *q;
    struct io_uring ring;

    assert_int_equal(vdisk_create(path, "raw", 1 << 20, NULL), 0);
    assert_int_equal(vdisk_open(path, "raw", VDISK_OPEN_DIRECT, NULL, &img), 0);
    for (int mode = 0; mode < 2; mode++) {
        int got = 0, fd;

        if (mode == 1)
            setenv("VDISK_NO_IO_URING", "1", 1);
        assert_int_equal(vdisk_queue_create(img, 8, 0, &q), 0);
        unsetenv("VDISK_NO_IO_URING");
        fd = vdisk_queue_poll_fd(q);
        assert_true(fd >= 0);
        for (int i = 0; i < 8; i++) {
            memset(buf[i], 'a' + i, sizeof(buf[i]));
            rq[i] = (struct vdisk_request){.op = i % 2 ? VDISK_OP_FLUSH : VDISK_OP_WRITE,
                                           .buf = buf[i],
                                           .offset = i * 4096ull,
                                           .length = i % 2 ? 0 : 4096};
            assert_int_equal(vdisk_queue_submit(q, &rq[i]), 0);
        }
        for (int tries = 0; got < 8; tries++) {
            struct pollfd p = {fd, POLLIN, 0};
            int n = vdisk_queue_complete(q, done, 8, 0);

            assert_true(tries < 1000); /* readable, yet nothing to collect: a busy loop */
            assert_true(n >= 0);
            for (int i = 0; i < n; i++)
                assert_int_equal(done[i]->result, 0);
            got += n;
            if (got < 8)
                assert_int_equal(poll(&p, 1, 10000), 1); /* woken, not timed out */
        }
        assert_int_equal(vdisk_queue_inflight(q), 0);
        assert_int_equal(vdisk_queue_complete(q, done, 8, 0), 0);
        assert_int_equal(poll(&(struct pollfd){fd, POLLIN, 0}, 1, 0), 0); /* quiet */
        vdisk_queue_destroy(q);
    }
    assert_int_equal(io_uring_queue_init(16, &ring, 0), 0);
    assert_int_equal(vdisk_queue_create_on_ring(img, 4, &ring, &q), 0);
    assert_int_equal(vdisk_queue_poll_fd(q), -EINVAL);
    vdisk_queue_destroy(q);
    io_uring_queue_exit(&ring);
    assert_int_equal(vdisk_close(img), 0);
    free(path);
}

/* A discard on IMG in another thread: it waits for every pinned mapping. */
static void *discard_main(void *img)
{
    return (void *)(intptr_t)vdisk_discard(img, 0, 1 << 20);
}

/*
 * A failed wait (the test switch makes the first ones fail) on the error path
 * before destroy: destroy must still drain, or the mappings of the reads still
 * in the kernel stay pinned and the next discard waits for them forever.
 */
static void test_destroy_after_failed_wait(void **state)
{
    char *path = test_path(*state, "f.qcow2");
    struct vdisk_request rq[8], *done[8];
    static uint8_t buf[8][65536];
    struct vdisk_image *img;
    struct vdisk_queue *q;
    struct timespec deadline;
    pthread_t t;
    void *ret;

    assert_int_equal(vdisk_create(path, "qcow2", 1 << 20, NULL), 0);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &img), 0);
    memset(buf[0], 0x77, sizeof(buf[0]));
    for (int i = 0; i < 8; i++) /* allocated clusters: reads of them are pinned on the ring */
        assert_int_equal(vdisk_write(img, buf[0], 65536, i * 65536ull, 0), 0);
    setenv("VDISK_TEST_QUEUE_WAIT_FAULTS", "3", 1);
    assert_int_equal(vdisk_queue_create(img, 8, 0, &q), 0);
    unsetenv("VDISK_TEST_QUEUE_WAIT_FAULTS");
    for (int i = 0; i < 8; i++) {
        rq[i] = (struct vdisk_request){
            .op = VDISK_OP_READ, .buf = buf[i], .length = 65536, .offset = i * 65536ull};
        assert_int_equal(vdisk_queue_submit(q, &rq[i]), 0);
    }
    assert_int_equal(vdisk_queue_complete(q, done, 8, 8), -EIO); /* the error path */
    vdisk_queue_destroy(q);
    assert_int_equal(pthread_create(&t, NULL, discard_main, img), 0);
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 20;
    if (pthread_timedjoin_np(t, &ret, &deadline) != 0)
        fail_msg("a discard after destroy still waits for the reads' pins");
    assert_int_equal((intptr_t)ret, 0);
    assert_int_equal(vdisk_close(img), 0);
    free(path);
}

/* A request in flight, and the model's bytes a read must return. */
struct op {
    struct vdisk_request rq;
    uint8_t *buf, *expect;
    struct vdisk_extent ext[8];
    bool busy;
};

/* How a mix runs. */
struct mix {
    const char *format, *options;
    unsigned flags;
    uint64_t seed;
    bool ring;    /* on a ring the test owns, with its own NOPs beside the queue's I/O */
    bool backing; /* a qcow2 overlay over a raw base full of data */
    bool fixed;   /* the buffers' first FIXED_LEN registered (fixed buffers): by the caller
                     on its ring, by the queue on its own */
};

#define FIXED_LEN (64u << 10) /* of each MAX_LEN buffer: longer requests go unfixed */

/* Does [OFF, OFF+LEN) overlap a request in flight? */
static bool overlaps(const struct op *ops, uint64_t off, uint64_t len)
{
    for (int i = 0; i < DEPTH; i++)
        if (ops[i].busy && ops[i].rq.op != VDISK_OP_FLUSH &&
            off < ops[i].rq.offset + ops[i].rq.length && ops[i].rq.offset < off + len)
            return true;
    return false;
}

/* Another thread: synchronous writes, zeroes and discards in the upper half. */
struct side {
    struct vdisk_image *img;
    uint8_t *model;
    uint64_t seed;
    int rounds, failures;
};

static void *side_main(void *arg)
{
    struct side *sd = arg;
    uint8_t *buf = malloc(MAX_LEN);

    for (int i = 0; i < sd->rounds && buf; i++) {
        uint64_t len = (rnd(&sd->seed) % (MAX_LEN / 512) + 1) * 512;
        uint64_t off = HALF + rnd(&sd->seed) % ((HALF - len) / 512 + 1) * 512;
        unsigned kind = rnd(&sd->seed) % 8;
        int r;

        if (kind < 5) {
            memset(buf, (int)(rnd(&sd->seed) | 1), len);
            r = vdisk_write(sd->img, buf, len, off, 0);
            memcpy(sd->model + off, buf, len);
        } else if (kind < 7) {
            r = vdisk_write_zeroes(sd->img, off, len, kind == 6 ? VDISK_ZERO_MAY_UNMAP : 0);
            memset(sd->model + off, 0, len);
        } else {
            r = vdisk_flush(sd->img);
        }
        sd->failures += r != 0;
    }
    free(buf);
    return NULL;
}

/*
 * Random reads, writes, zeroes, discards and flushes with up to DEPTH in
 * flight (never two on the same bytes) on the lower half, synchronous I/O on
 * the upper half from another thread; then read everything back after reopen.
 */
static void random_mix(const char *dir, const struct mix *m)
{
    char *path = test_path(dir, "mix.img"), *base = test_path(dir, "base.raw"), opts[512];
    uint8_t *model = calloc(1, IMG_SIZE), *back = malloc(IMG_SIZE);
    const char *format = m->format;
    struct op ops[DEPTH] = {0};
    struct vdisk_request *done[DEPTH];
    struct vdisk_queue_stats st;
    struct vdisk_image *img;
    struct vdisk_queue *q;
    struct io_uring ring;
    struct side sd;
    pthread_t side;
    uint8_t *bufs = NULL;
    uint64_t seed = m->seed, nops_sent = 0, nops_seen = 0, gran = 65536;
    struct vdisk_info info;
    int submitted = 0, completed = 0, total = 3000;

    assert_non_null(model);
    assert_non_null(back);
    snprintf(opts, sizeof(opts), "%s", m->options ? m->options : "");
    if (m->backing) { /* the base: data everywhere; the overlay shows it until written */
        for (uint64_t i = 0; i < IMG_SIZE; i++)
            model[i] = (uint8_t)(rnd(&seed) >> 32);
        assert_int_equal(vdisk_create(base, "raw", IMG_SIZE, NULL), 0);
        assert_int_equal(vdisk_open(base, "raw", 0, NULL, &img), 0);
        assert_int_equal(vdisk_write(img, model, IMG_SIZE, 0, 0), 0);
        assert_int_equal(vdisk_close(img), 0);
        snprintf(opts, sizeof(opts), "%s%sbacking_file=%s,backing_fmt=raw",
                 m->options ? m->options : "", m->options ? "," : "", base);
    }
    assert_int_equal(vdisk_create(path, format, IMG_SIZE, opts[0] ? opts : NULL), 0);
    assert_int_equal(vdisk_open(path, format, m->flags, NULL, &img), 0);
    assert_int_equal(vdisk_get_info(img, &info), 0);
    if (info.cluster_size > 65536) /* VDI: 1 MiB blocks */
        gran = info.cluster_size;
    if (m->ring) {
        assert_int_equal(io_uring_queue_init(2 * DEPTH + 8, &ring, 0), 0);
        assert_int_equal(vdisk_queue_create_on_ring(img, DEPTH, &ring, &q), 0);
        assert_int_equal(vdisk_queue_complete(q, done, DEPTH, 1), -EINVAL); /* never waits */
    } else {
        assert_int_equal(vdisk_queue_create(img, DEPTH, 0, &q), 0);
    }
    if (m->fixed) { /* the ublk frontend's layout: one region, registered in part */
        struct iovec iov[DEPTH];

        assert_int_equal(posix_memalign((void **)&bufs, 4096, (size_t)DEPTH * MAX_LEN), 0);
        for (int i = 0; i < DEPTH; i++)
            iov[i] = (struct iovec){bufs + (size_t)i * MAX_LEN, FIXED_LEN};
        if (m->ring)
            assert_int_equal(io_uring_register_buffers(&ring, iov, DEPTH), 0);
        assert_int_equal(vdisk_queue_fixed_buffers(q, bufs, MAX_LEN, FIXED_LEN, DEPTH), 0);
    }
    for (int i = 0; i < DEPTH; i++) {
        if (bufs)
            ops[i].buf = bufs + (size_t)i * MAX_LEN;
        else
            assert_int_equal(posix_memalign((void **)&ops[i].buf, 4096, MAX_LEN), 0);
        ops[i].expect = malloc(MAX_LEN);
        ops[i].rq.user_data = &ops[i];
    }
    sd = (struct side){.img = img, .model = model, .seed = seed * 7 + 1, .rounds = 400};
    assert_int_equal(pthread_create(&side, NULL, side_main, &sd), 0);

    while (completed < total) {
        for (int i = 0; i < DEPTH && submitted < total; i++) {
            struct op *o = &ops[i];
            unsigned kind = rnd(&seed) % 24;
            uint64_t off, len;

            if (o->busy)
                continue;
            if (kind < 14 && rnd(&seed) % 4) { /* mostly aligned 4k multiples */
                len = (rnd(&seed) % (MAX_LEN / 4096) + 1) * 4096;
                off = rnd(&seed) % ((HALF - len) / 4096 + 1) * 4096;
            } else if (kind < 14 || kind >= 20) { /* some at any byte */
                len = rnd(&seed) % MAX_LEN + 1;
                off = rnd(&seed) % (HALF - len + 1);
            } else { /* zeroes and discards: whole clusters (a discard of less may keep data) */
                len = (rnd(&seed) % 4 + 1) * gran;
                off = rnd(&seed) % ((HALF - len) / gran + 1) * gran;
            }
            if ((kind < 18 || kind >= 20) && overlaps(ops, off, len))
                continue;
            o->rq =
                (struct vdisk_request){.buf = o->buf, .offset = off, .length = len, .user_data = o};
            if (kind < 7) {
                o->rq.op = VDISK_OP_READ;
                memcpy(o->expect, model + off, len);
            } else if (kind < 14) {
                o->rq.op = VDISK_OP_WRITE;
                o->rq.flags = kind == 13 ? VDISK_WRITE_FUA : 0;
                memset(o->buf, (int)(rnd(&seed) | 1), len);
                o->buf[0] = (uint8_t)submitted;
                memcpy(model + off, o->buf, len);
            } else if (kind < 16) {
                o->rq.op = VDISK_OP_WRITE_ZEROES;
                o->rq.flags = kind == 15 ? VDISK_ZERO_MAY_UNMAP : 0;
                memset(model + off, 0, len);
            } else if (kind < 18) {
                o->rq.op = VDISK_OP_DISCARD;
                memset(model + off, 0, len);
            } else if (kind < 20) {
                o->rq = (struct vdisk_request){.op = VDISK_OP_FLUSH, .user_data = o};
            } else if (kind < 22) {
                o->rq.op = VDISK_OP_BLOCK_STATUS;
                o->rq.buf = o->ext;
                o->rq.count = 8;
                memcpy(o->expect, model + off, len);
            } else {
                o->rq.op = VDISK_OP_CACHE;
            }
            assert_int_equal(vdisk_queue_submit(q, &o->rq), 0);
            o->busy = true;
            submitted++;
        }
        int n;

        if (m->ring) { /* the caller's loop: its own SQEs and CQEs beside the queue's */
            struct io_uring_cqe *cqe;
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            unsigned head, k = 0;

            if (sqe) {
                io_uring_prep_nop(sqe);
                io_uring_sqe_set_data64(sqe, 42);
                nops_sent++;
            }
            assert_true(io_uring_submit_and_wait(&ring, 1) >= 0);
            io_uring_for_each_cqe(&ring, head, cqe)
            {
                k++;
                if (cqe->user_data & VDISK_QUEUE_CQE_BIT)
                    vdisk_queue_handle_cqe(q, cqe->user_data, cqe->res);
                else if (cqe->user_data == 42)
                    nops_seen++;
                else
                    fail_msg("a CQE that is nobody's: %llu", (unsigned long long)cqe->user_data);
            }
            io_uring_cq_advance(&ring, k);
            n = vdisk_queue_complete(q, done, DEPTH, 0);
            assert_true(n >= 0);
        } else {
            n = vdisk_queue_complete(q, done, DEPTH, 1);
            assert_true(n >= 1);
        }
        for (int i = 0; i < n; i++) {
            struct op *o = done[i]->user_data;

            if (done[i]->result < 0)
                fail_msg("%s request failed: %s", format, vdisk_last_error());
            if (o->rq.op == VDISK_OP_READ && memcmp(o->buf, o->expect, o->rq.length) != 0)
                fail_msg("%s: read of %llu at %llu differs from the model", format,
                         (unsigned long long)o->rq.length, (unsigned long long)o->rq.offset);
            if (o->rq.op == VDISK_OP_BLOCK_STATUS) { /* a run said to read as zero does */
                uint64_t pos = o->rq.offset;

                assert_true(done[i]->result >= 1 && done[i]->result <= 8);
                for (int e = 0; e < done[i]->result; e++) {
                    assert_int_equal(o->ext[e].offset, pos);
                    assert_true(o->ext[e].length > 0);
                    if (o->ext[e].flags & VDISK_EXTENT_ZERO)
                        for (uint64_t b = 0; b < o->ext[e].length; b++)
                            if (o->expect[pos - o->rq.offset + b])
                                fail_msg("%s: block status says zero at %llu, the model not",
                                         format, (unsigned long long)(pos + b));
                    pos += o->ext[e].length;
                }
                assert_true(pos <= o->rq.offset + o->rq.length);
            } else if (done[i]->result != 0) {
                fail_msg("%s: request returned %d", format, done[i]->result);
            }
            o->busy = false;
            completed++;
        }
    }
    assert_int_equal(pthread_join(side, NULL), 0);
    assert_int_equal(sd.failures, 0);
    vdisk_queue_get_stats(q, &st);
    assert_int_equal(st.requests, (uint64_t)total);
    assert_int_equal(st.ring + st.workers, st.requests);
    if (getenv("VDISK_NO_IO_URING") == NULL)
        assert_true(st.ring > 0); /* reads and in-place writes went straight to the files */
    if (m->fixed && getenv("VDISK_NO_IO_URING") == NULL)
        assert_true(st.ring_fixed > 0 && st.ring_fixed <= st.ring_ios);
    else
        assert_int_equal(st.ring_fixed, 0);
    vdisk_queue_destroy(q);
    if (m->ring) {
        assert_true(nops_sent > 0);
        io_uring_queue_exit(&ring);
    }
    assert_int_equal(vdisk_close(img), 0);

    assert_int_equal(vdisk_open(path, format, VDISK_OPEN_RDONLY, NULL, &img), 0);
    assert_int_equal(vdisk_read(img, back, IMG_SIZE, 0), 0);
    assert_memory_equal(back, model, IMG_SIZE);
    assert_int_equal(vdisk_close(img), 0);
    for (int i = 0; i < DEPTH; i++) {
        if (!bufs)
            free(ops[i].buf);
        free(ops[i].expect);
    }
    free(bufs);
    free(model);
    free(back);
    unlink(path);
    unlink(base);
    free(path);
    free(base);
}

static void test_mix_raw(void **state)
{
    random_mix(*state, &(struct mix){.format = "raw", .seed = 1});
}

static void test_mix_raw_direct(void **state)
{
    random_mix(*state, &(struct mix){.format = "raw", .flags = VDISK_OPEN_DIRECT, .seed = 2});
}

static void test_mix_qcow2(void **state)
{
    random_mix(*state, &(struct mix){.format = "qcow2", .seed = 3});
}

static void test_mix_qcow2_direct(void **state)
{
    random_mix(*state, &(struct mix){.format = "qcow2",
                                     .options = "cluster_size=4096",
                                     .flags = VDISK_OPEN_DIRECT,
                                     .seed = 4});
}

static void test_mix_qcow2_extl2(void **state)
{
    random_mix(*state, &(struct mix){.format = "qcow2",
                                     .options = "extended_l2=on,cluster_size=65536",
                                     .flags = VDISK_OPEN_DIRECT,
                                     .seed = 5});
}

/* Without io_uring (as under Docker's seccomp profile), workers do everything. */
static void test_mix_no_io_uring(void **state)
{
    setenv("VDISK_NO_IO_URING", "1", 1);
    random_mix(*state, &(struct mix){.format = "raw", .flags = VDISK_OPEN_DIRECT, .seed = 6});
    random_mix(*state, &(struct mix){.format = "qcow2", .seed = 7});
    unsetenv("VDISK_NO_IO_URING");
}

/* A qcow2 overlay over a raw base: unallocated reads go to the base's file on the ring. */
static void test_mix_overlay(void **state)
{
    random_mix(*state, &(struct mix){.format = "qcow2", .seed = 8, .backing = true});
    random_mix(*state, &(struct mix){.format = "qcow2",
                                     .options = "cluster_size=4096",
                                     .flags = VDISK_OPEN_DIRECT,
                                     .seed = 9,
                                     .backing = true});
}

/* On the caller's ring, with the caller's own requests beside the queue's. */
static void test_mix_callers_ring(void **state)
{
    random_mix(*state, &(struct mix){
                           .format = "raw", .flags = VDISK_OPEN_DIRECT, .seed = 10, .ring = true});
    random_mix(*state, &(struct mix){.format = "qcow2", .seed = 11, .ring = true});
    random_mix(*state, &(struct mix){.format = "qcow2", .seed = 12, .ring = true, .backing = true});
}

/* Fixed buffers on the caller's ring (as ublk registers them): the same bytes move. */
static void test_mix_fixed_buffers(void **state)
{
    random_mix(
        *state,
        &(struct mix){
            .format = "raw", .flags = VDISK_OPEN_DIRECT, .seed = 13, .ring = true, .fixed = true});
    random_mix(
        *state,
        &(struct mix){.format = "qcow2", .seed = 14, .ring = true, .fixed = true, .backing = true});
}

/* Fixed buffers on the queue's own ring (as vdisk bench registers them). */
static void test_mix_fixed_own_ring(void **state)
{
    random_mix(*state, &(struct mix){
                           .format = "raw", .flags = VDISK_OPEN_DIRECT, .seed = 15, .fixed = true});
    random_mix(*state, &(struct mix){.format = "vdi", .seed = 16, .fixed = true});
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_arguments, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_destroy_waits, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_inline_writes, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_poll_fd, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_destroy_after_failed_wait, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_mix_raw, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_mix_raw_direct, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_mix_qcow2, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_mix_qcow2_direct, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_mix_qcow2_extl2, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_mix_no_io_uring, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_mix_overlay, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_mix_fixed_buffers, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_mix_fixed_own_ring, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_mix_callers_ring, test_setup_tmpdir,
                                        test_teardown_tmpdir),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
