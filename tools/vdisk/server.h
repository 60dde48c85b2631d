/* SPDX-License-Identifier: MIT */
/*
 * The per-disk server processes behind --via fuse and --via nbd: forked by
 * `vdisk open`, detached, they say "up" through a pipe (or print why not and
 * exit), and on SIGTERM flush, unlock and exit.
 */
#ifndef VDISK_SERVER_H
#define VDISK_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* A server's body: runs in the child, calls server_ready() once up, never returns. */
typedef void (*server_main_fn)(void *arg);

/*
 * Fork a server named NAME (its comm, checked before it is signalled): own
 * session, cwd /, stdin and stdout on /dev/null, every inherited descriptor
 * closed (the caller's record lock among them), stop signals blocked for
 * server_wait_stop(), and marked as an I/O flusher so its allocations never
 * wait on its own disk. Until it is up its errors reach the caller's stderr;
 * after, LOG. Returns its pid and what it passed to server_ready() in DETAIL,
 * or -1 once it has exited.
 */
pid_t server_spawn(const char *name, const char *log, server_main_fn fn, void *arg, char *detail,
                   size_t detail_len);

/* In the server: tell `vdisk open` it is up (DETAIL e.g. its device); stderr moves to the log. */
void server_ready(const char *detail);

/* In the server: wait for SIGTERM, SIGINT or SIGHUP, or until DONE(ARG) (polled) is true. */
void server_wait_stop(bool (*done)(void *), void *arg);

/* Is PID a live (not zombie) process called NAME? */
bool server_running(pid_t pid, const char *name);

/* SIGTERM the server, wait up to SECONDS, then SIGKILL; false if it had to be killed. */
bool server_stop(pid_t pid, const char *name, int seconds);

#endif
