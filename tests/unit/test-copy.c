/* SPDX-License-Identifier: MIT */
/* The copy engine of `vdisk convert`: zero detection, data runs, whole-image copies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "vdisk/vdisk.h"
#include "../../tools/vdisk/copy.h"
#include "testutil.h"

#define KiB 1024ull
#define MiB (1024 * 1024ull)

static void test_buffer_is_zero(void **state)
{
    uint8_t buf[8192] = {0};

    (void)state;
    assert_true(buffer_is_zero(buf, 0));
    assert_true(buffer_is_zero(buf, 1));
    assert_true(buffer_is_zero(buf, 15));
    assert_true(buffer_is_zero(buf, sizeof(buf)));
    /* a single byte anywhere, including the first 16 and the last */
    for (size_t i = 0; i < sizeof(buf); i += 997) {
        buf[i] = 1;
        assert_false(buffer_is_zero(buf, sizeof(buf)));
        buf[i] = 0;
    }
    buf[sizeof(buf) - 1] = 0x80;
    assert_false(buffer_is_zero(buf, sizeof(buf)));
    assert_true(buffer_is_zero(buf, sizeof(buf) - 1));
}

static void test_data_runs_aligned(void **state)
{
    size_t len = 64 * KiB, start = 0, n;
    uint8_t *buf = calloc(1, len);

    (void)state;
    assert_false(next_data_run(buf, len, 0, &start, &n));
    buf[5000] = 1;  /* block 1 */
    buf[8192] = 1;  /* block 2: joins block 1 */
    buf[40000] = 1; /* block 9 */
    start = 0;
    assert_true(next_data_run(buf, len, 0, &start, &n));
    assert_int_equal(start, 4096);
    assert_int_equal(n, 8192);
    start += n;
    assert_true(next_data_run(buf, len, 0, &start, &n));
    assert_int_equal(start, 36864);
    assert_int_equal(n, 4096);
    start += n;
    assert_false(next_data_run(buf, len, 0, &start, &n));
    free(buf);
}

static void test_data_runs_unaligned(void **state)
{
    /* the buffer starts 100 bytes before a block boundary of the image */
    size_t len = 10000, start = 0, n;
    uint8_t *buf = calloc(1, len);

    (void)state;
    buf[50] = 1;         /* partial first block: [0, 100) */
    buf[100 + 4096] = 1; /* third block [4196, 8292) */
    buf[len - 1] = 1;    /* partial last block [8292, 10000) */
    assert_true(next_data_run(buf, len, 4096 - 100, &start, &n));
    assert_int_equal(start, 0);
    assert_int_equal(n, 100);
    start += n;
    assert_true(next_data_run(buf, len, 4096 - 100, &start, &n));
    assert_int_equal(start, 4196);
    assert_int_equal(n, len - 4196);
    free(buf);
}

/* Make a raw image with data at OFFS[] (each 10000 bytes of a byte pattern). */
static char *make_source(const char *dir, uint64_t size, const uint64_t *offs, size_t n)
{
    char *path = test_path(dir, "src.raw");
    struct vdisk_image *img;
    uint8_t data[10000];

    assert_int_equal(vdisk_create(path, "raw", size, NULL), 0);
    assert_int_equal(vdisk_open(path, "raw", 0, NULL, &img), 0);
    for (size_t i = 0; i < n; i++) {
        memset(data, 0x31 + (int)i, sizeof(data));
        assert_int_equal(vdisk_write(img, data, sizeof(data), offs[i], 0), 0);
    }
    /* explicit zeroes: allocated in the source, skipped by the copy */
    memset(data, 0, sizeof(data));
    assert_int_equal(vdisk_write(img, data, sizeof(data), size / 2, 0), 0);
    assert_int_equal(vdisk_close(img), 0);
    return path;
}

