/* SPDX-License-Identifier: MIT */
/*
 * The NBD server (doc/proto.md of the nbd project): fixed newstyle
 * handshake, then the transmission phase, served one of two ways.
 *
 * Page cache (default): a small team of worker threads per connection
 * takes turns as the reader. One holds recv_lock, takes every request
 * already in the input buffer (a batch; its write payloads too), serves
 * them and sends all their replies with one sendmsg under send_lock. While
 * the I/O is quick it keeps recv_lock throughout, so the next batch costs
 * no futex hand-off; once a request waits (a page-cache miss) it lets go
 * and batches shrink to one request, so the workers share the queue.
 *
 * Direct I/O (--direct): one thread per connection drives a vdisk_queue
 * (io_uring for mapped reads and writes), reading requests as they come
 * and replying as completions come back, so the client's whole queue is
 * in flight with no thread hand-off. VDISK_NBD_NO_QUEUE=1 in the
 * environment serves direct I/O with the workers instead (16, one request
 * each).
 *
 * Replies leave in whatever order the I/O completes. The image is shared
 * by every connection of this process, so flushes are seen by all of them
 * (MULTI_CONN).
 */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "nbd-proto.h"
#include "nbd-server.h"

#define MAX_PAYLOAD     (32u << 20) /* largest read or write we accept */
#define PREF_BLOCK      4096u
#define MAX_OPTION_LEN  65536u       /* larger option data: hard disconnect */
#define MAX_OPTIONS     1024         /* options per handshake */
#define HANDSHAKE_SECS  60           /* a client silent this long is dropped */
#define RBUF_SIZE       65536u       /* buffered socket input */
#define SPARSE_MIN      65536u       /* reads this large look for holes */
#define ZERO_BLOCK      4096u        /* queue mode: holes are zero runs of these */
#define MAX_READ_CHUNKS 32           /* content chunks in one read reply */
#define MAX_DESCRIPTORS 1024         /* block status descriptors per reply */
#define MAX_BATCH       32           /* requests a worker takes at once */
#define BATCH_BYTES     (256u << 10) /* ... and their payload, beyond the first */
#define MAX_INFLIGHT    64           /* requests in flight per connection (queue mode) */
#define OUT_IOV         256          /* pieces of queued replies */
#define OUT_HDR         16384        /* bytes of queued reply headers */
/* a request is quick (page cache) within 20us plus 0.5ns a byte */
#define QUICK_NS           20000u
#define QUICK_BYTES_PER_NS 2u
/*
 * Workers per connection. Page-cache I/O is CPU bound: one per core.
 * O_DIRECT I/O without a queue waits on the disk: more workers keep more
 * of the client's queue in flight.
 */
#define DIRECT_THREADS  16
#define DEFAULT_CONNS   128
#define BASE_ALLOCATION "base:allocation"
#define META_ID         1 /* our id for base:allocation */

struct nbd_server {
    struct vdisk_image *img;
    uint64_t size;
    bool read_only;
    char *name;
    char *description;
    unsigned threads;
    unsigned batch; /* requests a worker takes at once */
    unsigned max_conns;
    bool quiet;
    int stop_pipe[2];
    bool queued; /* connections run on a vdisk_queue (direct I/O) */

    pthread_mutex_t lock; /* protects conns, nconns, stopping */
    pthread_cond_t idle;  /* signalled when a connection goes */
    struct conn *conns;
    unsigned nconns;
    bool stopping;
};

struct conn {
    struct nbd_server *srv;
    int fd;
    pthread_mutex_t recv_lock; /* one reader at a time; guards rbuf */
    pthread_mutex_t send_lock; /* one reply at a time on the wire */
    uint8_t rbuf[RBUF_SIZE];
    size_t rpos, rlen;
    bool structured;          /* NBD_OPT_STRUCTURED_REPLY negotiated */
    bool meta_alloc;          /* base:allocation selected */
    bool no_zeroes;           /* client's NBD_FLAG_C_NO_ZEROES */
    atomic_bool dead;         /* read no more requests */
    atomic_bool slow;         /* the last batch waited: spread requests out */
    atomic_uint refs;         /* threads using this connection */
    struct conn *prev, *next; /* srv->conns, under srv->lock */
};

/* One decoded request. */
struct request {
    uint16_t flags, type;
    uint64_t cookie, offset;
    uint32_t length;
};

/* A request's payload buffer, grown to the largest payload it has held. */
struct slot {
    void *buf;
    size_t cap;
};

/* A worker's batch of requests and the replies it has queued for them. */
struct worker {
    struct request rq[MAX_INFLIGHT];
    struct slot slot[MAX_INFLIGHT];
    unsigned n; /* requests in the batch */
    struct iovec iov[OUT_IOV];
    int niov;
    size_t hlen;          /* bytes of hdr in use */
    uint8_t hdr[OUT_HDR]; /* reply headers */
};

