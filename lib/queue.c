/* SPDX-License-Identifier: MIT */
/*
 * The request engine (vdisk_queue_*): asynchronous requests on an image.
 *
 * A queue belongs to one thread. A read is planned from the graph's maps
 * (node_map with NOWAIT): DATA extents become file I/Os on the queue's
 * io_uring, ZERO extents are zeroed at once, UNALLOCATED extents are planned
 * again on the backing node; a write goes to the ring when every extent is
 * DATA (in place), or is copied into the page cache at submit when it is
 * small and not O_DIRECT (write_inline). The drivers keep each mapping
 * valid until node_release(), which runs as soon as its I/O completes.
 * DATA that the driver marks transform (encrypted sectors) is decrypted by
 * fmt->transform() on completion, or encrypted into a bounce buffer before
 * a write is submitted.
 * Anything else (OTHER extents, allocating writes, flush, discard, zeroes,
 * block status, cache, a map that would block) is handed to the queue's
 * worker threads, which run the synchronous calls and post completions back
 * through an eventfd that the ring reads.
 *
 * The ring is the queue's own, or the caller's (vdisk_queue_create_on_ring):
 * then the caller waits on it and hands the queue its CQEs, so one thread can
 * serve its own commands (ublk, sockets) and the image's I/O on one ring.
 * Where io_uring is unavailable (a seccomp filter, kernel.io_uring_disabled,
 * or VDISK_NO_IO_URING=1, a test switch) every request goes to the workers
 * and the queue waits on the eventfd itself.
 *
 * Locking: the worker pool has its own lock (queue-workers.c); the rest of
 * the queue is touched only by the owning thread.
 */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "vdisk/vdisk.h"
#include "error.h"
#include "node.h"
#include "io/record.h"
#include "queue-workers.h"

#define MAX_DEPTH        4096u
#define MAX_RING_IO      (1u << 30)   /* larger requests go to the workers */
#define ASYNC_COPY_MIN   (256u << 10) /* page-cache I/O this large is copied by a kernel worker */
#define INLINE_WRITE_MAX (64u << 10)  /* page-cache writes this small are done at submit */
#define XFORM_WRITE_MAX  (64u << 10)  /* bigger encrypted writes: workers, in parallel */
#define EFD_TAG          (VDISK_QUEUE_CQE_BIT | 1) /* the eventfd read; segments are aligned */
/*
 * SQEs queued before they go to the kernel, in a ring of our own. Sent all at
 * once, QD32 sequential 4 KiB reads merge into one 128 KiB device request:
 * the device is one request deep and idle while the next batch is prepared.
 * Only a request that continues the previous one in its file waits for the
 * batch; any other goes out at once, since it can merge with nothing and the
 * batch's plug would only delay it (random 4 KiB reads: +7 % on virtio-blk).
 */
#define SUBMIT_BATCH 16u

struct vdisk_queue {
    struct vdisk_image *img;
    struct io_uring own_ring;
    struct io_uring *ring; /* &own_ring, the caller's, or NULL: workers only */
    bool external;         /* the caller owns the ring and waits on it */
    struct slot *slots, *free;
    struct slot *ready, **ready_tail; /* completed, not yet collected */
    unsigned depth, inflight;
    struct vdisk_queue_stats stats;

    unsigned wait_faults; /* test switch: waits still to fail (VDISK_TEST_QUEUE_WAIT_FAULTS) */
    int efd;
    uint64_t efd_value;
    bool efd_armed;
    uint8_t *fixed_base; /* the caller's registered buffers (fixed_index) */
    size_t fixed_stride, fixed_len;
    unsigned fixed_n;
    unsigned at_workers;                /* requests handed to workers, not yet back */
    uint64_t granule;                   /* the image's allocation unit (cluster), 0 if none */
    const struct vdisk_file *last_file; /* where the last ring I/O prepared ends */
    uint64_t last_end;
    struct slot *wwrites;                   /* writes at the workers: may be allocating */
    struct slot *deferred, **deferred_tail; /* writes waiting for one of those */

    struct worker_pool workers;
};

