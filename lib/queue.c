/* SPDX-License-Identifier: MIT */
/*
 * Asynchronous requests on an image (vdisk_queue_*).
 *
 * A queue belongs to one thread. A read or write whose bytes the format can
 * map straight onto the image file (format.h: map) goes to the kernel through
 * the queue's io_uring, with no thread hand-off; the format keeps the mapping
 * valid until release(), which runs when the completion is collected.
 * Everything else (flush, discard, zeroes, holes, backing files, allocating
 * writes) is handed to the queue's worker threads, which run the synchronous
 * calls and post completions back through an eventfd the ring reads.
 * Where io_uring is unavailable (a seccomp filter, kernel.io_uring_disabled,
 * or VDISK_NO_IO_URING=1 in the environment) every request goes to the
 * workers and the queue waits on the eventfd itself.
 *
 * Locking: q->lock guards the worker lists (pending, finished) and stopping; the rest
 * of the queue is touched only by the owning thread.
 */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "vdisk/vdisk.h"
#include "error.h"
#include "format.h"

#define MAX_DEPTH   4096u
#define MAX_WORKERS 8u
#define EFD_TAG     ((uint64_t)1) /* user_data of the eventfd read; slots are aligned */

/* One request in flight. */
struct slot {
    struct vdisk_request *req;
    struct slot *next; /* free list, worker lists, ready list */
    uint64_t host;     /* ring: file offset of the request's first byte */
    uint64_t done;     /* ring: bytes transferred so far */
    int fd;            /* ring: descriptor used */
    bool pinned;       /* ring: the format's release() is owed */
    bool wwrite;       /* a write at the workers, on q->wwrites */
    struct slot *wnext;
    int result;
    char msg[256]; /* a failure's message */
};

struct vdisk_queue {
    struct vdisk_image *img;
    struct io_uring ring;
    bool has_ring; /* false: workers only */
    struct slot *slots, *free;
    struct slot *ready, **ready_tail; /* completed, not yet collected */
    unsigned depth, inflight;

    int efd;
    uint64_t efd_value;
    bool efd_armed;
    unsigned at_workers;                    /* requests handed to workers, not yet back */
    uint64_t granule;                       /* the format's allocation unit (cluster), 0 if none */
    struct slot *wwrites;                   /* writes at the workers: may be allocating */
    struct slot *deferred, **deferred_tail; /* writes waiting for one of those */

    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct slot *pending, **pending_tail, *finished;
    bool stopping;
    pthread_t workers[MAX_WORKERS];
    unsigned nworkers, max_workers;
};

/* The name of an operation, for messages. */
static const char *op_name(enum vdisk_op op)
{
    static const char *const names[] = {"read", "write", "flush", "discard", "write zeroes"};

    return (unsigned)op < sizeof(names) / sizeof(names[0]) ? names[op] : "request";
}

int vdisk_queue_create(struct vdisk_image *img, unsigned depth, unsigned flags,
                       struct vdisk_queue **qp)
{
    struct vdisk_queue *q;
    int r;

    vdisk_error_clear();
    if (depth == 0 || depth > MAX_DEPTH || flags)
        return vdisk_error(EINVAL, "%s: invalid queue depth %u or flags %#x", img->path, depth,
                           flags);
    q = calloc(1, sizeof(*q));
    if (!q)
        return vdisk_error(ENOMEM, "%s: out of memory for a queue", img->path);
    q->slots = calloc(depth, sizeof(*q->slots));
    if (!q->slots) {
        r = vdisk_error(ENOMEM, "%s: out of memory for a queue", img->path);
        goto err_free;
    }
    /* one more entry than requests: the eventfd read */
    if (!getenv("VDISK_NO_IO_URING") || strcmp(getenv("VDISK_NO_IO_URING"), "1") != 0)
        q->has_ring = io_uring_queue_init(depth + 1, &q->ring, 0) == 0;
    q->efd = eventfd(0, EFD_CLOEXEC);
    if (q->efd < 0) {
        r = vdisk_error(errno, "%s: eventfd: %m", img->path);
        goto err_ring;
    }
    q->img = img;
    q->depth = depth;
    q->max_workers = depth < MAX_WORKERS ? depth : MAX_WORKERS;
    for (unsigned i = depth; i-- > 0;) {
        q->slots[i].next = q->free;
        q->free = &q->slots[i];
    }
    q->ready_tail = &q->ready;
    q->deferred_tail = &q->deferred;
    {
        struct vdisk_info info;

        if (vdisk_get_info(img, &info) == 0)
            q->granule = info.cluster_size;
        vdisk_error_clear();
    }
    q->pending_tail = &q->pending;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->wake, NULL);
    *qp = q;
    return 0;

