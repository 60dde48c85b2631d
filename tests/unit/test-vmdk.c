/* SPDX-License-Identifier: MIT */
/*
 * VMDK: the probe (sparse magics, descriptor text, near misses) and the
 * descriptor parser (values, quoting, line ends, junk refused by line, the
 * CID rewrite of a first write).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk/vdisk.h"
#include "../../lib/format/vmdk.h"
#include "testutil.h"

#define S(s) s, sizeof(s) - 1

/* The probe's score for the LEN bytes of TEXT (the head of a file). */
static int probe(const char *text, size_t len)
{
    uint8_t tail[512] = {0};

    return vdisk_format_vmdk.probe((const uint8_t *)text, len, tail, len);
}

static void test_probe(void **state)
{
    (void)state;
    assert_int_equal(probe(S("KDMV\1\0\0\0")), 100);
    assert_int_equal(probe(S("COWD\1\0\0\0")), 100);
    assert_int_equal(probe(S("\xbe\xba\xfe\xca\0\0\0\0\1\0\0\0\2\0\0\0")), 100); /* seSparse */
    assert_int_equal(probe(S("\xbe\xba\xfe\xca\0\0\0\0\1\0\0\0\3\0\0\0")), 0);
    assert_int_equal(probe(S("# Disk DescriptorFile\nversion=1\nCID=fffffffe\n")), 100);
    assert_int_equal(probe(S("\n   \r\n\t# Disk DescriptorFile\r\nversion=1\r\n")), 100);
    assert_int_equal(probe(S("# made by hand\n#\nversion=3\nCID=1\n")), 100);
    /* near misses */
    assert_int_equal(probe(S("KDM")), 0);
    assert_int_equal(probe(S("# Disk Descriptor\n")), 0);
    assert_int_equal(probe(S("text\n# Disk DescriptorFile\n")), 0);
    assert_int_equal(probe(S("version=4\n")), 0);
    assert_int_equal(probe(S("# Disk DescriptorFile\0binary")), 0); /* binary: not text */
    assert_int_equal(probe(S("\0# Disk DescriptorFile\n")), 0);
    assert_int_equal(probe(S("QFI\xfb\0\0\0\3")), 0);
}

static const char good[] = "# Disk DescriptorFile\r\n"
                           "version=1 \r\n"
                           "CID=a454774a\r\n"
                           "parentCID = 0000beef\r\n"
                           "createType=\"twoGbMaxExtentSparse\"\r\n"
                           "parentFileNameHint=\"my parent.vmdk\"\r\n"
                           "\r\n"
                           "RW 4194304 SPARSE \"a b-s001.vmdk\"\r\n"
                           "RDONLY  100 FLAT \"f.raw\" 7\r\n"
                           "NOACCESS 8 ZERO\r\n"
                           "RW 16 VMFS \"v.raw\"\r\n"
                           "ddb.adapterType = \"lsilogic\"\r\n"
                           "ddb.virtualHWVersion = \"8\"\r\n"
                           "ddb.uuid.image=\"x\"\n";

static void test_parse(void **state)
{
    struct vmdk_desc d;

    (void)state;
    assert_int_equal(vmdk_desc_parse("t", good, sizeof(good) - 1, &d), 0);
    assert_int_equal(d.cid, 0xa454774a);
    assert_int_equal(d.parent_cid, 0xbeef);
    assert_string_equal(d.create_type, "twoGbMaxExtentSparse");
    assert_string_equal(d.parent_hint, "my parent.vmdk");
    assert_string_equal(d.adapter_type, "lsilogic");
    assert_string_equal(d.hwversion, "8");
    assert_int_equal(d.n_ext, 4);
    assert_int_equal(d.ext[0].access, VMDK_RW);
    assert_int_equal(d.ext[0].type, VMDK_EXT_SPARSE);
    assert_int_equal(d.ext[0].sectors, 4194304);
    assert_string_equal(d.ext[0].file, "a b-s001.vmdk");
    assert_int_equal(d.ext[1].access, VMDK_RDONLY);
    assert_int_equal(d.ext[1].type, VMDK_EXT_FLAT);
    assert_int_equal(d.ext[1].offset, 7);
    assert_int_equal(d.ext[2].access, VMDK_NOACCESS);
    assert_int_equal(d.ext[2].type, VMDK_EXT_ZERO);
    assert_null(d.ext[2].file);
    assert_int_equal(d.ext[3].type, VMDK_EXT_VMFS);
    vmdk_desc_free(&d);
}

/* An embedded descriptor ends at its first NUL (the rest of its sectors). */
static void test_embedded_nul(void **state)
{
    static const char t[] = "createType=\"monolithicSparse\"\nRW 8 SPARSE \"x\"\n\0junk junk\n";
    struct vmdk_desc d;

    (void)state;
    assert_int_equal(vmdk_desc_parse("t", t, sizeof(t) - 1, &d), 0);
    assert_int_equal(d.n_ext, 1);
    vmdk_desc_free(&d);
}

static void test_refused(void **state)
{
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"createType=\"x\"\nRW 8 SPARSE \"x\"\nhello\n", "line 3 is neither"},
        {"createType=\"x\"\nRW 8 SPARSE\n", "needs a file name"},
        {"createType=\"x\"\nRW 8 ZERO \"f\"\n", "a ZERO extent has no file"},
        {"createType=\"x\"\nRW 0 FLAT \"f\" 0\n", "out of range"},
        {"createType=\"x\"\nRW 8 FLAT \"f\" -1\n", "bad extent offset"},
        {"createType=\"x\"\nRW 8 VMFSRAW \"f\"\n", "extent type 'VMFSRAW' is not supported"},
        {"createType=\"x\"\nCID=123456789\nRW 8 FLAT \"f\" 0\n", "bad CID"},
        {"createType=\"x\"\nversion=7\nRW 8 FLAT \"f\" 0\n", "version 7 is not supported"},
        {"RW 8 FLAT \"f\" 0\n", "no createType"},
        {"createType=\"x\"\n", "lists no extent"},
        {"createType=\"x\"\n=3\nRW 8 FLAT \"f\" 0\n", "line 2 is neither"},
    };
    struct vmdk_desc d;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r = vmdk_desc_parse("t", bad[i].text, strlen(bad[i].text), &d);

        if (r >= 0 || !strstr(vdisk_last_error(), bad[i].msg))
            fail_msg("%s: r=%d, '%s', wanted '%s'", bad[i].text, r, vdisk_last_error(), bad[i].msg);
    }
}

static void test_cid_rewrite(void **state)
{
    struct vmdk_desc d;
    size_t len;
    char *t;

    (void)state;
    assert_int_equal(vmdk_desc_parse("t", good, sizeof(good) - 1, &d), 0);
    t = vmdk_desc_with_cid(&d, 0x1234abcd, &len);
    assert_non_null(t);
    assert_int_equal(len, strlen(t));
    assert_non_null(strstr(t, "\r\nCID=1234abcd\r\nparentCID = 0000beef\r\n"));
    assert_int_equal(len, sizeof(good) - 1); /* same width: fits where it was */
    vmdk_desc_free(&d);
    assert_int_equal(vmdk_desc_parse("t", t, len, &d), 0);
    assert_int_equal(d.cid, 0x1234abcd);
    vmdk_desc_free(&d);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probe),        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_embedded_nul), cmocka_unit_test(test_refused),
        cmocka_unit_test(test_cid_rewrite),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
