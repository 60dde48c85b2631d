/* SPDX-License-Identifier: MIT */
/*
 * --via ublk: the kernel's ublk driver with a vdisk server process per disk
 * (frontend/ublk): /dev/ublkbN for an image of any format.
 *
 * The device is made recoverable (USER_RECOVERY + REISSUE): when the server
 * dies, the device stays and its I/O waits; `vdisk recover` or `vdisk open`
 * of the same image starts a server that takes it over. A watchdog process,
 * forked by each server before it opens anything, deletes the device when no
 * server has taken it over within VDISK_UBLK_RECOVER_TIMEOUT seconds (30)
 * after the server's death, so that waiting I/O fails rather than hangs; it
 * also deletes a device the kernel stopped. Test switches:
 * VDISK_UBLK_QUEUES, VDISK_UBLK_DEPTH, VDISK_UBLK_RECOVERY=0.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vdisk.h"
#include "server.h"
#include "vdisk_ublk.h"

#define SERVER_NAME     "vdisk-ublk"    /* comm of the server, checked before signalling */
#define WATCHDOG_NAME   "vdisk-ublk-wd" /* and of its watchdog */
#define STOP_SECONDS    60
#define RECOVER_TIMEOUT 30 /* seconds a device waits for a new server */
#define UBLK_STATE_DEAD 0
#define UBLK_STATE_LIVE 1

static bool ublk_available(void)
{
    return access(VDISK_UBLK_CONTROL, R_OK | W_OK) == 0;
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000};

    nanosleep(&t, NULL);
}

/* N of /dev/ublkbN, or -1. */
static int device_id(const char *device)
{
    int id;

    return sscanf(device, "/dev/ublkb%d", &id) == 1 && id >= 0 ? id : -1;
}

/* A number from the environment, or DEF. */
static unsigned env_num(const char *name, unsigned def)
{
    const char *v = getenv(name);

    return v && *v ? (unsigned)strtoul(v, NULL, 10) : def;
}

static bool ublk_alive(const struct disk_record *rec)
{
    return server_running(rec->pid, SERVER_NAME) && access(rec->device, F_OK) == 0;
}

/* --- the watchdog ------------------------------------------------------------ */

/*
 * In the watchdog: wait for device ID's server (our parent) to die without
 * saying goodbye (EOF on the pipe; a server that stops writes 'q' first),
 * then for a new server. When none comes within the timeout, or the kernel
 * stopped the device, or it cannot be recovered, delete it. Only while the
 * device still names the dead server: a device taken over, or a new device
 * that got the same number, is left alone.
 */
static void __attribute__((noreturn))
watchdog(int id_pipe, pid_t server, const char *log, bool recoverable)
{
    unsigned timeout = env_num("VDISK_UBLK_RECOVER_TIMEOUT", RECOVER_TIMEOUT);
    char errbuf[256], bye;
    int id, state, pid, r;

    prctl(PR_SET_NAME, WATCHDOG_NAME);
    r = open(log, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (r >= 0) { /* never hold `vdisk open`'s stderr (a caller's pipe) */
        dup2(r, STDERR_FILENO);
        close(r);
    }
    if (read(id_pipe, &id, sizeof(id)) != sizeof(id))
        _exit(0); /* the server never got a device */
    while ((r = (int)read(id_pipe, &bye, 1)) < 0 && errno == EINTR)
        ;
    if (r == 1)
        _exit(0); /* it stops the device itself */
    for (unsigned waited = 0;; waited += 200) {
        r = vdisk_ublk_state(id, &state, &pid, NULL, errbuf, sizeof(errbuf));
        if (r < 0 || (pid != server && pid > 0))
            _exit(0); /* deleted, taken over, or another device by now (0: never started) */
        if (!recoverable || state == UBLK_STATE_DEAD || waited >= timeout * 1000u)
            break;
        sleep_ms(200);
    }
    if (vdisk_ublk_remove(id, errbuf, sizeof(errbuf)) < 0)
        fprintf(stderr, "vdisk-ublk watchdog: %s\n", errbuf);
    else
        fprintf(stderr, "vdisk-ublk watchdog: /dev/ublkb%d: server %d died; deleted\n", id,
                (int)server);
    _exit(0);
}

/* Fork the watchdog; returns the pipe that will carry the device number, or -1. */
static int start_watchdog(const char *log, bool recoverable)
{
    int p[2];
    pid_t self = getpid(), pid;

    if (pipe(p) < 0)
        return -1;
    pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        close(p[1]);
        close(3); /* not `vdisk open`'s ready pipe: its EOF says we are up or gone */
        watchdog(p[0], self, log, recoverable);
    }
    close(p[0]);
    return p[1];
}

