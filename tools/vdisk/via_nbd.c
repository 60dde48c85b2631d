/* SPDX-License-Identifier: MIT */
/*
 * --via nbd: the kernel's NBD client on a vdisk NBD server. start() forks a
 * server process (detached, one per disk) that listens on a private Unix
 * socket RUN_DIR/<id>.sock, connects to it itself, negotiates, hands the
 * socket to /dev/nbdN with the NBD ioctls and runs NBD_DO_IT in a thread
 * (as qemu-nbd --connect does). SIGTERM disconnects the device, drains the
 * server, flushes and unlocks the image.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/nbd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vdisk.h"
#include "nbd-client.h"
#include "nbd-server.h"
#include "server.h"
#include "server_ctl.h"

#ifndef BLKRRPART /* <linux/fs.h>, whose BLOCK_SIZE is not ours */
#define BLKRRPART    _IO(0x12, 95)
#define BLKGETSIZE64 _IOR(0x12, 114, size_t)
#endif
#define NBD_DEVICES  256 /* /dev/nbd0 .. : tried in order */
#define BLOCK_SIZE   512
#define STOP_SECONDS 60          /* wait this long for a server to flush and go */
#define SERVER_NAME  "vdisk-nbd" /* comm of the server, checked before signalling */

static bool nbd_available(void)
{
    return access("/dev/nbd0", F_OK) == 0 || access("/sys/module/nbd", F_OK) == 0;
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000};

    nanosleep(&t, NULL);
}

/* The task id sysfs shows for /dev/nbdN's NBD_DO_IT, or 0 when unused. */
static pid_t device_task(const char *device)
{
    char path[128];
    FILE *f;
    int pid = 0;

    snprintf(path, sizeof(path), "/sys/block/%s/pid", strrchr(device, '/') + 1);
    f = fopen(path, "r");
    if (!f)
        return 0;
    if (fscanf(f, "%d", &pid) != 1)
        pid = 0;
    fclose(f);
    return pid;
}

static bool nbd_alive(const struct disk_record *rec)
{
    char path[128];
    pid_t task;

    if (!server_running(rec->pid, SERVER_NAME) || !rec->device[0])
        return false;
    task = device_task(rec->device);
    if (task <= 0)
        return false;
    /* the device's NBD_DO_IT runs in a thread of our server */
    snprintf(path, sizeof(path), "/proc/%d/task/%d", (int)rec->pid, (int)task);
    return access(path, F_OK) == 0;
}

/* --- the server process ---------------------------------------------------- */

struct kernel_link {
    int nbd; /* /dev/nbdN */
    int sock;
    char device[64];
};

static void *do_it(void *arg)
{
    struct kernel_link *k = arg;

    ioctl(k->nbd, NBD_DO_IT); /* returns on disconnect */
    ioctl(k->nbd, NBD_CLEAR_QUE);
    ioctl(k->nbd, NBD_CLEAR_SOCK);
    kill(getpid(), SIGTERM); /* the device is gone: so is the server */
    return NULL;
}

static struct nbd_server *server; /* the one this process runs */

/* The accept loop, in its own thread; LISTEN points at the socket. */
static void *serve(void *listen)
{
    nbd_server_serve(server, *(int *)listen);
    return NULL;
}

/* Connect to our own socket, negotiate, hand it to a free /dev/nbdN. */
static int kernel_connect(const char *sock_path, bool read_only, struct kernel_link *k)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    uint64_t size;
    uint16_t flags;
    int r;

    if (strlen(sock_path) >= sizeof(sa.sun_path))
        return -err("%s: socket path too long", sock_path);
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    for (int n = 0; n < NBD_DEVICES; n++) {
        snprintf(k->device, sizeof(k->device), "/dev/nbd%d", n);
        k->nbd = open(k->device, O_RDWR | O_CLOEXEC);
        if (k->nbd < 0) {
            if (errno == ENOENT)
                break;
            continue;
        }
        if (device_task(k->device) > 0) { /* someone else's */
            close(k->nbd);
            continue;
        }
        k->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (k->sock < 0 || connect(k->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0)
            return -err("%s: connect: %m", sock_path);
        r = nbd_client_go(k->sock, "", &size, &flags);
        if (r < 0) {
            errno = -r;
            return -err("%s: NBD handshake with our own server failed: %m", sock_path);
        }
        if (read_only)
            flags |= NBD_FLAG_READ_ONLY;
        if (ioctl(k->nbd, NBD_SET_SOCK, k->sock) < 0) {
            close(k->sock);
            close(k->nbd);
            if (errno == EBUSY)
                continue; /* taken meanwhile: try the next */
            return -err("%s: NBD_SET_SOCK: %m", k->device);
        }
        if (ioctl(k->nbd, NBD_SET_BLKSIZE, (unsigned long)BLOCK_SIZE) < 0 ||
            ioctl(k->nbd, NBD_SET_SIZE_BLOCKS, (unsigned long)(size / BLOCK_SIZE)) < 0 ||
            ioctl(k->nbd, NBD_SET_FLAGS, (unsigned long)flags) < 0) {
            err("%s: configuring: %m", k->device);
            ioctl(k->nbd, NBD_CLEAR_SOCK);
            close(k->nbd);
            return -1;
        }
        return 0;
    }
    return -err("no free /dev/nbdN device");
}