static void log_client(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Say what a client did wrong (stderr), unless told to keep quiet. */
static void log_client(struct conn *c, const char *fmt, ...)
{
    va_list ap;

    if (c->srv->quiet)
        return;
    fprintf(stderr, "vdisk: nbd: client %d: ", c->fd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Read exactly N bytes through the connection's input buffer. */
static int conn_read(struct conn *c, void *buf, size_t n)
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
        if (n >= RBUF_SIZE) { /* large payloads go straight to their buffer */
            r = recv(c->fd, p, n, 0);
            if (r > 0) {
                p += r;
                n -= (size_t)r;
            }
        } else {
            r = recv(c->fd, c->rbuf, RBUF_SIZE, 0);
            if (r > 0) {
                c->rpos = 0;
                c->rlen = (size_t)r;
            }
        }
        if (r == 0)
            return -ECONNRESET;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
    return 0;
}

/* Read and drop N bytes (a payload we refuse but must step over). */
static int conn_skip(struct conn *c, uint64_t n)
{
    uint8_t sink[4096];

    while (n > 0) {
        size_t k = n < sizeof(sink) ? n : sizeof(sink);
        int r = conn_read(c, sink, k);

        if (r < 0)
            return r;
        n -= k;
    }
    return 0;
}

/* Send all of IOV; the caller holds send_lock (or is alone). */
static int send_iov(int fd, struct iovec *iov, int n)
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

static int send_all(int fd, const void *buf, size_t len)
{
    struct iovec iov = {(void *)buf, len};

    return send_iov(fd, &iov, 1);
}

/* Stop reading from C and wake its blocked reader; replies may still fail. */
static void conn_kill(struct conn *c)
{
    c->dead = true;
    shutdown(c->fd, SHUT_RDWR);
}

/* --- handshake ----------------------------------------------------------- */

/* One option reply: header and DATA. */
static int opt_reply(struct conn *c, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
    struct nbd_option_reply h = {
        .magic = htobe64(NBD_REP_MAGIC),
        .option = htobe32(opt),
        .type = htobe32(type),
        .length = htobe32(len),
    };
    struct iovec iov[2] = {{&h, sizeof(h)}, {(void *)data, len}};

    return send_iov(c->fd, iov, len ? 2 : 1);
}

/* An NBD_REP_INFO of TYPE carrying S (at most 4096 bytes, checked at start) built in BUF. */
static int info_string(struct conn *c, uint32_t opt, uint16_t type, const char *s, uint8_t *buf)
{
    uint16_t t = htobe16(type);
    size_t n = strlen(s);

    memcpy(buf, &t, 2);
    memcpy(buf + 2, s, n);
    return opt_reply(c, opt, NBD_REP_INFO, buf, (uint32_t)(2 + n));
}

/* An error reply carrying a message for the human at the other end. */
static int opt_error(struct conn *c, uint32_t opt, uint32_t type, const char *msg)
{
    return opt_reply(c, opt, type, msg, (uint32_t)strlen(msg));
}

static bool export_known(const struct nbd_server *srv, const char *name)
{
    return name[0] == '\0' || strcmp(name, srv->name) == 0;
}

static uint16_t transmission_flags(const struct conn *c)
{
    uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                 NBD_FLAG_SEND_CACHE | NBD_FLAG_CAN_MULTI_CONN;

    if (c->srv->read_only)
        f |= NBD_FLAG_READ_ONLY;
    else
        f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    if (c->structured)
        f |= NBD_FLAG_SEND_DF;
    return f;
}

/* NBD_OPT_INFO / NBD_OPT_GO: 1 to enter transmission, 0 to go on, <0 to drop. */
static int opt_info_go(struct conn *c, uint32_t opt, const uint8_t *d, uint32_t len)
{
    struct nbd_server *srv = c->srv;
    bool want_name = false, want_desc = false;
    uint8_t buf[4 + 2 + 4096];
    uint32_t nlen;
    uint16_t nreq;
    char name[4097];
    int r;

    if (len < 6)
        return opt_error(c, opt, NBD_REP_ERR_INVALID, "option data too short");
    memcpy(&nlen, d, 4);
    nlen = be32toh(nlen);
    if (nlen > len - 6 || nlen > 4096)
        return opt_error(c, opt, NBD_REP_ERR_INVALID, "export name length out of range");
    memcpy(name, d + 4, nlen);
    name[nlen] = '\0';
    memcpy(&nreq, d + 4 + nlen, 2);
    nreq = be16toh(nreq);
    if (len != 4 + nlen + 2 + 2u * nreq)
        return opt_error(c, opt, NBD_REP_ERR_INVALID, "information request count mismatch");
    if (strlen(name) != nlen || !export_known(srv, name))
        return opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "no such export");
    for (uint16_t i = 0; i < nreq; i++) {
        uint16_t t;

        memcpy(&t, d + 4 + nlen + 2 + 2 * i, 2);
        t = be16toh(t);
        want_name |= t == NBD_INFO_NAME;
        want_desc |= t == NBD_INFO_DESCRIPTION;
    }

    /* NBD_INFO_EXPORT: type, size, transmission flags */
    {
        uint16_t type = htobe16(NBD_INFO_EXPORT), flags = htobe16(transmission_flags(c));
        uint64_t size = htobe64(srv->size);

        memcpy(buf, &type, 2);
        memcpy(buf + 2, &size, 8);
        memcpy(buf + 10, &flags, 2);
        r = opt_reply(c, opt, NBD_REP_INFO, buf, 12);
        if (r < 0)
            return r;
    }
    /* NBD_INFO_BLOCK_SIZE: any byte is addressable; 4k preferred */
    {
        uint16_t type = htobe16(NBD_INFO_BLOCK_SIZE);
        uint32_t sizes[3] = {htobe32(1), htobe32(PREF_BLOCK), htobe32(MAX_PAYLOAD)};

        memcpy(buf, &type, 2);
        memcpy(buf + 2, sizes, sizeof(sizes));
        r = opt_reply(c, opt, NBD_REP_INFO, buf, 14);
        if (r < 0)
            return r;
    }
    if (want_name) {
        r = info_string(c, opt, NBD_INFO_NAME, srv->name, buf);
        if (r < 0)
            return r;
    }
    if (want_desc && srv->description) {
        r = info_string(c, opt, NBD_INFO_DESCRIPTION, srv->description, buf);
        if (r < 0)
            return r;
    }
    r = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
    if (r < 0)
        return r;
    return opt == NBD_OPT_GO;
}

/* NBD_OPT_EXPORT_NAME: the old way in; no error reply is possible. */
static int opt_export_name(struct conn *c, const uint8_t *d, uint32_t len)
{
    uint8_t buf[8 + 2 + 124] = {0};
    uint64_t size = htobe64(c->srv->size);
    uint16_t flags = htobe16(transmission_flags(c));
    char name[4097];

    if (len > 4096 || memchr(d, '\0', len)) {
        log_client(c, "bad export name");
        return -EINVAL;
    }
    memcpy(name, d, len);
    name[len] = '\0';
    if (!export_known(c->srv, name)) {
        log_client(c, "unknown export '%s'", name);
        return -ENOENT;
    }
    memcpy(buf, &size, 8);
    memcpy(buf + 8, &flags, 2);
    return send_all(c->fd, buf, c->no_zeroes ? 10 : sizeof(buf));
}

/* NBD_OPT_LIST: our one export. */
static int opt_list(struct conn *c, uint32_t len)
{
    uint8_t buf[4 + 4096];
    size_t n = strlen(c->srv->name);
    uint32_t nlen = htobe32((uint32_t)n);
    int r;

    if (len != 0)
        return opt_error(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "LIST takes no data");
    memcpy(buf, &nlen, 4);
    memcpy(buf + 4, c->srv->name, n);
    r = opt_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, buf, (uint32_t)(4 + n));
    if (r < 0)
        return r;
    return opt_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

/* Take a u32 from D at *POS if LEN allows it. */
static bool take_u32(const uint8_t *d, uint32_t len, uint32_t *pos, uint32_t *v)
{
    if (len - *pos < 4)
        return false;
    memcpy(v, d + *pos, 4);
    *v = be32toh(*v);
    *pos += 4;
    return true;
}

/* NBD_OPT_LIST_META_CONTEXT / SET_META_CONTEXT: we know base:allocation. */
static int opt_meta_context(struct conn *c, uint32_t opt, const uint8_t *d, uint32_t len)
{
    bool set = opt == NBD_OPT_SET_META_CONTEXT, match = false;
    uint32_t pos = 0, nlen, nq, qlen;
    char name[4097];

    if (!c->structured)
        return opt_error(c, opt, NBD_REP_ERR_INVALID, "negotiate structured replies first");
    if (!take_u32(d, len, &pos, &nlen) || nlen > len - pos || nlen > 4096)
        return opt_error(c, opt, NBD_REP_ERR_INVALID, "export name length out of range");
    memcpy(name, d + pos, nlen);
    name[nlen] = '\0';
    pos += nlen;
    if (!take_u32(d, len, &pos, &nq))
        return opt_error(c, opt, NBD_REP_ERR_INVALID, "missing query count");
    if (!set && nq == 0)
        match = true; /* list everything */
    for (uint32_t i = 0; i < nq; i++) {
        const char *q;

        if (!take_u32(d, len, &pos, &qlen) || qlen > len - pos)
            return opt_error(c, opt, NBD_REP_ERR_INVALID, "query length out of range");
        q = (const char *)d + pos;
        pos += qlen;
        if (qlen == strlen(BASE_ALLOCATION) && memcmp(q, BASE_ALLOCATION, qlen) == 0)
            match = true;
        else if (!set && qlen == 5 && memcmp(q, "base:", 5) == 0)
            match = true;
    }
    if (pos != len)
        return opt_error(c, opt, NBD_REP_ERR_INVALID, "trailing option data");
    if (strlen(name) != nlen || !export_known(c->srv, name))
        return opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "no such export");
    if (set)
        c->meta_alloc = match;
    if (match) {
        uint8_t buf[4 + sizeof(BASE_ALLOCATION)];
        uint32_t id = htobe32(set ? META_ID : 0);
        int r;

        memcpy(buf, &id, 4);
        memcpy(buf + 4, BASE_ALLOCATION, strlen(BASE_ALLOCATION));
        r = opt_reply(c, opt, NBD_REP_META_CONTEXT, buf, (uint32_t)(4 + strlen(BASE_ALLOCATION)));
        if (r < 0)
            return r;
    }
    return opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

/* Option haggling: 0 when the client enters transmission, <0 to drop it. */
static int handshake(struct conn *c)
{
    struct {
        uint64_t magic, opt;
        uint16_t flags;
    } __attribute__((packed)) hello = {
        htobe64(NBD_MAGIC),
        htobe64(NBD_IHAVEOPT),
        htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
    };
    uint8_t *data = NULL;
    uint32_t cflags;
    int r;

    r = send_all(c->fd, &hello, sizeof(hello));
    if (r < 0)
        return r;
    r = conn_read(c, &cflags, 4);
    if (r < 0)
        return r;
    cflags = be32toh(cflags);
    if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
        log_client(c, "unknown client flags 0x%x", cflags);
        return -EINVAL;
    }
    c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;
    data = malloc(MAX_OPTION_LEN);
    if (!data)
        return -ENOMEM;

    for (int n = 0; n < MAX_OPTIONS; n++) {
        struct {
            uint64_t magic;
            uint32_t opt, len;
        } __attribute__((packed)) h;
        uint32_t opt, len;

        r = conn_read(c, &h, sizeof(h));
        if (r < 0)
            goto out;
        if (be64toh(h.magic) != NBD_IHAVEOPT) {
            log_client(c, "bad option magic");
            r = -EINVAL;
            goto out;
        }
        opt = be32toh(h.opt);
        len = be32toh(h.len);
        if (len > MAX_OPTION_LEN) {
            log_client(c, "option %u: %u bytes of data is too much", opt, len);
            r = -E2BIG;
            goto out;
        }
        r = conn_read(c, data, len);
        if (r < 0)
            goto out;
        switch (opt) {
        case NBD_OPT_EXPORT_NAME:
            r = opt_export_name(c, data, len);
            goto out; /* transmission, or drop */
        case NBD_OPT_ABORT:
            opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
            r = -ECONNABORTED;
            goto out;
        case NBD_OPT_LIST:
            r = opt_list(c, len);
            break;
        case NBD_OPT_INFO:
        case NBD_OPT_GO:
            r = opt_info_go(c, opt, data, len);
            if (r == 1) {
                r = 0;
                goto out;
            }
            break;
        case NBD_OPT_STRUCTURED_REPLY:
            if (len != 0) {
                r = opt_error(c, opt, NBD_REP_ERR_INVALID, "STRUCTURED_REPLY takes no data");
                break;
            }
            c->structured = true;
            r = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
            break;
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT:
            r = opt_meta_context(c, opt, data, len);
            break;
        case NBD_OPT_STARTTLS:
            r = opt_error(c, opt, NBD_REP_ERR_UNSUP, "TLS is not supported");
            break;
        default:
            r = opt_error(c, opt, NBD_REP_ERR_UNSUP, "unknown option");
            break;
        }
        if (r < 0)
            goto out;
    }
    log_client(c, "too many options");
    r = -EINVAL;
out:
    free(data);
    return r;
}

