/* SPDX-License-Identifier: MIT */
/*
 * One ublk hardware queue: a thread with one io_uring that carries both the
 * queue's per-tag commands on /dev/ublkcN and the image's file I/O (the
 * request engine on this ring, vdisk_queue_create_on_ring). Copy mode: each
 * tag owns a buffer; FETCH_REQ hands it to the kernel, which copies a write's
 * data into it before the CQE and a read's data out of it at commit; the
 * buffers' first FIXED_BYTES are registered with the ring, so the engine's
 * O_DIRECT file I/O on them pins no pages. The
 * request's descriptor is in the mmap'd area. Requests complete in any order;
 * every one is committed with its result (bytes or -errno): a request left
 * uncommitted would make del_gendisk wait for ever.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

#define PAGE 4096u
/*
 * Our commands (depth) + the engine's (depth + 1, more when a request spans
 * extents) + the stop poll, with room to spare: the CQ (twice this) must hold
 * everything in flight, or tag_cmd() would wait for SQ room that only
 * reaping gives.
 */
#define RING_ENTRIES(depth) (4 * (depth) + 8)

/* The opcode of per-tag command OP. */
static unsigned io_op(const struct ublk_queue *q, unsigned op)
{
    return q->dev->ctrl.ioctl_encode ? UBLK_U_IO(op) : op;
}

/* Put command OP for TAG on the ring (submitting first if the SQ is full). */
static void tag_cmd(struct ublk_queue *q, unsigned tag, unsigned op, int result)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
    struct ublksrv_io_cmd *cmd;

    while (!sqe) {
        io_uring_submit(&q->ring);
        sqe = io_uring_get_sqe(&q->ring);
    }
    memset(sqe, 0, sizeof(*sqe));
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = q->dev->cdev;
    sqe->cmd_op = io_op(q, op);
    cmd = (struct ublksrv_io_cmd *)sqe->cmd;
    cmd->q_id = (uint16_t)q->id;
    cmd->tag = (uint16_t)tag;
    cmd->result = result;
    cmd->addr = (uint64_t)(uintptr_t)q->tags[tag].buf;
    io_uring_sqe_set_data64(sqe, tag);
}

/* Build TAG's engine request from its descriptor; -errno if we cannot serve it. */
static int make_request(struct ublk_queue *q, unsigned tag)
{
    const struct ublksrv_io_desc *iod = &q->descs[tag];
    struct ublk_tag *t = &q->tags[tag];
    struct vdisk_request *req = &t->req;
    unsigned op = iod->op_flags & 0xff;

    memset(req, 0, sizeof(*req));
    req->offset = iod->start_sector << BLOCK_SHIFT;
    req->length = (uint64_t)iod->nr_sectors << BLOCK_SHIFT;
    req->user_data = t;
    switch (op) {
    case UBLK_IO_OP_READ:
    case UBLK_IO_OP_WRITE:
        if (req->length > q->dev->info.max_io_buf_bytes)
            return -EINVAL;
        req->op = op == UBLK_IO_OP_READ ? VDISK_OP_READ : VDISK_OP_WRITE;
        req->buf = t->buf;
        if (op == UBLK_IO_OP_WRITE && (iod->op_flags & UBLK_IO_F_FUA))
            req->flags = VDISK_WRITE_FUA;
        return 0;
    case UBLK_IO_OP_FLUSH:
        req->op = VDISK_OP_FLUSH;
        req->offset = req->length = 0;
        return 0;
    case UBLK_IO_OP_DISCARD:
        req->op = VDISK_OP_DISCARD;
        return 0;
    case UBLK_IO_OP_WRITE_ZEROES:
        req->op = VDISK_OP_WRITE_ZEROES;
        req->flags = (iod->op_flags & UBLK_IO_F_NOUNMAP) ? 0 : VDISK_ZERO_MAY_UNMAP;
        if (iod->op_flags & UBLK_IO_F_FUA)
            req->flags |= VDISK_ZERO_FUA;
        return 0;
    }
    return -EOPNOTSUPP;
}

/* Log a failed request (the first few; the block layer reports the rest). */
static void log_failure(struct ublk_queue *q, const struct vdisk_request *req, int r)
{
    static unsigned logged;

    if (__atomic_fetch_add(&logged, 1, __ATOMIC_RELAXED) < 20)
        fprintf(stderr, "vdisk-ublk: queue %u: op %d at %llu+%llu: %s\n", q->id, (int)req->op,
                (unsigned long long)req->offset, (unsigned long long)req->length,
                vdisk_last_error()[0] ? vdisk_last_error() : strerror(-r));
}

