/* SPDX-License-Identifier: MIT */
/*
 * Transmission: requests are decoded from the connection's input, checked,
 * translated into the engine's requests in one place (cmd_start) and
 * answered when the engine gives them back (cmd_finish): simple or
 * structured replies, reads with their zero runs as holes, block status
 * descriptors, errors.
 *
 * Holes in a large structured read are found by scanning the bytes read,
 * whatever the image and the cache mode. The engine has just produced those
 * bytes, so the answer is exact for what is sent (a block-status request
 * beside the read could see a write land between the two), it costs no
 * second request (block status runs on the engine's worker threads: a
 * hand-off per read), and zeroes that are allocated go out as holes too.
 * Data costs a look at the first bytes of each 4 KiB block.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define SPARSE_MIN      65536u     /* structured reads this large send zero runs as holes */
#define ZERO_BLOCK      4096u      /* ... runs of whole blocks of this size */
#define MAX_READ_CHUNKS 32         /* chunks in one read reply */
#define MAX_DESCRIPTORS 1024u      /* block status descriptors per reply */
#define KEEP_BUF        (4u << 20) /* a command's buffer larger than this is not kept */

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

/* The transmission flags we offer C: what cmd_start() serves. */
uint16_t transmission_flags(const struct conn *c)
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

/* A write whose payload we refuse (and must step over); the same test check_request() makes. */
static bool payload_refused(const struct conn *c, const struct nbd_cmd *cmd)
{
    const struct nbd_server *srv = c->srv;

    return cmd->length > MAX_PAYLOAD || cmd->offset > srv->size ||
           cmd->length > srv->size - cmd->offset || srv->read_only;
}

/* Check a request before any I/O; an NBD error, or 0. MSG says why. */
static uint32_t check_request(const struct conn *c, const struct nbd_cmd *cmd, const char **msg)
{
    const struct nbd_server *srv = c->srv;
    bool writes = cmd->type == NBD_CMD_WRITE || cmd->type == NBD_CMD_TRIM ||
                  cmd->type == NBD_CMD_WRITE_ZEROES;

    if (cmd->type > NBD_CMD_BLOCK_STATUS || cmd->type == NBD_CMD_DISC) {
        *msg = "unknown command";
        return NBD_EINVAL;
    }
    if (cmd->flags & ~allowed_flags(c, cmd->type)) {
        *msg = "flags not valid for this command";
        return NBD_EINVAL;
    }
    if (writes && srv->read_only) {
        *msg = "export is read-only";
        return NBD_EPERM;
    }
    if (cmd->type == NBD_CMD_FLUSH)
        return 0;
    if ((cmd->type == NBD_CMD_READ || cmd->type == NBD_CMD_WRITE) && cmd->length > MAX_PAYLOAD) {
        *msg = "request larger than the maximum payload";
        return NBD_EINVAL;
    }
    if (cmd->offset > srv->size || cmd->length > srv->size - cmd->offset) {
        *msg = "request beyond the end of the export";
        return NBD_EINVAL;
    }
    if (cmd->type == NBD_CMD_BLOCK_STATUS) {
        if (!c->meta_alloc) {
            *msg = "no metadata context negotiated";
            return NBD_EINVAL;
        }
        if (cmd->length == 0) {
            *msg = "block status of 0 bytes";
            return NBD_EINVAL;
        }
    }
    return 0;
}

/* --- replies -------------------------------------------------------------- */

/* Queue an error reply to CMD: an error chunk when structured, else simple. */
static int reply_error(struct conn *c, const struct nbd_cmd *cmd, uint32_t error, const char *msg)
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
        r = out_room(c, 1, sizeof(h) + 6 + mlen);
        if (r < 0)
            return r;
        h.magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC);
        h.flags = htobe16(NBD_REPLY_FLAG_DONE);
        h.type = htobe16(NBD_REPLY_TYPE_ERROR);
        h.cookie = cmd->cookie;
        h.length = htobe32(6 + mlen);
        memcpy(p, &e, 4);
        mlen = htobe16(mlen);
        memcpy(p + 4, &mlen, 2);
        out_copy(c, &h, sizeof(h));
        out_copy(c, p, 6);
        out_copy(c, msg, strlen(msg));
    } else {
        struct nbd_simple_reply h = {htobe32(NBD_SIMPLE_REPLY_MAGIC), htobe32(error), cmd->cookie};

        r = out_room(c, 1, sizeof(h));
        if (r < 0)
            return r;
        out_copy(c, &h, sizeof(h));
    }
    return 0;
}