err_ring:
    if (q->has_ring)
        io_uring_queue_exit(&q->ring);
err_free:
    free(q->slots);
    free(q);
    return r;
}

/* ---- worker threads: requests the ring can't take ---- */

/* Run one request through the synchronous API. */
static int run_sync(struct vdisk_image *img, struct vdisk_request *req)
{
    switch (req->op) {
    case VDISK_OP_READ:
        return vdisk_read(img, req->buf, req->length, req->offset);
    case VDISK_OP_WRITE:
        return vdisk_write(img, req->buf, req->length, req->offset, req->flags);
    case VDISK_OP_FLUSH:
        return vdisk_flush(img);
    case VDISK_OP_DISCARD:
        return vdisk_discard(img, req->offset, req->length);
    case VDISK_OP_WRITE_ZEROES:
        return vdisk_write_zeroes(img, req->offset, req->length, req->flags);
    }
    return -EINVAL;
}

/* Take requests from q->pending until the queue stops. */
static void *worker_main(void *arg)
{
    struct vdisk_queue *q = arg;
    uint64_t one = 1;

    pthread_mutex_lock(&q->lock);
    for (;;) {
        struct slot *s = q->pending;

        if (!s) {
            if (q->stopping)
                break;
            pthread_cond_wait(&q->wake, &q->lock);
            continue;
        }
        q->pending = s->next;
        if (!q->pending)
            q->pending_tail = &q->pending;
        pthread_mutex_unlock(&q->lock);

        s->result = run_sync(q->img, s->req);
        if (s->result < 0)
            snprintf(s->msg, sizeof(s->msg), "%s", vdisk_last_error());

        pthread_mutex_lock(&q->lock);
        s->next = q->finished;
        q->finished = s;
        if (write(q->efd, &one, sizeof(one)) < 0)
            abort(); /* an eventfd write only fails on overflow */
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

/* Give S to the workers, starting one more while some are short of work. */
static int to_workers(struct vdisk_queue *q, struct slot *s)
{
    int r = 0;

    pthread_mutex_lock(&q->lock);
    s->next = NULL;
    *q->pending_tail = s;
    q->pending_tail = &s->next;
    if (q->nworkers < q->max_workers && q->nworkers <= q->at_workers) {
        r = -pthread_create(&q->workers[q->nworkers], NULL, worker_main, q);
        if (r == 0)
            q->nworkers++;
        else if (q->nworkers > 0)
            r = 0; /* the ones running will get to it */
    }
    if (r == 0) {
        pthread_cond_signal(&q->wake);
    } else { /* no worker at all: S was the only entry */
        q->pending = NULL;
        q->pending_tail = &q->pending;
    }
    pthread_mutex_unlock(&q->lock);
    if (r < 0)
        return vdisk_error(-r, "%s: cannot start a queue worker: %m", q->img->path);
    q->at_workers++;
    return 0;
}

/* ---- the ring ---- */

/* An SQE, pushing queued ones to the kernel when the ring is full. */
static struct io_uring_sqe *get_sqe(struct vdisk_queue *q)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);

    if (!sqe) {
        io_uring_submit(&q->ring);
        sqe = io_uring_get_sqe(&q->ring);
    }
    return sqe;
}

/* Queue the rest of S's read or write on the ring. */
static int prep_rw(struct vdisk_queue *q, struct slot *s)
{
    struct vdisk_request *req = s->req;
    struct io_uring_sqe *sqe = get_sqe(q);
    uint8_t *p = (uint8_t *)req->buf + s->done;
    unsigned len = (unsigned)(req->length - s->done);

    if (!sqe)
        return -EBUSY;
    if (req->op == VDISK_OP_READ)
        io_uring_prep_read(sqe, s->fd, p, len, s->host + s->done);
    else
        io_uring_prep_write(sqe, s->fd, p, len, s->host + s->done);
    if (req->op == VDISK_OP_WRITE && (req->flags & VDISK_WRITE_FUA) && !q->img->file->unsafe)
        sqe->rw_flags = RWF_DSYNC;
    io_uring_sqe_set_data(sqe, s);
    return 0;
}

