/* SPDX-License-Identifier: MIT */
/*
 * TLS for the NBD server (NBD_OPT_STARTTLS) with GnuTLS: X.509 from a
 * directory laid out as qemu-nbd and nbdkit take it (ca-cert.pem,
 * server-cert.pem, server-key.pem, optional ca-crl.pem), or pre-shared keys
 * from a psktool file ("identity:hexkey" lines).
 *
 * Once the client's STARTTLS is acknowledged the TLS handshake runs on the
 * socket, and every later byte of the connection, the rest of the option
 * haggling and all of transmission, goes through the session's records.
 * The session's socket I/O is ours (pull and push below): the handshake
 * keeps the connection's deadline, and transmission reads without waiting
 * (poll() says when), so the connection's loop stays the one it is for
 * plain clients. The kernel's TLS offload is not used: not every kernel
 * has it (this one has no tls module), and the record path is correct
 * everywhere.
 */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

#define PSK_PRIORITY "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK" /* as nbdkit: PSK kx is off by default */
#define CORK_MAX     16384 /* pieces smaller than a record are gathered into one */

struct nbd_tls_creds {
    gnutls_certificate_credentials_t x509; /* NULL without --tls-certs */
    gnutls_psk_server_credentials_t psk;   /* NULL without --tls-psk */
    gnutls_priority_t prio;
    bool verify_peer;
};

struct nbd_tls_conn {
    gnutls_session_t s;
    bool nonblock; /* transmission: reads never wait */
    int err;       /* errno of the last failed pull or push */
};

/* Say that PATH could not be used for WHAT (GnuTLS error R); -EINVAL. */
static int creds_error(const char *path, const char *what, int r)
{
    fprintf(stderr, "vdisk: %s: %s: %s\n", path, what, gnutls_strerror(r));
    return -EINVAL;
}

/* DIR/NAME into BUF; false (with a message) when it does not fit. */
static bool join(char *buf, const char *dir, const char *name)
{
    if (snprintf(buf, PATH_MAX, "%s/%s", dir, name) < PATH_MAX)
        return true;
    fprintf(stderr, "vdisk: %s: path too long\n", dir);
    return false;
}

/* A file we must read: -errno with a message naming it when we cannot. */
static int readable(const char *path)
{
    int r;

    if (access(path, R_OK) == 0)
        return 0;
    r = -errno;
    fprintf(stderr, "vdisk: %s: %s\n", path, strerror(-r));
    return r;
}