/* Queue success with no payload: a simple reply is allowed for all but READ. */
static int reply_ok(struct conn *c, const struct nbd_cmd *cmd)
{
    struct nbd_simple_reply h = {htobe32(NBD_SIMPLE_REPLY_MAGIC), 0, cmd->cookie};
    int r = out_room(c, 1, sizeof(h));

    if (r == 0)
        out_copy(c, &h, sizeof(h));
    return r;
}

/* Queue the reply to a read of 0 bytes: a NONE chunk when structured. */
static int reply_empty_read(struct conn *c, const struct nbd_cmd *cmd)
{
    struct nbd_structured_reply h = {htobe32(NBD_STRUCTURED_REPLY_MAGIC),
                                     htobe16(NBD_REPLY_FLAG_DONE), htobe16(NBD_REPLY_TYPE_NONE),
                                     cmd->cookie, 0};
    int r;

    if (!c->structured)
        return reply_ok(c, cmd);
    r = out_room(c, 1, sizeof(h));
    if (r == 0)
        out_copy(c, &h, sizeof(h));
    return r;
}

/* Queue a read's data as one simple reply or one data chunk. */
static int reply_data(struct conn *c, const struct nbd_cmd *cmd)
{
    uint64_t off = htobe64(cmd->offset);
    int r = out_room(c, 2, sizeof(struct nbd_structured_reply) + 8);

    if (r < 0)
        return r;
    if (c->structured) {
        struct nbd_structured_reply h = {
            htobe32(NBD_STRUCTURED_REPLY_MAGIC), htobe16(NBD_REPLY_FLAG_DONE),
            htobe16(NBD_REPLY_TYPE_OFFSET_DATA), cmd->cookie, htobe32(8 + cmd->length)};

        out_copy(c, &h, sizeof(h));
        out_copy(c, &off, 8);
    } else {
        struct nbd_simple_reply h = {htobe32(NBD_SIMPLE_REPLY_MAGIC), 0, cmd->cookie};

        out_copy(c, &h, sizeof(h));
    }
    out_ref(c, cmd->buf, cmd->length);
    return 0;
}

/* Whether LEN bytes at P are all zero. */
static bool all_zero(const uint8_t *p, size_t len)
{
    return p[0] == 0 && memcmp(p, p + 1, len - 1) == 0;
}

/*
 * Queue the reply to a read whose data is in CMD's buffer: a large
 * structured read sends its runs of zero blocks as OFFSET_HOLE chunks.
 */
