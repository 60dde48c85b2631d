/* SPDX-License-Identifier: MIT */
/* The qcow2 format: header validation (every refusal), tables, create options, check, chains. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdisk/vdisk.h"
#include "testutil.h"

#define KiB 1024ull
#define MiB (1024 * 1024ull)
#define CS  65536ull

static void poke(const char *path, uint64_t off, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY);

    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, p, n, (off_t)off), (ssize_t)n);
    close(fd);
}

static void poke64(const char *path, uint64_t off, uint64_t v)
{
    v = htobe64(v);
    poke(path, off, &v, 8);
}

static void poke32(const char *path, uint64_t off, uint32_t v)
{
    v = htobe32(v);
    poke(path, off, &v, 4);
}

static void poke16(const char *path, uint64_t off, uint16_t v)
{
    v = htobe16(v);
    poke(path, off, &v, 2);
}

static uint64_t peek64(const char *path, uint64_t off)
{
    uint64_t v = 0;
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &v, 8, (off_t)off), 8);
    close(fd);
    return be64toh(v);
}

/* Open with OPTIONS must fail with -ERR and a message containing WHAT. */
static void open_opts_fails(const char *path, unsigned flags, const char *options, int err,
                            const char *what)
{
    struct vdisk_image *img = NULL;
    int r = vdisk_open(path, "qcow2", flags, options, &img);

    if (r != -err || !strstr(vdisk_last_error(), what))
        fail_msg("%s: got %d '%s', want %d containing '%s'", path, r, vdisk_last_error(), -err,
                 what);
}

/* Open must fail with -ERR and a message containing WHAT. */
static void open_fails(const char *path, unsigned flags, int err, const char *what)
{
    open_opts_fails(path, flags, NULL, err, what);
}

/* A fresh 16 MiB image with data in its first clusters; layout: header,
 * reftable (cluster 1), refcount block (2), L1 (3), then L2 and data. */
static char *fresh(void **state, const char *name, const char *opts)
{
    char *path = test_path(*state, name);
    struct vdisk_image *img;
    char buf[8192];

    unlink(path);
    assert_int_equal(vdisk_create(path, "qcow2", 16 * MiB, opts), 0);
    assert_int_equal(vdisk_open(path, "qcow2", 0, NULL, &img), 0);
    memset(buf, 0x5a, sizeof(buf));
    assert_int_equal(vdisk_write(img, buf, sizeof(buf), 0, 0), 0);
    assert_int_equal(vdisk_close(img), 0);
    return path;
}

static void test_roundtrip(void **state)
{
    char *path = test_path(*state, "rt.qcow2");
    struct vdisk_image *img;
    struct vdisk_info info;
    struct vdisk_check_result res;
    char *buf = malloc(300 * KiB), *back = malloc(300 * KiB);

    assert_int_equal(vdisk_create(path, "qcow2", 64 * MiB, NULL), 0);
    assert_int_equal(vdisk_create(path, "qcow2", 64 * MiB, NULL), -EEXIST);
    for (size_t i = 0; i < 300 * KiB; i++)
        buf[i] = (char)(i * 7 + i / 4096);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &img), 0);
    assert_int_equal(vdisk_get_size(img), 64 * MiB);
    assert_int_equal(vdisk_write(img, buf, 300 * KiB, 3 * CS - 1000, 0), 0);
    assert_int_equal(vdisk_read(img, back, 300 * KiB, 3 * CS - 1000), 0);
    assert_memory_equal(buf, back, 300 * KiB);
    assert_int_equal(vdisk_close(img), 0);
    assert_int_equal(vdisk_open(path, NULL, VDISK_OPEN_RDONLY, NULL, &img), 0);
    memset(back, 0, 300 * KiB);
    assert_int_equal(vdisk_read(img, back, 300 * KiB, 3 * CS - 1000), 0);
    assert_memory_equal(buf, back, 300 * KiB);
    assert_int_equal(vdisk_get_info(img, &info), 0);
    assert_string_equal(info.format, "qcow2");
    assert_int_equal(info.cluster_size, CS);
    assert_null(info.backing_file);
    assert_false(info.dirty);
    assert_int_equal(vdisk_check(img, 0, &res), 0);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(res.leaks, 0);
    assert_int_equal(res.allocated_clusters, 6);
    assert_int_equal(res.total_clusters, 1024);
    assert_int_equal(vdisk_write(img, buf, 1, 0, 0), -EROFS);
    assert_int_equal(vdisk_close(img), 0);
    free(buf);
    free(back);
    free(path);
}

