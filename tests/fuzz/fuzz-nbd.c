/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the NBD server (frontend/nbd) from raw bytes. Each input
 * is what a client sends, handshake and transmission, on one end of a
 * socketpair whose other end the server's connection handler serves over a
 * small qcow2 image; the harness reads every reply until the server hangs up.
 * Any crash, hang or sanitizer report is a bug; refusals are expected.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd/internal.h"
#include "vdisk/vdisk.h"

static struct nbd_server *srv;

/* The server, once: a 4 MiB qcow2 under $TMPDIR, named "fuzz", with a description. */
static void setup(void)
{
    static const struct nbd_server_opts opts = {.description = "fuzzing", .quiet = true};
    struct vdisk_image *img;
    char path[4096];

    snprintf(path, sizeof(path), "%s/vdisk-fuzz-nbd-%d.qcow2",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    unlink(path);
    if (vdisk_create(path, "qcow2", 4 << 20, "cluster_size=4096") < 0 ||
        vdisk_open(path, "qcow2", VDISK_OPEN_NOLOCK | VDISK_OPEN_UNSAFE, NULL, &img) < 0 ||
        nbd_server_new(img, &opts, &srv) < 0)
        abort();
    unlink(path); /* open: the file lives as long as the process */
}

/* Send DATA to the server on FD while reading its replies, then read to its end. */
static void converse(int fd, const uint8_t *data, size_t size)
{
    static uint8_t sink[65536];
    struct pollfd p = {.fd = fd};
    size_t sent = 0;
    ssize_t n;

    if (!size)
        shutdown(fd, SHUT_WR);

    for (;;) {
        p.events = POLLIN | (sent < size ? POLLOUT : 0);
        if (poll(&p, 1, -1) < 0 && errno != EINTR)
            abort();
        if (p.revents & POLLIN) {
            n = read(fd, sink, sizeof(sink));
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                return; /* the server hung up */
        }
        if (sent < size && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
            n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (n < 0 && errno != EAGAIN && errno != EINTR)
                sent = size; /* it stopped listening: just read what is left */
            else if (n > 0)
                sent += n;
            if (sent == size)
                shutdown(fd, SHUT_WR);
        } else if ((p.revents & (POLLERR | POLLHUP)) && !(p.revents & POLLIN)) {
            return;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];

    if (!srv)
        setup();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    if (nbd_server_add_client(srv, sv[0]) < 0)
        abort();
    converse(sv[1], data, size);
    close(sv[1]);
    /* the connection is gone once the server counts it out */
    pthread_mutex_lock(&srv->lock);
    while (srv->nconns)
        pthread_cond_wait(&srv->idle, &srv->lock);
    pthread_mutex_unlock(&srv->lock);
    return 0;
}