/* Load the X.509 credentials of DIR. */
static int load_x509(struct nbd_tls_creds *t, const char *dir)
{
    char ca[PATH_MAX], crl[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
    bool have_ca;
    int r;

    if (!join(ca, dir, "ca-cert.pem") || !join(crl, dir, "ca-crl.pem") ||
        !join(cert, dir, "server-cert.pem") || !join(key, dir, "server-key.pem"))
        return -ENAMETOOLONG;
    if ((r = readable(cert)) < 0 || (r = readable(key)) < 0)
        return r;
    have_ca = access(ca, F_OK) == 0;
    if (t->verify_peer && !have_ca) {
        fprintf(stderr, "vdisk: %s: --tls-verify-peer needs the CA certificate: %s\n", ca,
                strerror(errno));
        return -ENOENT;
    }
    r = gnutls_certificate_allocate_credentials(&t->x509);
    if (r < 0)
        return creds_error(dir, "TLS credentials", r);
    r = gnutls_certificate_set_x509_key_file(t->x509, cert, key, GNUTLS_X509_FMT_PEM);
    if (r < 0)
        return creds_error(cert, "cannot use it with server-key.pem", r);
    if (have_ca) {
        r = gnutls_certificate_set_x509_trust_file(t->x509, ca, GNUTLS_X509_FMT_PEM);
        if (r <= 0)
            return creds_error(ca, "no CA certificate in it",
                               r < 0 ? r : GNUTLS_E_NO_CERTIFICATE_FOUND);
    }
    if (access(crl, F_OK) == 0) {
        r = gnutls_certificate_set_x509_crl_file(t->x509, crl, GNUTLS_X509_FMT_PEM);
        if (r < 0)
            return creds_error(crl, "bad revocation list", r);
    }
    gnutls_certificate_set_known_dh_params(t->x509, GNUTLS_SEC_PARAM_MEDIUM);
    return 0;
}

/* Load the pre-shared keys of FILE (GnuTLS reads it again at each handshake). */
static int load_psk(struct nbd_tls_creds *t, const char *file)
{
    int r = readable(file);

    if (r < 0)
        return r;
    r = gnutls_psk_allocate_server_credentials(&t->psk);
    if (r < 0)
        return creds_error(file, "TLS credentials", r);
    r = gnutls_psk_set_server_credentials_file(t->psk, file);
    if (r < 0)
        return creds_error(file, "bad PSK file", r);
    gnutls_psk_set_server_known_dh_params(t->psk, GNUTLS_SEC_PARAM_MEDIUM);
    return 0;
}

/* The server's TLS credentials from OPTS (certificates, keys, or both). */
int nbd_tls_creds_new(const struct nbd_server_opts *opts, struct nbd_tls_creds **credsp)
{
    struct nbd_tls_creds *t = calloc(1, sizeof(*t));
    const char *errpos;
    int r = -EINVAL;

    if (!t)
        return -ENOMEM;
    t->verify_peer = opts->tls_verify_peer;
    if (!opts->tls_certs && !opts->tls_psk) {
        fprintf(stderr, "vdisk: TLS: needs --tls-certs DIR or --tls-psk FILE\n");
        goto fail;
    }
    if (opts->tls_certs && (r = load_x509(t, opts->tls_certs)) < 0)
        goto fail;
    if (opts->tls_psk && (r = load_psk(t, opts->tls_psk)) < 0)
        goto fail;
    r = gnutls_priority_init(&t->prio, t->psk ? PSK_PRIORITY : NULL, &errpos);
    if (r < 0) {
        creds_error("TLS", "priority string", r);
        t->prio = NULL;
        r = -EINVAL;
        goto fail;
    }
    *credsp = t;
    return 0;
fail:
    nbd_tls_creds_free(t);
    return r;
}

/* Free the credentials (no connection uses them any more). */
void nbd_tls_creds_free(struct nbd_tls_creds *t)
{
    if (!t)
        return;
    if (t->prio)
        gnutls_priority_deinit(t->prio);
    if (t->x509)
        gnutls_certificate_free_credentials(t->x509);
    if (t->psk)
        gnutls_psk_free_server_credentials(t->psk);
    free(t);
}

/* GnuTLS reads the socket: waiting up to the handshake's deadline, or not at all. */
static ssize_t tls_pull(gnutls_transport_ptr_t p, void *buf, size_t n)
{
    struct conn *c = p;
    ssize_t r = sock_recv_raw(c, buf, n, c->tls->nonblock ? MSG_DONTWAIT : 0);

    if (r < 0) {
        c->tls->err = errno;
        gnutls_transport_set_errno(c->tls->s, errno == ETIMEDOUT ? EIO : errno);
    }
    return r;
}

/* GnuTLS asks whether input comes within MS. */
static int tls_pull_timeout(gnutls_transport_ptr_t p, unsigned int ms)
{
    struct conn *c = p;
    struct pollfd pfd = {c->fd, POLLIN, 0};
    int t = ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms;

    if (c->deadline_ms) {
        int64_t left = c->deadline_ms - mono_ms();

        if (t < 0 || left < t)
            t = left > 0 ? (int)left : 0;
    }
    return poll(&pfd, 1, t);
}

/* GnuTLS writes the socket (blocking; the handshake's sends have a timeout). */
static ssize_t tls_push(gnutls_transport_ptr_t p, const giovec_t *iov, int n)
{
    struct conn *c = p;
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
    ssize_t r = sendmsg(c->fd, &m, MSG_NOSIGNAL);

    if (r < 0) {
        c->tls->err = errno;
        gnutls_transport_set_errno(c->tls->s, errno);
    }
    return r;
}

/* -errno for GnuTLS error R of a read or write of C. */
static int tls_errno(struct conn *c, ssize_t r)
{
    switch (r) {
    case GNUTLS_E_AGAIN:
        return c->tls->err == ETIMEDOUT ? -ETIMEDOUT : -EAGAIN;
    case GNUTLS_E_INTERRUPTED:
        return -EINTR;
    case GNUTLS_E_PULL_ERROR:
    case GNUTLS_E_PUSH_ERROR:
        return c->tls->err ? -c->tls->err : -EIO;
    default:
        log_client(c, "TLS: %s", gnutls_strerror((int)r));
        return -ECONNRESET;
    }
}

/* Run the TLS handshake on C (STARTTLS was acknowledged): 0, or <0 and C is to be dropped. */
int tls_start(struct conn *c)
{
    struct nbd_tls_creds *t = c->srv->tls;
    struct nbd_tls_conn *tc = calloc(1, sizeof(*tc));
    int r;

    if (!tc)
        return -ENOMEM;
    r = gnutls_init(&tc->s, GNUTLS_SERVER);
    if (r < 0) {
        free(tc);
        log_client(c, "TLS: %s", gnutls_strerror(r));
        return -ENOMEM;
    }
    c->tls = tc;
    gnutls_priority_set(tc->s, t->prio);
    if (t->x509)
        gnutls_credentials_set(tc->s, GNUTLS_CRD_CERTIFICATE, t->x509);
    if (t->psk)
        gnutls_credentials_set(tc->s, GNUTLS_CRD_PSK, t->psk);
    if (t->verify_peer) {
        gnutls_certificate_server_set_request(tc->s, GNUTLS_CERT_REQUIRE);
        gnutls_session_set_verify_cert(tc->s, NULL, 0); /* the handshake fails on a bad one */
    }
    gnutls_transport_set_ptr(tc->s, c);
    gnutls_transport_set_pull_function(tc->s, tls_pull);
    gnutls_transport_set_pull_timeout_function(tc->s, tls_pull_timeout);
    gnutls_transport_set_vec_push_function(tc->s, tls_push);
    do
        r = gnutls_handshake(tc->s);
    while (r < 0 && !gnutls_error_is_fatal(r) && r != GNUTLS_E_AGAIN);
    if (r < 0) {
        if (tc->err == ETIMEDOUT)
            r = -ETIMEDOUT; /* said by the caller */
        else {
            log_client(c, "TLS handshake failed: %s", gnutls_strerror(r));
            r = -ECONNABORTED;
        }
        tls_end(c, false);
        return r;
    }
    return 0;
}

/* Read up to N bytes of C's TLS stream, waiting or not: bytes, 0 at its end, or -errno. */
ssize_t tls_recv(struct conn *c, void *buf, size_t n, bool wait)
{
    ssize_t r;

    c->tls->nonblock = !wait;
    c->tls->err = 0;
    r = gnutls_record_recv(c->tls->s, buf, n);
    if (r >= 0)
        return r;
    if (r == GNUTLS_E_PREMATURE_TERMINATION)
        return 0; /* the client closed without close_notify: an end like any other */
    return tls_errno(c, r);
}

/* Send all of IOV on C's TLS stream: small pieces gathered into records, large ones as they are. */
int tls_send(struct conn *c, struct iovec *iov, int n)
{
    gnutls_session_t s = c->tls->s;
    ssize_t r;

    for (int i = 0; i < n; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;

        if (left < CORK_MAX) {
            gnutls_record_cork(s);
        } else if ((r = gnutls_record_uncork(s, GNUTLS_RECORD_WAIT)) < 0) {
            return tls_errno(c, r);
        }
        while (left > 0) {
            c->tls->err = 0;
            r = gnutls_record_send(s, p, left);
            /* a record went out in part (a signal): GnuTLS keeps the rest, to be sent again */
            if (r == GNUTLS_E_INTERRUPTED || (r == GNUTLS_E_AGAIN && c->tls->err == 0))
                continue;
            if (r < 0)
                return tls_errno(c, r);
            p += r;
            left -= (size_t)r;
        }
    }
    r = gnutls_record_uncork(s, GNUTLS_RECORD_WAIT);
    return r < 0 ? tls_errno(c, r) : 0;
}

/* Whether C's TLS session holds input already decrypted (poll() cannot see it). */
bool tls_pending(struct conn *c)
{
    return c->tls && gnutls_record_check_pending(c->tls->s) > 0;
}

/* End C's TLS session: a close_notify first when the connection ended cleanly. */
void tls_end(struct conn *c, bool clean)
{
    if (!c->tls)
        return;
    if (clean)
        gnutls_bye(c->tls->s, GNUTLS_SHUT_WR);
    gnutls_deinit(c->tls->s);
    free(c->tls);
    c->tls = NULL;
}