struct hdr_case {
    uint64_t off;
    int width; /* 8, 16, 32 or 64 bits */
    uint64_t value;
    int err;
    const char *what;
};

static void test_header_errors(void **state)
{
    static const struct hdr_case cases[] = {
        {0, 32, 0x12345678, EINVAL, "bad magic"},
        {4, 32, 4, ENOTSUP, "version 4"},
        {20, 32, 8, EINVAL, "cluster_bits 8"},
        {20, 32, 22, EINVAL, "cluster_bits 22"},
        {24, 64, 1ull << 63, EFBIG, "virtual size"},
        {24, 64, 1ull << 60, EINVAL, "too small for"},
        {32, 32, 1, ENOTSUP, "encrypted"},
        {36, 32, 0, EINVAL, "too small for"},
        {36, 32, 0x10000000, EFBIG, "L1 table of"},
        {40, 64, 3 * CS + 512, EINVAL, "L1 table offset"},
        {40, 64, 1ull << 40, EINVAL, "L1 table offset"},
        {48, 64, 0, EINVAL, "refcount table offset"},
        {48, 64, CS + 8, EINVAL, "refcount table offset"},
        {56, 32, 0, EINVAL, "refcount table offset"},
        {56, 32, 1000, EFBIG, "refcount table of"},
        {60, 32, 70000, EINVAL, "snapshots"},
        {72, 64, 1ull << 5, ENOTSUP, "unknown incompatible"},
        {72, 64, 1ull << 63, ENOTSUP, "unknown incompatible"},
        {72, 64, 1ull << 2, ENOTSUP, "external data"},
        {72, 64, 1ull << 3, ENOTSUP, "compression type"},
        {96, 32, 7, EINVAL, "refcount order"},
        {100, 32, 96, EINVAL, "header length"},
        {100, 32, 109, EINVAL, "header length"},
        {100, 32, 1 << 20, EINVAL, "header length"},
        {104, 8, 1, ENOTSUP, "compression type"},
        {8, 64, 512, EINVAL, "backing file name"}, /* size 0 */
    };
    char *path = fresh(state, "h.qcow2", NULL);
    char *work = test_path(*state, "hw.qcow2");
    char cmd[4096];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct hdr_case *c = &cases[i];

        snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", path, work);
        assert_int_equal(system(cmd), 0);
        switch (c->width) {
        case 8:
            poke(work, c->off, &c->value, 1);
            break;
        case 16:
            poke16(work, c->off, (uint16_t)c->value);
            break;
        case 32:
            poke32(work, c->off, (uint32_t)c->value);
            break;
        default:
            poke64(work, c->off, c->value);
        }
        open_fails(work, VDISK_OPEN_RDONLY, c->err, c->what);
    }

    /* snapshot table offset unaligned */
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", path, work);
    assert_int_equal(system(cmd), 0);
    poke32(work, 60, 1);
    poke64(work, 64, CS + 8);
    open_fails(work, VDISK_OPEN_RDONLY, EINVAL, "snapshot table offset");
    /* backing name too long, and past the header cluster */
    assert_int_equal(system(cmd), 0);
    poke64(work, 8, 512);
    poke32(work, 16, 5000);
    open_fails(work, VDISK_OPEN_RDONLY, EINVAL, "backing file name");
    assert_int_equal(system(cmd), 0);
    poke64(work, 8, CS - 4);
    poke32(work, 16, 100);
    open_fails(work, VDISK_OPEN_RDONLY, EINVAL, "backing file name");
    /* a header extension longer than the cluster */
    assert_int_equal(system(cmd), 0);
    poke32(work, 112, 0x12345678);
    poke32(work, 116, 0x100000);
    open_fails(work, VDISK_OPEN_RDONLY, EINVAL, "overruns");
    /* extended L2 needs 16 KiB clusters */
    free(path);
    path = fresh(state, "h4k.qcow2", "cluster_size=4096");
    poke64(path, 72, 1ull << 4);
    open_fails(path, VDISK_OPEN_RDONLY, EINVAL, "16 KiB");
    /* corrupt bit: read-only only */
    free(path);
    path = fresh(state, "hc.qcow2", NULL);
    poke64(path, 72, 1ull << 1);
    open_fails(path, 0, EACCES, "corrupt");
    {
        struct vdisk_image *img;
        char b[512];

        assert_int_equal(vdisk_open(path, "qcow2", VDISK_OPEN_RDONLY, NULL, &img), 0);
        assert_int_equal(vdisk_read(img, b, sizeof(b), 0), 0);
        assert_int_equal((unsigned char)b[0], 0x5a);
        vdisk_close(img);
    }
    free(path);
    free(work);
}

