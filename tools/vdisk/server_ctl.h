/* SPDX-License-Identifier: MIT */
/*
 * The control socket of a per-disk server (--via fuse): RUN_DIR/<id>.ctl,
 * mode 0600 (root's run directory), one request per connection, one line
 * each way: "resize SIZE FLAGS\n" -> "ok SIZE\n" | "error MESSAGE\n". The
 * server resizes the image through its own open engine, so no second opener
 * ever touches the file behind its caches.
 */
#ifndef VDISK_SERVER_CTL_H
#define VDISK_SERVER_CTL_H

#include <stddef.h>
#include <stdint.h>

struct server_ctl;

/* Resize to SIZE (VDISK_RESIZE_* FLAGS); set *SIZE to the size now; 0, or -1 with MSG. */
typedef int (*server_ctl_resize_fn)(void *arg, uint64_t *size, unsigned flags, char *msg,
                                    size_t len);

/* The path of the control socket of the disk ID, in BUF. */
void server_ctl_path(const char *id, char *buf, size_t len);

/* In the server: listen on PATH and answer requests on a thread. 0, or -1 with a message. */
int server_ctl_start(const char *path, server_ctl_resize_fn fn, void *arg,
                     struct server_ctl **ctlp);

/* In the server: stop answering and remove the socket. */
void server_ctl_stop(struct server_ctl *ctl);

/* In `vdisk resize`: ask the server at PATH to resize; *SIZE in and out. 0, or 1 with a message. */
int server_ctl_resize(const char *path, const char *image, uint64_t *size, unsigned flags);

#endif