/* The kernel gave TAG a request (or took the tag away): start it. */
static void on_fetch(struct ublk_queue *q, unsigned tag, int res)
{
    struct ublk_tag *t = &q->tags[tag];
    int r;

    if (res != UBLK_IO_RES_OK) { /* ABORT: the device is stopping; others: a bad command */
        if (res != UBLK_IO_RES_ABORT && !q->failed) {
            q->failed = true;
            snprintf(q->msg, sizeof(q->msg), "queue %u tag %u: %s", q->id, tag, strerror(-res));
            fprintf(stderr, "vdisk-ublk: %s\n", q->msg);
        }
        if (!t->dead) {
            t->dead = true;
            q->ndead++;
        }
        return;
    }
    if (q->delay_us) /* test switch: a slow server */
        usleep(q->delay_us);
    if (q->null_read && (q->descs[tag].op_flags & 0xff) == UBLK_IO_OP_READ) {
        /* test switch (bench): reads answered with whatever the buffer holds, no file I/O */
        tag_cmd(q, tag, UBLK_IO_COMMIT_AND_FETCH_REQ,
                (int)((uint64_t)q->descs[tag].nr_sectors << BLOCK_SHIFT));
        return;
    }
    r = make_request(q, tag);
    if (r == 0)
        r = vdisk_queue_submit(q->q, &t->req);
    if (r < 0) { /* never reached the engine: commit the error at once */
        log_failure(q, &t->req, r);
        tag_cmd(q, tag, UBLK_IO_COMMIT_AND_FETCH_REQ, r);
        return;
    }
    t->busy = true;
    q->nbusy++;
}

/* Commit what the engine finished, each with its result, and fetch the next. */
static void reap(struct ublk_queue *q)
{
    struct vdisk_request *done[32];
    int n;

    while ((n = vdisk_queue_complete(q->q, done, 32, 0)) > 0) {
        for (int i = 0; i < n; i++) {
            struct vdisk_request *req = done[i];
            struct ublk_tag *t = req->user_data;
            unsigned tag = (unsigned)(t - q->tags);
            int res = req->result;

            if (res < 0)
                log_failure(q, req, res);
            else if (req->op == VDISK_OP_READ || req->op == VDISK_OP_WRITE)
                res = (int)req->length; /* the kernel wants the bytes done */
            t->busy = false;
            q->nbusy--;
            tag_cmd(q, tag, UBLK_IO_COMMIT_AND_FETCH_REQ, res);
        }
    }
}

/*
 * Register the first FIXED_BYTES of each tag's buffer with the ring, for the
 * engine's file I/O (READ_FIXED / WRITE_FIXED); larger requests go as they
 * did. Only a part: registering pins the pages, and 16 devices of 64 tags
 * with 512 KiB each would pin 512 MiB. Without it all still works.
 */
static void register_buffers(struct ublk_queue *q)
{
    unsigned depth = q->dev->info.queue_depth;
    size_t len = q->buf_stride < FIXED_BYTES ? q->buf_stride : FIXED_BYTES;
    struct iovec *iov = calloc(depth, sizeof(*iov));
    int r;

    if (!iov)
        return;
    for (unsigned i = 0; i < depth; i++)
        iov[i] = (struct iovec){q->bufs + (size_t)i * q->buf_stride, len};
    r = io_uring_register_buffers(&q->ring, iov, depth);
    free(iov);
    if (r == 0 && vdisk_queue_fixed_buffers(q->q, q->bufs, q->buf_stride, len, depth) < 0)
        r = -EINVAL;
    if (r < 0)
        fprintf(stderr, "vdisk-ublk: queue %u: no fixed buffers (%s): plain file I/O\n", q->id,
                strerror(-r));
}

/* Tell the device one more queue has fetched (or failed). */
static void queue_ready(struct ublk_queue *q)
{
    struct ublk_dev *d = q->dev;

    pthread_mutex_lock(&d->lock);
    d->ready++;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

void *ublk_queue_main(void *arg)
{
    struct ublk_queue *q = arg;
    struct ublk_dev *d = q->dev;
    unsigned depth = d->info.queue_depth;
    struct io_uring_sqe *sqe;

    /* io_uring_enable_rings(), missing from liburing 2.3: this thread is the only submitter */
    if ((q->ring.flags & IORING_SETUP_R_DISABLED) &&
        syscall(__NR_io_uring_register, q->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0) <
            0) {
        q->failed = true;
        snprintf(q->msg, sizeof(q->msg), "queue %u: io_uring: enable: %s", q->id, strerror(errno));
        queue_ready(q);
        goto out;
    }
    if (!getenv("VDISK_TEST_UBLK_NO_FIXED")) /* test switch (bench): without, to compare */
        register_buffers(q);
    for (unsigned tag = 0; tag < depth; tag++)
        tag_cmd(q, tag, UBLK_IO_FETCH_REQ, 0);
    sqe = io_uring_get_sqe(&q->ring); /* room: the ring has RING_ENTRIES(depth) */
    io_uring_prep_poll_add(sqe, d->stop_efd, POLLIN);
    io_uring_sqe_set_data64(sqe, TAG_STOP);
    io_uring_submit(&q->ring);
    queue_ready(q);
    /* until every tag is aborted, or the device is stopped; never with a request unanswered */
    while ((q->ndead < depth && !q->stopping) || q->nbusy) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        int r = io_uring_submit_and_wait(&q->ring, 1);

        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME) {
            fprintf(stderr, "vdisk-ublk: queue %u: io_uring: %s\n", q->id, strerror(-r));
            usleep(1000);
        }
        io_uring_for_each_cqe(&q->ring, head, cqe)
        {
            seen++;
            if (cqe->user_data & VDISK_QUEUE_CQE_BIT)
                vdisk_queue_handle_cqe(q->q, cqe->user_data, cqe->res);
            else if (cqe->user_data < depth)
                on_fetch(q, (unsigned)cqe->user_data, cqe->res);
            else if (cqe->user_data == TAG_STOP)
                q->stopping = true;
        }
        io_uring_cq_advance(&q->ring, seen);
        reap(q);
    }
