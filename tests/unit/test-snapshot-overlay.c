/* SPDX-License-Identifier: MIT */
/*
 * The temporary snapshot overlay (lib/snapshot-overlay.c: sparse file plus a
 * 4 KiB bitmap) against a model in memory: whole-block, partial-block and
 * cross-block writes, discard, write-zeroes, reads across blocks in and out
 * of the overlay, a disk whose last block is short, and threads racing
 * partial writes into the same blocks. The base is never written.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk/vdisk.h"
#include "testutil.h"

#define SIZE    (4 * 1024 * 1024ull + 2048) /* the last 4 KiB block is short */
#define THREADS 8
#define SECTORS 1024 /* per thread in the race: 512-byte sectors, interleaved */

static uint64_t rnd_state = 88172645463325252ull;

/* xorshift: a fixed sequence, so a failure repeats */
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

/* Make a raw base of SIZE bytes with a pattern nowhere zero; its bytes in *MODEL. */
static char *make_base(const char *dir, uint8_t **model)
{
    char *base = test_path(dir, "base.raw");
    struct vdisk_image *img;
    uint8_t *m = malloc(SIZE);

    assert_non_null(m);
    for (uint64_t i = 0; i < SIZE; i++)
        m[i] = (uint8_t)(i * 7 + (i >> 12) + 1) | 1;
    assert_int_equal(vdisk_create(base, "raw", SIZE, NULL), 0);
    assert_int_equal(vdisk_open(base, "raw", 0, NULL, &img), 0);
    assert_int_equal(vdisk_write(img, m, SIZE, 0, 0), 0);
    assert_int_equal(vdisk_close(img), 0);
    *model = m;
    return base;
}

/* The whole disk reads as MODEL, and so do random ranges (runs across set and unset blocks). */
static void check_model(struct vdisk_image *img, const uint8_t *model)
{
    uint8_t *buf = malloc(SIZE);

    assert_non_null(buf);
    assert_int_equal(vdisk_read(img, buf, SIZE, 0), 0);
    assert_memory_equal(buf, model, SIZE);
    for (int i = 0; i < 50; i++) {
        uint64_t off = (rnd() % (SIZE / 512)) * 512, len = (rnd() % 64 + 1) * 512;

        if (off + len > SIZE)
            len = SIZE - off;
        assert_int_equal(vdisk_read(img, buf, len, off), 0);
        assert_memory_equal(buf, model + off, len);
    }
    free(buf);
}

static void test_ops_vs_model(void **state)
{
    uint8_t *orig, *model = malloc(SIZE), *buf = malloc(256 * 1024);
    char *base = make_base(*state, &orig);
    struct vdisk_image *img;

    assert_non_null(model);
    assert_non_null(buf);
    memcpy(model, orig, SIZE);
    assert_int_equal(vdisk_open_snapshot(base, "raw", 0, NULL, *state, &img), 0);
    check_model(img, model);
    /* fixed cases first: whole block, partial block, across blocks, the short last block */
    memset(buf, 0xa1, 8192);
    assert_int_equal(vdisk_write(img, buf, 8192, 65536, 0), 0);
    memcpy(model + 65536, buf, 8192);
    memset(buf, 0xb2, 512);
    assert_int_equal(vdisk_write(img, buf, 512, 3 * 4096 + 1024, 0), 0);
    memcpy(model + 3 * 4096 + 1024, buf, 512);
    memset(buf, 0xc3, 6144);
    assert_int_equal(vdisk_write(img, buf, 6144, 10 * 4096 + 2048, 0), 0);
    memcpy(model + 10 * 4096 + 2048, buf, 6144);
    memset(buf, 0xd4, 1024);
    assert_int_equal(vdisk_write(img, buf, 1024, SIZE - 1024, 0), 0);
    memcpy(model + SIZE - 1024, buf, 1024);
    check_model(img, model);
    /* write-zeroes over base bytes: they read as zeroes (nothing of the base shows) */
    assert_int_equal(vdisk_write_zeroes(img, 20 * 4096 + 512, 3 * 4096, 0), 0);
    memset(model + 20 * 4096 + 512, 0, 3 * 4096);
    assert_int_equal(vdisk_write_zeroes(img, 40 * 4096, 4096, VDISK_ZERO_MAY_UNMAP), 0);
    memset(model + 40 * 4096, 0, 4096);
    /* discard: whole blocks read as zeroes, partial ends keep their bytes */
    assert_int_equal(vdisk_discard(img, 50 * 4096 + 1024, 2 * 4096), 0);
    memset(model + 51 * 4096, 0, 4096);
    check_model(img, model);
    /* then random operations, checked as they go */
    for (int i = 0; i < 400; i++) {
        uint64_t off = (rnd() % (SIZE / 512)) * 512, len = (rnd() % 96 + 1) * 512;
        unsigned op = (unsigned)(rnd() % 8);

        if (off + len > SIZE)
            len = SIZE - off;
        if (op == 0) {
            assert_int_equal(vdisk_write_zeroes(img, off, len, 0), 0);
            memset(model + off, 0, len);
        } else if (op == 1) {
            uint64_t b = (off + 4095) / 4096, e = (off + len) / 4096;

            if (off + len == SIZE)
                e = (SIZE + 4095) / 4096;
            assert_int_equal(vdisk_discard(img, off, len), 0);
            for (; b < e; b++)
                memset(model + b * 4096, 0, b * 4096 + 4096 <= SIZE ? 4096 : SIZE - b * 4096);
        } else {
            if (op < 5) /* whole blocks */
                off &= ~4095ull, len = (len + 4095) & ~4095ull;
            if (off + len > SIZE)
                len = SIZE - off;
            for (uint64_t k = 0; k < len; k++)
                buf[k] = (uint8_t)(rnd() | 1);
            assert_int_equal(vdisk_write(img, buf, len, off, 0), 0);
            memcpy(model + off, buf, len);
        }
        if (i % 50 == 49)
            check_model(img, model);
    }
    check_model(img, model);
    assert_int_equal(vdisk_flush(img), 0);
    assert_int_equal(vdisk_close(img), 0);
    /* the base never changed, and a new snapshot shows it again */
    assert_int_equal(vdisk_open_snapshot(base, "raw", 0, NULL, *state, &img), 0);
    check_model(img, orig);
    assert_int_equal(vdisk_close(img), 0);
    free(buf);
    free(model);
    free(orig);
    free(base);
}

