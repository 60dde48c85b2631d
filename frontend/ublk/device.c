/* SPDX-License-Identifier: MIT */
/*
 * A ublk device for one image: ADD_DEV and SET_PARAMS (or, to take over a
 * dead server's device, START_USER_RECOVERY), the queues' threads, then
 * START_DEV (END_USER_RECOVERY), which returns once every queue has fetched.
 * Stopping: STOP_DEV removes the disk after the queues have served what was
 * in flight and aborts their commands; the threads leave; /dev/ublkcN is
 * closed (DEL_DEV waits for that); DEL_DEV.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define RECOVER_WAIT_MS 30000 /* the kernel quiesces a dead server's device within ~5 s */
#define STOP_WAIT_S     30    /* for the queues to leave after STOP_DEV */
#define DISK_GID        6     /* "disk" when /etc/group has none */

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000};

    nanosleep(&t, NULL);
}

int vdisk_ublk_id(const struct vdisk_ublk *u)
{
    return (int)((const struct ublk_dev *)u)->info.dev_id;
}

unsigned vdisk_ublk_queues(const struct vdisk_ublk *u)
{
    return ((const struct ublk_dev *)u)->info.nr_hw_queues;
}

unsigned vdisk_ublk_depth(const struct vdisk_ublk *u)
{
    return ((const struct ublk_dev *)u)->info.queue_depth;
}

bool vdisk_ublk_done(struct vdisk_ublk *u)
{
    struct ublk_dev *d = (struct ublk_dev *)u;
    bool done;

    pthread_mutex_lock(&d->lock);
    done = d->running == 0;
    pthread_mutex_unlock(&d->lock);
    return done;
}

/* The parameters of a device of SIZE bytes. */
static void make_params(struct ublk_params *p, uint64_t size, const struct vdisk_ublk_config *cfg,
                        uint32_t max_io)
{
    unsigned gran = cfg->discard_granularity ? cfg->discard_granularity : 4096;

    memset(p, 0, sizeof(*p));
    p->len = sizeof(*p);
    p->types = UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_DISCARD;
    /* a volatile cache with FUA: flush and FUA reach the image; not rotational */
    p->basic.attrs =
        UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA | (cfg->read_only ? UBLK_ATTR_READ_ONLY : 0);
    p->basic.logical_bs_shift = 9;
    p->basic.physical_bs_shift = 12;
    p->basic.io_min_shift = 9;
    p->basic.io_opt_shift = 12;
    p->basic.max_sectors = max_io >> BLOCK_SHIFT;
    p->basic.dev_sectors = size >> BLOCK_SHIFT;
    if (!cfg->read_only) {
        p->discard.discard_granularity = gran;
        p->discard.max_discard_sectors = UINT32_MAX >> BLOCK_SHIFT;
        p->discard.max_write_zeroes_sectors = UINT32_MAX >> BLOCK_SHIFT;
        p->discard.max_discard_segments = 1;
    } else {
        p->types &= ~UBLK_PARAM_TYPE_DISCARD;
    }
}

/* Wait until every started queue has fetched; -EIO with a message if one failed. */
static int wait_ready(struct ublk_dev *d, unsigned n, char *errbuf, size_t errlen)
{
    pthread_mutex_lock(&d->lock);
    while (d->ready < n)
        pthread_cond_wait(&d->cond, &d->lock);
    pthread_mutex_unlock(&d->lock);
    for (unsigned i = 0; i < n; i++)
        if (d->queues[i].failed) {
            snprintf(errbuf, errlen, "%s", d->queues[i].msg);
            return -EIO;
        }
    return 0;
}

/* /dev/ublkbN as a disk device should be: root:disk 0660 (no udev may be around). */
static void set_owner(int id)
{
    struct group *g = getgrnam("disk");
    char path[64];

    snprintf(path, sizeof(path), "/dev/ublkb%d", id);
    for (int i = 0; i < 100 && access(path, F_OK) != 0; i++)
        sleep_ms(10);
    if (chown(path, 0, g ? g->gr_gid : DISK_GID) < 0 || chmod(path, 0660) < 0)
        fprintf(stderr, "vdisk-ublk: %s: setting owner and mode: %m\n", path);
}

/*
 * No I/O scheduler, as loop and nbd have by default: ublk's single-queue disks
 * get mq-deadline, whose per-request work halved 4k IOPS in the VM; the
 * engine behind the queue does its own ordering.
 */