/* --- transmission -------------------------------------------------------- */

/* NBD error number for a -errno from libvdisk. */
static uint32_t nbd_errno(int r)
{
    switch (-r) {
    case EPERM:
    case EROFS:
        return NBD_EPERM;
    case ENOMEM:
        return NBD_ENOMEM;
    case EINVAL:
        return NBD_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        return NBD_EIO;
    }
}

/* Send the queued replies with one sendmsg, under send_lock. */
static int out_flush(struct conn *c, struct worker *w)
{
    int r = 0;

    if (w->niov > 0) {
        pthread_mutex_lock(&c->send_lock);
        r = send_iov(c->fd, w->iov, w->niov);
        pthread_mutex_unlock(&c->send_lock);
    }
    w->niov = 0;
    w->hlen = 0;
    return r;
}

/* Make room in W's queue for a reply of NIOV pieces and HBYTES of headers. */
static int out_room(struct conn *c, struct worker *w, int niov, size_t hbytes)
{
    if (w->niov + niov <= OUT_IOV && w->hlen + hbytes <= OUT_HDR)
        return 0;
    return out_flush(c, w);
}

/* Queue a copy of small DATA (a header), joined to the piece before it if adjacent. */
static void out_copy(struct worker *w, const void *data, size_t len)
{
    uint8_t *p = w->hdr + w->hlen;
    struct iovec *last = w->niov ? &w->iov[w->niov - 1] : NULL;

    memcpy(p, data, len);
    w->hlen += len;
    if (last && (uint8_t *)last->iov_base + last->iov_len == p)
        last->iov_len += len;
    else
        w->iov[w->niov++] = (struct iovec){p, len};
}

/* Queue DATA by reference: it stays put until the batch's replies are sent. */
static void out_ref(struct worker *w, const void *data, size_t len)
{
    w->iov[w->niov++] = (struct iovec){(void *)data, len};
}

/* Reply to R with an error: an error chunk when structured, else simple. */
static int reply_error(struct conn *c, struct worker *w, const struct request *rq, uint32_t error,
                       const char *msg)
{
    int r;

    if (c->structured) {
        struct nbd_structured_reply h;
        uint8_t p[6];
        uint32_t e = htobe32(error);
        uint16_t mlen;

        if (strlen(msg) > 1024)
            msg = "error";
        mlen = (uint16_t)strlen(msg);
        r = out_room(c, w, 1, sizeof(h) + 6 + mlen);
        if (r < 0)
            return r;
        h.magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC);
        h.flags = htobe16(NBD_REPLY_FLAG_DONE);
        h.type = htobe16(NBD_REPLY_TYPE_ERROR);
        h.cookie = rq->cookie;
        h.length = htobe32(6 + mlen);
        memcpy(p, &e, 4);
        mlen = htobe16(mlen);
        memcpy(p + 4, &mlen, 2);
        out_copy(w, &h, sizeof(h));
        out_copy(w, p, 6);
        out_copy(w, msg, strlen(msg));
    } else {
        struct nbd_simple_reply h = {htobe32(NBD_SIMPLE_REPLY_MAGIC), htobe32(error), rq->cookie};

        r = out_room(c, w, 1, sizeof(h));
        if (r < 0)
            return r;
        out_copy(w, &h, sizeof(h));
    }
    return 0;
}

/* Success with no payload: a simple reply is allowed for all but READ. */
static int reply_ok(struct conn *c, struct worker *w, const struct request *rq)
{
    struct nbd_simple_reply h = {htobe32(NBD_SIMPLE_REPLY_MAGIC), 0, rq->cookie};
    int r = out_room(c, w, 1, sizeof(h));

    if (r == 0)
        out_copy(w, &h, sizeof(h));
    return r;
}

/* Reply to a libvdisk result R. */
static int reply_result(struct conn *c, struct worker *w, const struct request *rq, int r)
{
    if (r < 0)
        return reply_error(c, w, rq, nbd_errno(r), vdisk_last_error());
    return reply_ok(c, w, rq);
}

/* Make S hold LEN bytes (page aligned for O_DIRECT). */
static int slot_reserve(struct slot *s, size_t len)
{
    void *p;

    if (len <= s->cap)
        return 0;
    if (posix_memalign(&p, 4096, len) != 0)
        return -ENOMEM;
    free(s->buf);
    s->buf = p;
    s->cap = len;
    return 0;
}