static void test_truncated(void **state)
{
    char *path = fresh(state, "t.qcow2", NULL);

    assert_int_equal(truncate(path, 50), 0);
    open_fails(path, VDISK_OPEN_RDONLY, EINVAL, "too small");
    free(path);
    path = fresh(state, "t2.qcow2", NULL);
    assert_int_equal(truncate(path, 3 * CS), 0); /* L1 at cluster 3 is gone */
    open_fails(path, VDISK_OPEN_RDONLY, EINVAL, "L1 table offset");
    free(path);
}

static void test_bad_tables(void **state)
{
    char *path = fresh(state, "b.qcow2", NULL);
    struct vdisk_image *img;
    char buf[512];
    uint64_t l2;

    /* L1 entry not cluster aligned: refused at open */
    l2 = peek64(path, 3 * CS);
    assert_int_not_equal(l2, 0);
    poke64(path, 3 * CS, l2 + 512);
    open_fails(path, VDISK_OPEN_RDONLY, EINVAL, "L1 entry 0");
    /* L1 entry past the end: the read fails, nothing crashes */
    poke64(path, 3 * CS, (1ull << 40) | (1ull << 63));
    assert_int_equal(vdisk_open(path, "qcow2", VDISK_OPEN_RDONLY, NULL, &img), 0);
    assert_int_equal(vdisk_read(img, buf, sizeof(buf), 0), -EIO);
    assert_non_null(strstr(vdisk_last_error(), "L2 table"));
    vdisk_close(img);
    /* L2 entry past the end of the file */
    poke64(path, 3 * CS, l2);
    poke64(path, l2 & 0x00fffffffffffe00ull, (1ull << 40) | (1ull << 63));
    assert_int_equal(vdisk_open(path, "qcow2", 0, NULL, &img), 0);
    assert_int_equal(vdisk_read(img, buf, sizeof(buf), 0), -EIO);
    assert_non_null(strstr(vdisk_last_error(), "invalid offset"));
    assert_int_equal(vdisk_write(img, buf, sizeof(buf), 0, 0), -EIO);
    vdisk_close(img);
    /* which marked the image corrupt: read-write opens are refused until repaired */
    assert_int_equal(peek64(path, 72) & 2, 2);
    open_fails(path, 0, EACCES, "marked corrupt");
    poke64(path, 72, 0);
    /* L2 entry pointing at the L1 table: reads may, writes must not go there */
    poke64(path, l2 & 0x00fffffffffffe00ull, (3 * CS) | (1ull << 63));
    assert_int_equal(vdisk_open(path, "qcow2", 0, NULL, &img), 0);
    memset(buf, 0x77, sizeof(buf));
    assert_int_equal(vdisk_write(img, buf, sizeof(buf), 0, 0), -EIO);
    vdisk_close(img);
    assert_int_equal(peek64(path, 3 * CS), l2); /* L1 intact */
    free(path);
    /* a refcount table entry pointing nowhere: a read-write open fails cleanly */
    path = fresh(state, "b2.qcow2", NULL);
    poke64(path, CS, (1ull << 40));
    open_fails(path, 0, EIO, "refcount block");
    free(path);
}

