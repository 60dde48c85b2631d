/* SPDX-License-Identifier: MIT */
/* libvdisk with the raw format: every operation and its error paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdisk/vdisk.h"
#include "testutil.h"

#define MiB (1024 * 1024ull)

static void test_create_sparse(void **state)
{
    char *path = test_path(*state, "a.raw");
    struct stat st;

    assert_int_equal(vdisk_create(path, "raw", 64 * MiB, NULL), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 64 * MiB);
    assert_true(st.st_blocks * 512 < (off_t)MiB);
    /* a second create must not clobber it */
    assert_int_equal(vdisk_create(path, "raw", MiB, NULL), -EEXIST);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 64 * MiB);
    free(path);
}

static void test_create_4tib_sparse(void **state)
{
    char *path = test_path(*state, "big.raw");
    struct vdisk_image *img;
    char buf[512] = "end";

    assert_int_equal(vdisk_create(path, "raw", 4ull << 40, NULL), 0);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &img), 0);
    assert_int_equal(vdisk_get_size(img), 4ull << 40);
    assert_int_equal(vdisk_write(img, buf, sizeof(buf), (4ull << 40) - 512, 0), 0);
    memset(buf, 0, sizeof(buf));
    assert_int_equal(vdisk_read(img, buf, sizeof(buf), (4ull << 40) - 512), 0);
    assert_string_equal(buf, "end");
    assert_int_equal(vdisk_close(img), 0);
    free(path);
}

static void test_create_errors(void **state)
{
    char *path = test_path(*state, "bad.raw");

    assert_int_equal(vdisk_create(path, "raw", 0, NULL), -EINVAL);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(vdisk_create(path, "nosuchformat", MiB, NULL), -EINVAL);
    assert_non_null(strstr(vdisk_last_error(), "nosuchformat"));
    assert_int_equal(vdisk_create(path, "raw", UINT64_MAX, NULL), -EFBIG);
    assert_int_equal(vdisk_create(path, "raw", MiB, "bogus=1"), -EINVAL);
    assert_non_null(strstr(vdisk_last_error(), "bogus"));
    assert_int_equal(vdisk_create(path, "raw", MiB, "preallocation=sometimes"), -EINVAL);
    assert_int_equal(access(path, F_OK), -1); /* nothing half-made left */
    assert_int_equal(vdisk_create(path, "iso", MiB, NULL), -ENOTSUP);
    free(path);
}

static void test_create_preallocated(void **state)
{
    char *path = test_path(*state, "full.raw");
    struct stat st;

    assert_int_equal(vdisk_create(path, "raw", 4 * MiB, "preallocation=falloc"), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_blocks * 512 >= (off_t)(4 * MiB));
    free(path);
}

static void test_read_write_roundtrip(void **state)
{
    char *path = test_path(*state, "rw.raw");
    struct vdisk_image *img;
    uint8_t *out = malloc(MiB), *in = malloc(MiB);

    for (size_t i = 0; i < MiB; i++)
        out[i] = (uint8_t)(i * 7 + 3);
    assert_int_equal(vdisk_create(path, "raw", 8 * MiB, NULL), 0);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &img), 0);
    /* unaligned offset and length */
    assert_int_equal(vdisk_write(img, out, MiB - 3, 12345, VDISK_WRITE_FUA), 0);
    assert_int_equal(vdisk_read(img, in, MiB - 3, 12345), 0);
    assert_memory_equal(in, out, MiB - 3);
    /* untouched bytes read as zero */
    assert_int_equal(vdisk_read(img, in, 4096, 4 * MiB), 0);
    for (int i = 0; i < 4096; i++)
        assert_int_equal(in[i], 0);
    assert_int_equal(vdisk_flush(img), 0);
    assert_int_equal(vdisk_close(img), 0);

    /* reopen with direct I/O and read the same */
    assert_int_equal(vdisk_open(path, "raw", VDISK_OPEN_DIRECT, NULL, &img), 0);
    assert_int_equal(vdisk_read(img, in, MiB - 3, 12345), 0);
    assert_memory_equal(in, out, MiB - 3);
    assert_int_equal(vdisk_write(img, out, 4096, 4096, 0), 0); /* aligned: O_DIRECT path */
    assert_int_equal(vdisk_read(img, in, 4096, 4096), 0);
    assert_memory_equal(in, out, 4096);
    assert_int_equal(vdisk_close(img), 0);
    free(out);
    free(in);
    free(path);
}

