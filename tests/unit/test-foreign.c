/* SPDX-License-Identifier: MIT */
/*
 * The probes of the formats libvdisk recognises but does not serve: each
 * signature found, short and truncated files handled (every buffer is
 * allocated to its exact length, so ASan sees any read past it), zeros and
 * plain data left to raw, and the image API refusing what they match.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk/vdisk.h"
#include "../../lib/format/foreign.h"
#include "testutil.h"

#define HEAD (64 * 1024)

/* A file's bytes, as probe_file() would hand them out, in exactly sized buffers. */
static const struct vdisk_foreign *probe_bytes(const uint8_t *file, size_t size)
{
    size_t head_len = size < HEAD ? size : HEAD;
    uint8_t *head = malloc(head_len ? head_len : 1), *tail = calloc(1, 512);
    const struct vdisk_foreign *f;

    assert_non_null(head);
    assert_non_null(tail);
    memcpy(head, file, head_len);
    if (size >= 512)
        memcpy(tail, file + size - 512, 512);
    f = vdisk_foreign_probe(head, head_len, tail, size);
    free(head);
    free(tail);
    return f;
}

/* A sample image: SIZE bytes, zero but for the signature. */
struct sample {
    const char *what;
    const char *name; /* the format it must be found as */
    size_t size;
    size_t off; /* where the signature goes; SIZE - n means from the end */
    const char *sig;
    size_t sig_len;
    size_t min_len; /* a head-only signature: shorter files never match */
};

#define S(s) s, sizeof(s) - 1

static const struct sample samples[] = {
    {"vhd dynamic", "vpc", 4096, 0, S("conectix\0\0\0\2"), 8},
    {"vhd fixed", "vpc", 4096, 4096 - 512, S("conectix\0\0\0\2"), 0},
    {"vhd fixed, 511-byte footer", "vpc", 4095, 4095 - 511, S("conectix\0\0\0\2"), 0},
    {"qed", "qed", 4096, 0, S("QED\0"), 4},
    {"parallels", "parallels", 4096, 0, S("WithoutFreeSpace\2\0\0\0"), 16},
    {"parallels ext", "parallels", 4096, 0, S("WithouFreSpacExt\2\0\0\0"), 16},
    {"dmg", "dmg", 8192, 8192 - 512, S("koly\0\0\0\4\0\0\2\0"), 0},
    {"cloop", "cloop", 4096, 0,
     S("#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"),
     23},
    {"bochs", "bochs", 1024, 0, S("Bochs Virtual HD Image\0\0\0\0\0\0\0\0\0\0Redolog\0"), 22},
    {"luks version 3", "luks", 4096, 0, S("LUKS\xba\xbe\0\3"), 6}, /* luks.c serves 1 and 2 */
    {"qcow version 1", "qcow", 4096, 0, S("QFI\xfb\0\0\0\1"), 8},
};

/* The sample's bytes, malloc'ed. */
static uint8_t *sample_bytes(const struct sample *s)
{
    uint8_t *b = calloc(1, s->size);

    assert_non_null(b);
    memcpy(b + s->off, s->sig, s->sig_len);
    return b;
}

static void test_each_signature(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        const struct sample *s = &samples[i];
        uint8_t *b = sample_bytes(s);
        const struct vdisk_foreign *f = probe_bytes(b, s->size);

        if (!f || strcmp(f->name, s->name) != 0)
            fail_msg("%s: found as %s, not %s", s->what, f ? f->name : "nothing", s->name);
        assert_ptr_equal(vdisk_foreign_find(s->name), f);
        assert_non_null(f->title);
        free(b);
    }
}

/* Every prefix of every sample: no read past the buffers, no match on a cut signature. */
static void test_truncated(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        const struct sample *s = &samples[i];
        uint8_t *b = sample_bytes(s);

        for (size_t len = 0; len <= s->size; len++) {
            const struct vdisk_foreign *f = probe_bytes(b, len);

            if (f && strcmp(f->name, s->name) != 0)
                fail_msg("%s cut to %zu bytes: found as %s", s->what, len, f->name);
            if (s->min_len && len < s->min_len && f)
                fail_msg("%s cut to %zu bytes (signature %zu): still %s", s->what, len, s->min_len,
                         f->name);
            if (s->min_len && len >= s->min_len && !f)
                fail_msg("%s cut to %zu bytes: signature whole but not found", s->what, len);
        }
        free(b);
    }
}

/* Zeros of any length are raw, also with no buffers at all. */
static void test_zeros(void **state)
{
    static const size_t sizes[] = {0, 1, 4, 8, 68, 511, 512, 513, 4096, HEAD, HEAD + 1, 1 << 20};
    uint8_t *zero = calloc(1, 1 << 20);

    (void)state;
    assert_non_null(zero);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        assert_null(probe_bytes(zero, sizes[i]));
    assert_null(vdisk_foreign_probe(NULL, 0, NULL, 0));
    assert_null(vdisk_foreign_probe(NULL, 0, NULL, 1 << 20));
    free(zero);
}