static void test_create_options(void **state)
{
    static const struct {
        const char *opts;
        uint64_t size;
        const char *what;
    } bad[] = {
        {"cluster_size=1000", 16 * MiB, "cluster_size"},
        {"cluster_size=256", 16 * MiB, "cluster_size"},
        {"cluster_size=4M", 16 * MiB, "cluster_size"},
        {"compat=2.0", 16 * MiB, "compat"},
        {"refcount_bits=3", 16 * MiB, "refcount_bits"},
        {"refcount_bits=128", 16 * MiB, "refcount_bits"},
        {"compat=0.10,refcount_bits=8", 16 * MiB, "compat=1.1"},
        {"compat=v2,lazy_refcounts=on", 16 * MiB, "compat=1.1"},
        {"extended_l2=on,cluster_size=4096", 16 * MiB, "16K"},
        {"compression_type=lz4", 16 * MiB, "compression_type"},
        {"preallocation=full", 16 * MiB, "preallocation"},
        {"lazy_refcounts=maybe", 16 * MiB, "lazy_refcounts"},
        {"backing_file=/nonexistent/x.qcow2", 16 * MiB, "backing file"},
        {"cluster_size=512", 1ull << 50, "L1 table"},
        {NULL, 16 * MiB + 100, "multiple of 512"},
        {NULL, 0, "greater than zero"},
        {"nonsense=1", 16 * MiB, "nonsense"},
    };
    char *path = test_path(*state, "c.qcow2");
    struct stat st;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r = vdisk_create(path, "qcow2", bad[i].size, bad[i].opts);

        if (r >= 0 || !strstr(vdisk_last_error(), bad[i].what))
            fail_msg("%s: got %d '%s', want an error about %s", bad[i].opts, r, vdisk_last_error(),
                     bad[i].what);
        assert_int_not_equal(stat(path, &st), 0); /* nothing half-made */
    }
    free(path);
}

/* Refcount of cluster IDX in a fresh image (16-bit refcounts, block at cluster 2). */
static void set_refcount(const char *path, uint64_t idx, uint16_t v)
{
    poke16(path, 2 * CS + 2 * idx, v);
}

static void test_check_repair(void **state)
{
    char *path = fresh(state, "k.qcow2", NULL);
    struct vdisk_image *img;
    struct vdisk_check_result res;
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    /* a leaked cluster at the end of the file */
    assert_int_equal(truncate(path, st.st_size + CS), 0);
    set_refcount(path, (uint64_t)st.st_size / CS, 1);
    /* and a corruption: the L1 table's refcount is 0 */
    set_refcount(path, 3, 0);
    assert_int_equal(vdisk_open(path, NULL, VDISK_OPEN_RDONLY, NULL, &img), 0);
    assert_int_equal(vdisk_check(img, 0, &res), 0);
    assert_int_equal(res.leaks, 1);
    assert_int_equal(res.corruptions, 1);
    assert_int_equal(vdisk_check(img, VDISK_CHECK_REPAIR_LEAKS, &res), -EROFS);
    vdisk_close(img);
    open_fails(path, 0, EIO, "L1 table in cluster 3 has refcount 0"); /* data would land there */
    assert_int_equal(vdisk_open(path, NULL, VDISK_OPEN_REPAIR, NULL, &img), 0);
    assert_int_equal(vdisk_check(img, VDISK_CHECK_REPAIR_LEAKS, &res), 0);
    assert_int_equal(res.leaks_fixed, 1);
    assert_int_equal(res.corruptions_fixed, 0);
    assert_int_equal(vdisk_check(img, 0, &res), 0);
    assert_int_equal(res.leaks, 0);
    assert_int_equal(res.corruptions, 1);
    assert_int_equal(vdisk_check(img, VDISK_CHECK_REPAIR_ALL, &res), 0);
    assert_int_equal(res.corruptions_fixed, 1);
    assert_int_equal(vdisk_check(img, 0, &res), 0);
    assert_int_equal(res.corruptions + res.leaks, 0);
    vdisk_close(img);
    free(path);
}

