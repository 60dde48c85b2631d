/* SPDX-License-Identifier: MIT */
/*
 * Listening sockets: a Unix socket (mode 0600, a stale one replaced, a live
 * one refused) or TCP ("HOST:PORT", "[V6]:PORT", or "PORT" on loopback).
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

/* Listen on a Unix socket at PATH, born 0600. */
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

/* Listen on TCP at HOSTPORT; a bare port is the loopback address only. */
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
