/* SPDX-License-Identifier: MIT */
/*
 * The FUSE frontend's session: mount over an empty regular file, start the
 * threads, wait for INIT; stop: unmount, and if a user lingers, abort the
 * connection through /sys/fs/fuse/connections so that nothing waits on a
 * server that is gone; the engine's counters go to the log.
 *
 * Shutdown: unmount; with no user left the kernel ends the connection, the
 * poll on /dev/fuse reports it and the read fails with ENODEV; each thread
 * then waits for its requests in flight and leaves. If a user lingers, the
 * connection is aborted (see stop_threads()).
 */
#include "internal.h"

static int find_fuse_mount(const char *mountpoint, unsigned *major_out, unsigned *minor_out);

/* Message into ERRBUF (printf style) and return -ERR. */
static int fail(char *errbuf, size_t errlen, int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
    return -err;
}

/* Wait until COND_OK(fs) or the deadline SECONDS from now; caller holds fs->lock. */
static bool wait_until(struct vdisk_fuse *fs, bool (*cond_ok)(struct vdisk_fuse *), int seconds)
{
    struct timespec deadline;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += seconds;
    while (!cond_ok(fs))
        if (pthread_cond_timedwait(&fs->cond, &fs->lock, &deadline) == ETIMEDOUT)
            return cond_ok(fs);
    return true;
}

static bool init_done(struct vdisk_fuse *fs)
{
    return fs->inited || fs->running == 0;
}

static bool threads_gone(struct vdisk_fuse *fs)
{
    return fs->running == 0;
}

/* Write to the connection's abort file: every request pending or to come fails. */
static int abort_conn(unsigned long dev)
{
    char path[128];
    int fd, r;

    snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%lu/abort", dev);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno; /* connection already gone */
    r = write(fd, "1", 1) == 1 ? 0 : -errno;
    close(fd);
    return r;
}

/*
 * Stop and join every thread. The session is never marked exited while the
 * connection lives: libfuse would drop the request a thread just read, and
 * whoever sent it would wait forever. Instead: unmount (with no user left the
 * kernel ends the connection: the threads see it on their polls and reads).
 * If a user remains (a loop device still bound), abort the connection so that
 * its requests fail rather than hang, and leave the dead mount where it is:
 * the loop device names its file by that path, and `vdisk close` cleans up.
 * Either way each thread finishes its requests in flight before it leaves.
 */
static void stop_threads(struct vdisk_fuse *fs)
{
    bool gone;

    pthread_mutex_lock(&fs->lock);
    gone = threads_gone(fs);
    pthread_mutex_unlock(&fs->lock);
    if (gone)
        goto join;
    if (umount2(fs->mountpoint, 0) == 0) {
        pthread_mutex_lock(&fs->lock);
        gone = wait_until(fs, threads_gone, 5);
        pthread_mutex_unlock(&fs->lock);
        if (gone)
            goto join;
    } else {
        fprintf(stderr, "vdisk-fuse: %s: unmount: %m; aborting the connection\n", fs->mountpoint);
    }
    if (fs->conn_dev && abort_conn(fs->conn_dev) == 0) {
        pthread_mutex_lock(&fs->lock);
        gone = wait_until(fs, threads_gone, 5);
        pthread_mutex_unlock(&fs->lock);
    }
    if (!gone) { /* last resort: tell the threads to stop receiving */
        uint64_t one = 1;

        fprintf(stderr, "vdisk-fuse: %s: cannot abort the connection; stopping threads\n",
                fs->mountpoint);
        fuse_session_exit(fs->se);
        if (write(fs->stop_efd, &one, sizeof(one)) != sizeof(one))
            fprintf(stderr, "vdisk-fuse: stop eventfd: %m\n");
    }
join:
    for (unsigned i = 0; i < fs->nthreads; i++)
        if (fs->threads[i].started)
            pthread_join(fs->threads[i].tid, NULL);
    for (unsigned i = 0; i < fs->nthreads; i++)
        fs->threads[i].started = false;
}

/* Log what the engine did for this mount (the server's log; tests read it). */
static void log_stats(struct vdisk_fuse *fs)
{
    struct vdisk_queue_stats sum = {0};

    for (unsigned i = 0; i < fs->nthreads; i++) {
        const struct vdisk_queue_stats st = fs->threads[i].stats;

        sum.requests += st.requests;
        sum.ring += st.ring;
        sum.workers += st.workers;
        sum.ring_ios += st.ring_ios;
    }
    fprintf(stderr,
            "vdisk-fuse: engine: %llu requests, %llu on the ring (%llu file I/Os), "
            "%llu at its workers, %u threads\n",
            (unsigned long long)sum.requests, (unsigned long long)sum.ring,
            (unsigned long long)sum.ring_ios, (unsigned long long)sum.workers, fs->nthreads);
}

static void free_fs(struct vdisk_fuse *fs)
{
    for (unsigned i = 0; i < fs->nthreads; i++)
        fuse_thread_free(&fs->threads[i]);
    if (fs->se)
        fuse_session_destroy(fs->se);
    if (fs->stop_efd >= 0)
        close(fs->stop_efd);
    pthread_cond_destroy(&fs->cond);
    pthread_mutex_destroy(&fs->lock);
    free(fs->mountpoint);
    free(fs);
}

