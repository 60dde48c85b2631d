/* SPDX-License-Identifier: MIT */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

char *test_tmpdir(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
    char *dir;

    if (asprintf(&dir, "%s/vdisk-unit.XXXXXX", base) < 0 || !mkdtemp(dir))
        abort();
    return dir;
}

char *test_path(const char *dir, const char *name)
{
    char *p;

    if (asprintf(&p, "%s/%s", dir, name) < 0)
        abort();
    return p;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    return remove(path);
}

void test_rmdir(char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

int test_setup_tmpdir(void **state)
{
    *state = test_tmpdir();
    return 0;
}

int test_teardown_tmpdir(void **state)
{
    test_rmdir(*state);
    return 0;
}
