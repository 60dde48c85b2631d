/* SPDX-License-Identifier: MIT */
/*
 * The control socket of a per-disk server (see server_ctl.h). The server
 * answers on one thread, one connection at a time; a client that sends
 * nothing is dropped after CTL_TIMEOUT seconds.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "vdisk.h"
#include "server_ctl.h"

#define CTL_TIMEOUT 10   /* seconds a peer gets to send its request */
#define CTL_REPLY   120  /* seconds `vdisk resize` waits for the answer (a resize flushes) */
#define CTL_LINE    4200 /* longest line either way */

struct server_ctl {
    int fd;
    char *path;
    pthread_t thread;
    server_ctl_resize_fn fn;
    void *arg;
};

void server_ctl_path(const char *id, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s.ctl", run_dir(), id);
}

/* Read one line (without its newline) from FD into BUF; 0, or -1. */
static int read_line(int fd, char *buf, size_t len)
{
    size_t n = 0;

    while (n + 1 < len) {
        ssize_t k = read(fd, buf + n, 1);

        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        if (buf[n] == '\n') {
            buf[n] = '\0';
            return 0;
        }
        n++;
    }
    return -1; /* too long */
}

/* Set both timeouts of socket FD to SECS. */
static void set_timeouts(int fd, int secs)
{
    struct timeval tv = {.tv_sec = secs};

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Answer one connection C. */
static void answer(struct server_ctl *ctl, int c)
{
    char line[CTL_LINE], msg[CTL_LINE - 16] = "", reply[CTL_LINE];
    uint64_t size;
    unsigned flags;
    int n;

    set_timeouts(c, CTL_TIMEOUT);
    if (read_line(c, line, sizeof(line)) < 0)
        return;
    if (sscanf(line, "resize %" SCNu64 " %u%n", &size, &flags, &n) == 2 && !line[n]) {
        if (ctl->fn(ctl->arg, &size, flags, msg, sizeof(msg)) == 0)
            snprintf(reply, sizeof(reply), "ok %" PRIu64 "\n", size);
        else
            snprintf(reply, sizeof(reply), "error %s\n", msg[0] ? msg : "resize failed");
    } else {
        snprintf(reply, sizeof(reply), "error unknown request\n");
    }
    fprintf(stderr, "vdisk-server: control: %s -> %s", line, reply);
    if (write(c, reply, strlen(reply)) < 0)
        return; /* the client went away: it says so itself */
}

/* The server's control thread: accept until the socket is shut down. */
static void *ctl_thread(void *arg)
{
    struct server_ctl *ctl = arg;

    for (;;) {
        int c = accept4(ctl->fd, NULL, NULL, SOCK_CLOEXEC);

        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL; /* shut down (EINVAL), or broken */
        }
        answer(ctl, c);
        close(c);
    }
}

int server_ctl_start(const char *path, server_ctl_resize_fn fn, void *arg, struct server_ctl **ctlp)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct server_ctl *ctl;
    mode_t old;
    int r;

    if (strlen(path) >= sizeof(sa.sun_path))
        return -err("%s: control socket path too long", path);
    ctl = calloc(1, sizeof(*ctl));
    if (!ctl || !(ctl->path = strdup(path))) {
        free(ctl);
        return -err("%s: out of memory", path);
    }
    ctl->fn = fn;
    ctl->arg = arg;
    strcpy(sa.sun_path, path);
    unlink(path); /* a dead server's */
    ctl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    old = umask(0177); /* 0600 from the start: no window where others may connect */
    r = ctl->fd < 0 ? -1 : bind(ctl->fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (r == 0)
        r = listen(ctl->fd, 4);
    if (r == 0 && (r = pthread_create(&ctl->thread, NULL, ctl_thread, ctl)) != 0) {
        errno = r;
        r = -1;
    }
    if (r < 0) {
        err("%s: control socket: %m", path);
        if (ctl->fd >= 0)
            close(ctl->fd);
        unlink(path);
        free(ctl->path);
        free(ctl);
        return -1;
    }
    *ctlp = ctl;
    return 0;
}

void server_ctl_stop(struct server_ctl *ctl)
{
    if (!ctl)
        return;
    shutdown(ctl->fd, SHUT_RDWR); /* accept() returns */
    pthread_join(ctl->thread, NULL);
    close(ctl->fd);
    unlink(ctl->path);
    free(ctl->path);
    free(ctl);
}

int server_ctl_resize(const char *path, const char *image, uint64_t *size, unsigned flags)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char line[CTL_LINE];
    uint64_t got;
    int fd, n;

    if (strlen(path) >= sizeof(sa.sun_path))
        return err("%s: control socket path too long", path);
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        err("%s: its server has no control socket %s (%m): a server started by an older vdisk; "
            "close the disk, resize, and open it again",
            image, path);
        goto fail;
    }
    set_timeouts(fd, CTL_REPLY);
    n = snprintf(line, sizeof(line), "resize %" PRIu64 " %u\n", *size, flags);
    if (write(fd, line, (size_t)n) != n || read_line(fd, line, sizeof(line)) < 0) {
        err("%s: no answer from its server on %s: %m", image, path);
        goto fail;
    }
    close(fd);
    if (sscanf(line, "ok %" SCNu64 "%n", &got, &n) == 1 && !line[n]) {
        *size = got;
        return 0;
    }
    return err("%s", strncmp(line, "error ", 6) == 0 ? line + 6 : line);
fail:
    if (fd >= 0)
        close(fd);
    return 1;
}
