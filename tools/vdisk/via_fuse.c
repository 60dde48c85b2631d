/* SPDX-License-Identifier: MIT */
/*
 * --via fuse: a server process per disk serves the image (any format) as one
 * file in a private FUSE mount, RUN_DIR/<id>.fuse, and a loop device with
 * direct I/O sits on that file. Direct I/O on both layers keeps the page cache
 * out, so writeback under memory pressure cannot wait on the server.
 *
 * The server is forked from `vdisk open`, opens the image itself (so it holds
 * the QEMU-compatible lock), mounts, and says "ok" or why not through a pipe.
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
#include "vdisk_fuse.h"

#define SERVER_NAME  "vdisk-fuse" /* comm of the server, checked before signalling */
#define READY_FD     3
#define STOP_SECONDS 60 /* time a server gets to flush and exit on SIGTERM */

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

static bool fuse_available(void)
{
    return access("/dev/fuse", R_OK | W_OK) == 0 && access("/dev/loop-control", W_OK) == 0;
}

/* Is PID a live (not zombie) vdisk FUSE server? */
static bool server_running(pid_t pid)
{
    char path[64], buf[256], *close_paren;
    FILE *f;
    size_t n;

    if (pid <= 0)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return false;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "PID (COMM) STATE ..." */
    close_paren = strrchr(buf, ')');
    if (!close_paren || close_paren[1] != ' ' || strchr("ZX", close_paren[2]))
        return false;
    *close_paren = '\0';
    return strcmp(strchr(buf, '(') ? strchr(buf, '(') + 1 : "", SERVER_NAME) == 0;
}

/* Wait up to SECONDS for PID to exit (reaping it if it is our child). */
static bool wait_exit(pid_t pid, int seconds)
{
    struct timespec tick = {0, 10 * 1000 * 1000};

    for (int i = 0; i < seconds * 100; i++) {
        waitpid(pid, NULL, WNOHANG);
        if (!server_running(pid))
            return true;
        nanosleep(&tick, NULL);
    }
    return !server_running(pid);
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

/* The server process: never returns. */
static void __attribute__((noreturn))
serve(const struct open_request *req, const struct disk_record *rec, int ready_fd)
{
    struct vdisk_fuse_config cfg = {0};
    struct vdisk_fuse *fs = NULL;
    struct vdisk_image *img = NULL;
    char msg[4200], log[4200];
    const char *env;
    sigset_t stop_signals;
    unsigned flags;
    int fd, r;

    /* detach: own session, no terminal, stdio off the caller's pipes */
    setsid();
    if (chdir("/") < 0)
        _exit(1);
    log_path(rec, log, sizeof(log));
    fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, STDIN_FILENO);
        if (fd > STDERR_FILENO)
            close(fd);
    }
    fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO)
            close(fd);
    }
    /* keep only stdio and the ready pipe: not the caller's record lock */
    if (ready_fd != READY_FD) {
        dup2(ready_fd, READY_FD);
        close(ready_fd);
    }
    close_range(READY_FD + 1, ~0u, 0);
    prctl(PR_SET_NAME, SERVER_NAME);
    prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0); /* our allocations must not wait on our own I/O */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL); /* workers inherit the mask */

    env = getenv("VDISK_FUSE_THREADS");
    cfg.threads = env ? (unsigned)atoi(env) : 0;
    cfg.debug = getenv("VDISK_FUSE_DEBUG") != NULL;
    flags = (req->read_only ? VDISK_OPEN_RDONLY : 0) | (req->direct ? VDISK_OPEN_DIRECT : 0);
    r = vdisk_open(req->image, req->format, flags, &img);
    if (r < 0) {
        snprintf(msg, sizeof(msg), "%s", vdisk_last_error());
        goto fail;
    }
    r = vdisk_fuse_start(img, rec->mountpoint, &cfg, &fs, msg, sizeof(msg));
    if (r < 0)
        goto fail;
    fprintf(stderr, "vdisk-fuse: serving %s at %s\n", req->image, rec->mountpoint);
    if (write(READY_FD, "ok", 2) != 2)
        fprintf(stderr, "vdisk-fuse: ready pipe: %m\n");
    close(READY_FD);

    /* until told to stop, or until the mount is taken away from outside */
    while (!vdisk_fuse_done(fs)) {
        struct timespec poll = {0, 250 * 1000 * 1000};
        int sig = sigtimedwait(&stop_signals, NULL, &poll);

        if (sig > 0) {
            fprintf(stderr, "vdisk-fuse: signal %d: stopping\n", sig);
            break;
        }
    }
    vdisk_fuse_stop(fs);
    r = vdisk_close(img); /* flush, unlock */
    if (r < 0)
        fprintf(stderr, "vdisk-fuse: %s\n", vdisk_last_error());
    fprintf(stderr, "vdisk-fuse: stopped\n");
    _exit(r < 0 ? 1 : 0);