/* The name of an operation, for messages. */
static const char *op_name(enum vdisk_op op)
{
    static const char *const names[] = {"read",         "write",        "flush", "discard",
                                        "write zeroes", "block status", "cache"};

    return (unsigned)op < sizeof(names) / sizeof(names[0]) ? names[op] : "request";
}

/*
 * The queue's own ring. Completions need not interrupt the thread (no IPI,
 * as fio sets up its rings): their work runs when it next enters the kernel,
 * which it does to wait or, flagged by the kernel, on a peek. Not single
 * issuer: a queue may be made in one thread and used in another, and a
 * caller may poll the ring's fd. Kernels before 5.19 take no flags.
 */
static int ring_init(unsigned entries, struct io_uring *ring)
{
    int r =
        io_uring_queue_init(entries, ring, IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG);

    return r == -EINVAL ? io_uring_queue_init(entries, ring, 0) : r;
}

/* Make a queue on RING (NULL: its own, if io_uring works here). */
static int queue_new(struct vdisk_image *img, unsigned depth, struct io_uring *ring,
                     struct vdisk_queue **qp)
{
    const char *no_uring = getenv("VDISK_NO_IO_URING");
    struct vdisk_info info;
    struct vdisk_queue *q;
    int r;

    vdisk_error_clear();
    if (depth == 0 || depth > MAX_DEPTH)
        return vdisk_error(EINVAL, "%s: invalid queue depth %u", img->root->path, depth);
    q = calloc(1, sizeof(*q));
    if (!q)
        return vdisk_error(ENOMEM, "%s: out of memory for a queue", img->root->path);
    q->slots = calloc(depth, sizeof(*q->slots));
    if (!q->slots) {
        r = vdisk_error(ENOMEM, "%s: out of memory for a queue", img->root->path);
        goto err_free;
    }
    if (ring) {
        q->ring = ring;
        q->external = true;
    } else if (!no_uring || strcmp(no_uring, "1") != 0) {
        /* one more entry than requests: the eventfd read */
        if (ring_init(depth + 1, &q->own_ring) == 0)
            q->ring = &q->own_ring;
    }
    q->efd = eventfd(0, EFD_CLOEXEC);
    if (q->efd < 0) {
        r = vdisk_error(errno, "%s: eventfd: %m", img->root->path);
        goto err_ring;
    }
    q->img = img;
    q->depth = depth;
    if (getenv("VDISK_TEST_QUEUE_WAIT_FAULTS"))
        q->wait_faults = (unsigned)atoi(getenv("VDISK_TEST_QUEUE_WAIT_FAULTS"));
    for (unsigned i = depth; i-- > 0;) {
        q->slots[i].next = q->free;
        q->free = &q->slots[i];
    }
    q->ready_tail = &q->ready;
    q->deferred_tail = &q->deferred;
    if (vdisk_get_info(img, &info) == 0)
        q->granule = info.cluster_size;
    vdisk_error_clear();
    workers_init(&q->workers, img, q->efd, depth);
    *qp = q;
    return 0;

err_ring:
    if (q->ring == &q->own_ring)
        io_uring_queue_exit(&q->own_ring);
err_free:
    free(q->slots);
    free(q);
    return r;
}

int vdisk_queue_create(struct vdisk_image *img, unsigned depth, unsigned flags,
                       struct vdisk_queue **qp)
{
    if (flags)
        return vdisk_error(EINVAL, "%s: invalid queue flags %#x", img->root->path, flags);
    return queue_new(img, depth, NULL, qp);
}

int vdisk_queue_create_on_ring(struct vdisk_image *img, unsigned depth, struct io_uring *ring,
                               struct vdisk_queue **qp)
{
    if (!ring)
        return vdisk_error(EINVAL, "%s: no ring given for the queue", img->root->path);
    return queue_new(img, depth, ring, qp);
}

/* Register N buffers of LEN bytes, STRIDE apart from BASE, on Q's own ring (replacing any). */
static int register_own_buffers(struct vdisk_queue *q, uint8_t *base, size_t stride, size_t len,
                                unsigned n)
{
    struct iovec *iov;
    int r;

    if (q->fixed_n)
        io_uring_unregister_buffers(q->ring);
    q->fixed_n = 0;
    if (n == 0)
        return 0;
    iov = calloc(n, sizeof(*iov));
    if (!iov)
        return -ENOMEM;
    for (unsigned i = 0; i < n; i++)
        iov[i] = (struct iovec){base + i * stride, len};
    r = io_uring_register_buffers(q->ring, iov, n);
    free(iov);
    return r;
}