/* What the server needs from `vdisk open`. */
struct nbd_job {
    const struct open_request *req;
    const char *sock_path;
    const char *id;
};

/* What the control socket resizes: the open image, then the export and the kernel's device. */
struct nbd_ctl {
    struct vdisk_image *img;
    struct kernel_link *k;
};

/*
 * `vdisk resize` of the open disk (server_ctl.c): through our engine, then our
 * export's size, then the device's. NBD_SET_SIZE on a running ioctl-set-up
 * device sets its capacity at once (as rbd-nbd resizes); netlink's RECONFIGURE
 * is for devices set up by netlink.
 */
static int ctl_resize(void *arg, uint64_t *size, unsigned flags, char *msg, size_t len)
{
    struct nbd_ctl *c = arg;

    if (vdisk_resize(c->img, *size, flags) < 0) {
        snprintf(msg, len, "%s", vdisk_last_error());
        return -1;
    }
    *size = vdisk_get_size(c->img);
    nbd_server_set_size(server, *size);
    if (ioctl(c->k->nbd, NBD_SET_SIZE, (unsigned long)(*size & ~(uint64_t)(BLOCK_SIZE - 1))) < 0) {
        snprintf(msg, len, "%s: NBD_SET_SIZE: %s (the image is %llu bytes now)", c->k->device,
                 strerror(errno), (unsigned long long)*size);
        return -1;
    }
    return 0;
}