/* Queue the reply to a read whose data is in S. */
static int reply_data(struct conn *c, struct worker *w, const struct request *rq,
                      const struct slot *s)
{
    uint64_t off = htobe64(rq->offset);
    int r = out_room(c, w, 2, sizeof(struct nbd_structured_reply) + 8);

    if (r < 0)
        return r;
    if (c->structured) {
        struct nbd_structured_reply h = {
            htobe32(NBD_STRUCTURED_REPLY_MAGIC), htobe16(NBD_REPLY_FLAG_DONE),
            htobe16(NBD_REPLY_TYPE_OFFSET_DATA), rq->cookie, htobe32(8 + rq->length)};

        out_copy(w, &h, sizeof(h));
        out_copy(w, &off, 8);
    } else {
        struct nbd_simple_reply h = {htobe32(NBD_SIMPLE_REPLY_MAGIC), 0, rq->cookie};

        out_copy(w, &h, sizeof(h));
    }
    out_ref(w, s->buf, rq->length);
    return 0;
}

/* A whole read as one simple reply or one data chunk. */
static int read_plain(struct conn *c, struct worker *w, const struct request *rq, struct slot *s)
{
    int r = vdisk_read(c->srv->img, s->buf, rq->length, rq->offset);

    if (r < 0)
        return reply_error(c, w, rq, nbd_errno(r), vdisk_last_error());
    return reply_data(c, w, rq, s);
}

/*
 * A large structured read: holes of the allocation map that read as zeroes
 * go out as OFFSET_HOLE chunks instead of bytes.
 */
static int read_sparse(struct conn *c, struct worker *w, const struct request *rq, struct slot *s)
{
    struct chunk {
        struct nbd_structured_reply h;
        uint64_t offset;
        uint32_t hole_len;
    } __attribute__((packed)) ch[MAX_READ_CHUNKS];
    uint64_t pos = rq->offset, end = rq->offset + rq->length;
    int n = 0, r, holes = 0;

    while (pos < end) {
        struct vdisk_extent ext = {pos, end - pos, 0};
        bool zero;

        if (n == MAX_READ_CHUNKS - 1 || vdisk_block_status(c->srv->img, pos, end - pos, &ext) < 0)
            ext = (struct vdisk_extent){pos, end - pos, 0}; /* the rest as data */
        zero = ext.flags & VDISK_EXTENT_ZERO;
        /* merge with the previous chunk of the same kind */
        if (n > 0 && (ch[n - 1].h.type == htobe16(NBD_REPLY_TYPE_OFFSET_HOLE)) == zero) {
            if (zero)
                ch[n - 1].hole_len = htobe32(be32toh(ch[n - 1].hole_len) + (uint32_t)ext.length);
            pos += ext.length;
            continue;
        }
        ch[n].h.magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC);
        ch[n].h.flags = 0;
        ch[n].h.cookie = rq->cookie;
        ch[n].h.type = htobe16(zero ? NBD_REPLY_TYPE_OFFSET_HOLE : NBD_REPLY_TYPE_OFFSET_DATA);
        ch[n].offset = htobe64(pos);
        ch[n].hole_len = htobe32((uint32_t)ext.length);
        holes += zero;
        n++;
        pos += ext.length;
    }
    if (holes == 0)
        return read_plain(c, w, rq, s);
    /* read the data chunks, then queue the reply */
    for (int i = 0; i < n; i++) {
        uint64_t start = be64toh(ch[i].offset);
        uint64_t stop = i + 1 < n ? be64toh(ch[i + 1].offset) : end;

        if (ch[i].h.type == htobe16(NBD_REPLY_TYPE_OFFSET_HOLE)) {
            ch[i].h.length = htobe32(12);
            continue;
        }
        r = vdisk_read(c->srv->img, (uint8_t *)s->buf + (start - rq->offset), stop - start, start);
        if (r < 0)
            return reply_error(c, w, rq, nbd_errno(r), vdisk_last_error());
        ch[i].h.length = htobe32((uint32_t)(8 + stop - start));
    }
    ch[n - 1].h.flags = htobe16(NBD_REPLY_FLAG_DONE);
    r = out_room(c, w, 2 * n, sizeof(ch));
    if (r < 0)
        return r;
    for (int i = 0; i < n; i++) {
        uint64_t start = be64toh(ch[i].offset);

        if (ch[i].h.type == htobe16(NBD_REPLY_TYPE_OFFSET_HOLE)) {
            out_copy(w, &ch[i], sizeof(ch[i]));
        } else {
            out_copy(w, &ch[i], sizeof(ch[i].h) + 8);
            out_ref(w, (uint8_t *)s->buf + (start - rq->offset), be32toh(ch[i].h.length) - 8);
        }
    }
    return 0;
}

/* Whether LEN bytes at P are all zero. */
static bool all_zero(const uint8_t *p, size_t len)
{
    return p[0] == 0 && memcmp(p, p + 1, len - 1) == 0;
}

/*
 * The reply to a large structured read already in S (queue mode, where
 * the allocation map cannot be asked while requests are in flight): runs
 * of zero blocks in the data go out as OFFSET_HOLE chunks. Random data
 * costs a byte compare per block.
 */
static int reply_scanned(struct conn *c, struct worker *w, const struct request *rq,
                         const struct slot *s)
{
    struct chunk {
        struct nbd_structured_reply h;
        uint64_t offset;
        uint32_t hole_len;
    } __attribute__((packed)) ch[MAX_READ_CHUNKS];
    const uint8_t *buf = s->buf;
    uint32_t pos = 0, k;
    int n = 0, holes = 0, r;

    while (pos < rq->length) {
        bool zero;

        k = rq->length - pos < ZERO_BLOCK ? rq->length - pos : ZERO_BLOCK;
        zero = n < MAX_READ_CHUNKS - 1 && all_zero(buf + pos, k);
        if (n > 0 && (ch[n - 1].h.type == htobe16(NBD_REPLY_TYPE_OFFSET_HOLE)) == zero) {
            ch[n - 1].hole_len = htobe32(be32toh(ch[n - 1].hole_len) + k);
            pos += k;
            continue;
        }
        ch[n].h = (struct nbd_structured_reply){
            htobe32(NBD_STRUCTURED_REPLY_MAGIC), 0,
            htobe16(zero ? NBD_REPLY_TYPE_OFFSET_HOLE : NBD_REPLY_TYPE_OFFSET_DATA), rq->cookie, 0};
        ch[n].offset = htobe64(rq->offset + pos);
        ch[n].hole_len = htobe32(k);
        holes += zero;
        n++;
        pos += k;
    }
    if (holes == 0)
        return reply_data(c, w, rq, s);
    ch[n - 1].h.flags = htobe16(NBD_REPLY_FLAG_DONE);
    r = out_room(c, w, 2 * n, sizeof(ch));
    if (r < 0)
        return r;
    for (int i = 0; i < n; i++) {
        uint32_t len = be32toh(ch[i].hole_len);
        uint64_t start = be64toh(ch[i].offset) - rq->offset;

        if (ch[i].h.type == htobe16(NBD_REPLY_TYPE_OFFSET_HOLE)) {
            ch[i].h.length = htobe32(12);
            out_copy(w, &ch[i], sizeof(ch[i]));
        } else {
            ch[i].h.length = htobe32(8 + len);
            out_copy(w, &ch[i], sizeof(ch[i].h) + 8);
            out_ref(w, buf + start, len);
        }
    }
    return 0;
}