/* --- the server process ------------------------------------------------------ */

struct ublk_job {
    const struct open_request *req;
    int recover_id; /* -1: a new device */
    const char *log;
};

/* The device number, for the watchdog. */
static void tell_watchdog(int id, void *wd)
{
    if (write(*(int *)wd, &id, sizeof(id)) != sizeof(id))
        fprintf(stderr, "vdisk-ublk: watchdog pipe: %m\n");
}

static bool queues_done(void *u)
{
    return vdisk_ublk_done(u);
}

static void server_process(void *arg)
{
    const struct ublk_job *job = arg;
    const struct open_request *req = job->req;
    unsigned flags =
        (req->read_only ? VDISK_OPEN_RDONLY : 0) | (req->direct ? VDISK_OPEN_DIRECT : 0);
    struct vdisk_ublk_config cfg = {
        .queues = env_num("VDISK_UBLK_QUEUES", 0),
        .depth = env_num("VDISK_UBLK_DEPTH", 0),
        .read_only = req->read_only,
        .recovery = env_num("VDISK_UBLK_RECOVERY", 1) != 0,
        .recover_id = job->recover_id,
        .defer_start = true, /* `vdisk open` starts it: see vdisk_ublk.h */
    };
    struct vdisk_image *img;
    struct vdisk_ublk *u;
    struct vdisk_info info;
    char errbuf[512], device[64];
    int wd, id, r;

    wd = start_watchdog(job->log, cfg.recovery);
    if (wd < 0)
        _exit(err("%s: cannot start the ublk watchdog: %m", req->image));
    r = open_image(req, flags, &img);
    if (r == -EINVAL && job->recover_id >= 0 && (flags & VDISK_OPEN_DIRECT)) /* was --no-direct */
        r = open_image(req, flags & ~VDISK_OPEN_DIRECT, &img);
    if (r < 0)
        _exit(err("%s", vdisk_last_error()));
    if (vdisk_get_info(img, &info) == 0 && info.cluster_size >= 4096 &&
        (info.cluster_size & (info.cluster_size - 1)) == 0)
        cfg.discard_granularity = info.cluster_size;
    cfg.on_id = tell_watchdog; /* before START_DEV: the server may die in it */
    cfg.on_id_arg = &wd;
    if (vdisk_ublk_start(img, &cfg, &u, errbuf, sizeof(errbuf)) < 0)
        _exit(err("%s: %s", req->image, errbuf));
    id = vdisk_ublk_id(u);
    snprintf(device, sizeof(device), "/dev/ublkb%d", id);
    server_ready(device);
    fprintf(stderr, "vdisk-ublk: serving %s on %s: %u queues of depth %u%s\n", req->image, device,
            vdisk_ublk_queues(u), vdisk_ublk_depth(u), cfg.recovery ? ", recoverable" : "");
    server_wait_stop(queues_done, u);
    if (write(wd, "q", 1) != 1) /* the watchdog leaves: we stop the device ourselves */
        fprintf(stderr, "vdisk-ublk: watchdog pipe: %m\n");
    close(wd);
    vdisk_ublk_stop(u);
    if (vdisk_close(img) < 0)
        _exit(err("%s", vdisk_last_error()));
    _exit(0);
}

/* --- the utility's side ------------------------------------------------------ */

static void log_path(const char *id, char *log, size_t len)
{
    snprintf(log, len, "%s/%s.ublk.log", run_dir(), id);
}

/* Start a server for REQ: a new device, or device RECOVER_ID taken over. */
static int spawn(const struct open_request *req, struct disk_record *rec, int recover_id)
{
    char log[4096], errbuf[256];
    pid_t pid;

    log_path(rec->id, log, sizeof(log));
    pid = server_spawn(SERVER_NAME, log, server_process, &(struct ublk_job){req, recover_id, log},
                       rec->device, sizeof(rec->device));
    if (pid < 0)
        return -1;
    if (device_id(rec->device) < 0) {
        server_stop(pid, SERVER_NAME, STOP_SECONDS);
        rec->device[0] = '\0';
        return -err("%s: the ublk server did not come up", req->image);
    }
    /* a new device is started from here, not from its server (see vdisk_ublk.h) */
    if (recover_id < 0 &&
        vdisk_ublk_start_dev(device_id(rec->device), pid, errbuf, sizeof(errbuf)) < 0) {
        server_stop(pid, SERVER_NAME, STOP_SECONDS);
        rec->device[0] = '\0';
        return -err("%s: %s", req->image, errbuf);
    }
    rec->pid = pid;
    return 0;
}