static void test_dirty_rebuild(void **state)
{
    char *path = fresh(state, "d.qcow2", "lazy_refcounts=on");
    struct vdisk_image *img;
    struct vdisk_check_result res;
    struct vdisk_info info;

    /* dirty, with a refcount that is wrong */
    poke64(path, 72, 1);
    set_refcount(path, 3, 0);
    assert_int_equal(vdisk_open(path, NULL, VDISK_OPEN_RDONLY, NULL, &img), 0);
    assert_int_equal(vdisk_get_info(img, &info), 0);
    assert_true(info.dirty);
    vdisk_close(img);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &img), 0); /* rebuilds */
    assert_int_equal(peek64(path, 72) & 1, 0);
    assert_int_equal(vdisk_check(img, 0, &res), 0);
    assert_int_equal(res.corruptions + res.leaks, 0);
    vdisk_close(img);
    free(path);
}

static void test_backing_cycle(void **state)
{
    char *a = fresh(state, "a.qcow2", NULL), *b = test_path(*state, "b.qcow2");
    char opts[256], buf[512];
    struct vdisk_image *img;
    struct vdisk_info info;

    snprintf(opts, sizeof(opts), "backing_file=a.qcow2,backing_fmt=qcow2");
    assert_int_equal(vdisk_create(b, "qcow2", 0, NULL), -EINVAL);
    assert_int_equal(vdisk_create(b, "qcow2", 0, opts), 0); /* size of the backing file */
    assert_int_equal(vdisk_open(b, NULL, VDISK_OPEN_RDONLY, NULL, &img), 0);
    assert_int_equal(vdisk_get_size(img), 16 * MiB);
    assert_int_equal(vdisk_read(img, buf, sizeof(buf), 0), 0);
    assert_int_equal((unsigned char)buf[0], 0x5a);
    assert_int_equal(vdisk_get_info(img, &info), 0);
    assert_string_equal(info.backing_file, "a.qcow2");
    assert_string_equal(info.backing_format, "qcow2");
    vdisk_close(img);
    /* point a back at b: a -> b -> a */
    poke(a, 1024, "b.qcow2", 7);
    poke64(a, 8, 1024);
    poke32(a, 16, 7);
    open_fails(b, VDISK_OPEN_RDONLY, ELOOP, "cycle");
    /* a names b with no format: never probed; stated by the user, the loop shows */
    open_fails(a, VDISK_OPEN_RDONLY, EINVAL, "no stated format");
    open_opts_fails(a, VDISK_OPEN_RDONLY, "backing_fmt=qcow2", ELOOP, "cycle");
    /* a missing backing file */
    poke(a, 1024, "zz.qcow2", 8);
    poke32(a, 16, 8);
    open_fails(a, VDISK_OPEN_RDONLY, ENOENT, "backing file");
    free(a);
    free(b);
}