/* The server process: reports the device it serves once the kernel uses it. */
static void server_process(void *arg)
{
    const struct nbd_job *job = arg;
    const struct open_request *req = job->req;
    const char *sock_path = job->sock_path;
    unsigned flags =
        (req->read_only ? VDISK_OPEN_RDONLY : 0) | (req->direct ? VDISK_OPEN_DIRECT : 0);
    struct nbd_server_opts opts = {.quiet = false};
    struct kernel_link k = {-1, -1, ""};
    struct server_ctl *ctl = NULL;
    struct nbd_ctl ctx;
    char ctl_path[4200];
    struct vdisk_image *img;
    pthread_t server_thread, kernel_thread;
    uint64_t bytes = 0;
    int lfd;

    if (open_image(req, flags, &img) < 0)
        _exit(err("%s", vdisk_last_error()));
    if (nbd_server_new(img, &opts, &server) < 0)
        _exit(err("%s: cannot set up the NBD server", req->image));
    lfd = nbd_listen_unix(sock_path);
    if (lfd < 0)
        _exit(1);
    if (pthread_create(&server_thread, NULL, serve, &lfd) != 0) {
        unlink(sock_path);
        _exit(err("%s: cannot start the server thread", req->image));
    }
    if (kernel_connect(sock_path, req->read_only, &k) < 0) {
        unlink(sock_path);
        _exit(1);
    }
    if (pthread_create(&kernel_thread, NULL, do_it, &k) != 0) {
        ioctl(k.nbd, NBD_CLEAR_SOCK);
        unlink(sock_path);
        _exit(err("%s: cannot start the NBD_DO_IT thread", k.device));
    }
    for (int i = 0; i < 500 && device_task(k.device) <= 0; i++)
        sleep_ms(10);
    if (device_task(k.device) <= 0) {
        err("%s: the kernel did not start serving", k.device);
        ioctl(k.nbd, NBD_DISCONNECT);
        ioctl(k.nbd, NBD_CLEAR_SOCK);
        unlink(sock_path);
        _exit(1);
    }

    /* partitions: the kernel scans them on a first open, and ours came first (as nbd-client);
     * the kernel names its task before it sets the capacity, and scans nothing at 0 bytes */
    for (int i = 0; i < 500 && (ioctl(k.nbd, BLKGETSIZE64, &bytes) < 0 || bytes == 0); i++)
        sleep_ms(10);
    if (ioctl(k.nbd, BLKRRPART) < 0)
        fprintf(stderr, "vdisk-nbd: %s: partition scan: %m\n", k.device);
    server_ctl_path(job->id, ctl_path, sizeof(ctl_path));
    ctx = (struct nbd_ctl){img, &k}; /* lives until the control thread is joined */
    if (server_ctl_start(ctl_path, ctl_resize, &ctx, &ctl) < 0) {
        ioctl(k.nbd, NBD_DISCONNECT);
        unlink(sock_path);
        _exit(1);
    }
    server_ready(k.device);
    server_wait_stop(NULL, NULL);
    server_ctl_stop(ctl); /* no resize while the device goes */
    /* the kernel first: it sends NBD_CMD_DISC after its queue drains */
    if (device_task(k.device) > 0)
        ioctl(k.nbd, NBD_DISCONNECT);
    pthread_join(kernel_thread, NULL);
    (void)ioctl(k.nbd, BLKRRPART); /* at 0 bytes: the partition devices go with the disk */
    nbd_server_stop(server);
    pthread_join(server_thread, NULL);
    close(lfd);
    unlink(sock_path);
    nbd_server_free(server);
    if (vdisk_close(img) < 0)
        _exit(err("%s", vdisk_last_error()));
    _exit(0);
}

/* --- the utility's side ------------------------------------------------------ */

static void paths(const char *id, char *sock, size_t slen, char *log, size_t llen)
{
    snprintf(sock, slen, "%s/%s.sock", run_dir(), id);
    snprintf(log, llen, "%s/%s.log", run_dir(), id);
}

static int nbd_start(const struct open_request *req, struct disk_record *rec)
{
    char sock[4096], log[4096];
    pid_t pid;

    paths(rec->id, sock, sizeof(sock), log, sizeof(log));
    pid = server_spawn(SERVER_NAME, log, server_process, &(struct nbd_job){req, sock, rec->id},
                       rec->device, sizeof(rec->device));
    if (pid < 0)
        return -1;
    if (strncmp(rec->device, "/dev/", 5) != 0) {
        server_stop(pid, SERVER_NAME, STOP_SECONDS);
        rec->device[0] = '\0';
        return -err("%s: the NBD server did not come up", req->image);
    }
    rec->pid = pid;
    snprintf(rec->socket, sizeof(rec->socket), "%s", sock);
    return 0;
}

static int nbd_stop(const struct disk_record *rec)
{
    char sock[4096], log[4096];
    int fd;

    if (nbd_alive(rec)) {
        /* O_EXCL fails while the device is mounted or claimed */
        fd = open(rec->device, O_RDONLY | O_EXCL | O_CLOEXEC);
        if (fd < 0 && errno == EBUSY)
            return -err("%s: device is in use (mounted?); unmount it first", rec->device);
        if (fd >= 0)
            close(fd);
    }
    if (server_running(rec->pid, SERVER_NAME)) {
        server_stop(rec->pid, SERVER_NAME, STOP_SECONDS); /* it disconnects, flushes, unlocks */
    } else if (rec->device[0] && device_task(rec->device) <= 0) {
        /* the server died: make sure the kernel lets the device go */
        fd = open(rec->device, O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
            ioctl(fd, NBD_CLEAR_SOCK);
            close(fd);
        }
    }
    paths(rec->id, sock, sizeof(sock), log, sizeof(log));
    unlink(sock);
    unlink(log);
    server_ctl_path(rec->id, log, sizeof(log)); /* a killed server's control socket */
    unlink(log);
    return 0;
}

const struct via via_nbd = {
    .name = "nbd",
    .available = nbd_available,
    .start = nbd_start,
    .stop = nbd_stop,
    .alive = nbd_alive,
};
