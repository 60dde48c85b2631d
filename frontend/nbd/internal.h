/* SPDX-License-Identifier: MIT */
/*
 * The NBD server's insides, shared by its files, one job each:
 *   socket.c        the socket: buffered input, input on the ring, replies out
 *   handshake.c     fixed newstyle option haggling, up to transmission
 *   transmission.c  requests in, the engine's requests out, replies back
 *   connection.c    the server: connections, their thread and ring, limits, stop
 *   listen.c        Unix and TCP listening sockets
 *   tls.c           STARTTLS: credentials, a GnuTLS session per connection
 *
 * A connection is one thread with one io_uring. The socket's input comes in
 * as recv SQEs on that ring and the image's I/O goes out on it through a
 * vdisk_queue made with vdisk_queue_create_on_ring(), so one wait sees both:
 * new requests are read while earlier ones are in flight, and replies leave
 * as the engine completes them, in any order. Where io_uring is unavailable
 * (or VDISK_NO_IO_URING=1) the thread polls the socket and the queue's fd
 * instead, and the engine runs everything on its workers.
 */
#ifndef VDISK_NBD_INTERNAL_H
#define VDISK_NBD_INTERNAL_H

#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "nbd-proto.h"
#include "nbd-server.h"

#define MAX_PAYLOAD        (32u << 20) /* largest read or write we accept */
#define PREF_BLOCK         4096u       /* preferred block size we advertise */
#define RBUF_SIZE          65536u      /* buffered socket input */
#define MAX_INFLIGHT       64u         /* requests in flight per connection */
#define MAX_INFLIGHT_BYTES (64u << 20) /* their payloads (one larger request still goes) */
#define OUT_IOV            256         /* pieces of queued replies */
#define OUT_HDR            16384       /* bytes of queued reply headers */
#define META_ID            1           /* our id for the base:allocation context */
#define RECV_TAG           1 /* user_data of the socket's recv SQE (no VDISK_QUEUE_CQE_BIT) */

struct nbd_server {
    struct vdisk_image *img;
    uint64_t size;
    bool read_only;
    char *name;
    char *description;
    unsigned max_conns;
    bool quiet;   /* no messages about misbehaving clients */
    bool verbose; /* each connection's engine counters when it ends */
    int stop_pipe[2];
    unsigned handshake_secs;
    enum nbd_tls tls_mode;
    struct nbd_tls_creds *tls; /* NULL when TLS is off */

    pthread_mutex_t lock; /* protects conns, nconns, stopping */
    pthread_cond_t idle;  /* signalled when a connection goes */
    struct conn *conns;
    unsigned nconns;
    bool stopping;
};

/* One request of a connection, from its header to its reply. */
struct nbd_cmd {
    uint16_t flags, type;
    uint64_t cookie; /* opaque: echoed as sent */
    uint64_t offset;
    uint32_t length;
    bool flush_after;        /* TRIM with FUA: a flush once the discard is done */
    uint32_t charged;        /* bytes counted in conn.inflight_bytes */
    struct vdisk_request vr; /* what the engine runs */
    void *buf;               /* payload, read data or extents; kept for the next request */
    size_t cap;
};

/* One client, served by one thread: everything here is that thread's. */
struct conn {
    struct nbd_server *srv;
    int fd;
    struct conn *prev, *next; /* srv->conns, under srv->lock */
    bool structured;          /* NBD_OPT_STRUCTURED_REPLY negotiated */
    bool meta_alloc;          /* base:allocation selected */
    bool no_zeroes;           /* client's NBD_FLAG_C_NO_ZEROES */
    struct nbd_tls_conn *tls; /* after STARTTLS: every byte goes through it */
    int64_t deadline_ms;      /* in the handshake: CLOCK_MONOTONIC ms by which it must be over */

    /* input: bytes the socket gave that no request took yet */
    uint8_t rbuf[RBUF_SIZE];
    size_t rpos, rlen;
    bool recv_armed;   /* a recv is asked for: its buffer is the kernel's */
    bool recv_to_fill; /* ... and it reads into fill's payload, not rbuf */
    uint8_t *recv_dst; /* ... where, how much, how */
    size_t recv_len;
    int recv_flags;
    bool eof;             /* the stream ended (or NBD_CMD_DISC): read no more */
    bool dead;            /* hard disconnect: replies are dropped, not sent */
    struct nbd_cmd *fill; /* a write whose payload is coming in */
    uint32_t fill_have;
    uint64_t skip; /* bytes of a refused payload still to drop */

    /* the engine */
    bool on_ring; /* the socket and the engine share ring; else poll(), engine on workers */
    struct io_uring ring;
    struct vdisk_queue *q;
    struct nbd_cmd cmd[MAX_INFLIGHT];
    unsigned freel[MAX_INFLIGHT], nfree;        /* commands free */
    unsigned answered[MAX_INFLIGHT], nanswered; /* replied: free once the replies are out */
    uint64_t inflight_bytes;

    /* output: replies queued for one sendmsg */
    struct iovec iov[OUT_IOV];
    int niov;
    size_t hlen;          /* bytes of hdr in use */
    uint8_t hdr[OUT_HDR]; /* reply headers */
};

/* connection.c */
void log_client(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* socket.c */
int64_t mono_ms(void);
ssize_t sock_recv_raw(struct conn *c, void *buf, size_t n, int flags);
int sock_read(struct conn *c, void *buf, size_t n);
int sock_send(struct conn *c, struct iovec *iov, int n);
int sock_send_raw(int fd, struct iovec *iov, int n);
int sock_send_all(struct conn *c, const void *buf, size_t len);
void sock_want(struct conn *c, uint8_t *dst, size_t len);
void sock_arm_recv(struct conn *c);
int sock_recv_now(struct conn *c);
void sock_recv_done(struct conn *c, int res);
int out_room(struct conn *c, int niov, size_t hbytes);
void out_copy(struct conn *c, const void *data, size_t len);
void out_ref(struct conn *c, const void *data, size_t len);
int out_flush(struct conn *c);

/* tls.c */
int nbd_tls_creds_new(const struct nbd_server_opts *opts, struct nbd_tls_creds **credsp);
void nbd_tls_creds_free(struct nbd_tls_creds *creds);
int tls_start(struct conn *c);
ssize_t tls_recv(struct conn *c, void *buf, size_t n, bool wait);
int tls_send(struct conn *c, struct iovec *iov, int n);
bool tls_pending(struct conn *c);
void tls_end(struct conn *c, bool clean);

/* handshake.c */
int nbd_handshake(struct conn *c);

/* transmission.c: what xmit_take() stopped for */
#define XMIT_INPUT 0 /* input (sock_want() says which) */
#define XMIT_ROOM  1 /* a free command: call again once replies went out */
#define XMIT_END   2 /* nothing: the input is over */
uint16_t transmission_flags(const struct conn *c);
int xmit_init(struct conn *c);
int xmit_take(struct conn *c);
bool xmit_room(const struct conn *c);
int xmit_reap(struct conn *c);
int xmit_flush(struct conn *c);
void xmit_free(struct conn *c);

#endif
