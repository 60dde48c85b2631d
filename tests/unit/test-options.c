/* SPDX-License-Identifier: MIT */
/* vdisk_options_parse(): "key=value,..." strings and the messages of its error paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vdisk/vdisk.h"
#include "../../lib/options.h"

static const char *const allowed[] = {
    "cluster_size", "backing_file", "preallocation", "a", "b", NULL};

/* Parsing TEXT fails with ERR, the options are left empty and the message holds WANT. */
static void expect_error(const char *text, int err, const char *want)
{
    struct vdisk_options opts;

    assert_int_equal(vdisk_options_parse(text, allowed, "qcow2", &opts), err);
    assert_int_equal(opts.count, 0);
    assert_null(opts.buf);
    if (!strstr(vdisk_last_error(), want))
        fail_msg("'%s': message \"%s\" does not name \"%s\"", text, vdisk_last_error(), want);
}

static void test_empty(void **state)
{
    struct vdisk_options opts;

    (void)state;
    assert_int_equal(vdisk_options_parse(NULL, allowed, "qcow2", &opts), 0);
    assert_int_equal(opts.count, 0);
    assert_int_equal(vdisk_options_parse("", allowed, "qcow2", &opts), 0);
    assert_int_equal(opts.count, 0);
    assert_null(vdisk_options_get(&opts, "a"));
    vdisk_options_free(&opts);
}

static void test_pairs(void **state)
{
    struct vdisk_options opts;
    uint64_t size;

    (void)state;
    assert_int_equal(
        vdisk_options_parse("cluster_size=64K,,preallocation=off,", allowed, "qcow2", &opts), 0);
    assert_int_equal(opts.count, 2);
    assert_string_equal(vdisk_options_get(&opts, "cluster_size"), "64K");
    assert_string_equal(vdisk_options_get(&opts, "preallocation"), "off");
    assert_null(vdisk_options_get(&opts, "backing_file"));
    assert_int_equal(vdisk_options_get_size(&opts, "cluster_size", 0, &size), 0);
    assert_int_equal(size, 65536);
    vdisk_options_free(&opts);
    assert_int_equal(opts.count, 0);
    assert_null(opts.buf);
}

static void test_missing_equals(void **state)
{
    (void)state;
    expect_error("foo", -EINVAL, "option 'foo': expected KEY=VALUE");
    /* the bad one is named, not its neighbours */
    expect_error("a=1,foo,b=2", -EINVAL, "option 'foo': expected KEY=VALUE");
    expect_error("a=1,cluster_size", -EINVAL, "option 'cluster_size': expected KEY=VALUE");
}

static void test_empty_key(void **state)
{
    (void)state;
    expect_error("=64K", -EINVAL, "option '=64K': expected KEY=VALUE");
    expect_error("a=1,=", -EINVAL, "option '=': expected KEY=VALUE");
}

static void test_unknown_key(void **state)
{
    struct vdisk_options opts;

    (void)state;
    expect_error("bogus=1", -EINVAL, "format qcow2 has no option 'bogus'");
    expect_error("a=1,b=2,nosuchkey=x=y", -EINVAL, "format qcow2 has no option 'nosuchkey'");
    /* a format without options refuses every key */
    assert_int_equal(vdisk_options_parse("a=1", NULL, "raw", &opts), -EINVAL);
    assert_non_null(strstr(vdisk_last_error(), "format raw has no option 'a'"));
    assert_null(opts.buf);
}

static void test_too_many(void **state)
{
    char text[512] = "", item[16];
    struct vdisk_options opts;

    (void)state;
    for (int i = 0; i < VDISK_OPTIONS_MAX; i++)
        strcat(text, i % 2 ? "a=1," : "b=2,");
    assert_int_equal(vdisk_options_parse(text, allowed, "qcow2", &opts), 0);
    assert_int_equal(opts.count, VDISK_OPTIONS_MAX);
    vdisk_options_free(&opts);
    snprintf(item, sizeof(item), "a=%d", VDISK_OPTIONS_MAX + 1);
    strcat(text, item);
    expect_error(text, -E2BIG, "too many options");
    expect_error(text, -E2BIG, item);
}

static void test_repeated_key_last_wins(void **state)
{
    struct vdisk_options opts;

    (void)state;
    assert_int_equal(vdisk_options_parse("a=1,b=x,a=2", allowed, "qcow2", &opts), 0);
    assert_string_equal(vdisk_options_get(&opts, "a"), "2");
    assert_string_equal(vdisk_options_get(&opts, "b"), "x");
    vdisk_options_free(&opts);
}

static void test_equals_in_value(void **state)
{
    struct vdisk_options opts;

    (void)state;
    assert_int_equal(
        vdisk_options_parse("backing_file=/tmp/a=b.qcow2,a==,b=", allowed, "qcow2", &opts), 0);
    assert_string_equal(vdisk_options_get(&opts, "backing_file"), "/tmp/a=b.qcow2");
    assert_string_equal(vdisk_options_get(&opts, "a"), "=");
    assert_string_equal(vdisk_options_get(&opts, "b"), "");
    vdisk_options_free(&opts);
}

/* Through the public API: the message names the option the user typed. */
static void test_create_message(void **state)
{
    (void)state;
    assert_int_equal(vdisk_create("/nonexistent/x.qcow2", "qcow2", 1 << 20, "foo"), -EINVAL);
    assert_non_null(strstr(vdisk_last_error(), "option 'foo': expected KEY=VALUE"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_pairs),
        cmocka_unit_test(test_missing_equals),
        cmocka_unit_test(test_empty_key),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_too_many),
        cmocka_unit_test(test_repeated_key_last_wins),
        cmocka_unit_test(test_equals_in_value),
        cmocka_unit_test(test_create_message),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