/* NBD_CMD_BLOCK_STATUS for base:allocation. */
static int do_block_status(struct conn *c, struct worker *w, const struct request *rq,
                           struct slot *s)
{
    uint64_t pos = rq->offset, end = rq->offset + rq->length;
    unsigned max = (rq->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_DESCRIPTORS, n = 0;
    uint32_t *d, id = htobe32(META_ID);
    struct nbd_structured_reply h;
    int r;

    if (slot_reserve(s, 8 * MAX_DESCRIPTORS) < 0)
        return reply_error(c, w, rq, NBD_ENOMEM, "out of memory");
    d = s->buf;
    while (pos < end && n < max) {
        struct vdisk_extent ext;
        uint32_t flags;

        r = vdisk_block_status(c->srv->img, pos, end - pos, &ext);
        if (r < 0) {
            if (n > 0)
                break; /* report what we have */
            return reply_error(c, w, rq, nbd_errno(r), vdisk_last_error());
        }
        flags = (ext.flags & VDISK_EXTENT_HOLE ? NBD_STATE_HOLE : 0) |
                (ext.flags & VDISK_EXTENT_ZERO ? NBD_STATE_ZERO : 0);
        if (n > 0 && be32toh(d[2 * n - 1]) == flags) {
            d[2 * n - 2] = htobe32(be32toh(d[2 * n - 2]) + (uint32_t)ext.length);
        } else {
            d[2 * n] = htobe32((uint32_t)ext.length);
            d[2 * n + 1] = htobe32(flags);
            n++;
        }
        pos += ext.length;
    }
    h = (struct nbd_structured_reply){
        htobe32(NBD_STRUCTURED_REPLY_MAGIC), htobe16(NBD_REPLY_FLAG_DONE),
        htobe16(NBD_REPLY_TYPE_BLOCK_STATUS), rq->cookie, htobe32(4 + 8 * n)};
    r = out_room(c, w, 2, sizeof(h) + 4);
    if (r < 0)
        return r;
    out_copy(w, &h, sizeof(h));
    out_copy(w, &id, 4);
    out_ref(w, d, 8 * n);
    return 0;
}

/* Flags each command accepts (FUA is valid on all). */
static uint16_t allowed_flags(const struct conn *c, uint16_t type)
{
    switch (type) {
    case NBD_CMD_READ:
        return NBD_CMD_FLAG_FUA | (c->structured ? NBD_CMD_FLAG_DF : 0);
    case NBD_CMD_WRITE_ZEROES:
        return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
    case NBD_CMD_BLOCK_STATUS:
        return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE;
    default:
        return NBD_CMD_FLAG_FUA;
    }
}

/* Check a request before any I/O; an NBD error, or 0. MSG says why. */
static uint32_t check_request(const struct conn *c, const struct request *rq, const char **msg)
{
    const struct nbd_server *srv = c->srv;
    bool writes =
        rq->type == NBD_CMD_WRITE || rq->type == NBD_CMD_TRIM || rq->type == NBD_CMD_WRITE_ZEROES;

    if (rq->type > NBD_CMD_BLOCK_STATUS || rq->type == NBD_CMD_DISC) {
        *msg = "unknown command";
        return NBD_EINVAL;
    }
    if (rq->flags & ~allowed_flags(c, rq->type)) {
        *msg = "flags not valid for this command";
        return NBD_EINVAL;
    }
    if (writes && srv->read_only) {
        *msg = "export is read-only";
        return NBD_EPERM;
    }
    if (rq->type == NBD_CMD_FLUSH)
        return 0;
    if ((rq->type == NBD_CMD_READ || rq->type == NBD_CMD_WRITE) && rq->length > MAX_PAYLOAD) {
        *msg = "request larger than the maximum payload";
        return NBD_EINVAL;
    }
    if (rq->offset > srv->size || rq->length > srv->size - rq->offset) {
        *msg = "request beyond the end of the export";
        return NBD_EINVAL;
    }
    if (rq->type == NBD_CMD_BLOCK_STATUS) {
        if (!c->meta_alloc) {
            *msg = "no metadata context negotiated";
            return NBD_EINVAL;
        }
        if (rq->length == 0) {
            *msg = "block status of 0 bytes";
            return NBD_EINVAL;
        }
    }
    return 0;
}

/* Serve one request whose payload (if any) is in S; queue its reply in W. */
static int serve_request(struct conn *c, struct worker *w, const struct request *rq, struct slot *s)
{
    struct vdisk_image *img = c->srv->img;
    bool fua = rq->flags & NBD_CMD_FLAG_FUA;
    const char *msg = "";
    uint32_t e = check_request(c, rq, &msg);
    unsigned zf;
    int r;

    if (e)
        return reply_error(c, w, rq, e, msg);
    switch (rq->type) {
    case NBD_CMD_READ:
        if (rq->length == 0) {
            if (!c->structured)
                return reply_ok(c, w, rq);
            struct nbd_structured_reply h = {htobe32(NBD_STRUCTURED_REPLY_MAGIC),
                                             htobe16(NBD_REPLY_FLAG_DONE),
                                             htobe16(NBD_REPLY_TYPE_NONE), rq->cookie, 0};

            r = out_room(c, w, 1, sizeof(h));
            if (r == 0)
                out_copy(w, &h, sizeof(h));
            return r;
        }
        if (slot_reserve(s, rq->length) < 0)
            return reply_error(c, w, rq, NBD_ENOMEM, "out of memory");
        if (c->structured && rq->length >= SPARSE_MIN && !(rq->flags & NBD_CMD_FLAG_DF))
            return read_sparse(c, w, rq, s);
        return read_plain(c, w, rq, s);
    case NBD_CMD_WRITE:
        r = rq->length ? vdisk_write(img, s->buf, rq->length, rq->offset, fua ? VDISK_WRITE_FUA : 0)
                       : 0;
        return reply_result(c, w, rq, r);
    case NBD_CMD_FLUSH:
        return reply_result(c, w, rq, c->srv->read_only ? 0 : vdisk_flush(img));
    case NBD_CMD_TRIM:
        r = rq->length ? vdisk_discard(img, rq->offset, rq->length) : 0;
        if (r == 0 && fua)
            r = vdisk_flush(img);
        return reply_result(c, w, rq, r);
    case NBD_CMD_WRITE_ZEROES:
        zf = (fua ? VDISK_ZERO_FUA : 0) |
             (rq->flags & NBD_CMD_FLAG_NO_HOLE ? 0 : VDISK_ZERO_MAY_UNMAP) |
             (rq->flags & NBD_CMD_FLAG_FAST_ZERO ? VDISK_ZERO_NO_FALLBACK : 0);
        r = rq->length ? vdisk_write_zeroes(img, rq->offset, rq->length, zf) : 0;
        if (r == -EOPNOTSUPP && (rq->flags & NBD_CMD_FLAG_FAST_ZERO))
            return reply_error(c, w, rq, NBD_ENOTSUP, "zeroing would not be fast");
        return reply_result(c, w, rq, r);
    case NBD_CMD_CACHE:
        /* prefetch by reading, a bounded piece at a time */
        for (uint64_t pos = rq->offset, end = rq->offset + rq->length; pos < end;) {
            size_t k = end - pos < (1u << 20) ? end - pos : (1u << 20);

            if (slot_reserve(s, k) < 0)
                return reply_error(c, w, rq, NBD_ENOMEM, "out of memory");
            r = vdisk_read(img, s->buf, k, pos);
            if (r < 0)
                return reply_result(c, w, rq, r);
            pos += k;
        }
        return reply_ok(c, w, rq);
    case NBD_CMD_BLOCK_STATUS:
        return do_block_status(c, w, rq, s);
    }
    return reply_error(c, w, rq, NBD_EINVAL, "unknown command");
}

/* Monotonic nanoseconds. */
static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Serve W's batch in order.
 * *HELD: the caller holds recv_lock; let go of it once I/O turns slow.
 */
static int serve_batch(struct conn *c, struct worker *w, bool *held)
{
    uint64_t t0 = now_ns(), budget = 0;
    int r = 0;

    for (unsigned i = 0; i < w->n && r >= 0; i++) {
        r = serve_request(c, w, &w->rq[i], &w->slot[i]);
        budget += QUICK_NS + w->rq[i].length / QUICK_BYTES_PER_NS;
        if (*held && now_ns() - t0 > budget) {
            c->slow = true; /* let the other workers in */
            *held = false;
            pthread_mutex_unlock(&c->recv_lock);
        }
    }
    if (!*held)
        c->slow = now_ns() - t0 > budget;
    return r;
}

/* A connection served through a vdisk_queue: its requests and their slots. */
struct qconn {
    struct conn *c;
    struct worker *w; /* slots, the reply queue */
    struct vdisk_queue *q;
    struct vdisk_request vr[MAX_INFLIGHT];
    bool trim_fua[MAX_INFLIGHT];         /* a TRIM owing a flush once it is done */
    unsigned freel[MAX_INFLIGHT], nfree; /* slots free */
    unsigned done[MAX_INFLIGHT], ndone;  /* slots replied to, free after out_flush */
};

static int qc_reap(struct qconn *qc, unsigned min);

/* Submit slot I's request as OP. */
static int qc_submit(struct qconn *qc, unsigned i, enum vdisk_op op, unsigned flags)
{
    const struct request *rq = &qc->w->rq[i];

    qc->vr[i] = (struct vdisk_request){.op = op,
                                       .flags = flags,
                                       .buf = qc->w->slot[i].buf,
                                       .offset = rq->offset,
                                       .length = rq->length,
                                       .user_data = &qc->vr[i]};
    return vdisk_queue_submit(qc->q, &qc->vr[i]);
}

/* Start slot I's request, or reply to it at once; <0 when the reply cannot go out. */
static int qc_start(struct qconn *qc, unsigned i)
{
    struct conn *c = qc->c;
    struct worker *w = qc->w;
    const struct request *rq = &w->rq[i];
    bool fua = rq->flags & NBD_CMD_FLAG_FUA;
    const char *msg = "";
    uint32_t e = check_request(c, rq, &msg);
    int r;

    qc->trim_fua[i] = false;
    if (e)
        return reply_error(c, w, rq, e, msg);
    switch (rq->type) {
    case NBD_CMD_READ:
        if (rq->length == 0) {
            r = 1; /* the synchronous path words the empty reply */
            break;
        }
        if (slot_reserve(&w->slot[i], rq->length) < 0)
            return reply_error(c, w, rq, NBD_ENOMEM, "out of memory");
        r = qc_submit(qc, i, VDISK_OP_READ, 0);
        break;
    case NBD_CMD_WRITE:
        if (rq->length == 0)
            return reply_ok(c, w, rq);
        r = qc_submit(qc, i, VDISK_OP_WRITE, fua ? VDISK_WRITE_FUA : 0);
        break;
    case NBD_CMD_FLUSH:
        if (c->srv->read_only)
            return reply_ok(c, w, rq);
        r = qc_submit(qc, i, VDISK_OP_FLUSH, 0);
        break;
    case NBD_CMD_TRIM:
        if (rq->length == 0)
            return reply_ok(c, w, rq);
        qc->trim_fua[i] = fua;
        r = qc_submit(qc, i, VDISK_OP_DISCARD, 0);
        break;
    case NBD_CMD_WRITE_ZEROES:
        if (rq->length == 0)
            return reply_ok(c, w, rq);
        r = qc_submit(qc, i, VDISK_OP_WRITE_ZEROES,
                      (fua ? VDISK_ZERO_FUA : 0) |
                          (rq->flags & NBD_CMD_FLAG_NO_HOLE ? 0 : VDISK_ZERO_MAY_UNMAP) |
                          (rq->flags & NBD_CMD_FLAG_FAST_ZERO ? VDISK_ZERO_NO_FALLBACK : 0));
        break;
    case NBD_CMD_CACHE:
        return reply_ok(c, w, rq); /* direct I/O: there is no cache to fill */
    default:
        r = 1; /* BLOCK_STATUS: below */
        break;
    }
    if (r == 1) {
        /* the rest are synchronous calls, which want nothing in flight */
        r = 0;
        while (r >= 0 && vdisk_queue_inflight(qc->q) > 0)
            r = qc_reap(qc, 1);
        return r < 0 ? r : serve_request(c, w, rq, &w->slot[i]);
    }
    if (r < 0)
        return reply_error(c, w, rq, nbd_errno(r), vdisk_last_error());
    return 1; /* in flight */
}

/* Reply to the request of a completed VR. */
static int qc_finish(struct qconn *qc, struct vdisk_request *vr)
{
    unsigned i = (unsigned)(vr - qc->vr);
    const struct request *rq = &qc->w->rq[i];
    struct conn *c = qc->c;
    int r;

    if (vr->result == 0 && qc->trim_fua[i]) {
        qc->trim_fua[i] = false;
        r = qc_submit(qc, i, VDISK_OP_FLUSH, 0);
        if (r == 0)
            return 1; /* in flight again */
        vr->result = r;
    }
    qc->done[qc->ndone++] = i;
    if (vr->result == -EOPNOTSUPP && (rq->flags & NBD_CMD_FLAG_FAST_ZERO))
        return reply_error(c, qc->w, rq, NBD_ENOTSUP, "zeroing would not be fast");
    if (vr->result < 0)
        return reply_error(c, qc->w, rq, nbd_errno(vr->result), vdisk_last_error());
    if (rq->type != NBD_CMD_READ)
        return reply_ok(c, qc->w, rq);
    if (c->structured && rq->length >= SPARSE_MIN && !(rq->flags & NBD_CMD_FLAG_DF))
        return reply_scanned(c, qc->w, rq, &qc->w->slot[i]);
    return reply_data(c, qc->w, rq, &qc->w->slot[i]);
}

/* Collect completions, waiting for at least MIN, and queue their replies. */
static int qc_reap(struct qconn *qc, unsigned min)
{
    struct vdisk_request *done[MAX_INFLIGHT];
    int n = vdisk_queue_complete(qc->q, done, MAX_INFLIGHT, min), r = 0;

    for (int k = 0; k < n && r >= 0; k++)
        r = qc_finish(qc, done[k]);
    return n < 0 ? n : r;
}

/*
 * Read one request (and a write's payload) into RQ and S.
 * 1: took it; 0: the client is done or gone; <0: hopeless stream.
 */
static int read_request(struct conn *c, struct request *rq, struct slot *s)
{
    struct nbd_request raw;
    int r;

    r = conn_read(c, &raw, sizeof(raw));
    if (r < 0)
        return r == -ECONNRESET ? 0 : r;
    if (be32toh(raw.magic) != NBD_REQUEST_MAGIC) {
        log_client(c, "bad request magic 0x%08x", be32toh(raw.magic));
        return -EINVAL;
    }
    rq->flags = be16toh(raw.flags);
    rq->type = be16toh(raw.type);
    rq->cookie = raw.cookie; /* opaque: echoed as sent */
    rq->offset = be64toh(raw.offset);
    rq->length = be32toh(raw.length);
    if (rq->type == NBD_CMD_DISC)
        return 0;
    if (rq->type != NBD_CMD_WRITE || rq->length == 0)
        return 1;
    if (rq->length > MAX_PAYLOAD || rq->offset > c->srv->size ||
        rq->length > c->srv->size - rq->offset || c->srv->read_only) {
        /* refused: step over the payload so the stream stays in step */
        r = conn_skip(c, rq->length);
        return r < 0 ? r : 1;
    }
    if (slot_reserve(s, rq->length) < 0) {
        log_client(c, "out of memory for a %u byte write", rq->length);
        return -ENOMEM;
    }
    r = conn_read(c, s->buf, rq->length);
    if (r < 0) {
        log_client(c, "connection lost in a write's payload");
        return r;
    }
    return 1;
}

/* Payload bytes of the next request if its header is whole in the input buffer, else -1. */
static int64_t next_buffered(const struct conn *c)
{
    struct nbd_request raw;
    uint16_t type;

    if (c->rlen - c->rpos < sizeof(raw))
        return -1;
    memcpy(&raw, c->rbuf + c->rpos, sizeof(raw));
    type = be16toh(raw.type);
    return type == NBD_CMD_READ || type == NBD_CMD_WRITE ? be32toh(raw.length) : 0;
}

/*
 * Take a batch of requests; the caller holds recv_lock. The first waits
 * for the client; more are taken only while their headers are already in
 * the input buffer, so a batch never waits for requests not yet sent.
 * The number taken, 0 when the client is done, or <0 for a broken stream.
 */
static int take_batch(struct conn *c, struct worker *w, unsigned max)
{
    uint64_t bytes = 0;
    int64_t next;
    int r;

    w->n = 0;
    if (c->dead)
        return 0;
    for (;;) {
        r = read_request(c, &w->rq[w->n], &w->slot[w->n]);
        if (r > 0)
            w->n++;
        if (r < 0)
            return r;
        if (r == 0) {
            c->dead = true; /* serve what we took, then stop */
            return (int)w->n;
        }
        bytes += w->rq[w->n - 1].length;
        if (w->n == max || (next = next_buffered(c)) < 0 || bytes + (uint64_t)next > BATCH_BYTES)
            return (int)w->n;
    }
}

/* Drop a reference; the last one closes the socket and frees C. */
static void conn_put(struct conn *c)
{
    struct nbd_server *srv = c->srv;

    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
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
    close(c->fd);
    pthread_mutex_destroy(&c->recv_lock);
    pthread_mutex_destroy(&c->send_lock);
    free(c);
}

/*
 * A worker: read a batch of requests, serve them, send their replies
 * together, until the client goes. While I/O is quick (page cache), the
 * worker keeps recv_lock as it serves, so the next batch costs no futex
 * hand-off and the other workers sleep; once a request waits longer than
 * the quick budget it lets go, and batches shrink to one request, so the
 * workers share the client's queue between them. Large requests are
 * always served with the lock let go, so copies run on every core.
 */
static void *worker_main(void *arg)
{
    struct conn *c = arg;
    struct worker *w = calloc(1, sizeof(*w));
    bool held = false;

    while (w) {
        int r;

        if (!held)
            pthread_mutex_lock(&c->recv_lock);
        r = take_batch(c, w, c->slow ? 1 : c->srv->batch);
        if (r <= 0) {
            if (r < 0)
                conn_kill(c); /* garbage or a broken stream: hard disconnect */
            c->dead = true;
            pthread_mutex_unlock(&c->recv_lock);
            break;
        }
        /* large requests are copy-bound: both cores do better than one */
        held = !c->slow && c->srv->batch > 1 && w->rq[0].length < SPARSE_MIN;
        if (!held)
            pthread_mutex_unlock(&c->recv_lock);
        r = serve_batch(c, w, &held);
        if (r >= 0)
            r = out_flush(c, w);
        if (r < 0) {
            if (held)
                pthread_mutex_unlock(&c->recv_lock);
            conn_kill(c); /* a reply could not go out whole */
            break;
        }
        /* a buffer grown for one huge request is not kept */
        for (unsigned i = 0; i < w->n; i++) {
            if (w->slot[i].cap > (4u << 20)) {
                free(w->slot[i].buf);
                w->slot[i] = (struct slot){0};
            }
        }
    }
    if (w) {
        for (unsigned i = 0; i < MAX_INFLIGHT; i++)
            free(w->slot[i].buf);
        free(w);
    } else {
        conn_kill(c);
    }
    conn_put(c);
    return NULL;
}

/*
 * Top up the input buffer with whatever the socket holds, without waiting:
 * bytes added, 0 at end of stream, -EAGAIN when nothing is there.
 */
static ssize_t conn_fill(struct conn *c)
{
    ssize_t r;

    if (c->rpos > 0) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    do
        r = recv(c->fd, c->rbuf + c->rlen, RBUF_SIZE - c->rlen, MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    c->rlen += (size_t)r;
    return r;
}

/* Send the queued replies and free the slots they pointed into. */
static int qc_flush(struct qconn *qc)
{
    int r = out_flush(qc->c, qc->w);

    while (qc->ndone > 0)
        qc->freel[qc->nfree++] = qc->done[--qc->ndone];
    return r;
}

/*
 * Take every request the socket holds, while slots are free, and start
 * them. A large request is pushed to the kernel, and finished requests
 * answered, before the next is read: reading a large write's payload
 * takes a while. 0, or <0 for a broken stream or a reply that could not
 * go out.
 */
static int qc_take(struct qconn *qc)
{
    struct conn *c = qc->c;

    while (qc->nfree > 0 && !c->dead) {
        unsigned i;
        ssize_t k;
        int r;

        if (c->rlen - c->rpos < sizeof(struct nbd_request)) {
            k = conn_fill(c);
            if (k == -EAGAIN)
                break;
            if (k < 0 && k != -ECONNRESET)
                return (int)k;
            if (k <= 0)
                c->dead = true;
            continue;
        }
        i = qc->freel[--qc->nfree];
        r = read_request(c, &qc->w->rq[i], &qc->w->slot[i]);
        if (r <= 0) {
            qc->freel[qc->nfree++] = i;
            if (r == 0)
                c->dead = true;
            return r;
        }
        r = qc_start(qc, i);
        if (r == 0)
            qc->done[qc->ndone++] = i; /* replied: its reply may point into the slot */
        if (r >= 0 && qc->w->rq[i].length >= SPARSE_MIN) {
            r = qc_reap(qc, 0);
            if (r >= 0)
                r = qc_flush(qc);
        }
        if (r < 0)
            return r;
    }
    return 0;
}

/*
 * Serve a connection through a vdisk_queue, from one thread: requests go
 * in as they arrive, replies go out as completions come back, a sendmsg
 * per round, with no hand-off between threads. The thread waits on the
 * queue while requests are in flight and on the socket when none are.
 */
static int qc_serve(struct qconn *qc)
{
    struct conn *c = qc->c;
    int r;

    for (;;) {
        r = qc_take(qc);
        if (r >= 0)
            r = qc_reap(qc, 0);
        if (r >= 0)
            r = qc_flush(qc);
        if (r < 0)
            return r;
        if (vdisk_queue_inflight(qc->q) > 0) {
            r = qc_reap(qc, 1);
            if (r < 0)
                return r;
        } else if (c->dead) {
            return 0;
        } else {
            struct pollfd pfd = {c->fd, POLLIN, 0};

            if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                return -errno;
        }
    }
}

/* A connection's only thread when it runs on a vdisk_queue. */
static void queue_main(struct conn *c)
{
    struct qconn *qc = calloc(1, sizeof(*qc));
    int r = -ENOMEM;

    if (qc) {
        qc->c = c;
        qc->w = calloc(1, sizeof(*qc->w));
        if (qc->w)
            r = vdisk_queue_create(c->srv->img, MAX_INFLIGHT, 0, &qc->q);
    }
    if (r == 0) {
        for (unsigned i = 0; i < MAX_INFLIGHT; i++)
            qc->freel[qc->nfree++] = MAX_INFLIGHT - 1 - i;
        r = qc_serve(qc);
    }
    if (r < 0) {
        if (r == -ENOMEM || !qc || !qc->q)
            log_client(c, "cannot set up a queue: %s", strerror(-r));
        conn_kill(c);
    }
    c->dead = true;
    if (qc) {
        if (qc->q)
            vdisk_queue_destroy(qc->q); /* waits for what is still in flight */
        if (qc->w)
            for (unsigned i = 0; i < MAX_INFLIGHT; i++)
                free(qc->w->slot[i].buf);
        free(qc->w);
        free(qc);
    }
    conn_put(c);
}

static int spawn(void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    pthread_t t;
    int r;

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    r = pthread_create(&t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return -r;
}

/* A connection's first thread: handshake, then the workers. */
static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct timeval tv = {HANDSHAKE_SECS, 0}, none = {0, 0};
    int r;

    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    r = handshake(c);
    if (r < 0) {
        if (r != -ECONNRESET && r != -ECONNABORTED && r != -EAGAIN)
            log_client(c, "handshake failed: %s", strerror(-r));
        conn_put(c);
        return NULL;
    }
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
    if (c->srv->queued) {
        queue_main(c);
        return NULL;
    }
    for (unsigned i = 1; i < c->srv->threads; i++) {
        atomic_fetch_add(&c->refs, 1);
        if (spawn(worker_main, c) < 0) {
            atomic_fetch_sub(&c->refs, 1);
            break; /* fewer workers still serve */
        }
    }
    return worker_main(c);
}

int nbd_server_add_client(struct nbd_server *srv, int fd)
{
    struct conn *c;
    int r;

    pthread_mutex_lock(&srv->lock);
    if (srv->stopping || srv->nconns >= srv->max_conns) {
        pthread_mutex_unlock(&srv->lock);
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
    pthread_mutex_init(&c->recv_lock, NULL);
    pthread_mutex_init(&c->send_lock, NULL);
    atomic_init(&c->refs, 1);
    atomic_init(&c->dead, false);
    c->next = srv->conns;
    if (c->next)
        c->next->prev = c;
    srv->conns = c;
    srv->nconns++;
    pthread_mutex_unlock(&srv->lock);
    r = spawn(conn_main, c);
    if (r < 0)
        conn_put(c);
    return r;
}

static unsigned default_threads(struct vdisk_image *img)
{
    struct vdisk_info info;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    if (vdisk_get_info(img, &info) == 0 && info.direct)
        return DIRECT_THREADS;
    return cpus < 2 ? 2 : cpus > 16 ? 16 : (unsigned)cpus;
}

/*
 * Direct I/O waits on the disk: one thread per connection keeps the
 * client's whole queue in flight on a vdisk_queue. Page-cache I/O is
 * quick and copy-bound: workers serve it themselves, on every core.
 */
static bool use_queue(struct vdisk_image *img)
{
    struct vdisk_info info;

    return !getenv("VDISK_NBD_NO_QUEUE") && vdisk_get_info(img, &info) == 0 && info.direct;
}

/*
 * Requests a worker takes at once. Page-cache I/O is quick: one worker
 * serving a batch saves a hand-off and a sendmsg per request. O_DIRECT
 * I/O waits on the disk: requests are better spread over the workers.
 */
static unsigned default_batch(struct vdisk_image *img)
{
    struct vdisk_info info;
    if (vdisk_get_info(img, &info) == 0 && info.direct)
        return 1;
    return MAX_BATCH;
}

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
    srv->threads = opts && opts->threads ? opts->threads : default_threads(img);
    srv->batch = default_batch(img);
    srv->queued = use_queue(img);
    srv->max_conns = opts && opts->max_conns ? opts->max_conns : DEFAULT_CONNS;
    srv->quiet = opts && opts->quiet;
    /* the protocol's strings are at most 4096 bytes, and opt_info_go builds them on its stack */
    if (!srv->name || strlen(srv->name) > 4096 ||
        (opts && opts->description && !srv->description) ||
        (srv->description && strlen(srv->description) > 4096) ||
        pipe2(srv->stop_pipe, O_CLOEXEC) < 0) {
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

void nbd_server_stop(struct nbd_server *srv)
{
    ssize_t r = write(srv->stop_pipe[1], "x", 1);

    (void)r;
}

/* Drop every connection and wait until their threads are gone. */
static void drop_all(struct nbd_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->stopping = true;
    for (struct conn *c = srv->conns; c; c = c->next) {
        c->dead = true;
        shutdown(c->fd, SHUT_RDWR);
    }
    while (srv->nconns > 0)
        pthread_cond_wait(&srv->idle, &srv->lock);
    pthread_mutex_unlock(&srv->lock);
}

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

void nbd_server_free(struct nbd_server *srv)
{
    if (!srv)
        return;
    close(srv->stop_pipe[0]);
    close(srv->stop_pipe[1]);
    pthread_cond_destroy(&srv->idle);
    pthread_mutex_destroy(&srv->lock);
    free(srv->name);
    free(srv->description);
    free(srv);
}

/* --- listening sockets ---------------------------------------------------- */

int nbd_listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    mode_t old;
    int fd, r;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "vdisk: %s: socket path too long\n", path);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        r = -errno;
        fprintf(stderr, "vdisk: %s: socket: %m\n", path);
        return r;
    }
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            fprintf(stderr, "vdisk: %s: exists and is not a socket\n", path);
            close(fd);
            return -EEXIST;
        }
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            fprintf(stderr, "vdisk: %s: another server is listening there\n", path);
            close(fd);
            return -EADDRINUSE;
        }
        unlink(path); /* stale: its server is gone */
        close(fd);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
    }
    old = umask(0177); /* the socket is born 0600: no window for others */
    r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (r < 0 || listen(fd, SOMAXCONN) < 0) {
        r = -errno;
        fprintf(stderr, "vdisk: %s: %m\n", path);
        close(fd);
        return r;
    }
    return fd;
}