/* Try to send a read or write straight to the file; -EAGAIN if the format can't. */
static int try_ring(struct vdisk_queue *q, struct slot *s)
{
    struct vdisk_image *img = q->img;
    struct vdisk_request *req = s->req;
    struct vdisk_file *f = img->file;
    bool write = req->op == VDISK_OP_WRITE;
    int r;

    if (!q->has_ring || !img->fmt->map || req->length > (1u << 30))
        return -EAGAIN;
    r = img->fmt->map(img, req->offset, req->length, write, req->flags, &s->host);
    if (r < 0)
        return -EAGAIN;
    s->pinned = img->fmt->release != NULL;
    s->done = 0;
    s->fd = f->fd;
    if (f->direct && (((uintptr_t)req->buf | s->host | req->length) & (f->align - 1)))
        s->fd = f->fd_buffered;
    r = prep_rw(q, s);
    if (r < 0 && s->pinned) {
        img->fmt->release(img);
        s->pinned = false;
    }
    return r < 0 ? -EAGAIN : 0;
}

/* Does S's write share a cluster with a write at the workers? */
static bool behind_worker_write(struct vdisk_queue *q, const struct slot *s)
{
    uint64_t g = q->granule, a = s->req->offset / g;
    uint64_t b = (s->req->offset + s->req->length - 1) / g;

    for (const struct slot *w = q->wwrites; w; w = w->wnext) {
        uint64_t wa = w->req->offset / g, wb = (w->req->offset + w->req->length - 1) / g;

        if (a <= wb && wa <= b)
            return true;
    }
    return false;
}

/*
 * Send S on its way: to the ring if it maps; a write that doesn't map but
 * shares a cluster with a write at the workers (most likely allocating that
 * cluster) waits for it and tries again, rather than queueing behind it on a
 * worker; the rest go to the workers.
 */
static int dispatch(struct vdisk_queue *q, struct slot *s)
{
    struct vdisk_request *req = s->req;
    int r;

    if ((req->op == VDISK_OP_READ || req->op == VDISK_OP_WRITE) && req->length > 0 &&
        try_ring(q, s) == 0)
        return 0;
    if (req->op == VDISK_OP_WRITE && q->granule && req->length > 0 && behind_worker_write(q, s)) {
        s->next = NULL;
        *q->deferred_tail = s;
        q->deferred_tail = &s->next;
        return 0;
    }
    r = to_workers(q, s);
    if (r == 0 && req->op == VDISK_OP_WRITE) {
        s->wwrite = true;
        s->wnext = q->wwrites;
        q->wwrites = s;
    }
    return r;
}

int vdisk_queue_submit(struct vdisk_queue *q, struct vdisk_request *req)
{
    bool write = req->op != VDISK_OP_READ && req->op != VDISK_OP_FLUSH;
    struct slot *s;
    int r;

    if ((unsigned)req->op > VDISK_OP_WRITE_ZEROES)
        return vdisk_error(EINVAL, "%s: unknown request type %d", q->img->path, (int)req->op);
    if (req->op == VDISK_OP_FLUSH) {
        r = 0;
    } else {
        r = vdisk_check_range(q->img, op_name(req->op), req->offset, req->length, write);
    }
    if (r < 0)
        return r;
    if (!q->free)
        return vdisk_error(EAGAIN, "%s: queue full (%u requests in flight)", q->img->path,
                           q->depth);
    s = q->free;
    q->free = s->next;
    s->req = req;
    s->result = 0;
    s->pinned = false;
    s->wwrite = false;
    r = dispatch(q, s);
    if (r < 0) {
        s->next = q->free;
        q->free = s;
        return r;
    }
    q->inflight++;
    return 0;
}

/* S is complete: give back the format's pin, put it on the ready list. */
static void finish(struct vdisk_queue *q, struct slot *s)
{
    if (s->pinned) {
        q->img->fmt->release(q->img);
        s->pinned = false;
    }
    s->next = NULL;
    *q->ready_tail = s;
    q->ready_tail = &s->next;
}

/* The ring finished part of S's read or write with RES: go on, or finish. */
static void ring_done(struct vdisk_queue *q, struct slot *s, int res)
{
    struct vdisk_request *req = s->req;

    if (res < 0) {
        s->result = res;
        snprintf(s->msg, sizeof(s->msg), "%s: %s of %llu bytes at %llu: %s", q->img->path,
                 op_name(req->op), (unsigned long long)req->length, (unsigned long long)req->offset,
                 strerror(-res));
    } else if (res == 0 && req->op == VDISK_OP_READ) {
        /* end of file: the rest reads as zeroes, as vdisk_read does */
        memset((uint8_t *)req->buf + s->done, 0, req->length - s->done);
        s->done = req->length;
    } else if (res == 0) {
        s->result = -EIO;
        snprintf(s->msg, sizeof(s->msg), "%s: write at %llu made no progress", q->img->path,
                 (unsigned long long)(req->offset + s->done));
    } else {
        s->done += (unsigned)res;
    }
    if (s->result == 0 && s->done < req->length && prep_rw(q, s) == 0)
        return; /* short transfer: the rest goes out again */
    if (s->result == 0 && s->done < req->length) {
        s->result = -EBUSY;
        snprintf(s->msg, sizeof(s->msg), "%s: no room in the ring to finish a request",
                 q->img->path);
    }
    finish(q, s);
}