static void test_discard_zero_status(void **state)
{
    char *path = test_path(*state, "z.qcow2");
    struct vdisk_image *img;
    struct vdisk_extent e;
    char *buf = malloc(4 * CS), *back = malloc(4 * CS);
    struct stat st1, st2;

    assert_int_equal(vdisk_create(path, "qcow2", 16 * MiB, NULL), 0);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &img), 0);
    memset(buf, 0x33, 4 * CS);
    assert_int_equal(vdisk_write(img, buf, 4 * CS, 4 * CS, 0), 0);
    assert_int_equal(vdisk_block_status(img, 0, 16 * MiB, &e), 0);
    assert_int_equal(e.length, 4 * CS);
    assert_int_equal(e.flags, VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO);
    assert_int_equal(vdisk_block_status(img, 4 * CS, 16 * MiB - 4 * CS, &e), 0);
    assert_int_equal(e.length, 4 * CS);
    assert_int_equal(e.flags, 0);
    assert_int_equal(vdisk_flush(img), 0);
    assert_int_equal(stat(path, &st1), 0);
    /* discard two clusters: holes, zeroes, and the space goes back */
    assert_int_equal(vdisk_discard(img, 5 * CS, 2 * CS), 0);
    assert_int_equal(vdisk_block_status(img, 5 * CS, 2 * CS, &e), 0);
    assert_int_equal(e.flags, VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO);
    assert_int_equal(vdisk_read(img, back, 2 * CS, 5 * CS), 0);
    memset(buf, 0, 2 * CS);
    assert_memory_equal(back, buf, 2 * CS);
    assert_int_equal(vdisk_flush(img), 0);
    assert_int_equal(stat(path, &st2), 0);
    assert_true(st2.st_blocks < st1.st_blocks);
    /* write zeroes: a zero cluster, unaligned edges written */
    assert_int_equal(vdisk_write_zeroes(img, 4 * CS + 100, CS, 0), 0);
    assert_int_equal(vdisk_read(img, back, 2 * CS, 4 * CS), 0);
    assert_int_equal((unsigned char)back[99], 0x33);
    assert_int_equal(back[100], 0);
    assert_int_equal(back[CS + 99], 0);
    assert_int_equal(vdisk_write_zeroes(img, 7 * CS, CS, VDISK_ZERO_NO_FALLBACK), 0);
    assert_int_equal(vdisk_block_status(img, 7 * CS, CS, &e), 0);
    assert_int_equal(e.flags, VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO);
    assert_int_equal(vdisk_write_zeroes(img, 7 * CS + 1, 10, VDISK_ZERO_NO_FALLBACK), -ENOTSUP);
    vdisk_close(img);
    free(buf);
    free(back);
    free(path);
}

struct thr {
    struct vdisk_image *img;
    int id;
    int err;
};

/* Each thread writes and reads back its own interleaved 4k blocks. */
static void *worker(void *arg)
{
    struct thr *t = arg;
    char buf[4096], back[4096];

    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 200; i++) {
            uint64_t off = ((uint64_t)i * 8 + t->id) * 4096;

            memset(buf, t->id * 16 + round, sizeof(buf));
            if (vdisk_write(t->img, buf, sizeof(buf), off, 0) < 0 ||
                vdisk_read(t->img, back, sizeof(back), off) < 0 || memcmp(buf, back, sizeof(buf)))
                t->err++;
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    char *path = test_path(*state, "th.qcow2");
    struct vdisk_image *img;
    struct vdisk_check_result res;
    pthread_t th[8];
    struct thr t[8];

    setenv("VDISK_QCOW2_L2_CACHE", "4K", 1); /* two tables: evictions all the time */
    assert_int_equal(vdisk_create(path, "qcow2", 16 * MiB, "cluster_size=4096"), 0);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &img), 0);
    for (int i = 0; i < 8; i++) {
        t[i] = (struct thr){img, i, 0};
        pthread_create(&th[i], NULL, worker, &t[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(t[i].err, 0);
    }
    assert_int_equal(vdisk_check(img, 0, &res), 0);
    assert_int_equal(res.corruptions + res.leaks, 0);
    assert_int_equal(vdisk_close(img), 0);
    unsetenv("VDISK_QCOW2_L2_CACHE");
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_header_errors, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_truncated, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_bad_tables, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_create_options, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_check_repair, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_dirty_rebuild, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_backing_cycle, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_discard_zero_status, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_threads, test_setup_tmpdir, test_teardown_tmpdir),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