static int reply_read(struct conn *c, const struct nbd_cmd *cmd)
{
    struct chunk {
        struct nbd_structured_reply h;
        uint64_t offset;
        uint32_t hole_len;
    } __attribute__((packed)) ch[MAX_READ_CHUNKS];
    const uint8_t *buf = cmd->buf;
    uint32_t pos = 0, k;
    int n = 0, holes = 0, r;

    if (!c->structured || cmd->length < SPARSE_MIN || (cmd->flags & NBD_CMD_FLAG_DF))
        return reply_data(c, cmd);
    while (pos < cmd->length) {
        bool zero;

        k = cmd->length - pos < ZERO_BLOCK ? cmd->length - pos : ZERO_BLOCK;
        zero = n < MAX_READ_CHUNKS - 1 && all_zero(buf + pos, k);
        if (n > 0 && (ch[n - 1].h.type == htobe16(NBD_REPLY_TYPE_OFFSET_HOLE)) == zero) {
            ch[n - 1].hole_len = htobe32(be32toh(ch[n - 1].hole_len) + k);
            pos += k;
            continue;
        }
        ch[n].h = (struct nbd_structured_reply){
            htobe32(NBD_STRUCTURED_REPLY_MAGIC), 0,
            htobe16(zero ? NBD_REPLY_TYPE_OFFSET_HOLE : NBD_REPLY_TYPE_OFFSET_DATA), cmd->cookie,
            0};
        ch[n].offset = htobe64(cmd->offset + pos);
        ch[n].hole_len = htobe32(k);
        holes += zero;
        n++;
        pos += k;
    }
    if (holes == 0)
        return reply_data(c, cmd);
    ch[n - 1].h.flags = htobe16(NBD_REPLY_FLAG_DONE);
    r = out_room(c, 2 * n, sizeof(ch));
    if (r < 0)
        return r;
    for (int i = 0; i < n; i++) {
        uint32_t len = be32toh(ch[i].hole_len);
        uint64_t start = be64toh(ch[i].offset) - cmd->offset;

        if (ch[i].h.type == htobe16(NBD_REPLY_TYPE_OFFSET_HOLE)) {
            ch[i].h.length = htobe32(12);
            out_copy(c, &ch[i], sizeof(ch[i]));
        } else {
            ch[i].h.length = htobe32(8 + len);
            out_copy(c, &ch[i], sizeof(ch[i].h) + 8);
            out_ref(c, buf + start, len);
        }
    }
    return 0;
}

/* Queue the base:allocation reply from the N extents the engine put in CMD's buffer. */
static int reply_block_status(struct conn *c, const struct nbd_cmd *cmd, int n)
{
    const struct vdisk_extent *e = cmd->buf;
    uint32_t *d = (uint32_t *)(e + cmd->vr.count), id = htobe32(META_ID);
    struct nbd_structured_reply h = {
        htobe32(NBD_STRUCTURED_REPLY_MAGIC), htobe16(NBD_REPLY_FLAG_DONE),
        htobe16(NBD_REPLY_TYPE_BLOCK_STATUS), cmd->cookie, htobe32(4 + 8 * (uint32_t)n)};
    int r;

    if (n <= 0)
        return reply_error(c, cmd, NBD_EIO, "block status found no extent");
    for (int i = 0; i < n; i++) {
        d[2 * i] = htobe32((uint32_t)e[i].length); /* within the request: fits */
        d[2 * i + 1] = htobe32((e[i].flags & VDISK_EXTENT_HOLE ? NBD_STATE_HOLE : 0) |
                               (e[i].flags & VDISK_EXTENT_ZERO ? NBD_STATE_ZERO : 0));
    }
    r = out_room(c, 2, sizeof(h) + 4);
    if (r < 0)
        return r;
    out_copy(c, &h, sizeof(h));
    out_copy(c, &id, 4);
    out_ref(c, d, 8 * (size_t)n);
    return 0;
}

/* --- commands ------------------------------------------------------------- */

/* Make CMD's buffer hold LEN bytes (page aligned, for O_DIRECT). */
static int cmd_reserve(struct nbd_cmd *cmd, size_t len)
{
    void *p;

    if (len <= cmd->cap)
        return 0;
    if (posix_memalign(&p, 4096, len) != 0)
        return -ENOMEM;
    free(cmd->buf);
    cmd->buf = p;
    cmd->cap = len;
    return 0;
}

/* CMD is answered (R: whether its reply could be queued); it is free once the reply is out. */
static int cmd_answered(struct conn *c, struct nbd_cmd *cmd, int r)
{
    c->answered[c->nanswered++] = (unsigned)(cmd - c->cmd);
    return r;
}