static void set_no_scheduler(int id)
{
    char path[80];
    int fd;

    snprintf(path, sizeof(path), "/sys/block/ublkb%d/queue/scheduler", id);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "none", 4) != 4)
        fprintf(stderr, "vdisk-ublk: %s: %m (the disk keeps its I/O scheduler)\n", path);
    if (fd >= 0)
        close(fd);
}

/* What a started disk needs before anyone uses it: owner, mode, scheduler. */
static void disk_started(int id)
{
    set_owner(id);
    set_no_scheduler(id);
}

/* Open /dev/ublkcN, which devtmpfs (or udev) makes as the device is added. */
static int open_cdev(struct ublk_dev *d, char *errbuf, size_t errlen)
{
    char path[64];

    snprintf(path, sizeof(path), "/dev/ublkc%u", d->info.dev_id);
    for (int i = 0; i < 200; i++) {
        d->cdev = open(path, O_RDWR | O_CLOEXEC);
        if (d->cdev >= 0 || (errno != ENOENT && errno != EBUSY))
            break;
        sleep_ms(10); /* EBUSY: a dead server's file is still being released */
    }
    if (d->cdev < 0) {
        int r = -errno;

        snprintf(errbuf, errlen, "%s: %s", path, strerror(errno));
        return r;
    }
    return 0;
}

/* ADD_DEV and SET_PARAMS for a new device. */
static int add_device(struct ublk_dev *d, const struct vdisk_ublk_config *cfg, char *errbuf,
                      size_t errlen)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned queues = cfg->queues ? cfg->queues : (unsigned)(cpus > 0 ? cpus : 1);
    uint64_t size = vdisk_get_size(d->img);
    struct ublk_params params;
    int r;

    if (queues > MAX_QUEUES && !cfg->queues)
        queues = MAX_QUEUES;
    if (queues > 64 || (cfg->depth && cfg->depth > 1024) || size < 512) {
        snprintf(errbuf, errlen, "ublk: %s",
                 size < 512 ? "image smaller than one sector" : "at most 64 queues of depth 1024");
        return -EINVAL;
    }
    memset(&d->info, 0, sizeof(d->info));
    d->info.nr_hw_queues = (uint16_t)queues;
    d->info.queue_depth = (uint16_t)(cfg->depth ? cfg->depth : DEFAULT_DEPTH);
    d->info.max_io_buf_bytes = MAX_IO_BYTES;
    if (getenv("VDISK_TEST_UBLK_MAX_IO_KB")) /* test switch: the largest request, in KiB */
        d->info.max_io_buf_bytes = (uint32_t)atoi(getenv("VDISK_TEST_UBLK_MAX_IO_KB")) << 10;
    if (d->info.max_io_buf_bytes < 4096 || d->info.max_io_buf_bytes > UBLK_MAX_IO_BYTES)
        d->info.max_io_buf_bytes = MAX_IO_BYTES;
    d->info.dev_id = UINT32_MAX; /* any free number */
    if (cfg->recovery)
        d->info.flags |= UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE;
    if (d->ctrl.ioctl_encode)
        d->info.flags |= UBLK_F_CMD_IOCTL_ENCODE;
    r = ublk_ctrl_cmd(&d->ctrl, UBLK_CMD_ADD_DEV, -1, 0, &d->info, sizeof(d->info));
    if (r < 0) {
        snprintf(errbuf, errlen, "%s: ADD_DEV: %s", VDISK_UBLK_CONTROL, strerror(-r));
        return r;
    }
    d->added = true;
    make_params(&params, size, cfg, d->info.max_io_buf_bytes);
    r = ublk_ctrl_cmd(&d->ctrl, UBLK_CMD_SET_PARAMS, (int)d->info.dev_id, 0, &params,
                      sizeof(params));
    if (r < 0)
        snprintf(errbuf, errlen, "/dev/ublkb%u: SET_PARAMS: %s", d->info.dev_id, strerror(-r));
    return r;
}