int vdisk_queue_fixed_buffers(struct vdisk_queue *q, void *base, size_t stride, size_t len,
                              unsigned n)
{
    if (n && (!base || len == 0 || len > stride))
        return vdisk_error(EINVAL, "%s: fixed buffers need a layout", q->img->root->path);
    if (q->ring == &q->own_ring && (q->fixed_n || n)) {
        /* the queue's own ring: register them here (the caller's ring: the caller has) */
        int r = register_own_buffers(q, base, stride, len, n);

        if (r < 0)
            return vdisk_error(-r, "%s: registering %u buffers with io_uring: %s",
                               q->img->root->path, n, strerror(-r));
    }
    if (!q->ring)
        n = 0; /* no ring: plain reads and writes at the workers */
    q->fixed_base = base;
    q->fixed_stride = stride;
    q->fixed_len = len;
    q->fixed_n = n;
    return 0;
}

/* ---- the ring ---- */

/* An SQE, pushing queued ones to the kernel when the ring is full. */
static struct io_uring_sqe *get_sqe(struct vdisk_queue *q)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(q->ring);

    if (!sqe) {
        io_uring_submit(q->ring);
        sqe = io_uring_get_sqe(q->ring);
    }
    return sqe;
}

/* Have the ring wake the owner when a worker posts a completion. */
static void arm_eventfd(struct vdisk_queue *q)
{
    struct io_uring_sqe *sqe;

    if (!q->ring || q->efd_armed || q->at_workers == 0)
        return;
    sqe = get_sqe(q);
    if (!sqe)
        return; /* the next complete() tries again */
    io_uring_prep_read(sqe, q->efd, &q->efd_value, sizeof(q->efd_value), 0);
    io_uring_sqe_set_data64(sqe, EFD_TAG);
    q->efd_armed = true;
}

/* Give S to the workers. */
static int to_workers(struct vdisk_queue *q, struct slot *s)
{
    int r = workers_give(&q->workers, s, q->at_workers);

    if (r < 0)
        return vdisk_error(-r, "%s: cannot start a queue worker: %s", q->img->root->path,
                           strerror(-r));
    q->at_workers++;
    q->stats.workers++;
    arm_eventfd(q);
    return 0;
}

/* The caller's fixed buffer that holds [P, P+LEN) whole, or -1. */
static int fixed_index(const struct vdisk_queue *q, const uint8_t *p, size_t len)
{
    size_t off, i;

    if (!q->fixed_n || p < q->fixed_base)
        return -1;
    off = (size_t)(p - q->fixed_base);
    i = off / q->fixed_stride;
    if (i >= q->fixed_n || off - i * q->fixed_stride + len > q->fixed_len)
        return -1;
    return (int)i;
}

/* Queue the rest of segment G's read or write on the ring. */
static int prep_seg(struct vdisk_queue *q, struct seg *g)
{
    const struct vdisk_request *req = g->slot->req;
    struct vdisk_file *f = g->map.file;
    struct io_uring_sqe *sqe = get_sqe(q);
    uint8_t *p = g->buf + g->done;
    uint64_t host = g->map.host + g->done;
    unsigned len = (unsigned)(g->len - g->done);
    int fd = f->fd, k = fixed_index(q, p, len);

    if (!sqe)
        return -EBUSY;
    if (f->direct && (((uintptr_t)p | host | len) & (f->align - 1)))
        fd = f->fd_buffered;
    /* a registered buffer: O_DIRECT I/O need not pin its pages each time */
    if (req->op == VDISK_OP_READ && k >= 0)
        io_uring_prep_read_fixed(sqe, fd, p, len, host, k);
    else if (req->op == VDISK_OP_READ)
        io_uring_prep_read(sqe, fd, p, len, host);
    else if (k >= 0)
        io_uring_prep_write_fixed(sqe, fd, p, len, host, k);
    else
        io_uring_prep_write(sqe, fd, p, len, host);
    q->stats.ring_fixed += k >= 0;
    if (req->op == VDISK_OP_WRITE && (req->flags & VDISK_WRITE_FUA) && !f->unsafe)
        sqe->rw_flags = RWF_DSYNC;
    if (fd == f->fd_buffered && len >= ASYNC_COPY_MIN)
        sqe->flags |= IOSQE_ASYNC;
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)g | VDISK_QUEUE_CQE_BIT);
    q->stats.ring_ios++;
    return 0;
}

