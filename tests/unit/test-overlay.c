/* SPDX-License-Identifier: MIT */
/*
 * Nodes over open nodes: slices (bounds, data at the right place, through a
 * qcow2 child), partition tables made by hand (MBR with an EBR chain that
 * loops, GPT CRCs), the snapshot overlay (base never written) and commit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "vdisk/vdisk.h"
#include "testutil.h"

#define MiB (1024 * 1024ull)

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* An MBR entry I (0-3) of sector S. */
static void mbr_entry(uint8_t *s, int i, uint8_t type, uint32_t lba, uint32_t count)
{
    uint8_t *e = s + 446 + 16 * i;

    e[4] = type;
    put32(e + 8, lba);
    put32(e + 12, count);
    s[510] = 0x55;
    s[511] = 0xaa;
}

/* A raw image of SIZE at PATH with SECTOR (512 bytes) written at LBA. */
static void write_sector(const char *path, const uint8_t *sector, uint64_t lba)
{
    struct vdisk_image *img;

    assert_int_equal(vdisk_open(path, "raw", 0, NULL, &img), 0);
    assert_int_equal(vdisk_write(img, sector, 512, lba * 512, 0), 0);
    assert_int_equal(vdisk_close(img), 0);
}

static void test_slice_bounds_and_data(void **state)
{
    char *path = test_path(*state, "s.qcow2");
    struct vdisk_image *img;
    uint8_t buf[4096], back[4096];

    assert_int_equal(vdisk_create(path, "qcow2", 8 * MiB, NULL), 0);
    assert_int_equal(vdisk_open(path, NULL, 0, NULL, &img), 0);
    assert_int_equal(vdisk_image_slice(img, 8 * MiB, 512), -ERANGE);
    assert_int_equal(vdisk_image_slice(img, 1 * MiB, 8 * MiB), -ERANGE);
    assert_int_equal(vdisk_image_slice(img, 1 * MiB, 0), -ERANGE);
    assert_int_equal(vdisk_image_slice(img, 1 * MiB, 2 * MiB), 0);
    assert_int_equal(vdisk_get_size(img), 2 * MiB);
    memset(buf, 0xab, sizeof(buf));
    assert_int_equal(vdisk_write(img, buf, sizeof(buf), 4096, 0), 0);
    assert_int_equal(vdisk_write(img, buf, sizeof(buf), 2 * MiB - 4096, 0), 0);
    assert_true(vdisk_write(img, buf, sizeof(buf), 2 * MiB - 2048, 0) < 0); /* past its end */
    assert_int_equal(vdisk_read(img, back, sizeof(back), 4096), 0);
    assert_memory_equal(buf, back, sizeof(buf));
    assert_int_equal(vdisk_close(img), 0);
    /* the whole image has the bytes at the slice's offset, nothing before it */
    assert_int_equal(vdisk_open(path, NULL, VDISK_OPEN_RDONLY, NULL, &img), 0);
    assert_int_equal(vdisk_read(img, back, sizeof(back), 1 * MiB + 4096), 0);
    assert_memory_equal(buf, back, sizeof(buf));
    assert_int_equal(vdisk_read(img, back, sizeof(back), 4096), 0);
    for (size_t i = 0; i < sizeof(back); i++)
        assert_int_equal(back[i], 0);
    assert_int_equal(vdisk_close(img), 0);
    free(path);
}