/* Hand CMD to the engine as OP; a BLOCK_STATUS has room for COUNT extents. */
static int cmd_submit(struct conn *c, struct nbd_cmd *cmd, enum vdisk_op op, unsigned flags,
                      unsigned count)
{
    int r;

    cmd->vr = (struct vdisk_request){.op = op,
                                     .flags = flags,
                                     .buf = cmd->buf,
                                     .offset = cmd->offset,
                                     .length = cmd->length,
                                     .count = count,
                                     .user_data = cmd};
    r = vdisk_queue_submit(c->q, &cmd->vr);
    if (r == 0 && (op == VDISK_OP_READ || op == VDISK_OP_WRITE)) {
        cmd->charged = cmd->length;
        c->inflight_bytes += cmd->length;
    }
    return r;
}

/*
 * Start CMD: every NBD command becomes the engine's request here, or is
 * answered at once (refused, or nothing to do). 0, or <0 when its reply
 * could not go out.
 */
static int cmd_start(struct conn *c, struct nbd_cmd *cmd)
{
    bool fua = cmd->flags & NBD_CMD_FLAG_FUA;
    const char *msg = "";
    uint32_t e = check_request(c, cmd, &msg);
    unsigned zf, count;
    int r;

    cmd->flush_after = false;
    cmd->charged = 0;
    if (e)
        return cmd_answered(c, cmd, reply_error(c, cmd, e, msg));
    if (cmd->length == 0 && cmd->type != NBD_CMD_FLUSH) /* nothing to do */
        return cmd_answered(
            c, cmd, cmd->type == NBD_CMD_READ ? reply_empty_read(c, cmd) : reply_ok(c, cmd));
    switch (cmd->type) {
    case NBD_CMD_READ:
        if (cmd_reserve(cmd, cmd->length) < 0)
            return cmd_answered(c, cmd, reply_error(c, cmd, NBD_ENOMEM, "out of memory"));
        r = cmd_submit(c, cmd, VDISK_OP_READ, 0, 0);
        break;
    case NBD_CMD_WRITE: /* the payload is in the buffer already */
        r = cmd_submit(c, cmd, VDISK_OP_WRITE, fua ? VDISK_WRITE_FUA : 0, 0);
        break;
    case NBD_CMD_FLUSH:
        if (c->srv->read_only)
            return cmd_answered(c, cmd, reply_ok(c, cmd));
        r = cmd_submit(c, cmd, VDISK_OP_FLUSH, 0, 0);
        break;
    case NBD_CMD_TRIM:
        cmd->flush_after = fua;
        r = cmd_submit(c, cmd, VDISK_OP_DISCARD, 0, 0);
        break;
    case NBD_CMD_WRITE_ZEROES:
        zf = (fua ? VDISK_ZERO_FUA : 0) |
             (cmd->flags & NBD_CMD_FLAG_NO_HOLE ? 0 : VDISK_ZERO_MAY_UNMAP) |
             (cmd->flags & NBD_CMD_FLAG_FAST_ZERO ? VDISK_ZERO_NO_FALLBACK : 0);
        r = cmd_submit(c, cmd, VDISK_OP_WRITE_ZEROES, zf, 0);
        break;
    case NBD_CMD_CACHE:
        r = cmd_submit(c, cmd, VDISK_OP_CACHE, 0, 0);
        break;
    default: /* NBD_CMD_BLOCK_STATUS: extents, then room for their descriptors */
        count = cmd->flags & NBD_CMD_FLAG_REQ_ONE ? 1 : MAX_DESCRIPTORS;
        if (cmd_reserve(cmd, count * (sizeof(struct vdisk_extent) + 8)) < 0)
            return cmd_answered(c, cmd, reply_error(c, cmd, NBD_ENOMEM, "out of memory"));
        r = cmd_submit(c, cmd, VDISK_OP_BLOCK_STATUS, 0, count);
        break;
    }
    if (r < 0)
        return cmd_answered(c, cmd, reply_error(c, cmd, nbd_errno(r), vdisk_last_error()));
    return 0;
}