/* Copy with THREADS and CHUNK and compare the result byte for byte. */
static void copy_and_compare(const char *dir, unsigned threads, size_t chunk)
{
    static const uint64_t offs[] = {0, 123457, 3 * MiB - 5000, 17 * MiB + 1, 32 * MiB - 10000};
    char *src_path = make_source(dir, 32 * MiB, offs, 5);
    char *dst_path = test_path(dir, "dst.raw");
    struct copy_options o = {.threads = threads, .chunk = chunk};
    struct vdisk_image *src, *dst;
    uint8_t *a = malloc(MiB), *b = malloc(MiB);
    char msg[256];
    struct stat st;

    assert_int_equal(vdisk_open(src_path, NULL, VDISK_OPEN_RDONLY, NULL, &src), 0);
    assert_int_equal(vdisk_create(dst_path, "raw", 32 * MiB, NULL), 0);
    assert_int_equal(vdisk_open(dst_path, "raw", 0, NULL, &dst), 0);
    assert_int_equal(copy_image(src, dst, &o, msg, sizeof(msg)), 0);
    /* 5 runs of 10000 bytes, each touching at most 4 blocks */
    assert_true(o.bytes_written <= 5 * 4 * 4096);
    assert_true(o.bytes_written >= 5 * 10000);
    for (uint64_t off = 0; off < 32 * MiB; off += MiB) {
        assert_int_equal(vdisk_read(src, a, MiB, off), 0);
        assert_int_equal(vdisk_read(dst, b, MiB, off), 0);
        assert_memory_equal(a, b, MiB);
    }
    assert_int_equal(vdisk_close(dst), 0);
    assert_int_equal(stat(dst_path, &st), 0);
    assert_true((uint64_t)st.st_blocks * 512 <= 256 * KiB);
    vdisk_close(src);
    unlink(src_path);
    unlink(dst_path);
    free(a);
    free(b);
    free(src_path);
    free(dst_path);
}

static void test_copy_default(void **state)
{
    copy_and_compare(*state, 0, 0);
}

static void test_copy_one_thread_small_chunks(void **state)
{
    copy_and_compare(*state, 1, 8192);
}

static void test_copy_many_threads(void **state)
{
    copy_and_compare(*state, 16, 64 * KiB);
}

static void test_copy_refuses_small_target_and_bad_params(void **state)
{
    char *src_path = test_path(*state, "s.raw"), *dst_path = test_path(*state, "d.raw");
    struct copy_options o = {0};
    struct vdisk_image *src, *dst;
    char msg[256];

    assert_int_equal(vdisk_create(src_path, "raw", 2 * MiB, NULL), 0);
    assert_int_equal(vdisk_create(dst_path, "raw", MiB, NULL), 0);
    assert_int_equal(vdisk_open(src_path, NULL, VDISK_OPEN_RDONLY, NULL, &src), 0);
    assert_int_equal(vdisk_open(dst_path, NULL, 0, NULL, &dst), 0);
    assert_int_equal(copy_image(src, dst, &o, msg, sizeof(msg)), -ENOSPC);
    assert_non_null(strstr(msg, "smaller"));
    o.chunk = 1000; /* not a multiple of the zero block */
    assert_int_equal(copy_image(src, src, &o, msg, sizeof(msg)), -EINVAL);
    o.chunk = 0;
    o.threads = 1000;
    assert_int_equal(copy_image(src, src, &o, msg, sizeof(msg)), -EINVAL);
    vdisk_close(dst);
    vdisk_close(src);
    free(src_path);
    free(dst_path);
}

static void test_copy_interrupted(void **state)
{
    char *src_path = test_path(*state, "i.raw"), *dst_path = test_path(*state, "j.raw");
    volatile sig_atomic_t stop = 1;
    struct copy_options o = {.interrupted = &stop};
    struct vdisk_image *src, *dst;
    char msg[256];

    assert_int_equal(vdisk_create(src_path, "raw", 4 * MiB, NULL), 0);
    assert_int_equal(vdisk_create(dst_path, "raw", 4 * MiB, NULL), 0);
    assert_int_equal(vdisk_open(src_path, NULL, VDISK_OPEN_RDONLY, NULL, &src), 0);
    assert_int_equal(vdisk_open(dst_path, NULL, 0, NULL, &dst), 0);
    assert_int_equal(copy_image(src, dst, &o, msg, sizeof(msg)), -EINTR);
    assert_string_equal(msg, "interrupted");
    vdisk_close(dst);
    vdisk_close(src);
    free(src_path);
    free(dst_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buffer_is_zero),
        cmocka_unit_test(test_data_runs_aligned),
        cmocka_unit_test(test_data_runs_unaligned),
        cmocka_unit_test(test_copy_default),
        cmocka_unit_test(test_copy_one_thread_small_chunks),
        cmocka_unit_test(test_copy_many_threads),
        cmocka_unit_test(test_copy_refuses_small_target_and_bad_params),
        cmocka_unit_test(test_copy_interrupted),
    };

    return cmocka_run_group_tests(tests, test_setup_tmpdir, test_teardown_tmpdir);
}