int vdisk_fuse_start(struct vdisk_image *img, const char *mountpoint,
                     const struct vdisk_fuse_config *cfg, struct vdisk_fuse **fsp, char *errbuf,
                     size_t errlen)
{
    char opts[256];
    char *argv[] = {"vdisk-fuse", "-o", opts, cfg->debug ? "-d" : NULL, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(cfg->debug ? 4 : 3, argv);
    struct vdisk_fuse *fs;
    unsigned threads;
    unsigned maj, min;
    bool inited;
    int r, fd;

    fs = calloc(1, sizeof(*fs));
    if (!fs)
        return fail(errbuf, errlen, ENOMEM, "%s: out of memory", mountpoint);
    pthread_mutex_init(&fs->lock, NULL);
    pthread_cond_init(&fs->cond, NULL);
    fs->img = img;
    fs->size = vdisk_get_size(img);
    fs->read_only = vdisk_is_read_only(img);
    clock_gettime(CLOCK_REALTIME, &fs->mount_time);
    fs->mountpoint = strdup(mountpoint);
    fs->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!fs->mountpoint || fs->stop_efd < 0) {
        r = errno;
        free_fs(fs);
        return fail(errbuf, errlen, r, "%s: %s", mountpoint, strerror(r));
    }
    threads = cfg->threads ? cfg->threads : DEFAULT_THREADS;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    for (; fs->nthreads < threads; fs->nthreads++) {
        r = fuse_thread_setup(fs, &fs->threads[fs->nthreads], errbuf, errlen);
        if (r < 0) {
            fs->nthreads++; /* free what it made */
            free_fs(fs);
            return r;
        }
    }
    snprintf(opts, sizeof(opts), "fsname=vdisk,subtype=vdisk,default_permissions%s",
             fs->read_only ? ",ro" : "");
    fs->se = fuse_session_new(&args, &vdisk_fuse_ops, sizeof(vdisk_fuse_ops), fs);
    fuse_opt_free_args(&args);
    if (!fs->se) {
        free_fs(fs);
        return fail(errbuf, errlen, EINVAL, "%s: cannot create a FUSE session", mountpoint);
    }
    if (fuse_session_mount(fs->se, mountpoint) != 0) {
        free_fs(fs);
        return fail(errbuf, errlen, EIO, "%s: FUSE mount failed (is /dev/fuse usable?)",
                    mountpoint);
    }
    /* the threads wait on their rings, never in read(): reads must not block */
    fd = fuse_session_fd(fs->se);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        r = errno;
        fuse_session_unmount(fs->se);
        free_fs(fs);
        return fail(errbuf, errlen, r, "%s: /dev/fuse: %s", mountpoint, strerror(r));
    }
    /* remember the connection now: after a lazy unmount mountinfo no longer shows it */
    if (find_fuse_mount(mountpoint, &maj, &min) == 0)
        fs->conn_dev = (unsigned long)makedev(maj, min);
    for (unsigned i = 0; i < fs->nthreads; i++) {
        struct fuse_thread *t = &fs->threads[i];

        pthread_mutex_lock(&fs->lock);
        fs->running++;
        pthread_mutex_unlock(&fs->lock);
        r = pthread_create(&t->tid, NULL, fuse_thread_main, t);
        if (r != 0) {
            pthread_mutex_lock(&fs->lock);
            fs->running--;
            pthread_mutex_unlock(&fs->lock);
            stop_threads(fs);
            free_fs(fs);
            return fail(errbuf, errlen, r, "%s: cannot start a FUSE thread: %s", mountpoint,
                        strerror(r));
        }
        t->started = true;
    }
    pthread_mutex_lock(&fs->lock);
    inited = wait_until(fs, init_done, 10) && fs->inited;
    pthread_mutex_unlock(&fs->lock);
    if (!inited) {
        stop_threads(fs);
        free_fs(fs);
        return fail(errbuf, errlen, EIO, "%s: the kernel never sent FUSE INIT", mountpoint);
    }
    *fsp = fs;
    return 0;
}

bool vdisk_fuse_done(struct vdisk_fuse *fs)
{
    bool done;

    pthread_mutex_lock(&fs->lock);
    done = fs->running == 0;
    pthread_mutex_unlock(&fs->lock);
    return done;
}

void vdisk_fuse_stop(struct vdisk_fuse *fs)
{
    if (!fs)
        return;
    stop_threads(fs);
    log_stats(fs);
    free_fs(fs); /* closes /dev/fuse; a mount still in use stays for vdisk close */
}

/* The device number "MAJ:MIN" of the last FUSE mount at MOUNTPOINT, from mountinfo. */
static int find_fuse_mount(const char *mountpoint, unsigned *major_out, unsigned *minor_out)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char *line = NULL;
    size_t cap = 0;
    int found = -ENOENT;

    if (!f)
        return -errno;
    while (getline(&line, &cap, f) > 0) {
        unsigned maj, min;
        char mnt[4096], *sep;
        int pos = 0;

        /* id parent maj:min root mountpoint options... - fstype source ... */
        if (sscanf(line, "%*u %*u %u:%u %*s %4095s %n", &maj, &min, mnt, &pos) != 3)
            continue;
        sep = strstr(line + pos, " - ");
        if (!sep || strncmp(sep + 3, "fuse", 4) != 0)
            continue;
        /* mountinfo escapes space, tab, newline and backslash as \ooo */
        for (char *s = mnt, *d = mnt;; s++, d++) {
            if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] && s[3]) {
                *d = (char)(((s[1] - '0') << 6) | ((s[2] - '0') << 3) | (s[3] - '0'));
                s += 3;
            } else {
                *d = *s;
            }
            if (!*s)
                break;
        }
        if (strcmp(mnt, mountpoint) == 0) {
            *major_out = maj;
            *minor_out = min;
            found = 0;
        }
    }
    free(line);
    fclose(f);
    return found;
}

int vdisk_fuse_abort_mount(const char *mountpoint)
{
    unsigned maj, min;
    int r = find_fuse_mount(mountpoint, &maj, &min);

    if (r < 0)
        return r;
    /* the connection's directory is named after the superblock's dev_t */
    return abort_conn((unsigned long)makedev(maj, min));
}