/* The engine gave CMD back: reply (or, a TRIM with FUA, flush first). 0, or <0 as cmd_start. */
static int cmd_finish(struct conn *c, struct nbd_cmd *cmd)
{
    int res = cmd->vr.result;

    c->inflight_bytes -= cmd->charged;
    cmd->charged = 0;
    if (res == 0 && cmd->flush_after) {
        cmd->flush_after = false;
        res = cmd_submit(c, cmd, VDISK_OP_FLUSH, 0, 0);
        if (res == 0)
            return 0; /* in flight again */
    }
    if (res == -EOPNOTSUPP && (cmd->flags & NBD_CMD_FLAG_FAST_ZERO))
        return cmd_answered(c, cmd, reply_error(c, cmd, NBD_ENOTSUP, "zeroing would not be fast"));
    if (res < 0)
        return cmd_answered(c, cmd, reply_error(c, cmd, nbd_errno(res), vdisk_last_error()));
    switch (cmd->type) {
    case NBD_CMD_READ:
        return cmd_answered(c, cmd, reply_read(c, cmd));
    case NBD_CMD_BLOCK_STATUS:
        return cmd_answered(c, cmd, reply_block_status(c, cmd, res));
    default:
        return cmd_answered(c, cmd, reply_ok(c, cmd));
    }
}

/* --- the connection's side ------------------------------------------------ */

/* Ready C's commands (its engine queue is made). */
int xmit_init(struct conn *c)
{
    for (unsigned i = 0; i < MAX_INFLIGHT; i++)
        c->freel[c->nfree++] = MAX_INFLIGHT - 1 - i;
    return 0;
}

/* Whether C may take another request: a command free, and payloads in flight within bounds. */
bool xmit_room(const struct conn *c)
{
    return c->nfree > 0 &&
           (c->inflight_bytes < MAX_INFLIGHT_BYTES || vdisk_queue_inflight(c->q) == 0);
}

/* Take a free command for a request. */
static struct nbd_cmd *cmd_get(struct conn *c)
{
    return &c->cmd[c->freel[--c->nfree]];
}

/* Give back a command that never got a reply. */
static void cmd_put(struct conn *c, struct nbd_cmd *cmd)
{
    c->freel[c->nfree++] = (unsigned)(cmd - c->cmd);
}

#define TOOK 3 /* take_payload(), take_request(): took something, go on */

/*
 * Take the payload of the write in c->fill from the input; start the write
 * once it is all here, else say what to read. TOOK: started; XMIT_INPUT or
 * XMIT_END (the stream ended in it); <0 as cmd_start.
 */
static int take_payload(struct conn *c)
{
    struct nbd_cmd *cmd = c->fill;
    size_t avail = c->rlen - c->rpos, want = cmd->length - c->fill_have;
    size_t k = avail < want ? avail : want;

    memcpy((uint8_t *)cmd->buf + c->fill_have, c->rbuf + c->rpos, k);
    c->rpos += k;
    c->fill_have += (uint32_t)k;
    want -= k;
    if (want == 0) {
        c->fill = NULL;
        return cmd_start(c, cmd) < 0 ? -EPIPE : TOOK;
    }
    if (c->eof) {
        log_client(c, "connection lost in a write's payload");
        c->fill = NULL;
        cmd_put(c, cmd); /* nothing of it is written */
        return XMIT_END;
    }
    /* a large rest straight into the buffer; a small one with what follows it */
    if (want >= RBUF_SIZE / 2)
        sock_want(c, (uint8_t *)cmd->buf + c->fill_have, want);
    else
        sock_want(c, NULL, 0);
    return XMIT_INPUT;
}

/*
 * Decode the next request of the input and start it (a write once its
 * payload is here). TOOK: took one; XMIT_INPUT: a header is not all here;
 * XMIT_END: no more will come; <0: a broken stream, or a reply that could
 * not go out.
 */
