/* SPDX-License-Identifier: MIT */
/*
 * --via fuse: a server process per disk serves the image (any format) as one
 * file in a private FUSE mount, RUN_DIR/<id>.fuse, and a loop device with
 * direct I/O sits on that file. Direct I/O on both layers keeps the page cache
 * out, so writeback under memory pressure cannot wait on the server.
 *
 * The server is forked from `vdisk open`, opens the image itself (so it holds
 * the QEMU-compatible lock), mounts, and reports through server.c.
 * SIGTERM makes it unmount, flush, close the image and exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vdisk.h"
#include "loopdev.h"
#include "server.h"
#include "server_ctl.h"
#include "vdisk_fuse.h"

#define SERVER_NAME  "vdisk-fuse" /* comm of the server, checked before signalling */
#define STOP_SECONDS 60           /* time a server gets to flush and exit on SIGTERM */

static bool fuse_available(void)
{
    return access("/dev/fuse", R_OK | W_OK) == 0 && access("/dev/loop-control", W_OK) == 0;
}

static void log_path(const struct disk_record *rec, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s.fuse.log", run_dir(), rec->id);
}

/* Take down whatever is mounted at MOUNTPOINT (a dead server's) and remove it. */
static void remove_mountpoint(const char *mountpoint)
{
    vdisk_fuse_abort_mount(mountpoint); /* nothing may wait on a dead server */
    while (umount2(mountpoint, MNT_DETACH) == 0)
        ; /* stacked mounts: take them all */
    if (unlink(mountpoint) < 0 && errno != ENOENT)
        warn("%s: %m", mountpoint);
}

/* What the server needs from `vdisk open`. */
struct fuse_job {
    const struct open_request *req;
    const struct disk_record *rec;
};

static bool fuse_unmounted(void *fs)
{
    return vdisk_fuse_done(fs);
}

/* What the control socket resizes: the open image, then the exported file. */
struct fuse_ctl {
    struct vdisk_image *img;
    struct vdisk_fuse *fs;
};

/* `vdisk resize` of the open disk (server_ctl.c): through our engine, then the file's size. */
static int ctl_resize(void *arg, uint64_t *size, unsigned flags, char *msg, size_t len)
{
    struct fuse_ctl *c = arg;
    int r;

    if (vdisk_resize(c->img, *size, flags) < 0) {
        snprintf(msg, len, "%s", vdisk_last_error());
        return -1;
    }
    *size = vdisk_get_size(c->img);
    r = vdisk_fuse_set_size(c->fs, *size);
    if (r < 0) {
        snprintf(msg, len, "the image is %llu bytes now, but its FUSE file cannot follow: %s",
                 (unsigned long long)*size, strerror(-r));
        return -1;
    }
    return 0;
}

/* The server process: opens the image (taking its lock), mounts, serves. */
static void serve(void *arg)
{
    const struct fuse_job *job = arg;
    const struct open_request *req = job->req;
    unsigned flags =
        (req->read_only ? VDISK_OPEN_RDONLY : 0) | (req->direct ? VDISK_OPEN_DIRECT : 0);
    struct vdisk_fuse_config cfg = {0};
    struct vdisk_fuse *fs = NULL;
    struct vdisk_image *img = NULL;
    const char *env = getenv("VDISK_FUSE_THREADS");
    struct server_ctl *ctl = NULL;
    struct fuse_ctl ctx;
    char msg[4200], ctl_path[4200];
    int r;

    cfg.threads = env ? (unsigned)atoi(env) : 0;
    cfg.debug = getenv("VDISK_FUSE_DEBUG") != NULL;
    if (open_image(req, flags, &img) < 0)
        _exit(err("%s", vdisk_last_error()));
    if (vdisk_fuse_start(img, job->rec->mountpoint, &cfg, &fs, msg, sizeof(msg)) < 0) {
        vdisk_close(img);
        _exit(err("%s", msg));
    }
    server_ctl_path(job->rec->id, ctl_path, sizeof(ctl_path));
    ctx = (struct fuse_ctl){img, fs}; /* lives until the control thread is joined */
    if (server_ctl_start(ctl_path, ctl_resize, &ctx, &ctl) < 0) {
        vdisk_fuse_stop(fs);
        vdisk_close(img);
        _exit(1);
    }
    server_ready("");
    fprintf(stderr, "vdisk-fuse: serving %s at %s\n", req->image, job->rec->mountpoint);
    /* until told to stop, or until the mount is taken away from outside */
    server_wait_stop(fuse_unmounted, fs);
    server_ctl_stop(ctl); /* no resize while the image closes */
    vdisk_fuse_stop(fs);
    r = vdisk_close(img); /* flush, unlock */
    if (r < 0)
        fprintf(stderr, "vdisk-fuse: %s\n", vdisk_last_error());
    fprintf(stderr, "vdisk-fuse: stopped\n");
    _exit(r < 0 ? 1 : 0);
}

static int fuse_start(const struct open_request *req, struct disk_record *rec)
{
    char log[4200], detail[64];
    pid_t pid;
    int fd;

    if ((size_t)snprintf(rec->mountpoint, sizeof(rec->mountpoint), "%s/%s.fuse", run_dir(),
                         rec->id) >= sizeof(rec->mountpoint))
        return -err("%s: run directory path too long", run_dir());
    snprintf(rec->backing, sizeof(rec->backing), "%s", rec->mountpoint);
    log_path(rec, log, sizeof(log));
    remove_mountpoint(rec->mountpoint); /* left by a server that was never closed */
    fd = open(rec->mountpoint, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -err("%s: %m", rec->mountpoint);
    close(fd);

    pid =
        server_spawn(SERVER_NAME, log, serve, &(struct fuse_job){req, rec}, detail, sizeof(detail));
    if (pid < 0)
        goto err_files;
    /* open through FUSE: the server answers, the loop device keeps the file */
    fd = open(rec->backing, (req->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
        err("%s: %m", rec->backing);
        goto err_server;
    }
    if (loopdev_attach(fd, 0, 0, req->image, req->read_only, req->direct, rec->device,
                       sizeof(rec->device)) < 0) {
        close(fd);
        goto err_server;
    }
    close(fd);
    rec->pid = pid;
    return 0;

err_server:
    server_stop(pid, SERVER_NAME, STOP_SECONDS);
err_files:
    remove_mountpoint(rec->mountpoint);
    unlink(log);
    rec->device[0] = rec->backing[0] = rec->mountpoint[0] = '\0';
    return -1;
}

static int fuse_stop(const struct disk_record *rec)
{
    bool running = server_running(rec->pid, SERVER_NAME);
    char log[4200];

    /* a dead server's connection is aborted so that loop's I/O fails fast */
    if (!running)
        vdisk_fuse_abort_mount(rec->mountpoint);
    if (loopdev_detach(rec->device, rec->backing) < 0)
        return -1; /* still mounted: leave everything as it is */
    if (running)
        server_stop(rec->pid, SERVER_NAME, STOP_SECONDS); /* it unmounts, flushes, unlocks */
    remove_mountpoint(rec->mountpoint);
    log_path(rec, log, sizeof(log));
    unlink(log);
    server_ctl_path(rec->id, log, sizeof(log)); /* a killed server's control socket */
    unlink(log);
    return 0;
}

static bool fuse_alive(const struct disk_record *rec)
{
    return server_running(rec->pid, SERVER_NAME) && loopdev_serves(rec->device, rec->backing);
}

const struct via via_fuse = {
    .name = "fuse",
    .available = fuse_available,
    .start = fuse_start,
    .stop = fuse_stop,
    .alive = fuse_alive,
};