int nbd_listen_tcp(const char *hostport)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res, *ai;
    char host[256] = "127.0.0.1", port[16];
    const char *colon = strrchr(hostport, ':');
    int fd = -1, r, one = 1;

    if (!colon) {
        snprintf(port, sizeof(port), "%s", hostport);
    } else {
        size_t hl = (size_t)(colon - hostport);

        if (hostport[0] == '[' && hl >= 2 && hostport[hl - 1] == ']') {
            hostport++;
            hl -= 2;
        }
        if (hl >= sizeof(host) || strlen(colon + 1) >= sizeof(port)) {
            fprintf(stderr, "vdisk: %s: bad address\n", hostport);
            return -EINVAL;
        }
        memcpy(host, hostport, hl);
        host[hl] = '\0';
        strcpy(port, colon + 1);
    }
    if (!port[0] || strspn(port, "0123456789") != strlen(port) || atoi(port) > 65535) {
        fprintf(stderr, "vdisk: %s: bad port\n", hostport);
        return -EINVAL;
    }
    r = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (r != 0) {
        fprintf(stderr, "vdisk: %s: %s\n", host, gai_strerror(r));
        return -EINVAL;
    }
    r = -EADDRNOTAVAIL;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0)
            break;
        r = -errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        errno = -r;
        fprintf(stderr, "vdisk: %s:%s: %m\n", host, port);
        return r;
    }
    return fd;
}