out:
    pthread_mutex_lock(&d->lock);
    d->running--;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

int ublk_queue_init(struct ublk_dev *d, struct ublk_queue *q, unsigned id)
{
    unsigned depth = d->info.queue_depth;
    size_t per_queue = ((size_t)UBLK_MAX_QUEUE_DEPTH * sizeof(struct ublksrv_io_desc) + PAGE - 1) &
                       ~(size_t)(PAGE - 1);
    off_t off = UBLKSRV_CMD_BUF_OFFSET + (off_t)id * (off_t)per_queue;
    void *p;
    int r;

    q->dev = d;
    q->id = id;
    if (getenv("VDISK_TEST_UBLK_DELAY_MS"))
        q->delay_us = (unsigned)atoi(getenv("VDISK_TEST_UBLK_DELAY_MS")) * 1000u;
    q->descs_len =
        ((size_t)depth * sizeof(struct ublksrv_io_desc) + PAGE - 1) & ~(size_t)(PAGE - 1);
    p = mmap(NULL, q->descs_len, PROT_READ, MAP_SHARED | MAP_POPULATE, d->cdev, off);
    if (p == MAP_FAILED) {
        r = -errno;
        snprintf(q->msg, sizeof(q->msg), "/dev/ublkc%u: mmap of queue %u: %s", d->info.dev_id, id,
                 strerror(errno));
        return r;
    }
    q->descs = p;
    if (getenv("VDISK_TEST_UBLK_NULL_READ"))
        q->null_read = atoi(getenv("VDISK_TEST_UBLK_NULL_READ")) != 0;
    q->tags = calloc(depth, sizeof(*q->tags));
    if (!q->tags)
        goto nomem;
    /* one mapping for every tag's buffer (pages come as they are used): one range to register */
    q->buf_stride = ((size_t)d->info.max_io_buf_bytes + PAGE - 1) & ~(size_t)(PAGE - 1);
    q->bufs_len = q->buf_stride * depth;
    p = mmap(NULL, q->bufs_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        goto nomem;
    q->bufs = p;
    madvise(p, q->bufs_len, MADV_DONTFORK); /* registered pages stay the server's alone */
    for (unsigned i = 0; i < depth; i++)
        q->tags[i].buf = q->bufs + (size_t)i * q->buf_stride;
    r = io_uring_queue_init(RING_ENTRIES(depth), &q->ring,
                            IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                                IORING_SETUP_R_DISABLED);
    if (r == -EINVAL)
        r = io_uring_queue_init(RING_ENTRIES(depth), &q->ring, 0);
    if (r < 0) {
        snprintf(q->msg, sizeof(q->msg), "queue %u: io_uring: %s", id, strerror(-r));
        return r;
    }
    q->ring_ok = true;
    r = vdisk_queue_create_on_ring(d->img, depth, &q->ring, &q->q);
    if (r < 0) {
        snprintf(q->msg, sizeof(q->msg), "%s", vdisk_last_error());
        return r;
    }
    return 0;
nomem:
    snprintf(q->msg, sizeof(q->msg), "queue %u: out of memory for %u buffers", id, depth);
    return -ENOMEM;
}

void ublk_queue_free(struct ublk_queue *q)
{
    if (q->q)
        vdisk_queue_destroy(q->q); /* nothing in flight: it only frees */
    q->q = NULL;
    if (q->ring_ok)
        io_uring_queue_exit(&q->ring);
    q->ring_ok = false;
    if (q->bufs)
        munmap(q->bufs, q->bufs_len);
    q->bufs = NULL;
    free(q->tags);
    q->tags = NULL;
    if (q->descs)
        munmap((void *)q->descs, q->descs_len);
    q->descs = NULL;
}