static void test_mbr_logical_loop(void **state)
{
    char *path = test_path(*state, "m.raw");
    struct vdisk_partition_table *t = malloc(sizeof(*t));
    struct vdisk_image *img;
    uint8_t s[512] = {0};

    assert_non_null(t);
    assert_int_equal(vdisk_create(path, "raw", 64 * MiB, NULL), 0);
    mbr_entry(s, 0, 0x83, 2048, 2048);
    mbr_entry(s, 1, 0x05, 8192, 65536);
    write_sector(path, s, 0);
    /* first EBR: logical 5, then a link to the second */
    memset(s, 0, sizeof(s));
    mbr_entry(s, 0, 0x83, 2048, 4096);
    mbr_entry(s, 1, 0x05, 16384, 8192);
    write_sector(path, s, 8192);
    /* second EBR: logical 6, and a link back to itself */
    memset(s, 0, sizeof(s));
    mbr_entry(s, 0, 0x82, 2048, 1024);
    mbr_entry(s, 1, 0x05, 16384, 8192);
    write_sector(path, s, 8192 + 16384);
    assert_int_equal(vdisk_open(path, "raw", VDISK_OPEN_RDONLY, NULL, &img), 0);
    assert_int_equal(vdisk_get_partitions(img, t), 0);
    assert_string_equal(t->label, "dos");
    assert_int_equal(t->count, 4);
    assert_int_equal(t->parts[2].number, 5);
    assert_int_equal(t->parts[2].start, (8192 + 2048) * 512ull);
    assert_int_equal(t->parts[3].number, 6);
    assert_int_equal(t->parts[3].start, (8192 + 16384 + 2048) * 512ull);
    assert_string_equal(t->parts[3].type, "82");
    assert_int_equal(vdisk_select_partition(img, 2), -EINVAL); /* the extended one */
    assert_int_equal(vdisk_select_partition(img, 7), -ENOENT);
    assert_int_equal(vdisk_select_partition(img, 6), 0);
    assert_int_equal(vdisk_get_size(img), 1024 * 512);
    assert_int_equal(vdisk_close(img), 0);
    free(t);
    free(path);
}

/* A GPT with one partition; CORRUPT breaks the entries' CRC in both copies. */
static void make_gpt(const char *path, bool corrupt)
{
    uint64_t sectors = 64 * MiB / 512;
    uint8_t h[512], ents[128 * 128] = {0}, pmbr[512] = {0};
    static const uint8_t type[16] = {0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47,
                                     0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4};
    struct vdisk_image *img;

    memcpy(ents, type, 16);
    ents[16] = 1;
    put64(ents + 32, 2048);
    put64(ents + 40, 4095);
    ents[56] = 'r';
    mbr_entry(pmbr, 0, 0xee, 1, (uint32_t)(sectors - 1));
    assert_int_equal(vdisk_open(path, "raw", 0, NULL, &img), 0);
    assert_int_equal(vdisk_write(img, pmbr, 512, 0, 0), 0);
    for (int copy = 0; copy < 2; copy++) {
        uint64_t me = copy ? sectors - 1 : 1, ents_lba = copy ? sectors - 33 : 2;

        memset(h, 0, sizeof(h));
        memcpy(h, "EFI PART", 8);
        put32(h + 8, 0x10000);
        put32(h + 12, 92);
        put64(h + 24, me);
        put64(h + 32, copy ? 1 : sectors - 1);
        put64(h + 40, 34);
        put64(h + 48, sectors - 34);
        h[56] = 0x42;
        put64(h + 72, ents_lba);
        put32(h + 80, 128);
        put32(h + 84, 128);
        put32(h + 88, (uint32_t)crc32(0, ents, sizeof(ents)) ^ (corrupt ? 1 : 0));
        put32(h + 16, (uint32_t)crc32(0, h, 92));
        assert_int_equal(vdisk_write(img, h, 512, me * 512, 0), 0);
        assert_int_equal(vdisk_write(img, ents, sizeof(ents), ents_lba * 512, 0), 0);
    }
    assert_int_equal(vdisk_close(img), 0);
}