fail:
    fprintf(stderr, "vdisk-fuse: %s\n", msg);
    if (write(READY_FD, msg, strlen(msg)) < 0)
        fprintf(stderr, "vdisk-fuse: ready pipe: %m\n");
    vdisk_close(img);
    _exit(1);
}

/* Fork the server and wait for its word; its pid on success, -1 on failure. */
static pid_t spawn_server(const struct open_request *req, const struct disk_record *rec)
{
    char msg[4200];
    size_t got = 0;
    int pipefd[2];
    pid_t pid;

    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return -err("pipe: %m");
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return -err("fork: %m");
    }
    if (pid == 0) {
        close(pipefd[0]);
        serve(req, rec, pipefd[1]);
    }
    close(pipefd[1]);
    while (got < sizeof(msg) - 1) {
        ssize_t n = read(pipefd[0], msg + got, sizeof(msg) - 1 - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(pipefd[0]);
    msg[got] = '\0';
    if (strcmp(msg, "ok") == 0)
        return pid;
    waitpid(pid, NULL, 0);
    if (got)
        return -err("%s", msg);
    return -err("%s: the FUSE server exited before it was ready", req->image);
}

static int fuse_start(const struct open_request *req, struct disk_record *rec)
{
    char log[4200];
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

    pid = spawn_server(req, rec);
    if (pid < 0)
        goto err_files;
    /* open through FUSE: the server answers, the loop device keeps the file */
    fd = open(rec->backing, (req->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
        err("%s: %m", rec->backing);
        goto err_server;
    }
    if (loopdev_attach(fd, req->image, req->read_only, req->direct, rec->device,
                       sizeof(rec->device)) < 0) {
        close(fd);
        goto err_server;
    }
    close(fd);
    rec->pid = pid;
    return 0;

err_server:
    kill(pid, SIGTERM);
    if (!wait_exit(pid, STOP_SECONDS)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
err_files:
    remove_mountpoint(rec->mountpoint);
    unlink(log);
    rec->device[0] = rec->backing[0] = rec->mountpoint[0] = '\0';
    return -1;
}

static int fuse_stop(const struct disk_record *rec)
{
    bool running = server_running(rec->pid);
    char log[4200];

    /* a dead server's connection is aborted so that loop's I/O fails fast */
    if (!running)
        vdisk_fuse_abort_mount(rec->mountpoint);
    if (loopdev_detach(rec->device, rec->backing) < 0)
        return -1; /* still mounted: leave everything as it is */
    if (running) {
        kill(rec->pid, SIGTERM); /* it flushes, unmounts, closes the image */
        if (!wait_exit(rec->pid, STOP_SECONDS)) {
            warn("%s: FUSE server %d did not stop in %d s; killing it", rec->image, (int)rec->pid,
                 STOP_SECONDS);
            kill(rec->pid, SIGKILL);
            wait_exit(rec->pid, 5);
        }
    }
    remove_mountpoint(rec->mountpoint);
    log_path(rec, log, sizeof(log));
    unlink(log);
    return 0;
}

static bool fuse_alive(const struct disk_record *rec)
{
    return server_running(rec->pid) && loopdev_serves(rec->device, rec->backing);
}

const struct via via_fuse = {
    .name = "fuse",
    .raw_only = false,
    .available = fuse_available,
    .start = fuse_start,
    .stop = fuse_stop,
    .alive = fuse_alive,
};