static int take_request(struct conn *c)
{
    struct nbd_request raw;
    struct nbd_cmd *cmd;

    if (c->rlen - c->rpos < sizeof(raw)) {
        if (c->eof)
            return XMIT_END; /* a truncated request is dropped */
        sock_want(c, NULL, 0);
        return XMIT_INPUT;
    }
    memcpy(&raw, c->rbuf + c->rpos, sizeof(raw));
    c->rpos += sizeof(raw);
    if (be32toh(raw.magic) != NBD_REQUEST_MAGIC) {
        log_client(c, "bad request magic 0x%08x", be32toh(raw.magic));
        return -EINVAL;
    }
    if (be16toh(raw.type) == NBD_CMD_DISC) {
        c->eof = true; /* answer what is in flight, then close */
        return XMIT_END;
    }
    cmd = cmd_get(c);
    cmd->flags = be16toh(raw.flags);
    cmd->type = be16toh(raw.type);
    cmd->cookie = raw.cookie;
    cmd->offset = be64toh(raw.offset);
    cmd->length = be32toh(raw.length);
    if (cmd->type != NBD_CMD_WRITE || cmd->length == 0)
        return cmd_start(c, cmd) < 0 ? -EPIPE : TOOK;
    if (payload_refused(c, cmd)) {
        c->skip = cmd->length; /* stepped over, so the stream stays in step */
        return cmd_start(c, cmd) < 0 ? -EPIPE : TOOK;
    }
    if (cmd_reserve(cmd, cmd->length) < 0) {
        log_client(c, "out of memory for a %u byte write", cmd->length);
        cmd_put(c, cmd);
        return -ENOMEM;
    }
    c->fill = cmd;
    c->fill_have = 0;
    return TOOK;
}

/*
 * Take what the input holds: drop refused payloads, fill write payloads,
 * decode and start requests, while commands are free. XMIT_INPUT: more
 * input is wanted (sock_want() noted which) or a recv is out; XMIT_ROOM:
 * no command is free; XMIT_END: the input is over; <0: a broken stream or
 * a reply that could not go out (hard disconnect).
 */
int xmit_take(struct conn *c)
{
    if (c->dead)
        return XMIT_END;
    if (c->recv_armed)
        return XMIT_INPUT; /* the kernel has the buffer */
    for (;;) {
        int r;

        if (c->skip > 0) {
            size_t avail = c->rlen - c->rpos, k = avail < c->skip ? avail : c->skip;

            c->rpos += k;
            c->skip -= k;
            if (c->skip == 0)
                continue;
            if (c->eof)
                return XMIT_END;
            sock_want(c, NULL, 0);
            return XMIT_INPUT;
        }
        if (c->fill)
            r = take_payload(c);
        else if (c->eof && c->rpos == c->rlen)
            return XMIT_END;
        else if (!xmit_room(c))
            return XMIT_ROOM;
        else
            r = take_request(c);
        if (r != TOOK)
            return r;
    }
}

/* Reply to every request the engine has finished. 0, or <0 as cmd_start. */
int xmit_reap(struct conn *c)
{
    struct vdisk_request *vr;
    int n, r = 0;

    /* one at a time: a failed request's message is vdisk_last_error() until the next */
    while ((n = vdisk_queue_complete(c->q, &vr, 1, 0)) > 0)
        if (cmd_finish(c, vr->user_data) < 0)
            r = -EPIPE;
    return n < 0 ? n : r;
}

/* Send the queued replies; their commands are free again. */
int xmit_flush(struct conn *c)
{
    int r = out_flush(c);

    while (c->nanswered > 0) {
        struct nbd_cmd *cmd = &c->cmd[c->answered[--c->nanswered]];

        if (cmd->cap > KEEP_BUF) { /* one huge request does not pin its buffer */
            free(cmd->buf);
            cmd->buf = NULL;
            cmd->cap = 0;
        }
        cmd_put(c, cmd);
    }
    return r;
}

/* Free C's command buffers (nothing is in flight). */
void xmit_free(struct conn *c)
{
    for (unsigned i = 0; i < MAX_INFLIGHT; i++) {
        free(c->cmd[i].buf);
        c->cmd[i].buf = NULL;
        c->cmd[i].cap = 0;
    }
}
