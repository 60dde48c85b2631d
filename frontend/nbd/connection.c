/* SPDX-License-Identifier: MIT */
/*
 * The server and its connections: the accept loop, a thread per
 * connection (the handshake, then transmission on the connection's ring),
 * the limit on connections, and stopping.
 *
 * In transmission a connection's thread loops: take the requests the input
 * holds and start them on the engine, reply to what the engine finished
 * (one sendmsg), then wait on the ring for the next event, the socket's
 * recv or the engine's I/O, whichever comes first. The image is shared by
 * every connection of this process, so flushes are seen by all of them
 * (MULTI_CONN).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "internal.h"

#define HANDSHAKE_SECS 10   /* a client not in transmission after this long is dropped */
#define DEFAULT_CONNS  16   /* connections at once (handshakes included), as qemu-nbd --shared */
#define RING_SQ        128  /* the socket's recv and the engine's MAX_INFLIGHT + 1, with room */
#define RING_CQ        1024 /* a request may take several file I/Os */
#define THREAD_STACK   (256 * 1024)
#define BRIEF_US       200 /* while the engine completes requests, the socket waits this long at most */

/* Print "vdisk: nbd: client N: " and the message. */
static void vlog_conn(struct conn *c, const char *fmt, va_list ap)
{
    fprintf(stderr, "vdisk: nbd: client %d: ", c->fd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

/* Say what a client did wrong (stderr), unless told to keep quiet. */
void log_client(struct conn *c, const char *fmt, ...)
{
    va_list ap;

    if (c->srv->quiet)
        return;
    va_start(ap, fmt);
    vlog_conn(c, fmt, ap);
    va_end(ap);
}

static void log_conn(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Say what went wrong on our side, or what was asked for (--verbose); always. */
static void log_conn(struct conn *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog_conn(c, fmt, ap);
    va_end(ap);
}

/* Make C's ring and its engine queue on it; without io_uring, a queue on the engine's workers. */
static int conn_setup(struct conn *c)
{
    /* one thread submits and waits: completions' work can wait for its next wait */
    struct io_uring_params p = {.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER |
                                         IORING_SETUP_DEFER_TASKRUN,
                                .cq_entries = RING_CQ};
    const char *no_uring = getenv("VDISK_NO_IO_URING"); /* test switch, as the engine's */
    int r = -ENOSYS;

    /* TLS reads through GnuTLS, not recv SQEs: the socket is polled, the engine on its workers */
    if (!c->tls && (!no_uring || strcmp(no_uring, "1") != 0)) {
        r = io_uring_queue_init_params(RING_SQ, &c->ring, &p);
        if (r == -EINVAL) { /* before Linux 6.1 */
            p = (struct io_uring_params){.flags = IORING_SETUP_CQSIZE, .cq_entries = RING_CQ};
            r = io_uring_queue_init_params(RING_SQ, &c->ring, &p);
        }
    }
    c->on_ring = r == 0;
    if (c->on_ring)
        r = vdisk_queue_create_on_ring(c->srv->img, MAX_INFLIGHT, &c->ring, &c->q);
    else
        r = vdisk_queue_create(c->srv->img, MAX_INFLIGHT, 0, &c->q);
    if (r < 0) {
        log_conn(c, "%s", vdisk_last_error());
        if (c->on_ring)
            io_uring_queue_exit(&c->ring);
        return r;
    }
    return xmit_init(c);
}

/* Without a ring: wait on poll() for the socket (if input is asked for) and the engine. */
static int conn_poll(struct conn *c)
{
    struct pollfd p[2] = {{c->fd, POLLIN, 0}, {vdisk_queue_poll_fd(c->q), POLLIN, 0}};
    int n = c->recv_armed ? 2 : 1;

    if (c->recv_armed && tls_pending(c)) { /* decrypted input waits in the session */
        sock_recv_now(c);
        return 0;
    }
    if (poll(c->recv_armed ? p : p + 1, (nfds_t)n, -1) < 0)
        return errno == EINTR ? 0 : -errno;
    if (c->recv_armed && p[0].revents)
        sock_recv_now(c);
    return 0; /* the engine's completions: xmit_reap() collects them */
}

/* How conn_wait() waits. */
enum wait {
    WAIT_NOT,   /* submit what is queued, take what is there */
    WAIT_BRIEF, /* ... and wait for an event, at most BRIEF_US */
    WAIT_EVENT, /* ... and wait for an event */
};

/*
 * Submit what is queued on C's ring, wait as HOW says, and hand every CQE
 * that came to its owner (the engine, or the socket's recv). 1 when a brief
 * wait saw nothing, 0, or <0.
 */
static int conn_wait(struct conn *c, enum wait how)
{
    struct __kernel_timespec brief = {0, BRIEF_US * 1000};
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    int r;

    if (!c->on_ring)
        return how == WAIT_NOT ? 0 : conn_poll(c);
    /* a timed wait only where the kernel takes its timeout as an argument, not an SQE */
    if (how == WAIT_BRIEF && !(c->ring.features & IORING_FEAT_EXT_ARG))
        how = WAIT_EVENT;
    if (how == WAIT_EVENT)
        r = io_uring_submit_and_wait(&c->ring, 1);
    else if (how == WAIT_BRIEF)
        r = io_uring_submit_and_wait_timeout(&c->ring, &cqe, 1, &brief, NULL);
    else if (io_uring_sq_ready(&c->ring) > 0)
        r = io_uring_submit(&c->ring);
    else
        r = 0;
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME)
        return r;
    io_uring_for_each_cqe(&c->ring, head, cqe)
    {
        n++;
        if (cqe->user_data & VDISK_QUEUE_CQE_BIT)
            vdisk_queue_handle_cqe(c->q, cqe->user_data, cqe->res);
        else
            sock_recv_done(c, cqe->res);
    }
    io_uring_cq_advance(&c->ring, n);
    return how == WAIT_BRIEF && n == 0;
}

/*
 * Transmission: serve C until the client is done (0) or the stream breaks
 * (<0). Input is read whenever a command is free, whatever is in flight.
 * Between requests, while the engine has some in flight and completes them,
 * the socket is read after each completion (or BRIEF_US at most), so the
 * requests that came meanwhile go to the disk together; once it stops
 * completing them, a recv waits on the ring beside them. A payload is read
 * as it comes.
 */
static int conn_transmit(struct conn *c)
{
    for (;;) {
        int want = xmit_take(c), r = want;
        bool busy;

        /* new requests to the kernel before the replies go out: the disk starts sooner */
        if (r >= 0)
            r = conn_wait(c, WAIT_NOT);
        if (r >= 0)
            r = xmit_reap(c);
        if (r < 0)
            return r;
        /* at a request boundary (not in a payload), with the engine at work */
        busy = c->on_ring && vdisk_queue_inflight(c->q) > 0 && !c->fill && !c->skip &&
               c->rpos == c->rlen;
        if (want == XMIT_INPUT && !c->recv_armed && busy && sock_recv_now(c))
            continue; /* more requests came: start them too, then reply */
        r = xmit_flush(c);
        if (r < 0)
            return r;
        if (want == XMIT_ROOM && xmit_room(c))
            continue; /* replies went out: commands are free again */
        if (want == XMIT_END && vdisk_queue_inflight(c->q) == 0)
            return 0; /* the input is over and everything is answered */
        if (want == XMIT_INPUT && !c->recv_armed && busy) {
            r = conn_wait(c, WAIT_BRIEF);
            if (r == 0)
                continue; /* the engine completed something: the socket next */
        }
        if (r >= 0) {
            if (want == XMIT_INPUT && !c->recv_armed)
                sock_arm_recv(c);
            r = conn_wait(c, WAIT_EVENT);
        }
        if (r < 0) {
            log_conn(c, "io_uring wait: %s", strerror(-r));
            return r;
        }
    }
}

/*
 * After a broken stream: cut the connection, then wait for the socket's
 * recv and the engine's requests, dropping their replies. The engine's
 * requests point into our buffers and hold pins in the image.
 */
static void conn_drain(struct conn *c)
{
    c->dead = true;
    shutdown(c->fd, SHUT_RDWR);
    /* reap first: a request may have completed already, with no event left to wait for */
    for (;;) {
        xmit_reap(c);
        xmit_flush(c);
        if (!c->recv_armed && vdisk_queue_inflight(c->q) == 0)
            break;
        if (conn_wait(c, WAIT_EVENT) < 0)
            usleep(1000); /* retried, never given up: the kernel holds our buffers */
    }
}

/* Log what C's engine queue did (--verbose). */
static void conn_log_stats(struct conn *c)
{
    struct vdisk_queue_stats st;

    vdisk_queue_get_stats(c->q, &st);
    log_conn(c,
             "engine: %llu requests: %llu on io_uring (%llu file I/Os), %llu on its "
             "worker threads",
             (unsigned long long)st.requests, (unsigned long long)st.ring,
             (unsigned long long)st.ring_ios, (unsigned long long)st.workers);
}

/* Take C out of the server, close its socket, free it. */
static void conn_end(struct conn *c)
{
    struct nbd_server *srv = c->srv;

    pthread_mutex_lock(&srv->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    pthread_cond_broadcast(&srv->idle);
    pthread_mutex_unlock(&srv->lock);
    tls_end(c, false);
    close(c->fd);
    free(c);
}

/* A connection's thread: handshake, then transmission, then the end. */
static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct timeval tv = {(time_t)c->srv->handshake_secs, 0}, none = {0, 0};
    int r;

    /* the whole handshake, TLS included, has a deadline; a client that does not read, too */
    c->deadline_ms = mono_ms() + 1000 * (int64_t)c->srv->handshake_secs;
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    r = nbd_handshake(c);
    if (r < 0) {
        if (r == -ETIMEDOUT || r == -EAGAIN)
            log_client(c, "not in transmission after %u s (handshake timeout): dropped",
                       c->srv->handshake_secs);
        else if (r != -ECONNRESET && r != -ECONNABORTED)
            log_client(c, "handshake failed: %s", strerror(-r));
        conn_end(c);
        return NULL;
    }
    c->deadline_ms = 0;
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof(none));
    if (conn_setup(c) == 0) {
        r = conn_transmit(c);
        if (r < 0)
            conn_drain(c);
        else
            tls_end(c, true);
        if (c->srv->verbose)
            conn_log_stats(c);
        vdisk_queue_destroy(c->q); /* nothing is in flight */
        if (c->on_ring)
            io_uring_queue_exit(&c->ring);
        xmit_free(c);
    }
    conn_end(c);
    return NULL;
}

/* Serve FD (handshake included) in a thread of its own, within the limit on connections. */
int nbd_server_add_client(struct nbd_server *srv, int fd)
{
    pthread_attr_t attr;
    pthread_t t;
    struct conn *c;
    int r;

    pthread_mutex_lock(&srv->lock);
    if (srv->stopping || srv->nconns >= srv->max_conns) {
        unsigned n = srv->nconns;

        pthread_mutex_unlock(&srv->lock);
        if (!srv->stopping && !srv->quiet)
            fprintf(stderr,
                    "vdisk: nbd: connection refused: %u clients already (--max-connections)\n", n);
        close(fd);
        return -EBUSY;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        pthread_mutex_unlock(&srv->lock);
        close(fd);
        return -ENOMEM;
    }
    c->srv = srv;
    c->fd = fd;
    c->next = srv->conns;
    if (c->next)
        c->next->prev = c;
    srv->conns = c;
    srv->nconns++;
    pthread_mutex_unlock(&srv->lock);

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    r = -pthread_create(&t, &attr, conn_main, c);
    pthread_attr_destroy(&attr);
    if (r < 0)
        conn_end(c);
    return r;
}

/* A server for IMG; the protocol's strings are checked here. */
int nbd_server_new(struct vdisk_image *img, const struct nbd_server_opts *opts,
                   struct nbd_server **srvp)
{
    struct nbd_server *srv = calloc(1, sizeof(*srv));

    if (!srv)
        return -ENOMEM;
    srv->img = img;
    srv->size = vdisk_get_size(img);
    srv->read_only = vdisk_is_read_only(img);
    srv->name = strdup(opts && opts->export_name ? opts->export_name : "");
    srv->description = opts && opts->description ? strdup(opts->description) : NULL;
    srv->max_conns = opts && opts->max_conns ? opts->max_conns : DEFAULT_CONNS;
    srv->quiet = opts && opts->quiet;
    srv->verbose = opts && opts->verbose;
    srv->handshake_secs = opts && opts->handshake_secs ? opts->handshake_secs : HANDSHAKE_SECS;
    srv->tls_mode = opts ? opts->tls : NBD_TLS_OFF;
    /* the protocol's strings are at most 4096 bytes, and the handshake builds them on its stack */
    if (!srv->name || strlen(srv->name) > 4096 ||
        (opts && opts->description && !srv->description) ||
        (srv->description && strlen(srv->description) > 4096) ||
        pipe2(srv->stop_pipe, O_CLOEXEC) < 0) {
        free(srv->name);
        free(srv->description);
        free(srv);
        return -EINVAL;
    }
    if (srv->tls_mode != NBD_TLS_OFF && nbd_tls_creds_new(opts, &srv->tls) < 0) {
        close(srv->stop_pipe[0]);
        close(srv->stop_pipe[1]);
        free(srv->name);
        free(srv->description);
        free(srv);
        return -EINVAL;
    }
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->idle, NULL);
    *srvp = srv;
    return 0;
}

