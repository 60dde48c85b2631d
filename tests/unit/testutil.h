/* SPDX-License-Identifier: MIT */
/* Scratch directories for unit tests. */
#ifndef VDISK_TESTUTIL_H
#define VDISK_TESTUTIL_H

/* A new directory under $TMPDIR (or /var/tmp: tmpfs lacks O_DIRECT on old kernels). */
char *test_tmpdir(void);
/* DIR/NAME, malloc'ed. */
char *test_path(const char *dir, const char *name);
/* rm -rf DIR and free it. */
void test_rmdir(char *dir);
/* cmocka setup/teardown: *state is a fresh scratch directory. */
int test_setup_tmpdir(void **state);
int test_teardown_tmpdir(void **state);

/* Skip the current cmocka test because the machine lacks NEED (a key of
 * tests/needs.sh): tests/run counts it as skipped only with this line. */
#define TEST_SKIP(need, why)                                                                       \
    do {                                                                                           \
        printf("SKIP: [need:%s] %s\n", (need), (why));                                             \
        fflush(stdout);                                                                            \
        skip();                                                                                    \
    } while (0)

#endif