static void test_bounds(void **state)
{
    char *path = test_path(*state, "b.raw");
    struct vdisk_image *img;
    char buf[4096];
    struct vdisk_extent ext;

    assert_int_equal(vdisk_create(path, "raw", MiB, NULL), 0);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &img), 0);
    assert_int_equal(vdisk_read(img, buf, 1, MiB), -ENOSPC);
    assert_int_equal(vdisk_read(img, buf, sizeof(buf), MiB - 1), -ENOSPC);
    assert_int_equal(vdisk_write(img, buf, 2, UINT64_MAX, 0), -ENOSPC);
    assert_int_equal(vdisk_discard(img, MiB - 512, UINT64_MAX), -ENOSPC);
    assert_int_equal(vdisk_write_zeroes(img, UINT64_MAX - 1, 2, 0), -ENOSPC);
    assert_int_equal(vdisk_block_status(img, MiB, 1, &ext), -ENOSPC);
    assert_int_equal(vdisk_block_status(img, 0, 0, &ext), -EINVAL);
    assert_non_null(strstr(vdisk_last_error(), path));
    /* zero-length requests at the end are fine */
    assert_int_equal(vdisk_read(img, buf, 0, MiB), 0);
    assert_int_equal(vdisk_close(img), 0);
    free(path);
}

static void test_read_only(void **state)
{
    char *path = test_path(*state, "ro.raw");
    struct vdisk_image *img;
    char buf[512] = {1};

    assert_int_equal(vdisk_create(path, "raw", MiB, NULL), 0);
    assert_int_equal(vdisk_open(path, NULL, VDISK_OPEN_RDONLY, NULL, &img), 0);
    assert_true(vdisk_is_read_only(img));
    assert_int_equal(vdisk_write(img, buf, 512, 0, 0), -EROFS);
    assert_int_equal(vdisk_discard(img, 0, 512), -EROFS);
    assert_int_equal(vdisk_write_zeroes(img, 0, 512, 0), -EROFS);
    assert_int_equal(vdisk_read(img, buf, 512, 0), 0);
    assert_int_equal(vdisk_close(img), 0);
    free(path);
}

static void test_discard_and_block_status(void **state)
{
    char *path = test_path(*state, "d.raw");
    struct vdisk_image *img;
    struct vdisk_extent ext;
    struct vdisk_info info;
    uint8_t *buf = malloc(4 * MiB);
    uint64_t before;

    memset(buf, 0xab, 4 * MiB);
    assert_int_equal(vdisk_create(path, "raw", 8 * MiB, NULL), 0);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &img), 0);
    assert_int_equal(vdisk_write(img, buf, 4 * MiB, 0, 0), 0);
    assert_int_equal(vdisk_flush(img), 0);
    assert_int_equal(vdisk_block_status(img, 0, 8 * MiB, &ext), 0);
    assert_int_equal(ext.flags, 0);
    assert_int_equal(ext.length, 4 * MiB);
    assert_int_equal(vdisk_block_status(img, 4 * MiB, 4 * MiB, &ext), 0);
    assert_int_equal(ext.flags, VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO);
    assert_int_equal(ext.length, 4 * MiB);

    assert_int_equal(vdisk_get_info(img, &info), 0);
    before = info.allocated_bytes;
    assert_true(before >= 4 * MiB);
    assert_int_equal(vdisk_discard(img, MiB, 2 * MiB), 0);
    assert_int_equal(vdisk_get_info(img, &info), 0);
    assert_true(info.allocated_bytes <= before - 2 * MiB);
    assert_int_equal(vdisk_read(img, buf, MiB, MiB), 0);
    for (size_t i = 0; i < MiB; i++)
        assert_int_equal(buf[i], 0);

    /* write zeroes without unmap keeps the range allocated but zero */
    memset(buf, 0xcd, MiB);
    assert_int_equal(vdisk_write(img, buf, MiB, 0, 0), 0);
    assert_int_equal(vdisk_write_zeroes(img, 4096, 8192, 0), 0);
    assert_int_equal(vdisk_read(img, buf, 16384, 0), 0);
    assert_int_equal(buf[4095], 0xcd);
    assert_int_equal(buf[4096], 0);
    assert_int_equal(buf[12287], 0);
    assert_int_equal(buf[12288], 0xcd);
    assert_int_equal(vdisk_write_zeroes(img, 0, MiB, VDISK_ZERO_MAY_UNMAP), 0);
    assert_int_equal(vdisk_block_status(img, 0, MiB, &ext), 0);
    assert_true(ext.flags & VDISK_EXTENT_ZERO);
    assert_int_equal(vdisk_close(img), 0);
    free(buf);
    free(path);
}