static int ublk_start(const struct open_request *req, struct disk_record *rec)
{
    return spawn(req, rec, -1);
}

/*
 * Is REC's image still the file `vdisk open` checked? The device holds that
 * file's data (a file system, maybe mounted): a file put in its place since
 * must not be served under it. The new server checks again on the file it
 * opens (open_image); this says why early. 0, or 1 with a message.
 */
static int same_file(const struct disk_record *rec)
{
    struct stat st;

    if (!rec->file_known) /* recorded by a vdisk that kept no identity */
        return 0;
    if (stat(rec->image, &st) < 0)
        return err("%s: %m: cannot recover %s without its image; put it back, or run "
                   "'vdisk close %s'",
                   rec->image, rec->device, rec->id);
    if ((uint64_t)st.st_dev == rec->file_dev && (uint64_t)st.st_ino == rec->file_ino)
        return 0;
    return err("%s: the file was replaced since it was opened on %s (inode %llu, now %llu): "
               "not serving it; put the original back, or run 'vdisk close %s'",
               rec->image, rec->device, (unsigned long long)rec->file_ino,
               (unsigned long long)st.st_ino, rec->id);
}

int ublk_recover(struct disk_record *rec)
{
    struct open_request req = {
        .image = rec->image,
        .format = rec->format,
        .format_stated = true, /* as it was served: never probe a guest's bytes again */
        .read_only = rec->read_only,
        .direct = true,
        .size = rec->size,
        .partition = rec->partition,
        .checked = rec->file_known, /* the server serves the file open checked, or nothing */
        .dev = rec->file_dev,
        .ino = rec->file_ino,
    };
    int id = device_id(rec->device);

    if (rec->snapshot) /* the overlay was an unlinked file of the dead server */
        return -err("%s: %s was a --snapshot disk: its writes died with its server and cannot "
                    "be recovered; run 'vdisk close %s'",
                    rec->image, rec->device, rec->id);
    if (id < 0)
        return -err("%s: recorded without a ublk device", rec->image);
    if (ublk_alive(rec))
        return -err("%s: %s is served (server pid %d): nothing to recover", rec->image, rec->device,
                    (int)rec->pid);
    if (same_file(rec))
        return -1;
    return spawn(&req, rec, id);
}

const char *ublk_kernel_state(const struct disk_record *rec, unsigned *queues)
{
    static const char *const names[] = {"dead", "live", "quiesced"};
    int id = device_id(rec->device), state, pid;
    char errbuf[256];

    *queues = 0;
    if (id < 0 || vdisk_ublk_state(id, &state, &pid, queues, errbuf, sizeof(errbuf)) < 0)
        return "gone";
    return state >= 0 && state <= 2 ? names[state] : "unknown";
}

static int ublk_stop(const struct disk_record *rec)
{
    char log[4096], errbuf[256];
    int id = device_id(rec->device), fd, r;

    if (ublk_alive(rec)) {
        /* O_EXCL fails while the device is mounted or claimed */
        fd = open(rec->device, O_RDONLY | O_EXCL | O_CLOEXEC);
        if (fd < 0 && errno == EBUSY)
            return -err("%s: device is in use (mounted?); unmount it first", rec->device);
        if (fd >= 0)
            close(fd);
    }
    /* a live server stops and deletes the device, flushes and unlocks */
    if ((!server_running(rec->pid, SERVER_NAME) ||
         !server_stop(rec->pid, SERVER_NAME, STOP_SECONDS)) &&
        id >= 0) { /* a dead server's device: its waiting I/O fails */
        r = vdisk_ublk_remove(id, errbuf, sizeof(errbuf));
        if (r < 0 && r != -ENOENT && r != -ENODEV)
            return -err("%s", errbuf);
    }
    log_path(rec->id, log, sizeof(log));
    unlink(log);
    return 0;
}

const struct via via_ublk = {
    .name = "ublk",
    .available = ublk_available,
    .start = ublk_start,
    .stop = ublk_stop,
    .alive = ublk_alive,
};
