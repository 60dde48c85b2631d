/* SPDX-License-Identifier: MIT */
/*
 * The socket of one connection: buffered input (blocking reads in the
 * handshake, recv SQEs on the connection's ring in transmission) and
 * replies queued as iovecs, sent with one sendmsg.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "internal.h"

/* CLOCK_MONOTONIC in milliseconds. */
int64_t mono_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/*
 * recv() from C's socket; a waiting one in the handshake gives up at its
 * deadline (ETIMEDOUT), so a client trickling bytes cannot hold it longer.
 */
ssize_t sock_recv_raw(struct conn *c, void *buf, size_t n, int flags)
{
    if (c->deadline_ms && !(flags & MSG_DONTWAIT)) {
        struct pollfd p = {c->fd, POLLIN, 0};
        int64_t left = c->deadline_ms - mono_ms();
        int r = left > 0 ? poll(&p, 1, (int)left) : 0;

        if (r < 0)
            return -1;
        if (r == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
    }
    return recv(c->fd, buf, n, flags);
}

/* Read exactly N bytes through the input buffer, waiting for them (handshake). */
int sock_read(struct conn *c, void *buf, size_t n)
{
    uint8_t *p = buf;

    while (n > 0) {
        ssize_t r;

        if (c->rpos < c->rlen) {
            size_t k = c->rlen - c->rpos < n ? c->rlen - c->rpos : n;

            memcpy(p, c->rbuf + c->rpos, k);
            c->rpos += k;
            p += k;
            n -= k;
            continue;
        }
        if (c->tls)
            r = tls_recv(c, c->rbuf, RBUF_SIZE, true);
        else if ((r = sock_recv_raw(c, c->rbuf, RBUF_SIZE, 0)) < 0)
            r = -errno;
        if (r > 0) {
            c->rpos = 0;
            c->rlen = (size_t)r;
        }
        if (r == 0)
            return -ECONNRESET;
        if (r < 0 && r != -EINTR)
            return (int)r;
    }
    return 0;
}

/* Send all of IOV (which it consumes) on C, through TLS once it is on. */
int sock_send(struct conn *c, struct iovec *iov, int n)
{
    return c->tls ? tls_send(c, iov, n) : sock_send_raw(c->fd, iov, n);
}

/* Send all of IOV (which it consumes) on FD, waiting for room. */
int sock_send_raw(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t r = sendmsg(fd, &msg, MSG_NOSIGNAL);

        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        while (n > 0 && (size_t)r >= iov->iov_len) {
            r -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + r;
            iov->iov_len -= (size_t)r;
        }
    }
    return 0;
}

/* Send LEN bytes of BUF. */
int sock_send_all(struct conn *c, const void *buf, size_t len)
{
    struct iovec iov = {(void *)buf, len};

    return sock_send(c, &iov, 1);
}

/*
 * Note the input wanted next: LEN bytes into DST (the rest of a write's
 * payload) or, DST NULL, whatever comes into the free end of the input
 * buffer, moved to the front first. sock_arm_recv() or sock_recv_now()
 * reads it.
 */
void sock_want(struct conn *c, uint8_t *dst, size_t len)
{
    c->recv_to_fill = dst != NULL;
    c->recv_flags = dst ? MSG_WAITALL : 0; /* a payload: one CQE when it is all here */
    if (!dst) {
        if (c->rpos > 0) {
            memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
            c->rlen -= c->rpos;
            c->rpos = 0;
        }
        dst = c->rbuf + c->rlen;
        len = RBUF_SIZE - c->rlen;
    }
    c->recv_dst = dst;
    c->recv_len = len;
}

/*
 * Read the wanted input when it comes: a recv SQE on the ring, or, without
 * one, a recv once poll() says so (sock_recv_now). Its buffer is the
 * kernel's until sock_recv_done().
 */
void sock_arm_recv(struct conn *c)
{
    struct io_uring_sqe *sqe;

    c->recv_armed = true;
    if (!c->on_ring)
        return;
    sqe = io_uring_get_sqe(&c->ring);
    if (!sqe) {
        io_uring_submit(&c->ring);
        sqe = io_uring_get_sqe(&c->ring);
    }
    if (!sqe) { /* cannot happen: the ring has room for ours */
        sock_recv_done(c, -EBUSY);
        return;
    }
    io_uring_prep_recv(sqe, c->fd, c->recv_dst, c->recv_len, c->recv_flags);
    io_uring_sqe_set_data64(sqe, RECV_TAG);
}

/* Read the wanted input if the socket has some, without waiting: 1 if bytes (or the end) came. */
int sock_recv_now(struct conn *c)
{
    ssize_t r;

    if (c->tls)
        r = tls_recv(c, c->recv_dst, c->recv_len, false);
    else if ((r = recv(c->fd, c->recv_dst, c->recv_len, MSG_DONTWAIT)) < 0)
        r = -errno;
    if (r == -EAGAIN || r == -EINTR) {
        c->recv_armed = false;
        return 0;
    }
    sock_recv_done(c, (int)r);
    return 1;
}

/* The recv came back with RES: count the bytes, or note the end of the stream. */
void sock_recv_done(struct conn *c, int res)
{
    c->recv_armed = false;
    if (res == -EINTR || res == -EAGAIN)
        return; /* nothing came: asked again */
    if (res <= 0) {
        if (res < 0 && res != -ECONNRESET && !c->dead)
            log_client(c, "recv: %s", strerror(-res));
        c->eof = true;
        return;
    }
    if (c->recv_to_fill)
        c->fill_have += (uint32_t)res;
    else
        c->rlen += (size_t)res;
}

/* Send the queued replies with one sendmsg (dropped on a dead connection). */
int out_flush(struct conn *c)
{
    int r = 0;

    if (c->niov > 0 && !c->dead)
        r = sock_send(c, c->iov, c->niov);
    if (r < 0)
        c->dead = true; /* a reply went out in part: the stream is lost */
    c->niov = 0;
    c->hlen = 0;
    return r;
}

/* Make room in the queue for a reply of NIOV pieces and HBYTES of headers. */
int out_room(struct conn *c, int niov, size_t hbytes)
{
    if (c->niov + niov <= OUT_IOV && c->hlen + hbytes <= OUT_HDR)
        return 0;
    return out_flush(c);
}

/* Queue a copy of small DATA (a header), joined to the piece before it if adjacent. */
void out_copy(struct conn *c, const void *data, size_t len)
{
    uint8_t *p = c->hdr + c->hlen;
    struct iovec *last = c->niov ? &c->iov[c->niov - 1] : NULL;

    memcpy(p, data, len);
    c->hlen += len;
    if (last && (uint8_t *)last->iov_base + last->iov_len == p)
        last->iov_len += len;
    else
        c->iov[c->niov++] = (struct iovec){p, len};
}

/* Queue DATA by reference: it stays put until the queued replies are sent. */
void out_ref(struct conn *c, const void *data, size_t len)
{
    c->iov[c->niov++] = (struct iovec){(void *)data, len};
}