/* Text and data that only look a little like a signature stay raw. */
static void test_near_misses(void **state)
{
    static const struct {
        const char *text;
        size_t len;
    } misses[] = {
        {S("#")}, /* QEMU's cloop probe matches any prefix of its preamble */
        {S("#!/bin/sh\n")},
        {S("#!/bin/sh\necho hello\n")},
        {S("#!/bin/sh\n#V2.0 Forma")}, /* one byte short */
        {S("# a comment\nkey=value\n")},
        {S("version=4\n")},
        {S("version=1x\n")},
        {S("# Disk Descriptor\n")},
        {S("text\n# Disk DescriptorFile\n")}, /* the title must come first */
        {S("conectiX")},
        {S("QFI\xfb\0\0\0\2")}, /* qcow2 and qcow3: served natively */
        {S("QFI\xfb\0\0\0\3")},
        {S("Bochs Virtual HD Imag")},
        {S("WithoutFreeSpac")},
        {S("LUKS\xba")},
        {S("LUKS\xba\xbe\0\1")}, /* LUKS1 and LUKS2: served natively */
        {S("LUKS\xba\xbe\0\2")},
        {S("\xeb\x63\x90MSDOS5.0\0\2")}, /* a boot sector */
    };

    (void)state;
    for (size_t i = 0; i < sizeof(misses) / sizeof(misses[0]); i++) {
        const struct vdisk_foreign *f = probe_bytes((const uint8_t *)misses[i].text, misses[i].len);

        if (f)
            fail_msg("\"%s\" (%zu bytes): found as %s", misses[i].text, misses[i].len, f->name);
    }
}

/* Random bytes of random lengths: no crash, no read past the buffers. */
static void test_random(void **state)
{
    uint8_t *b = malloc(HEAD + 4096);

    (void)state;
    assert_non_null(b);
    srand(1);
    for (int round = 0; round < 2000; round++) {
        size_t len = (size_t)rand() % (round < 1000 ? 600 : HEAD + 4096);

        for (size_t i = 0; i < len; i++)
            b[i] = (uint8_t)rand();
        /* printable text exercises the descriptor scan */
        if (round % 2)
            for (size_t i = 0; i < len; i++)
                b[i] = " #\n\rversion=1DiskDescriptorFile"[b[i] % 31];
        (void)probe_bytes(b, len);
    }
    free(b);
}

static void test_find(void **state)
{
    static const char *const names[] = {"vpc",   "qed",   "parallels", "dmg",
                                        "cloop", "bochs", "luks",      "qcow"};

    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        assert_non_null(vdisk_foreign_find(names[i]));
        assert_string_equal(vdisk_foreign_find(names[i])->name, names[i]);
    }
    assert_null(vdisk_foreign_find("raw"));
    assert_null(vdisk_foreign_find("qcow2"));
    assert_null(vdisk_foreign_find("iso"));
    assert_null(vdisk_foreign_find("vdi")); /* served: a driver of its own */
    assert_null(vdisk_foreign_find(NULL));
    assert_string_equal(vdisk_foreign_find_ext("vhd")->name, "vpc");
    assert_null(vdisk_foreign_find_ext("VHDX")); /* served now: lib/format/vhdx*.c */
    assert_string_equal(vdisk_foreign_find_ext("hdd")->name, "parallels");
    assert_null(vdisk_foreign_find_ext("img"));
    assert_null(vdisk_foreign_find_ext("qcow2"));
    assert_null(vdisk_foreign_find_ext(""));
}

/* Write LEN bytes of BUF to DIR/NAME, a file of SIZE bytes. */
static char *write_file(void **state, const char *name, const void *buf, size_t len, off_t off,
                        off_t size)
{
    char *path = test_path(*state, name);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);

    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, size), 0);
    assert_int_equal(pwrite(fd, buf, len, off), (ssize_t)len);
    close(fd);
    return path;
}

/* Through the image API: foreign files are refused by name, raw stays raw, -f raw still works. */
static void test_image_api(void **state)
{
    char *vhdx = write_file(state, "a.vhdx", "vhdxfile", 8, 0, 1 << 20);
    char *fixed = write_file(state, "b.vhd", "conectix", 8, (1 << 20) - 512, 1 << 20);
    char *plain = write_file(state, "c.img", "\x55\xaa", 2, 510, 1 << 20);
    char *nofile = test_path(*state, "new.qed");
    struct vdisk_image *img;
    const char *fmt;

    /* VHDX is served now: a signature without headers is a broken VHDX, said so */
    assert_int_equal(vdisk_probe(vhdx, &fmt), 0);
    assert_string_equal(fmt, "vhdx");
    assert_int_equal(vdisk_open(vhdx, NULL, VDISK_OPEN_RDONLY, NULL, &img), -EINVAL);
    assert_non_null(strstr(vdisk_last_error(), "both VHDX headers are invalid"));
    assert_non_null(strstr(vdisk_last_error(), vhdx));
    assert_int_equal(vdisk_open(fixed, NULL, 0, NULL, &img), -EINVAL); /* vpc: a VHD, but broken */
    assert_non_null(strstr(vdisk_last_error(), "VHD footer: bad checksum"));

    /* the user asked for raw: raw it is */
    assert_int_equal(vdisk_open(vhdx, "raw", 0, NULL, &img), 0);
    assert_int_equal(vdisk_get_size(img), 1 << 20);
    assert_int_equal(vdisk_close(img), 0);

    /* a boot sector is no container */
    assert_int_equal(vdisk_probe(plain, &fmt), 0);
    assert_string_equal(fmt, "raw");
    assert_int_equal(vdisk_open(plain, NULL, 0, NULL, &img), 0);
    assert_int_equal(vdisk_close(img), 0);

    assert_int_equal(vdisk_create(nofile, "qed", 1 << 20, NULL), -ENOTSUP);
    assert_non_null(strstr(vdisk_last_error(), "cannot create qed images"));
    assert_int_equal(access(nofile, F_OK), -1);
    assert_int_equal(vdisk_create(nofile, "nosuchformat", 1 << 20, NULL), -EINVAL);
    assert_non_null(strstr(vdisk_last_error(), "unknown image format"));
    free(vhdx);
    free(fixed);
    free(plain);
    free(nofile);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_signature),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_zeros),
        cmocka_unit_test(test_near_misses),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_find),
        cmocka_unit_test_setup_teardown(test_image_api, test_setup_tmpdir, test_teardown_tmpdir),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