static void test_lock(void **state)
{
    char *path = test_path(*state, "l.raw");
    struct vdisk_image *a, *b;

    assert_int_equal(vdisk_create(path, "raw", MiB, NULL), 0);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &a), 0);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &b), -EBUSY);
    assert_non_null(strstr(vdisk_last_error(), "in use"));
    assert_int_equal(vdisk_open(path, NULL, VDISK_OPEN_RDONLY, NULL, &b), -EBUSY);
    assert_int_equal(vdisk_open(path, NULL, VDISK_OPEN_NOLOCK, NULL, &b), 0);
    assert_int_equal(vdisk_close(b), 0);
    assert_int_equal(vdisk_close(a), 0);
    /* readers share */
    assert_int_equal(vdisk_open(path, NULL, VDISK_OPEN_RDONLY, NULL, &a), 0);
    assert_int_equal(vdisk_open(path, NULL, VDISK_OPEN_RDONLY, NULL, &b), 0);
    assert_int_equal(vdisk_close(b), 0);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &b), -EBUSY);
    assert_int_equal(vdisk_close(a), 0);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &b), 0);
    assert_int_equal(vdisk_close(b), 0);
    free(path);
}

static void test_open_errors(void **state)
{
    char *missing = test_path(*state, "missing.raw");
    struct vdisk_image *img;

    assert_int_equal(vdisk_open(missing, NULL, 0, NULL, &img), -ENOENT);
    assert_non_null(strstr(vdisk_last_error(), missing));
    assert_int_equal(vdisk_open(*state, NULL, 0, NULL, &img), -EISDIR);
    assert_int_equal(vdisk_open("/dev/null", NULL, 0, NULL, &img), -EINVAL);
    assert_int_equal(vdisk_open(missing, "nosuch", 0, NULL, &img), -EINVAL);
    free(missing);
}

static void test_probe_iso(void **state)
{
    char *path = test_path(*state, "x.iso");
    uint8_t sector[2048] = {1, 'C', 'D', '0', '0', '1'};
    struct vdisk_image *img;
    const char *fmt;
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fseek(f, 32768, SEEK_SET), 0);
    assert_int_equal(fwrite(sector, 1, sizeof(sector), f), sizeof(sector));
    assert_int_equal(fclose(f), 0);
    assert_int_equal(vdisk_probe(path, &fmt), 0);
    assert_string_equal(fmt, "iso");
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &img), 0); /* falls back to read-only */
    assert_true(vdisk_is_read_only(img));
    assert_int_equal(vdisk_write(img, sector, 512, 0, 0), -EROFS);
    assert_int_equal(vdisk_close(img), 0);
    free(path);
}

static void test_parse_size(void **state)
{
    uint64_t v;

    (void)state;
    assert_int_equal(vdisk_parse_size("100", &v), 0);
    assert_int_equal(v, 100 * MiB);
    assert_int_equal(vdisk_parse_size("4T", &v), 0);
    assert_int_equal(v, 4ull << 40);
    assert_int_equal(vdisk_parse_size("2048", &v), 0); /* the seed wrapped here */
    assert_int_equal(v, 2048 * MiB);
    assert_int_equal(vdisk_parse_size("512K", &v), 0);
    assert_int_equal(v, 512 * 1024);
    assert_int_equal(vdisk_parse_size("1GiB", &v), 0);
    assert_int_equal(v, 1ull << 30);
    assert_int_equal(vdisk_parse_size("-1", &v), -EINVAL);
    assert_int_equal(vdisk_parse_size("", &v), -EINVAL);
    assert_int_equal(vdisk_parse_size("12X", &v), -EINVAL);
    assert_int_equal(vdisk_parse_size("1.5G", &v), 0); /* fractions, as qemu-img */
    assert_int_equal(v, 3ull << 29);
    assert_int_equal(vdisk_parse_size("0.5", &v), 0);
    assert_int_equal(v, MiB / 2);
    assert_int_equal(vdisk_parse_size("0.1K", &v), -EINVAL); /* not whole bytes */
    assert_int_equal(vdisk_parse_size("1.5B", &v), -EINVAL);
    assert_int_equal(vdisk_parse_size("0x10", &v), -EINVAL);
    assert_int_equal(vdisk_parse_size("1e3", &v), -EINVAL);
    assert_int_equal(vdisk_parse_size("1.", &v), -EINVAL);
    assert_int_equal(vdisk_parse_size("99999999999999999999", &v), -ERANGE);
    assert_int_equal(vdisk_parse_size("17179869184T", &v), -ERANGE);
    assert_int_equal(vdisk_parse_size("17592186044416", &v), -ERANGE); /* MiB overflow */
}

