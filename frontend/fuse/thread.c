/* SPDX-License-Identifier: MIT */
/*
 * The FUSE frontend's threads, in the way of the kernel's ublk selftests
 * (kublk): each owns an io_uring, a vdisk_queue on that ring and a poll on
 * the non-blocking /dev/fuse. It waits only on its ring: /dev/fuse readable
 * -> receive requests until it would block and start them (ops.c); the
 * engine's CQEs -> vdisk_queue_handle_cqe(); finished requests -> replies.
 * Each request in flight owns a buffer from the thread's pool.
 */
#include "internal.h"

__thread struct fuse_thread *fuse_self;

/* A free request with its buffer, or NULL when all are in flight. */
struct io *fuse_io_get(struct fuse_thread *t)
{
    struct io *io = t->free;

    if (!io)
        return NULL;
    if (!io->buf && posix_memalign((void **)&io->buf, PAGE, BUF_SIZE) != 0) {
        io->buf = NULL;
        return NULL;
    }
    t->free = io->next;
    return io;
}

/* IO is done with: back on the free list (the last freed is the next used: buffers stay warm). */
void fuse_io_put(struct fuse_thread *t, struct io *io)
{
    free(io->tmp);
    io->tmp = NULL;
    io->next = t->free;
    t->free = io;
}

/* Answer every request the engine finished. */
static void reap(struct fuse_thread *t)
{
    struct vdisk_request *done[32];
    int n;

    while ((n = vdisk_queue_complete(t->q, done, 32, 0)) > 0) {
        int last_failed = -1;

        for (int i = 0; i < n; i++)
            if (done[i]->result < 0)
                last_failed = i;
        for (int i = 0; i < n; i++) {
            t->inflight--;
            /* vdisk_last_error() holds the message of the last failure only */
            fuse_io_done(t, done[i]->user_data, i == last_failed);
        }
    }
}

/* Receive and start requests while /dev/fuse has some and there is room for them. */
static void receive(struct fuse_thread *t)
{
    struct fuse_session *se = t->fs->se;

    for (unsigned n = 0; n < RECV_BATCH && !t->exiting; n++) {
        struct fuse_buf fbuf = {0};
        int r;

        if (!t->cur && !(t->cur = fuse_io_get(t)))
            return; /* all in flight: receive again when one completes */
        fbuf.mem = t->cur->buf + PAGE - WRITE_HEADER;
        r = fuse_session_receive_buf(se, &fbuf);
        if (r == -EAGAIN) {
            t->readable = false;
            return;
        }
        if (r == -EINTR)
            continue;
        if (r <= 0) { /* 0: unmounted or aborted (libfuse marks the session exited) */
            t->exiting = true;
            return;
        }
        fuse_session_process_buf(se, &fbuf); /* the handler may take t->cur */
    }
}

/* Put a poll for FD on T's ring; false if there is no SQE for it now. */
static bool arm_poll(struct fuse_thread *t, int fd, uint64_t tag)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);

    if (!sqe)
        return false;
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, tag);
    return true;
}

/*
 * A thread's loop: receive while /dev/fuse is readable, answer what the
 * engine finished, then wait on the ring for either. Once the connection is
 * gone (or the stop eventfd fires), finish what is in flight and leave.
 */