/* Take over device ID, whose server died: START_USER_RECOVERY once the kernel has quiesced it. */
static int begin_recovery(struct ublk_dev *d, int id, char *errbuf, size_t errlen)
{
    int r;

    r = ublk_ctrl_cmd(&d->ctrl, UBLK_CMD_GET_DEV_INFO, id, 0, &d->info, sizeof(d->info));
    if (r < 0) {
        snprintf(errbuf, errlen, "/dev/ublkb%d: GET_DEV_INFO: %s", id, strerror(-r));
        return r;
    }
    if (!(d->info.flags & UBLK_F_USER_RECOVERY)) {
        snprintf(errbuf, errlen, "/dev/ublkb%d: was not made recoverable", id);
        return -EINVAL;
    }
    for (int waited = 0;; waited += 100) {
        r = ublk_ctrl_cmd(&d->ctrl, UBLK_CMD_START_USER_RECOVERY, id, 0, NULL, 0);
        if (r != -EBUSY || waited >= RECOVER_WAIT_MS)
            break;
        sleep_ms(100); /* the old server's files are still open, or not yet quiesced */
    }
    if (r < 0) {
        snprintf(errbuf, errlen, "/dev/ublkb%d: START_USER_RECOVERY: %s%s", id, strerror(-r),
                 r == -EBUSY ? " (its old server still holds it?)" : "");
        return r;
    }
    if (d->info.max_io_buf_bytes > UBLK_MAX_IO_BYTES || d->info.queue_depth == 0 ||
        d->info.queue_depth > UBLK_MAX_QUEUE_DEPTH || d->info.nr_hw_queues == 0 ||
        d->info.nr_hw_queues > 64) {
        snprintf(errbuf, errlen, "/dev/ublkb%d: unexpected geometry from the kernel", id);
        return -EINVAL;
    }
    return 0;
}

/* Start every queue's thread; the number started is in d->nqueues. */
static int start_queues(struct ublk_dev *d, char *errbuf, size_t errlen)
{
    unsigned n = d->info.nr_hw_queues;
    int r;

    d->queues = calloc(n, sizeof(*d->queues));
    if (!d->queues) {
        snprintf(errbuf, errlen, "ublk: out of memory");
        return -ENOMEM;
    }
    for (unsigned i = 0; i < n; i++) {
        struct ublk_queue *q = &d->queues[i];

        d->nqueues = i + 1;
        r = ublk_queue_init(d, q, i);
        if (r < 0) {
            snprintf(errbuf, errlen, "%s", q->msg);
            d->nqueues = i + 1;
            return r;
        }
        pthread_mutex_lock(&d->lock);
        d->running++;
        pthread_mutex_unlock(&d->lock);
        r = pthread_create(&q->thread, NULL, ublk_queue_main, q);
        if (r != 0) {
            pthread_mutex_lock(&d->lock);
            d->running--;
            pthread_mutex_unlock(&d->lock);
            snprintf(errbuf, errlen, "ublk: queue thread: %s", strerror(r));
            return -r;
        }
        q->started = true;
    }
    return 0;
}

/* Wait up to SECONDS for the queue threads to leave; false if some did not. */
static bool wait_queues(struct ublk_dev *d, int seconds)
{
    struct timespec until;
    bool left;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += seconds;
    pthread_mutex_lock(&d->lock);
    while (d->running > 0 && pthread_cond_timedwait(&d->cond, &d->lock, &until) == 0)
        ;
    left = d->running == 0;
    pthread_mutex_unlock(&d->lock);
    return left;
}

/* Undo everything: stop, let the queues go, close, delete (when we added it). */
static void teardown(struct ublk_dev *d, bool delete)
{
    bool left;

    if (d->added || d->nqueues)
        ublk_ctrl_cmd(&d->ctrl, UBLK_CMD_STOP_DEV, (int)d->info.dev_id, 0, NULL, 0);
    /* the disk is gone and its requests answered: commands still fetching can go with the ring */
    eventfd_write(d->stop_efd, 1);
    left = wait_queues(d, STOP_WAIT_S);
    if (!left) {
        /* commands the kernel never aborted: leave them to the ring's teardown at exit */
        fprintf(stderr, "vdisk-ublk: /dev/ublkb%u: queues did not stop in %d s\n", d->info.dev_id,
                STOP_WAIT_S);
        return;
    }
    for (unsigned i = 0; i < d->nqueues; i++) {
        if (d->queues[i].started)
            pthread_join(d->queues[i].thread, NULL);
        ublk_queue_free(&d->queues[i]);
    }
    free(d->queues);
    d->queues = NULL;
    d->nqueues = 0;
    if (d->cdev >= 0)
        close(d->cdev);
    d->cdev = -1;
    if (delete &&d->added) {
        int r = ublk_ctrl_del(&d->ctrl, (int)d->info.dev_id);

        if (r < 0 && r != -ENODEV)
            fprintf(stderr, "vdisk-ublk: /dev/ublkb%u: DEL_DEV: %s\n", d->info.dev_id,
                    strerror(-r));
    }
    ublk_ctrl_close(&d->ctrl);
    close(d->stop_efd);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cond);
    free(d);
}