/* Give back segment G's mapping and its bounce buffer. */
static void seg_put(struct seg *g)
{
    node_release(g->node, &g->map);
    free(g->bounce);
    g->bounce = NULL;
}

/* Give back the mappings of S's segments. */
static void release_segs(struct slot *s)
{
    for (unsigned i = 0; i < s->nsegs; i++)
        seg_put(&s->segs[i]);
    s->nsegs = 0;
}

/* A write to transformed DATA: G's file bytes, made in a bounce buffer; -EAGAIN on failure. */
static int seg_transform_write(struct seg *g)
{
    void *p;

    if (posix_memalign(&p, 4096, g->len) != 0)
        return -EAGAIN;
    memcpy(p, g->buf, g->len);
    g->bounce = p;
    g->buf = p;
    return g->node->fmt->transform(g->node, p, g->len, g->off, g->map.host, true) < 0 ? -EAGAIN : 0;
}

/*
 * Plan [OFF, OFF+LEN) of node N into S's segments, BUF the bytes: DATA
 * extents become segments, a read's ZERO extents are zeroed now and its
 * UNALLOCATED extents planned on the backing node. -EAGAIN when the ring
 * cannot take it all (OTHER extents, a write that is not in place, a map
 * that would block, too many pieces).
 */
static int plan(struct slot *s, struct vdisk_node *n, uint8_t *buf, uint64_t off, uint64_t len,
                bool write)
{
    unsigned flags = VDISK_MAP_NOWAIT;

    if (!write || s->req->length <= XFORM_WRITE_MAX)
        flags |= VDISK_MAP_TRANSFORM;
    if (write)
        flags |= VDISK_MAP_WRITE | ((s->req->flags & VDISK_WRITE_FUA) ? VDISK_MAP_FUA : 0);
    while (len > 0) {
        struct vdisk_map m;
        int r;

        if (s->nsegs == MAX_SEGS || node_map(n, off, len, flags, &m) < 0)
            return -EAGAIN;
        if (m.type == VDISK_MAP_DATA) {
            struct seg *g = &s->segs[s->nsegs++];

            *g = (struct seg){.slot = s, .node = n, .map = m, .buf = buf, .len = m.len, .off = off};
            if (write && m.transform && seg_transform_write(g) < 0)
                return -EAGAIN; /* the workers will say why */
        } else {
            node_release(n, &m);
            if (write || m.type == VDISK_MAP_OTHER)
                return -EAGAIN;
            if (m.type == VDISK_MAP_UNALLOCATED) {
                struct vdisk_node *b = n->backing;
                uint64_t k =
                    b && off < b->size ? (b->size - off < m.len ? b->size - off : m.len) : 0;

                r = k ? plan(s, b, buf, off, k, false) : 0;
                if (r < 0)
                    return r;
                memset(buf + k, 0, m.len - k);
            } else {
                memset(buf, 0, m.len);
            }
        }
        buf += m.len;
        off += m.len;
        len -= m.len;
    }
    return 0;
}

/* S is complete: put it on the ready list. */
static void finish(struct vdisk_queue *q, struct slot *s)
{
    s->next = NULL;
    *q->ready_tail = s;
    q->ready_tail = &s->next;
}

/*
 * Write S's segments now, from the caller's thread, if they are small and
 * go to the page cache: io_uring hands a buffered write that the file system
 * cannot do without blocking (ext4) to a kernel worker, one per file, so
 * each would cost a hand-off and wait behind the others; copying a few KiB
 * into the page cache is quicker. FUA writes wait for the disk: not here.
 */