struct racer {
    struct vdisk_image *img;
    unsigned id;
    const uint8_t *orig;
    int bad;
};

/* Write this thread's sectors (every THREADS-th one: all partial writes into blocks other
 * threads copy at the same time), each read back at once; then read random ranges. */
static void *race(void *arg)
{
    struct racer *t = arg;
    uint8_t w[512], r[512];

    for (unsigned i = 0; i < SECTORS; i++) {
        uint64_t off = (uint64_t)(i * THREADS + t->id) * 512;

        memset(w, (int)(0x10 + t->id), sizeof(w));
        w[0] = (uint8_t)i;
        if (vdisk_write(t->img, w, 512, off, 0) < 0 || vdisk_read(t->img, r, 512, off) < 0 ||
            memcmp(w, r, 512) != 0) {
            fprintf(stderr, "thread %u: own sector at %llu: %s\n", t->id, (unsigned long long)off,
                    vdisk_last_error());
            t->bad++;
        }
        /* another thread's sector, maybe being written: byte by byte its base or new bytes
         * (a read racing a write may see some of each), never the overlay's hole */
        off = (uint64_t)(i * THREADS + (t->id + 1) % THREADS) * 512;
        if (vdisk_read(t->img, r, 512, off) < 0) {
            t->bad++;
            continue;
        }
        for (unsigned k = 0; k < 512; k++)
            if (r[k] != t->orig[off + k] &&
                r[k] != (k ? 0x10 + (t->id + 1) % THREADS : (uint8_t)i)) {
                fprintf(stderr, "thread %u: sector at %llu byte %u reads %#x\n", t->id,
                        (unsigned long long)off, k, r[k]);
                t->bad++;
                break;
            }
    }
    return NULL;
}

static void test_race(void **state)
{
    uint8_t *orig, *model = malloc(SIZE);
    char *base = make_base(*state, &orig);
    struct vdisk_image *img;
    struct racer t[THREADS];
    pthread_t th[THREADS];

    assert_non_null(model);
    memcpy(model, orig, SIZE);
    assert_int_equal(vdisk_open_snapshot(base, "raw", 0, NULL, *state, &img), 0);
    for (unsigned i = 0; i < THREADS; i++) {
        t[i] = (struct racer){.img = img, .id = i, .orig = orig};
        assert_int_equal(pthread_create(&th[i], NULL, race, &t[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(t[i].bad, 0);
    }
    /* no partial write lost to another's copy of the same block */
    for (unsigned id = 0; id < THREADS; id++)
        for (unsigned i = 0; i < SECTORS; i++) {
            uint8_t *p = model + (uint64_t)(i * THREADS + id) * 512;

            memset(p, (int)(0x10 + id), 512);
            p[0] = (uint8_t)i;
        }
    check_model(img, model);
    assert_int_equal(vdisk_close(img), 0);
    free(model);
    free(orig);
    free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ops_vs_model, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_race, test_setup_tmpdir, test_teardown_tmpdir),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