void *fuse_thread_main(void *arg)
{
    struct fuse_thread *t = arg;
    struct vdisk_fuse *fs = t->fs;
    int fuse_fd = fuse_session_fd(fs->se), r;

    fuse_self = t;
    /* io_uring_enable_rings(), missing from liburing 2.3's library */
    if ((t->ring.flags & IORING_SETUP_R_DISABLED) &&
        syscall(__NR_io_uring_register, t->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0) <
            0) {
        fprintf(stderr, "vdisk-fuse: io_uring: enable: %m\n");
        goto out;
    }
    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        bool more;

        if (t->readable && !t->exiting)
            receive(t);
        reap(t);
        if (!t->cur && t->free && !(t->cur = fuse_io_get(t)) && !t->inflight)
            usleep(10000); /* out of memory for a buffer with nothing to wait for */
        if (fuse_session_exited(fs->se))
            t->exiting = true;
        if (t->exiting && t->inflight == 0)
            break;
        /* go on without waiting: more to receive, or (no buffer) nothing to wait for */
        more = !t->exiting && (t->cur ? t->readable : !t->inflight);
        if (!t->exiting && !t->readable && !t->poll_armed && t->cur)
            t->poll_armed = arm_poll(t, fuse_fd, TAG_FUSE_POLL);
        if (!t->stop_armed)
            t->stop_armed = arm_poll(t, fs->stop_efd, TAG_STOP_POLL);
        r = more ? io_uring_submit_and_get_events(&t->ring) : io_uring_submit_and_wait(&t->ring, 1);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME) {
            fprintf(stderr, "vdisk-fuse: io_uring: %s\n", strerror(-r));
            usleep(1000);
        }
        io_uring_for_each_cqe(&t->ring, head, cqe)
        {
            seen++;
            if (cqe->user_data & VDISK_QUEUE_CQE_BIT) {
                vdisk_queue_handle_cqe(t->q, cqe->user_data, cqe->res);
            } else if (cqe->user_data == TAG_FUSE_POLL) {
                t->poll_armed = false;
                t->readable = true; /* readable, or an error the read reports */
            } else if (cqe->user_data == TAG_STOP_POLL) {
                t->exiting = true; /* stays readable: never armed again */
            }
        }
        io_uring_cq_advance(&t->ring, seen);
    }
    vdisk_queue_get_stats(t->q, &t->stats);
    vdisk_queue_destroy(t->q); /* nothing in flight: it only frees */
    t->q = NULL;
out:
    pthread_mutex_lock(&fs->lock);
    fs->running--;
    pthread_cond_broadcast(&fs->cond);
    pthread_mutex_unlock(&fs->lock);
    return NULL;
}

/* T's ring, engine queue and requests; a message in ERRBUF on failure. */
int fuse_thread_setup(struct vdisk_fuse *fs, struct fuse_thread *t, char *errbuf, size_t errlen)
{
    int r;

    t->fs = fs;
    /*
     * One thread submits and reaps: let completions run when it enters the
     * ring (no interrupting it with task work). Started disabled so that the
     * thread, not this one, becomes the ring's only submitter.
     */
    r = io_uring_queue_init(RING_ENTRIES, &t->ring,
                            IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                                IORING_SETUP_R_DISABLED);
    if (r == -EINVAL) /* a kernel before 6.1 */
        r = io_uring_queue_init(RING_ENTRIES, &t->ring, 0);
    if (r < 0) {
        snprintf(errbuf, errlen, "%s: io_uring (the FUSE server runs on it): %s", fs->mountpoint,
                 strerror(-r));
        return r;
    }
    t->ring_ok = true;
    r = vdisk_queue_create_on_ring(fs->img, QUEUE_DEPTH, &t->ring, &t->q);
    if (r < 0) {
        snprintf(errbuf, errlen, "%s", vdisk_last_error());
        return r;
    }
    t->ios = calloc(QUEUE_DEPTH, sizeof(*t->ios));
    if (!t->ios) {
        snprintf(errbuf, errlen, "%s: out of memory", fs->mountpoint);
        return -ENOMEM;
    }
    for (unsigned i = QUEUE_DEPTH; i-- > 0;) {
        t->ios[i].next = t->free;
        t->free = &t->ios[i];
    }
    t->readable = true; /* try a read first; the poll follows when it would block */
    return 0;
}

/* Free what thread_setup made (the thread has left, with nothing in flight). */
void fuse_thread_free(struct fuse_thread *t)
{
    vdisk_queue_destroy(t->q);
    t->q = NULL;
    if (t->ring_ok)
        io_uring_queue_exit(&t->ring);
    t->ring_ok = false;
    if (t->ios)
        for (unsigned i = 0; i < QUEUE_DEPTH; i++) {
            free(t->ios[i].buf);
            free(t->ios[i].tmp);
        }
    free(t->ios);
    t->ios = NULL;
}
