/* SPDX-License-Identifier: MIT */
/*
 * vdisk supervise IMAGE|ID: keep one disk of the persistent table open, as
 * the main process of vdisk@ID.service. It opens the disk (or adopts it, if
 * `vdisk open --all-persistent` opened it first), tells systemd it is ready
 * (sd_notify), and watches the disk's server: when the server dies it closes
 * what is left and exits 1, so that systemd restarts the unit, which opens
 * the disk again. SIGTERM (systemctl stop) closes the disk and exits 0.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "persist.h"
#include "vdisk.h"

/* The notify socket systemd gave us; taken out of the environment so servers don't inherit it. */
static char notify_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

/* Send MSG to systemd (Type=notify), if it is listening. */
static void notify(const char *msg)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(notify_path);
    int fd;

    if (!len)
        return;
    memcpy(sa.sun_path, notify_path, len);
    if (sa.sun_path[0] == '@') /* abstract socket */
        sa.sun_path[0] = '\0';
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        warn("%s: sd_notify: %m", notify_path);
    close(fd);
}

/* The table's entry for WHAT (an image path or an id): 0, or 1 with a message. */
static int find_entry(const char *what, struct persist_entry *out)
{
    struct persist_entry *all;
    char canonical[PATH_MAX], id[17];
    size_t n;
    int r = 1;

    if (persist_load(&all, &n) < 0)
        return 1;
    if (!realpath(what, canonical))
        snprintf(canonical, sizeof(canonical), "%s", what);
    for (size_t i = 0; i < n && r; i++) {
        record_id(all[i].image, id);
        if (strcmp(id, what) == 0 || strcmp(all[i].image, canonical) == 0) {
            *out = all[i];
            r = 0;
        }
    }
    free(all);
    if (r)
        err("%s: not in %s (vdisk persist add it first)", what, persist_table());
    return r;
}

/* Close the disk ID if it is recorded, under the record lock. */
static int close_id(const char *id)
{
    struct disk_record rec;
    int lock = record_lock(), status = 0;

    if (lock < 0)
        return 1;
    if (record_load(id, &rec) == 1)
        status = close_disk(&rec, false);
    record_unlock(lock);
    return status;
}

/* Open E's disk, or adopt it when it is open and alive; its record in REC. 0 or 1. */
static int open_or_adopt(const struct persist_entry *e, const char *id, struct disk_record *rec)
{
    const struct via *via;

    if (record_load(id, rec) == 1) {
        via = via_find(rec->via);
        if (via && via->alive(rec))
            return 0;
        warn("%s: recorded on %s but its server is gone: closing it first", e->image,
             rec->device[0] ? rec->device : "(no device)");
        if (close_id(id))
            return 1;
    }
    if (open_entry(e))
        return 1;
    if (record_load(id, rec) != 1)
        return err("%s: open, but no record of it", e->image);
    return 0;
}

int cmd_supervise(int argc, char **argv)
{
    struct persist_entry e;
    struct disk_record rec;
    struct pollfd fds[2];
    sigset_t stop;
    char id[17], status[256];
    const char *ns = getenv("NOTIFY_SOCKET");
    int sigfd, pidfd = -1, nfds = 1;

    if (argc != 2 || argv[1][0] == '-') {
        print_usage(stderr, "supervise");
        return 2;
    }
    if (ns && strlen(ns) < sizeof(notify_path))
        snprintf(notify_path, sizeof(notify_path), "%s", ns);
    unsetenv("NOTIFY_SOCKET");
    if (find_entry(argv[1], &e))
        return 1;
    record_id(e.image, id);
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGHUP);
    sigprocmask(SIG_BLOCK, &stop, NULL);
    sigfd = signalfd(-1, &stop, SFD_CLOEXEC);
    if (sigfd < 0)
        return err("signalfd: %m");
    if (open_or_adopt(&e, id, &rec))
        return 1;
    fflush(stdout);
    if (rec.pid > 0) {
        pidfd = (int)syscall(SYS_pidfd_open, rec.pid, 0);
        if (pidfd < 0 && errno != ESRCH)
            return err("pidfd_open %d: %m", (int)rec.pid);
    }
    snprintf(status, sizeof(status), "READY=1\nSTATUS=%s on %s (way %s, server pid %d)", id,
             rec.device, rec.via, (int)rec.pid);
    notify(status);
    fds[0] = (struct pollfd){.fd = sigfd, .events = POLLIN};
    if (pidfd >= 0 || rec.pid > 0) {
        fds[1] = (struct pollfd){.fd = pidfd, .events = POLLIN};
        nfds = 2;
    }
    /* pidfd < 0 with a server pid: it died before we looked, as if it had just died */
    while (nfds == 1 || pidfd >= 0) {
        if (poll(fds, (nfds_t)nfds, -1) < 0) {
            if (errno == EINTR)
                continue;
            return err("poll: %m");
        }
        if (fds[0].revents)
            break;
        if (nfds == 2 && fds[1].revents)
            break;
    }
    if (nfds == 2 && (pidfd < 0 || fds[1].revents)) {
        waitpid(rec.pid, NULL, WNOHANG); /* reap it if it was ours */
        err("%s: the server of %s (pid %d) died; closing what is left, for a restart", e.image,
            rec.device, (int)rec.pid);
        notify("STOPPING=1");
        close_id(id);
        return 1;
    }
    notify("STOPPING=1");
    return close_id(id);
}
