/* SPDX-License-Identifier: MIT */
/*
 * The handshake (fixed newstyle): greeting, client flags, then option
 * haggling (NBD_OPT_*) until the client enters transmission with GO or
 * EXPORT_NAME, aborts, or misbehaves. Blocking reads, with the socket's
 * receive timeout as the limit on a silent client.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_OPTION_LEN  65536u /* larger option data: hard disconnect */
#define MAX_OPTIONS     1024   /* options per handshake */
#define BASE_ALLOCATION "base:allocation"

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

    return sock_send(c, iov, len ? 2 : 1);
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

/* Whether NAME is our export (the empty name is the default). */
static bool export_known(const struct nbd_server *srv, const char *name)
{
    return name[0] == '\0' || strcmp(name, srv->name) == 0;
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
    return sock_send_all(c, buf, c->no_zeroes ? 10 : sizeof(buf));
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

/* NBD_OPT_STARTTLS: 0 with TLS on from here (or an error reply sent), <0 to drop. */
static int opt_starttls(struct conn *c, uint32_t len)
{
    const uint32_t opt = NBD_OPT_STARTTLS;
    int r;

    if (c->srv->tls_mode == NBD_TLS_OFF)
        return opt_error(c, opt, NBD_REP_ERR_UNSUP, "TLS is not enabled on this server");
    if (c->tls)
        return opt_error(c, opt, NBD_REP_ERR_INVALID, "TLS is already on");
    if (len != 0)
        return opt_error(c, opt, NBD_REP_ERR_INVALID, "STARTTLS takes no data");
    if (c->rpos != c->rlen) { /* bytes in the clear that would pass for TLS ones */
        log_client(c, "data sent after STARTTLS before its reply");
        return -EPROTO;
    }
    r = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
    if (r == 0)
        r = tls_start(c);
    /* nothing negotiated in the clear carries over */
    c->structured = false;
    c->meta_alloc = false;
    return r;
}

/* Whether OPT must be refused until TLS is on (--tls=require): all but STARTTLS and ABORT. */
static bool needs_tls(const struct conn *c, uint32_t opt)
{
    return c->srv->tls_mode == NBD_TLS_REQUIRE && !c->tls && opt != NBD_OPT_STARTTLS &&
           opt != NBD_OPT_ABORT;
}

/* Option haggling: 0 when the client enters transmission, <0 to drop it. */
int nbd_handshake(struct conn *c)
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

    r = sock_send_all(c, &hello, sizeof(hello));
    if (r < 0)
        return r;
    r = sock_read(c, &cflags, 4);
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

        r = sock_read(c, &h, sizeof(h));
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
        r = sock_read(c, data, len);
        if (r < 0)
            goto out;
        if (needs_tls(c, opt)) {
            if (opt == NBD_OPT_EXPORT_NAME) { /* no error reply exists for it */
                log_client(c, "asked for an export without TLS, which is required");
                r = -EACCES;
                goto out;
            }
            r = opt_error(c, opt, NBD_REP_ERR_TLS_REQD, "TLS is required: send NBD_OPT_STARTTLS");
            if (r < 0)
                goto out;
            continue;
        }
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
            r = opt_starttls(c, len);
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