static bool write_inline(struct vdisk_queue *q, struct slot *s)
{
    const struct vdisk_request *req = s->req;

    if (req->op != VDISK_OP_WRITE || (req->flags & VDISK_WRITE_FUA) ||
        req->length > INLINE_WRITE_MAX)
        return false;
    for (unsigned i = 0; i < s->nsegs; i++)
        if (s->segs[i].map.file->direct)
            return false;
    for (unsigned i = 0; i < s->nsegs && s->result == 0; i++) {
        struct seg *g = &s->segs[i];

        s->result = vdisk_file_pwrite(g->map.file, g->buf, g->len, g->map.host);
        g->map.written = s->result == 0;
        if (s->result < 0)
            snprintf(s->msg, sizeof(s->msg), "%s", vdisk_last_error());
    }
    release_segs(s);
    finish(q, s);
    q->stats.ring++;
    return true;
}

/* Send a read or write straight to the files; -EAGAIN if it cannot go there whole. */
static int try_ring(struct vdisk_queue *q, struct slot *s)
{
    struct vdisk_request *req = s->req;

    /* with the test hook on (io/record.h) the file layer must see every write */
    if (!q->ring || req->length > MAX_RING_IO || vdisk_io_hooked)
        return -EAGAIN;
    s->nsegs = 0;
    if (plan(s, q->img->root, req->buf, req->offset, req->length, req->op == VDISK_OP_WRITE) < 0) {
        release_segs(s);
        return -EAGAIN;
    }
    if (write_inline(q, s))
        return 0;
    s->pending = s->nsegs;
    if (s->nsegs == 0) { /* all zeroes: done already */
        finish(q, s);
        q->stats.ring++;
        return 0;
    }
    for (unsigned i = 0; i < s->nsegs; i++) {
        if (prep_seg(q, &s->segs[i]) < 0) {
            /* no SQE at all, even after a submit: whatever went out must come back */
            if (i == 0) {
                release_segs(s);
                return -EAGAIN;
            }
            s->result = -EBUSY;
            snprintf(s->msg, sizeof(s->msg), "%s: no room in the ring for a request",
                     q->img->root->path);
            for (unsigned k = i; k < s->nsegs; k++)
                seg_put(&s->segs[k]);
            s->pending = i;
            break;
        }
    }
    q->stats.ring++;
    if (!q->external && s->pending > 0) {
        const struct vdisk_map *first = &s->segs[0].map, *last = &s->segs[s->pending - 1].map;
        bool follows = first->file == q->last_file && first->host == q->last_end;

        q->last_file = last->file;
        q->last_end = last->host + s->segs[s->pending - 1].len;
        if (!follows || io_uring_sq_ready(q->ring) >= SUBMIT_BATCH)
            io_uring_submit(q->ring);
    }
    return 0;
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

/* Refuse a request that can never succeed; 0 if it may. */
static int check_request(struct vdisk_queue *q, const struct vdisk_request *req)
{
    struct vdisk_node *root = q->img->root;
    bool write;

    switch (req->op) {
    case VDISK_OP_FLUSH:
        return 0;
    case VDISK_OP_BLOCK_STATUS:
        if (!req->buf || req->count == 0 || req->length == 0)
            return vdisk_error(EINVAL, "%s: block status needs a range and room for an extent",
                               root->path);
        break;
    case VDISK_OP_READ:
    case VDISK_OP_WRITE:
    case VDISK_OP_DISCARD:
    case VDISK_OP_WRITE_ZEROES:
    case VDISK_OP_CACHE:
        break;
    default:
        return vdisk_error(EINVAL, "%s: unknown request type %d", root->path, (int)req->op);
    }
    write = req->op == VDISK_OP_WRITE || req->op == VDISK_OP_DISCARD ||
            req->op == VDISK_OP_WRITE_ZEROES;
    return vdisk_check_range(root, op_name(req->op), req->offset, req->length, write);
}

int vdisk_queue_submit(struct vdisk_queue *q, struct vdisk_request *req)
{
    struct slot *s;
    int r = check_request(q, req);

    if (r < 0)
        return r;
    if (!q->free)
        return vdisk_error(EAGAIN, "%s: queue full (%u requests in flight)", q->img->root->path,
                           q->depth);
    s = q->free;
    q->free = s->next;
    s->req = req;
    s->result = 0;
    s->nsegs = s->pending = 0;
    s->wwrite = false;
    r = dispatch(q, s);
    if (r < 0) {
        s->next = q->free;
        q->free = s;
        return r;
    }
    q->inflight++;
    q->stats.requests++;
    return 0;
}

/* The ring finished part of segment G with RES: go on, or finish G (and its request). */
static void seg_done(struct vdisk_queue *q, struct seg *g, int res)
{
    struct slot *s = g->slot;
    struct vdisk_request *req = s->req;

    if (res < 0) {
        s->result = res;
        snprintf(s->msg, sizeof(s->msg), "%s: %s of %llu bytes at %llu: %s", q->img->root->path,
                 op_name(req->op), (unsigned long long)req->length, (unsigned long long)req->offset,
                 strerror(-res));
    } else if (res == 0 && req->op == VDISK_OP_READ) {
        /* end of file: the rest reads as zeroes, as vdisk_read does */
        memset(g->buf + g->done, 0, g->len - g->done);
        g->done = g->len;
    } else if (res == 0) {
        s->result = -EIO;
        snprintf(s->msg, sizeof(s->msg), "%s: write at file offset %llu made no progress",
                 q->img->root->path, (unsigned long long)(g->map.host + g->done));
    } else {
        g->done += (unsigned)res;
    }
    if (res >= 0 && s->result == 0 && g->done < g->len && prep_seg(q, g) == 0)
        return; /* short transfer: the rest goes out again */
    if (s->result == 0 && g->done < g->len) {
        s->result = -EBUSY;
        snprintf(s->msg, sizeof(s->msg), "%s: no room in the ring to finish a request",
                 q->img->root->path);
    }
    /* decrypt (say) on completion, on this thread, while the ring moves other requests */
    if (s->result == 0 && req->op == VDISK_OP_READ && g->map.transform &&
        g->node->fmt->transform(g->node, g->buf, g->len, g->off, g->map.host, false) < 0) {
        s->result = -EIO;
        snprintf(s->msg, sizeof(s->msg), "%s", vdisk_last_error());
    }
    g->map.written = req->op == VDISK_OP_WRITE && s->result == 0 && g->done == g->len;
    seg_put(g); /* its pin goes as soon as its I/O is done */
    if (--s->pending == 0)
        finish(q, s);
}

/* Move what the workers finished to the ready list; send the writes that waited for them. */
static void collect_workers(struct vdisk_queue *q)
{
    struct slot *s, *next;

    s = workers_take_finished(&q->workers);
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

void vdisk_queue_handle_cqe(struct vdisk_queue *q, uint64_t user_data, int res)
{
    if (user_data == EFD_TAG) {
        q->efd_armed = false;
        collect_workers(q);
        arm_eventfd(q); /* workers still busy: keep listening */
    } else {
        seg_done(q, (struct seg *)(uintptr_t)(user_data & ~VDISK_QUEUE_CQE_BIT), res);
    }
}

/* Reap every CQE of the queue's own ring, and what the workers finished. */
static void reap(struct vdisk_queue *q)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;

    if (q->ring) {
        /* completions whose work waits for a kernel entry (COOP_TASKRUN): enter now */
        if (q->ring == &q->own_ring &&
            (IO_URING_READ_ONCE(*q->ring->sq.kflags) & IORING_SQ_TASKRUN))
            io_uring_get_events(q->ring);
        io_uring_for_each_cqe(q->ring, head, cqe)
        {
            n++;
            vdisk_queue_handle_cqe(q, cqe->user_data, cqe->res);
        }
        io_uring_cq_advance(q->ring, n);
    }
    collect_workers(q);
}

/* Move up to MAX ready requests into DONE[N...]; the new N. */
static unsigned take_ready(struct vdisk_queue *q, struct vdisk_request **done, unsigned n,
                           unsigned max)
{
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
    return n;
}

/* Without waiting, take what the ring and the workers finished (MIN 0: a caller polling). */
static void poll_completions(struct vdisk_queue *q)
{
    struct pollfd p = {q->efd, POLLIN, 0};

    if (q->ring) {
        reap(q);
        return;
    }
    /* reset the eventfd, so that vdisk_queue_poll_fd() quiets down */
    if (poll(&p, 1, 0) > 0 && read(q->efd, &q->efd_value, sizeof(q->efd_value)) < 0)
        q->efd_value = 0; /* nothing there after all: fine */
    collect_workers(q);
}

int vdisk_queue_complete(struct vdisk_queue *q, struct vdisk_request **done, unsigned max,
                         unsigned min)
{
    unsigned n = 0;

    if (q->external && min > 0)
        return vdisk_error(EINVAL, "%s: a queue on the caller's ring never waits",
                           q->img->root->path);
    if (!q->external && min == 0)
        poll_completions(q);
    if (min > q->inflight)
        min = q->inflight;
    if (min > max)
        min = max;
    if (q->external) {
        /* workers' completions come through the eventfd's CQE only: then none is left armed */
        n = take_ready(q, done, 0, max);
        arm_eventfd(q); /* in case there was no SQE for it before */
        return (int)n;
    }
    for (;;) {
        n = take_ready(q, done, n, max);
        if (n >= min && (!q->ring || !io_uring_sq_ready(q->ring)))
            return (int)n;
        if (!q->ring) { /* only workers: wait for their eventfd */
            if (read(q->efd, &q->efd_value, sizeof(q->efd_value)) < 0 && errno != EINTR)
                return vdisk_error(errno, "%s: queue eventfd: %m", q->img->root->path);
            collect_workers(q);
            continue;
        }
        arm_eventfd(q);
        if (n >= min) {
            io_uring_submit(q->ring);
        } else {
            int r =
                q->wait_faults ? (q->wait_faults--, -EIO) : io_uring_submit_and_wait(q->ring, 1);

            if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN)
                return vdisk_error(-r, "%s: io_uring wait: %m", q->img->root->path);
        }
        reap(q);
    }
}