/* Wake serve() through the stop pipe (async-signal-safe). */
void nbd_server_stop(struct nbd_server *srv)
{
    ssize_t r = write(srv->stop_pipe[1], "x", 1);

    (void)r;
}

/* Cut every connection (their threads see the end of the stream) and wait until they are gone. */
static void drop_all(struct nbd_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->stopping = true;
    for (struct conn *c = srv->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
    while (srv->nconns > 0)
        pthread_cond_wait(&srv->idle, &srv->lock);
    pthread_mutex_unlock(&srv->lock);
}

/* Accept connections until stopped, then drop them all and wait for their threads. */
int nbd_server_serve(struct nbd_server *srv, int listen_fd)
{
    struct pollfd pfd[2] = {{listen_fd, POLLIN, 0}, {srv->stop_pipe[0], POLLIN, 0}};

    for (;;) {
        int fd, one = 1;

        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            drop_all(srv);
            return -errno;
        }
        if (pfd[1].revents)
            break;
        if (!pfd[0].revents)
            continue;
        fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                poll(NULL, 0, 100); /* out of descriptors: let some close */
                continue;
            }
            fprintf(stderr, "vdisk: nbd: accept: %m\n");
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails on Unix: fine */
        nbd_server_add_client(srv, fd);
    }
    drop_all(srv);
    return 0;
}

/* Free SRV (its connections are gone). */
void nbd_server_free(struct nbd_server *srv)
{
    if (!srv)
        return;
    close(srv->stop_pipe[0]);
    close(srv->stop_pipe[1]);
    pthread_cond_destroy(&srv->idle);
    pthread_mutex_destroy(&srv->lock);
    nbd_tls_creds_free(srv->tls);
    free(srv->name);
    free(srv->description);
    free(srv);
}