/* The first bytes of a qcow2 header (magic, version 3): enough to probe as qcow2. */
static const uint8_t qcow2_magic[4] = {'Q', 'F', 'I', 0xfb}, qcow2_v3[4] = {0, 0, 0, 3};

/* A probed raw image refuses a write that would make it probe as qcow2; a stated one does not. */
static void test_probe_guard(void **state)
{
    char *path = test_path(*state, "g.raw");
    uint8_t hdr[8], buf[4096] = {1};
    struct vdisk_image *img;

    memcpy(hdr, qcow2_magic, 4);
    memcpy(hdr + 4, qcow2_v3, 4);
    assert_int_equal(vdisk_create(path, "raw", MiB, NULL), 0);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &img), 0);
    assert_int_equal(vdisk_write(img, hdr, sizeof(hdr), 0, 0), -EPERM);
    assert_non_null(strstr(vdisk_last_error(), "look like a qcow2"));
    assert_int_equal(vdisk_write_zeroes(img, 0, sizeof(buf), 0), 0); /* zeroes make no header */
    assert_int_equal(vdisk_write(img, buf, sizeof(buf), 0, 0), 0);   /* ordinary data */
    assert_int_equal(vdisk_write(img, qcow2_magic, 4, 0, 0), 0);     /* no version: still raw */
    assert_int_equal(vdisk_write(img, qcow2_v3, 4, 4, 0), -EPERM);   /* ... this would finish it */
    assert_int_equal(vdisk_write(img, hdr, sizeof(hdr), MiB - 8, 0), 0); /* not where probes look */
    assert_int_equal(vdisk_close(img), 0);
    assert_int_equal(vdisk_open(path, "raw", 0, NULL, &img), 0); /* stated: the user's call */
    assert_int_equal(vdisk_write(img, hdr, sizeof(hdr), 0, 0), 0);
    assert_int_equal(vdisk_close(img), 0);
    free(path);
}

/* Two writes racing into the probe window: each harmless, together a qcow2 header. */
struct racer {
    struct vdisk_image *img;
    const uint8_t *bytes;
    uint64_t off;
    atomic_int *gate;
    int result;
};

static void *racer_main(void *arg)
{
    struct racer *r = arg;

    atomic_fetch_sub(r->gate, 1);
    while (atomic_load(r->gate) > 0)
        ; /* both start at once */
    r->result = vdisk_write(r->img, r->bytes, 4, r->off, 0);
    return NULL;
}

static void test_probe_guard_race(void **state)
{
    char *path = test_path(*state, "race.raw");
    static const uint8_t zero[8];
    struct vdisk_image *img;
    int both = 0;

    assert_int_equal(vdisk_create(path, "raw", MiB, NULL), 0);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &img), 0);
    for (int round = 0; round < 2000; round++) {
        atomic_int gate = 2;
        struct racer a = {img, qcow2_magic, 0, &gate, 0}, b = {img, qcow2_v3, 4, &gate, 0};
        pthread_t ta, tb;

        assert_int_equal(vdisk_write(img, zero, sizeof(zero), 0, 0), 0);
        assert_int_equal(pthread_create(&ta, NULL, racer_main, &a), 0);
        assert_int_equal(pthread_create(&tb, NULL, racer_main, &b), 0);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        both += a.result == 0 && b.result == 0;
    }
    assert_int_equal(vdisk_close(img), 0);
    if (both)
        fail_msg("both halves of a qcow2 header got through in %d of 2000 rounds", both);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_sparse, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_create_4tib_sparse, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_create_errors, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_create_preallocated, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_read_write_roundtrip, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_bounds, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_read_only, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_discard_and_block_status, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_lock, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_open_errors, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_probe_iso, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test_setup_teardown(test_probe_guard, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_probe_guard_race, test_setup_tmpdir,
                                        test_teardown_tmpdir),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
