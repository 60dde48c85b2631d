/* SPDX-License-Identifier: MIT */
/* The client side of the fixed newstyle handshake, ending in NBD_OPT_GO. */
#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd-client.h"
#include "nbd-proto.h"

static int read_full(int fd, void *buf, size_t n)
{
    for (uint8_t *p = buf; n > 0;) {
        ssize_t r = read(fd, p, n);

        if (r == 0)
            return -ECONNRESET;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
    for (const uint8_t *p = buf; n > 0;) {
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL);

        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int nbd_client_go(int fd, const char *name, uint64_t *size, uint16_t *flags)
{
    struct {
        uint64_t magic, opt;
        uint16_t flags;
    } __attribute__((packed)) hello;
    struct {
        uint64_t magic;
        uint32_t opt, len, nlen;
    } __attribute__((packed)) go;
    uint32_t cflags = htobe32(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    size_t nlen = strlen(name);
    uint16_t ninfo = 0;
    bool have_export = false;
    int r;

    r = read_full(fd, &hello, sizeof(hello));
    if (r < 0)
        return r;
    if (be64toh(hello.magic) != NBD_MAGIC || be64toh(hello.opt) != NBD_IHAVEOPT ||
        !(be16toh(hello.flags) & NBD_FLAG_FIXED_NEWSTYLE) ||
        !(be16toh(hello.flags) & NBD_FLAG_NO_ZEROES))
        return -EPROTO;
    r = write_full(fd, &cflags, 4);
    if (r < 0)
        return r;
    go.magic = htobe64(NBD_IHAVEOPT);
    go.opt = htobe32(NBD_OPT_GO);
    go.len = htobe32((uint32_t)(4 + nlen + 2));
    go.nlen = htobe32((uint32_t)nlen);
    if ((r = write_full(fd, &go, sizeof(go))) < 0 || (r = write_full(fd, name, nlen)) < 0 ||
        (r = write_full(fd, &ninfo, 2)) < 0)
        return r;
    for (;;) {
        struct nbd_option_reply h;
        uint8_t data[256];
        uint32_t len, type;

        r = read_full(fd, &h, sizeof(h));
        if (r < 0)
            return r;
        len = be32toh(h.length);
        type = be32toh(h.type);
        if (be64toh(h.magic) != NBD_REP_MAGIC || be32toh(h.option) != NBD_OPT_GO ||
            len > sizeof(data))
            return -EPROTO;
        r = read_full(fd, data, len);
        if (r < 0)
            return r;
        if (type == NBD_REP_ACK)
            return have_export ? 0 : -EPROTO;
        if (type & (1u << 31))
            return type == NBD_REP_ERR_UNKNOWN ? -ENOENT : -EPROTO;
        if (type == NBD_REP_INFO && len >= 12 && data[0] == 0 && data[1] == NBD_INFO_EXPORT) {
            memcpy(size, data + 2, 8);
            *size = be64toh(*size);
            memcpy(flags, data + 10, 2);
            *flags = be16toh(*flags);
            have_export = true;
        }
    }
}
