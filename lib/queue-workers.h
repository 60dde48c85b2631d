/* SPDX-License-Identifier: MIT */
/*
 * Private to the request engine (lib/queue.c): a request in flight, and the
 * queue's worker threads, which run what the ring can't take (allocating
 * writes, flush, discard, zeroes, block status, maps that would block)
 * through the synchronous API and post completions back through an eventfd.
 */
#ifndef VDISK_QUEUE_WORKERS_H
#define VDISK_QUEUE_WORKERS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vdisk/vdisk.h"
#include "node.h"

#define MAX_WORKERS 8u
#define MAX_SEGS    16u /* file I/Os one request may need on the ring */

struct slot;

/* One file I/O of a request on the ring: a DATA extent of some node. */
struct seg {
    struct slot *slot;
    struct vdisk_node *node; /* whose mapping this is (released when done) */
    struct vdisk_map map;
    uint8_t *buf;
    uint64_t len, done;
    uint64_t off;    /* node offset of buf[0]: for map.transform */
    uint8_t *bounce; /* a transformed write's file bytes (buf points here), owned */
};

/* One request in flight. */
struct slot {
    struct vdisk_request *req;
    struct slot *next; /* free list, worker lists, ready list */
    struct seg segs[MAX_SEGS];
    unsigned nsegs, pending; /* ring: segments, and those not done yet */
    bool wwrite;             /* a write at the workers, on q->wwrites */
    struct slot *wnext;
    int result;
    char msg[256]; /* a failure's message */
};

/* Threads started on demand, up to max; they share the queue's image. */
struct worker_pool {
    struct vdisk_image *img;
    int efd;              /* written once per finished request */
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t wake;
    struct slot *pending, **pending_tail, *finished;
    bool stopping;
    pthread_t threads[MAX_WORKERS];
    unsigned n, max;
};

/* Set up P for IMG, posting to EFD, with at most min(DEPTH, MAX_WORKERS) threads. */
void workers_init(struct worker_pool *p, struct vdisk_image *img, int efd, unsigned depth);

/* Queue S (BUSY requests are at the workers already); 0 or -errno if no thread runs. */
int workers_give(struct worker_pool *p, struct slot *s, unsigned busy);

/* The requests finished since the last call, as a list on ->next (or NULL). */
struct slot *workers_take_finished(struct worker_pool *p);

/* Stop and join every thread (none may be busy), and free P's lock. */
void workers_stop(struct worker_pool *p);

#endif
