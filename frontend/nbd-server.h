/* SPDX-License-Identifier: MIT */
/*
 * An NBD server for one libvdisk image: fixed newstyle handshake, structured
 * replies, base:allocation, many connections, requests served out of order.
 */
#ifndef VDISK_NBD_SERVER_H
#define VDISK_NBD_SERVER_H

#include <stdbool.h>

#include "vdisk/vdisk.h"

struct nbd_server;

/* TLS (STARTTLS): none, offered (plain clients still served), or required before any export. */
enum nbd_tls { NBD_TLS_OFF, NBD_TLS_ON, NBD_TLS_REQUIRE };

struct nbd_server_opts {
    const char *export_name; /* NULL or "": the default export only */
    const char *description; /* NULL: none */
    unsigned threads;        /* unused: each connection is one thread on the request engine */
    unsigned max_conns;      /* 0: default */
    bool quiet;              /* no messages about misbehaving clients */
    bool verbose;            /* log each connection's engine counters as it ends */
    unsigned handshake_secs; /* a client not in transmission after this long is dropped; 0: 10 */
    enum nbd_tls tls;        /* NBD_TLS_OFF unless creds below */
    const char *tls_certs;   /* a directory: ca-cert.pem, server-cert.pem, server-key.pem */
    const char *tls_psk;     /* a psktool file: "identity:hexkey" lines */
    bool tls_verify_peer;    /* ask clients for a certificate signed by ca-cert.pem */
};

/* A server for IMG (which the caller keeps open and closes after free). */
int nbd_server_new(struct vdisk_image *img, const struct nbd_server_opts *opts,
                   struct nbd_server **srvp);
/* Accept and serve connections on LISTEN_FD until nbd_server_stop(). */
int nbd_server_serve(struct nbd_server *srv, int listen_fd);
/* Ask serve() to drop every connection and return; async-signal-safe. */
void nbd_server_stop(struct nbd_server *srv);
void nbd_server_free(struct nbd_server *srv);

/* Serve one connected socket (handshake included) in its own thread. */
int nbd_server_add_client(struct nbd_server *srv, int fd);

/*
 * Listening sockets. A Unix socket is created mode 0600 (a stale one is
 * replaced, a live one refused); HOSTPORT is "HOST:PORT", "[V6]:PORT" or
 * "PORT" (loopback). Return the fd or -errno, with a message on stderr.
 */
int nbd_listen_unix(const char *path);
int nbd_listen_tcp(const char *hostport);

/* After vdisk_resize() of the served image: check requests against SIZE, tell new clients. */
void nbd_server_set_size(struct nbd_server *srv, uint64_t size);

#endif