int vdisk_ublk_start(struct vdisk_image *img, const struct vdisk_ublk_config *cfg,
                     struct vdisk_ublk **up, char *errbuf, size_t errlen)
{
    struct ublk_dev *d = calloc(1, sizeof(*d));
    bool recover = cfg->recover_id >= 0;
    int r;

    if (!d) {
        snprintf(errbuf, errlen, "ublk: out of memory");
        return -ENOMEM;
    }
    d->img = img;
    d->cdev = -1;
    d->stop_efd = eventfd(0, EFD_CLOEXEC);
    if (d->stop_efd < 0) {
        snprintf(errbuf, errlen, "ublk: eventfd: %s", strerror(errno));
        free(d);
        return -errno;
    }
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cond, NULL);
    r = ublk_ctrl_open(&d->ctrl, errbuf, errlen);
    if (r < 0) {
        close(d->stop_efd);
        free(d);
        return r;
    }
    if (cfg->recovery && !recover && !(d->ctrl.features & UBLK_F_USER_RECOVERY))
        fprintf(stderr, "vdisk-ublk: this kernel cannot recover a ublk device; serving without\n");
    r = recover ? begin_recovery(d, cfg->recover_id, errbuf, errlen)
                : add_device(d, cfg, errbuf, errlen);
    if (r < 0)
        goto fail;
    if (cfg->on_id)
        cfg->on_id((int)d->info.dev_id, cfg->on_id_arg);
    r = open_cdev(d, errbuf, errlen);
    if (r < 0)
        goto fail;
    r = start_queues(d, errbuf, errlen);
    if (r == 0)
        r = wait_ready(d, d->nqueues, errbuf, errlen);
    else
        wait_ready(d, d->running, errbuf, errlen);
    if (r < 0)
        goto fail;
    if (!recover && cfg->defer_start) { /* the caller's other process starts it */
        *up = (struct vdisk_ublk *)d;
        return 0;
    }
    r = ublk_ctrl_cmd(&d->ctrl, recover ? UBLK_CMD_END_USER_RECOVERY : UBLK_CMD_START_DEV,
                      (int)d->info.dev_id, (uint64_t)getpid(), NULL, 0);
    if (r < 0) {
        snprintf(errbuf, errlen, "/dev/ublkb%u: %s: %s", d->info.dev_id,
                 ublk_ctrl_name(recover ? UBLK_CMD_END_USER_RECOVERY : UBLK_CMD_START_DEV),
                 strerror(-r));
        goto fail;
    }
    disk_started((int)d->info.dev_id);
    *up = (struct vdisk_ublk *)d;
    return 0;
fail:
    if (recover && !d->nqueues) { /* leave the device to the next try */
        if (d->cdev >= 0)
            close(d->cdev);
        ublk_ctrl_close(&d->ctrl);
        close(d->stop_efd);
        free(d);
        return r;
    }
    teardown(d, true);
    return r;
}

int vdisk_ublk_start_dev(int id, int server_pid, char *errbuf, size_t errlen)
{
    struct ublk_ctrl c;
    int r = ublk_ctrl_open(&c, errbuf, errlen);

    if (r < 0)
        return r;
    r = ublk_ctrl_cmd(&c, UBLK_CMD_START_DEV, id, (uint64_t)server_pid, NULL, 0);
    ublk_ctrl_close(&c);
    if (r < 0) {
        snprintf(errbuf, errlen, "/dev/ublkb%d: START_DEV: %s", id, strerror(-r));
        return r;
    }
    disk_started(id);
    return 0;
}

void vdisk_ublk_stop(struct vdisk_ublk *u)
{
    struct ublk_dev *d = (struct ublk_dev *)u;

    d->added = true; /* a recovered device is ours to delete too */
    teardown(d, true);
}
