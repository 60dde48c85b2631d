/* SPDX-License-Identifier: MIT */
/*
 * The image layer's promises to a driver that is not thread safe (format.h):
 * every callback, map() and release() included, runs under the node's lock,
 * also for the engine's non-blocking maps; and its DATA mappings are pinned,
 * so that a discard waits until their I/O is done. A test driver ("serial")
 * counts callbacks that overlap.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/vdisk.h"
#include "../../lib/node.h"

#define SIZE  (4u << 20)
#define BLOCK 4096u

static atomic_int inside, overlaps, releases;

/* Note a callback running; a second one at the same time is an overlap. */
static void in(void)
{
    if (atomic_fetch_add(&inside, 1) != 0)
        atomic_fetch_add(&overlaps, 1);
    usleep(20); /* widen the window */
}

static void out(void)
{
    atomic_fetch_sub(&inside, 1);
}

static int serial_open(struct vdisk_node *n)
{
    n->size = SIZE;
    return 0;
}

static void serial_close(struct vdisk_node *n)
{
    (void)n;
}

/* Odd blocks lie in the file (DATA); even ones only the driver reads (OTHER). */
static int serial_map(struct vdisk_node *n, uint64_t off, uint64_t len, unsigned flags,
                      struct vdisk_map *m)
{
    uint64_t end = (off / BLOCK + 1) * BLOCK;

    (void)flags;
    in();
    m->len = end - off < len ? end - off : len;
    if ((off / BLOCK) & 1) {
        m->type = VDISK_MAP_DATA;
        m->file = n->file;
        m->host = off;
        m->handle = 7;
    } else {
        m->type = VDISK_MAP_OTHER;
    }
    out();
    return 0;
}

static void serial_release(struct vdisk_node *n, const struct vdisk_map *m)
{
    (void)n;
    in();
    assert_int_equal(m->handle, 7);
    atomic_fetch_add(&releases, 1);
    out();
}

static int serial_read(struct vdisk_node *n, void *buf, size_t len, uint64_t off)
{
    int r;

    in();
    r = vdisk_file_pread(n->file, buf, len, off);
    out();
    return r;
}

static int serial_write(struct vdisk_node *n, const void *buf, size_t len, uint64_t off,
                        unsigned flags)
{
    int r;

    (void)flags;
    in();
    r = vdisk_file_pwrite(n->file, buf, len, off);
    out();
    return r;
}

static int serial_discard(struct vdisk_node *n, uint64_t off, uint64_t len)
{
    (void)n, (void)off, (void)len;
    in();
    out();
    return 0;
}

static struct vdisk_format serial = {
    .name = "serial",
    .open = serial_open,
    .close = serial_close,
    .map = serial_map,
    .release = serial_release,
    .read = serial_read,
    .write = serial_write,
    .discard = serial_discard,
};

/* A node of FMT over a fresh SIZE-byte file holding byte (offset / BLOCK) at each block. */
static struct vdisk_node *open_serial(const char *dir, const struct vdisk_format *fmt)
{
    char *path = test_path(dir, "s.img");
    struct vdisk_image *img;
    struct vdisk_node *n;
    uint8_t *buf = malloc(SIZE);

    for (uint64_t i = 0; i < SIZE; i++)
        buf[i] = (uint8_t)(i / BLOCK);
    assert_int_equal(vdisk_create(path, "raw", SIZE, NULL), 0);
    assert_int_equal(vdisk_open(path, "raw", 0, NULL, &img), 0);
    assert_int_equal(vdisk_write(img, buf, SIZE, 0, 0), 0);
    assert_int_equal(vdisk_close(img), 0);
    assert_int_equal(node_open(path, fmt, 0, NULL, NULL, &n), 0);
    free(buf);
    free(path);
    return n;
}