static void test_gpt_crcs(void **state)
{
    char *path = test_path(*state, "g.raw");
    struct vdisk_partition_table *t = malloc(sizeof(*t));
    struct vdisk_image *img;

    assert_non_null(t);
    assert_int_equal(vdisk_create(path, "raw", 64 * MiB, NULL), 0);
    make_gpt(path, false);
    assert_int_equal(vdisk_open(path, "raw", VDISK_OPEN_RDONLY, NULL, &img), 0);
    assert_int_equal(vdisk_get_partitions(img, t), 0);
    assert_string_equal(t->label, "gpt");
    assert_int_equal(t->count, 1);
    assert_int_equal(t->parts[0].number, 1);
    assert_int_equal(t->parts[0].start, 2048 * 512ull);
    assert_int_equal(t->parts[0].size, 2048 * 512ull);
    assert_string_equal(t->parts[0].type, "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    assert_string_equal(t->parts[0].name, "r");
    assert_int_equal(vdisk_close(img), 0);
    make_gpt(path, true);
    assert_int_equal(vdisk_open(path, "raw", VDISK_OPEN_RDONLY, NULL, &img), 0);
    assert_int_equal(vdisk_get_partitions(img, t), -EINVAL);
    assert_non_null(strstr(vdisk_last_error(), "neither GPT header"));
    assert_int_equal(vdisk_close(img), 0);
    free(t);
    free(path);
}

static void test_snapshot_and_commit(void **state)
{
    char *base = test_path(*state, "b.raw"), *ov = test_path(*state, "o.qcow2");
    struct vdisk_image *img;
    uint8_t buf[65536], back[65536];
    uint64_t bytes = 0, runs = 0;
    char opts[4200];

    assert_int_equal(vdisk_create(base, "raw", 4 * MiB, NULL), 0);
    memset(buf, 0x5a, sizeof(buf));
    /* snapshot: writes land in the overlay, the base reads as before afterwards */
    assert_int_equal(vdisk_open_snapshot(base, "raw", 0, NULL, *state, &img), 0);
    assert_int_equal(vdisk_write(img, buf, sizeof(buf), MiB, 0), 0);
    assert_int_equal(vdisk_read(img, back, sizeof(back), MiB), 0);
    assert_memory_equal(buf, back, sizeof(buf));
    assert_int_equal(vdisk_allocated_in_top(img, &bytes, &runs), 0);
    assert_int_equal(bytes, 65536);
    assert_int_equal(runs, 1);
    assert_int_equal(vdisk_close(img), 0);
    assert_int_equal(vdisk_open(base, "raw", VDISK_OPEN_RDONLY, NULL, &img), 0);
    assert_int_equal(vdisk_read(img, back, sizeof(back), MiB), 0);
    for (size_t i = 0; i < sizeof(back); i++)
        assert_int_equal(back[i], 0);
    assert_int_equal(vdisk_close(img), 0);
    assert_int_equal(vdisk_open_snapshot(base, "raw", 0, NULL, "/nonexistent-dir", &img), -ENOENT);
    /* commit: the overlay's bytes reach the base */
    snprintf(opts, sizeof(opts), "backing_file=%s,backing_fmt=raw", base);
    assert_int_equal(vdisk_create(ov, "qcow2", 0, opts), 0);
    assert_int_equal(vdisk_open(ov, NULL, 0, NULL, &img), 0);
    assert_int_equal(vdisk_write(img, buf, sizeof(buf), 2 * MiB, 0), 0);
    assert_int_equal(vdisk_commit(img, &bytes), 0);
    assert_int_equal(bytes, 65536);
    assert_int_equal(vdisk_close(img), 0);
    assert_int_equal(vdisk_open(base, "raw", VDISK_OPEN_RDONLY, NULL, &img), 0);
    assert_int_equal(vdisk_read(img, back, sizeof(back), 2 * MiB), 0);
    assert_memory_equal(buf, back, sizeof(buf));
    assert_int_equal(vdisk_commit(img, NULL), -EINVAL); /* no backing file */
    assert_int_equal(vdisk_close(img), 0);
    free(base);
    free(ov);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_slice_bounds_and_data, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_mbr_logical_loop, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_gpt_crcs, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_snapshot_and_commit, test_setup_tmpdir,
                                        test_teardown_tmpdir),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
