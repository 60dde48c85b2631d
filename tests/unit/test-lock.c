/* SPDX-License-Identifier: MIT */
/* vdisk_file_lock(): QEMU-style lock bytes, and openers racing for them. */
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
#include <unistd.h>

#include "vdisk/vdisk.h"
#include "../../lib/io/file.h"
#include "testutil.h"

#define ROUNDS     2000
#define MAX_ROUNDS 200000 /* on a busy machine the openers may take long to overlap once */

/* A file of 1 MiB in the scratch directory; returns its path. */
static char *make_file(void **state)
{
    char *path = test_path(*state, "lock.raw");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);

    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1 << 20), 0);
    close(fd);
    return path;
}

/* Open PATH and lock it; the file on success, NULL (and *err) when the lock is refused. */
static struct vdisk_file *open_locked(const char *path, bool write, int *err)
{
    struct vdisk_file *f;

    assert_int_equal(vdisk_file_open(path, write ? 0 : VDISK_FILE_RDONLY, &f), 0);
    *err = vdisk_file_lock(f, write);
    if (*err == 0)
        return f;
    vdisk_file_close(f);
    return NULL;
}

/* Is byte OFF of PATH locked by anyone (seen from a fresh open file description)? */
static bool byte_locked(const char *path, off_t off)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1};
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(fcntl(fd, F_OFD_GETLK, &fl), 0);
    close(fd);
    return fl.l_type != F_UNLCK;
}

static void test_exclusion(void **state)
{
    char *path = make_file(state);
    struct vdisk_file *w, *r1, *r2;
    int err;

    w = open_locked(path, true, &err);
    assert_non_null(w);
    assert_null(open_locked(path, true, &err));
    assert_int_equal(err, -EBUSY);
    assert_non_null(strstr(vdisk_last_error(), "in use by another process"));
    assert_non_null(strstr(vdisk_last_error(), path));
    assert_null(open_locked(path, false, &err));
    assert_int_equal(err, -EBUSY);
    vdisk_file_close(w);

    /* readers share, and keep writers out */
    r1 = open_locked(path, false, &err);
    assert_non_null(r1);
    r2 = open_locked(path, false, &err);
    assert_non_null(r2);
    assert_null(open_locked(path, true, &err));
    assert_int_equal(err, -EBUSY);
    vdisk_file_close(r1);
    assert_null(open_locked(path, true, &err));
    vdisk_file_close(r2);
    w = open_locked(path, true, &err);
    assert_non_null(w);
    vdisk_file_close(w);
    free(path);
}

/* A refused lock leaves no byte behind (it took its own bytes before checking). */
static void test_refused_lock_releases(void **state)
{
    char *path = make_file(state);
    struct vdisk_file *r;
    int err;

    r = open_locked(path, false, &err);
    assert_non_null(r);
    for (int i = 0; i < 3; i++) {
        struct vdisk_file *f;

        /* keep the refused writer's file open: its bytes must be gone anyway */
        assert_int_equal(vdisk_file_open(path, 0, &f), 0);
        assert_int_equal(vdisk_file_lock(f, true), -EBUSY);
        vdisk_file_close(r);
        assert_false(byte_locked(path, 100)); /* read perm */
        assert_false(byte_locked(path, 101)); /* write perm */
        assert_false(byte_locked(path, 201)); /* write unshared */
        assert_false(byte_locked(path, 203)); /* resize unshared */
        r = open_locked(path, false, &err);
        assert_non_null(r);
        vdisk_file_close(f);
    }
    vdisk_file_close(r);
    free(path);
}

struct race {
    const char *path;
    atomic_int arrived; /* start gate: racers spin until both are here */
    pthread_barrier_t done;
    atomic_bool stop; /* set by the main thread between a round's two barriers */
    bool write[2];
    bool won[2];
};

struct racer {
    struct race *race;
    int id;
};

/* One opener: each round, wait for the start, try to lock, wait until both tried, close. */
static void *racer_main(void *arg)
{
    struct racer *me = arg;
    struct race *race = me->race;

    for (int i = 0; !atomic_load(&race->stop); i++) {
        struct vdisk_file *f;
        int r;

        if (vdisk_file_open(race->path, race->write[me->id] ? 0 : VDISK_FILE_RDONLY, &f) < 0)
            abort();
        /* spin, not sleep: both leave the gate within nanoseconds of each other */
        atomic_fetch_add(&race->arrived, 1);
        while (atomic_load(&race->arrived) < 2 * (i + 1))
            ;
        r = vdisk_file_lock(f, race->write[me->id]);
        if (r < 0 && r != -EBUSY)
            abort();
        race->won[me->id] = r == 0;
        pthread_barrier_wait(&race->done);
        vdisk_file_close(f); /* releases the locks (OFD locks die with the description) */
        pthread_barrier_wait(&race->done);
    }
    return NULL;
}

/*
 * Race two openers ROUNDS times, and on until they have overlapped once (a
 * round both refused), up to MAX_ROUNDS; the main thread is a third barrier
 * member so it can count each round's outcome. Fails if both won any round.
 */
static void race(void **state, bool write0, bool write1)
{
    struct race race = {.write = {write0, write1}};
    struct racer racers[2] = {{&race, 0}, {&race, 1}};
    pthread_t th[2];
    int one = 0, none = 0, both = 0, first_both = -1, rounds = 0;

    race.path = make_file(state);
    pthread_barrier_init(&race.done, NULL, 3);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &racers[i]), 0);
    for (int i = 0; !atomic_load(&race.stop); i++) {
        pthread_barrier_wait(&race.done);
        if (race.won[0] && race.won[1]) {
            if (!both++)
                first_both = i;
        } else if (race.won[0] || race.won[1])
            one++;
        else
            none++;
        rounds = i + 1;
        if ((rounds >= ROUNDS && none + both > 0) || rounds == MAX_ROUNDS)
            atomic_store(&race.stop, true);
        pthread_barrier_wait(&race.done);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    print_message("%d rounds: one won %d, both refused %d, both won %d\n", rounds, one, none, both);
    if (both)
        fail_msg("both openers (%s, %s) got the lock in %d rounds, first in round %d",
                 write0 ? "writer" : "reader", write1 ? "writer" : "reader", both, first_both);
    /* a round both refused (or both won) is one where the openers overlapped */
    if (none + both == 0)
        fail_msg("the openers never overlapped in %d rounds: nothing was raced", rounds);
    pthread_barrier_destroy(&race.done);
    free((char *)race.path);
}

static void test_race_writers(void **state)
{
    race(state, true, true);
}

static void test_race_writer_reader(void **state)
{
    race(state, true, false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exclusion, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_refused_lock_releases, test_setup_tmpdir,
                                        test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_race_writers, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_race_writer_reader, test_setup_tmpdir,
                                        test_teardown_tmpdir),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