/* Random reads and writes of whole blocks (each block keeps its own byte). */
static void *io_main(void *arg)
{
    struct vdisk_node *n = arg;
    uint8_t buf[3 * BLOCK];
    unsigned seed = (unsigned)(uintptr_t)&buf;

    for (int i = 0; i < 300; i++) {
        uint64_t b = (uint64_t)rand_r(&seed) % (SIZE / BLOCK - 3), len = 3 * BLOCK;

        if (rand_r(&seed) % 3 == 0) {
            for (uint64_t k = 0; k < len; k++)
                buf[k] = (uint8_t)(b + k / BLOCK);
            assert_int_equal(node_write(n, buf, len, b * BLOCK, 0), 0);
        } else {
            assert_int_equal(vdisk_node_read(n, buf, len, b * BLOCK), 0);
            for (uint64_t k = 0; k < len; k++)
                if (buf[k] != (uint8_t)(b + k / BLOCK))
                    fail_msg("block %llu reads wrong", (unsigned long long)(b + k / BLOCK));
        }
    }
    return NULL;
}

/* The engine's thread: non-blocking maps, releases when the ring's I/O is done. */
static void *queue_main(void *arg)
{
    struct vdisk_image *img = arg;
    struct vdisk_request rq[8], *done[8];
    static uint8_t buf[8][BLOCK];
    struct vdisk_queue *q;

    assert_int_equal(vdisk_queue_create(img, 8, 0, &q), 0);
    for (int round = 0; round < 100; round++) {
        for (int i = 0; i < 8; i++) {
            rq[i] = (struct vdisk_request){.op = VDISK_OP_READ,
                                           .buf = buf[i],
                                           .length = BLOCK,
                                           .offset = (uint64_t)((round * 8 + i) % 1000) * BLOCK};
            assert_int_equal(vdisk_queue_submit(q, &rq[i]), 0);
        }
        for (int got = 0; got < 8;) {
            int k = vdisk_queue_complete(q, done, 8, 1);

            assert_true(k > 0);
            for (int j = 0; j < k; j++) {
                assert_int_equal(done[j]->result, 0);
                assert_int_equal(((uint8_t *)done[j]->buf)[0], (uint8_t)(done[j]->offset / BLOCK));
            }
            got += k;
        }
    }
    vdisk_queue_destroy(q);
    return NULL;
}

static void test_callbacks_serialised(void **state)
{
    struct vdisk_node *n = open_serial(*state, &serial);
    struct vdisk_image img = {.root = n};
    pthread_t t[5];

    atomic_store(&overlaps, 0);
    atomic_store(&releases, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, io_main, n), 0);
    assert_int_equal(pthread_create(&t[4], NULL, queue_main, &img), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_true(atomic_load(&releases) > 0); /* the driver's release() ran, under the lock */
    assert_int_equal(atomic_load(&overlaps), 0);
    node_close(n);
}

/* Without release(), the layer pins DATA mappings: a discard waits for them. */
static void *discard_main(void *n)
{
    return (void *)(intptr_t)node_discard(n, 0, SIZE);
}

static void test_discard_waits_for_pins(void **state)
{
    struct vdisk_format nopin = serial;
    struct vdisk_node *n;
    struct vdisk_map m;
    struct timespec soon;
    pthread_t t;
    void *ret;

    nopin.release = NULL;
    n = open_serial(*state, &nopin);
    assert_int_equal(node_map(n, BLOCK, BLOCK, 0, &m), 0);
    assert_int_equal(m.type, VDISK_MAP_DATA);
    assert_int_not_equal(m.handle, 0); /* pinned by the layer */
    assert_int_equal(pthread_create(&t, NULL, discard_main, n), 0);
    clock_gettime(CLOCK_REALTIME, &soon);
    soon.tv_nsec += 300 * 1000 * 1000;
    if (soon.tv_nsec >= 1000000000) {
        soon.tv_sec++;
        soon.tv_nsec -= 1000000000;
    }
    assert_int_equal(pthread_timedjoin_np(t, &ret, &soon), ETIMEDOUT); /* waits for the pin */
    node_release(n, &m);
    assert_int_equal(pthread_join(t, &ret), 0);
    assert_int_equal((intptr_t)ret, 0);
    node_close(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_callbacks_serialised, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_discard_waits_for_pins, test_setup_tmpdir,
                                        test_teardown_tmpdir),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