int vdisk_queue_poll_fd(const struct vdisk_queue *q)
{
    if (q->external)
        return vdisk_error(EINVAL, "%s: a queue on the caller's ring has no fd of its own",
                           q->img->root->path);
    return q->ring ? q->ring->ring_fd : q->efd;
}

unsigned vdisk_queue_inflight(const struct vdisk_queue *q)
{
    return q->inflight;
}

void vdisk_queue_get_stats(const struct vdisk_queue *q, struct vdisk_queue_stats *st)
{
    *st = q->stats;
}

/*
 * Wait for everything in flight, whatever happens: a request still in the
 * kernel holds a mapping (a pin that a discard or check would wait for) and
 * points into its caller's buffer. A failed wait is retried, not given up.
 */
static void drain(struct vdisk_queue *q)
{
    struct vdisk_request *done[64];

    while (q->inflight > 0) {
        if (q->external) {
            struct io_uring_cqe *cqe;

            io_uring_submit(q->ring);
            if (io_uring_wait_cqe(q->ring, &cqe) == 0) {
                if (cqe->user_data & VDISK_QUEUE_CQE_BIT)
                    vdisk_queue_handle_cqe(q, cqe->user_data, cqe->res);
                io_uring_cqe_seen(q->ring, cqe);
            } else {
                usleep(1000);
            }
            take_ready(q, done, 0, 64);
        } else if (vdisk_queue_complete(q, done, 64, 1) < 0) {
            usleep(1000);
        }
    }
}

void vdisk_queue_destroy(struct vdisk_queue *q)
{
    if (!q)
        return;
    drain(q);
    workers_stop(&q->workers);
    if (q->external && q->efd_armed) {
        /* destroyed with requests in flight: the eventfd read must not outlive Q */
        uint64_t one = 1;
        struct io_uring_cqe *cqe;

        if (write(q->efd, &one, sizeof(one)) < 0)
            abort();
        io_uring_submit(q->ring);
        while (q->efd_armed && io_uring_wait_cqe(q->ring, &cqe) == 0) {
            if (cqe->user_data == EFD_TAG)
                q->efd_armed = false;
            io_uring_cqe_seen(q->ring, cqe);
        }
    }
    if (q->ring == &q->own_ring)
        io_uring_queue_exit(&q->own_ring);
    close(q->efd);
    free(q->slots);
    free(q);
}