/* Move what the workers finished to the ready list; send the writes that waited for them. */
static void collect_workers(struct vdisk_queue *q)
{
    struct slot *s, *next;

    pthread_mutex_lock(&q->lock);
    s = q->finished;
    q->finished = NULL;
    pthread_mutex_unlock(&q->lock);
    if (!s)
        return;
    for (; s; s = next) {
        next = s->next;
        q->at_workers--;
        if (s->wwrite) {
            struct slot **pp = &q->wwrites;

            while (*pp != s)
                pp = &(*pp)->wnext;
            *pp = s->wnext;
            s->wwrite = false;
        }
        finish(q, s);
    }
    s = q->deferred;
    q->deferred = NULL;
    q->deferred_tail = &q->deferred;
    for (; s; s = next) {
        int r;

        next = s->next;
        r = dispatch(q, s);
        if (r < 0) {
            s->result = r;
            snprintf(s->msg, sizeof(s->msg), "%s", vdisk_last_error());
            finish(q, s);
        }
    }
}

/* Reap every CQE there is. */
static void reap(struct vdisk_queue *q)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;

    if (!q->has_ring) {
        collect_workers(q);
        return;
    }
    io_uring_for_each_cqe(&q->ring, head, cqe)
    {
        uint64_t tag = cqe->user_data;

        n++;
        if (tag == EFD_TAG)
            q->efd_armed = false;
        else
            ring_done(q, (struct slot *)(uintptr_t)tag, cqe->res);
    }
    io_uring_cq_advance(&q->ring, n);
    collect_workers(q);
}

/* Have the ring wake us when a worker posts a completion. */
static void arm_eventfd(struct vdisk_queue *q)
{
    struct io_uring_sqe *sqe;

    if (q->efd_armed || q->at_workers == 0)
        return;
    sqe = get_sqe(q);
    if (!sqe)
        return;
    io_uring_prep_read(sqe, q->efd, &q->efd_value, sizeof(q->efd_value), 0);
    io_uring_sqe_set_data64(sqe, EFD_TAG);
    q->efd_armed = true;
}

int vdisk_queue_complete(struct vdisk_queue *q, struct vdisk_request **done, unsigned max,
                         unsigned min)
{
    unsigned n = 0;

    if (min > q->inflight)
        min = q->inflight;
    if (min > max)
        min = max;
    for (;;) {
        while (n < max && q->ready) {
            struct slot *s = q->ready;

            q->ready = s->next;
            if (!q->ready)
                q->ready_tail = &q->ready;
            s->req->result = s->result;
            if (s->result < 0)
                vdisk_error(-s->result, "%s", s->msg);
            done[n++] = s->req;
            s->next = q->free;
            q->free = s;
            q->inflight--;
        }
        if (n >= min && (!q->has_ring || !io_uring_sq_ready(&q->ring)))
            return (int)n;
        if (!q->has_ring) { /* only workers: wait for their eventfd */
            if (read(q->efd, &q->efd_value, sizeof(q->efd_value)) < 0 && errno != EINTR)
                return vdisk_error(errno, "%s: queue eventfd: %m", q->img->path);
            collect_workers(q);
            continue;
        }
        arm_eventfd(q);
        if (n >= min) {
            io_uring_submit(&q->ring);
        } else {
            int r = io_uring_submit_and_wait(&q->ring, 1);

            if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN)
                return vdisk_error(-r, "%s: io_uring wait: %m", q->img->path);
        }
        reap(q);
    }
}

unsigned vdisk_queue_inflight(const struct vdisk_queue *q)
{
    return q->inflight;
}

void vdisk_queue_destroy(struct vdisk_queue *q)
{
    struct vdisk_request *done[64];

    if (!q)
        return;
    while (q->inflight > 0)
        if (vdisk_queue_complete(q, done, 64, 1) < 0)
            break;
    pthread_mutex_lock(&q->lock);
    q->stopping = true;
    pthread_cond_broadcast(&q->wake);
    pthread_mutex_unlock(&q->lock);
    for (unsigned i = 0; i < q->nworkers; i++)
        pthread_join(q->workers[i], NULL);
    if (q->has_ring)
        io_uring_queue_exit(&q->ring);
    close(q->efd);
    pthread_cond_destroy(&q->wake);
    pthread_mutex_destroy(&q->lock);
    free(q->slots);
    free(q);
}
