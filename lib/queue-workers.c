/* SPDX-License-Identifier: MIT */
/*
 * The request engine's worker threads (see queue-workers.h). A thread starts
 * when a request arrives and fewer threads run than requests wait for them,
 * and lives until the queue is destroyed.
 *
 * Locking: p->lock guards the lists (pending, finished), stopping and the
 * thread count; a request belongs to one thread at a time.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "queue-workers.h"

/* Block status of the request's range into its extents; the number filled. */
static int block_status(struct vdisk_image *img, struct vdisk_request *req)
{
    struct vdisk_extent *e = req->buf;
    uint64_t off = req->offset, end = req->offset + req->length;
    unsigned n = 0;

    while (off < end && n < req->count) {
        struct vdisk_extent x;
        int r = vdisk_block_status(img, off, end - off, &x);

        if (r < 0)
            return r;
        if (n > 0 && e[n - 1].flags == x.flags)
            e[n - 1].length += x.length; /* same kind: one extent */
        else
            e[n++] = x;
        off += x.length;
    }
    return (int)n;
}

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
    case VDISK_OP_BLOCK_STATUS:
        return block_status(img, req);
    case VDISK_OP_CACHE:
        return vdisk_cache(img, req->offset, req->length);
    }
    return -EINVAL;
}

/* Take requests from p->pending until the pool stops. */
static void *worker_main(void *arg)
{
    struct worker_pool *p = arg;
    uint64_t one = 1;

    pthread_mutex_lock(&p->lock);
    for (;;) {
        struct slot *s = p->pending;

        if (!s) {
            if (p->stopping)
                break;
            pthread_cond_wait(&p->wake, &p->lock);
            continue;
        }
        p->pending = s->next;
        if (!p->pending)
            p->pending_tail = &p->pending;
        pthread_mutex_unlock(&p->lock);

        s->result = run_sync(p->img, s->req);
        if (s->result < 0)
            snprintf(s->msg, sizeof(s->msg), "%s", vdisk_last_error());

        pthread_mutex_lock(&p->lock);
        s->next = p->finished;
        p->finished = s;
        if (write(p->efd, &one, sizeof(one)) < 0)
            abort(); /* an eventfd write only fails on overflow */
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

void workers_init(struct worker_pool *p, struct vdisk_image *img, int efd, unsigned depth)
{
    p->img = img;
    p->efd = efd;
    p->max = depth < MAX_WORKERS ? depth : MAX_WORKERS;
    p->pending_tail = &p->pending;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
}

int workers_give(struct worker_pool *p, struct slot *s, unsigned busy)
{
    int r = 0;

    pthread_mutex_lock(&p->lock);
    s->next = NULL;
    *p->pending_tail = s;
    p->pending_tail = &s->next;
    /* one more thread while every one has work */
    if (p->n < p->max && p->n <= busy) {
        r = -pthread_create(&p->threads[p->n], NULL, worker_main, p);
        if (r == 0)
            p->n++;
        else if (p->n > 0)
            r = 0; /* the ones running will get to it */
    }
    if (r == 0) {
        pthread_cond_signal(&p->wake);
    } else { /* no thread at all: S was the only entry */
        p->pending = NULL;
        p->pending_tail = &p->pending;
    }
    pthread_mutex_unlock(&p->lock);
    return r;
}

struct slot *workers_take_finished(struct worker_pool *p)
{
    struct slot *s;

    pthread_mutex_lock(&p->lock);
    s = p->finished;
    p->finished = NULL;
    pthread_mutex_unlock(&p->lock);
    return s;
}

void workers_stop(struct worker_pool *p)
{
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
}
