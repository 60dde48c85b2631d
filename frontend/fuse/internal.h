/* SPDX-License-Identifier: MIT */
/*
 * Inside the FUSE frontend (frontend/fuse/): ops.c turns FUSE requests into
 * engine requests and completions into replies; thread.c runs the threads
 * (a ring, a vdisk_queue and /dev/fuse each); session.c mounts, starts,
 * stops and unmounts. See vdisk_fuse.h for what the rest of vdisk sees.
 */
#ifndef VDISK_FUSE_INTERNAL_H
#define VDISK_FUSE_INTERNAL_H

#define FUSE_USE_VERSION 34

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/falloc.h>
#include <linux/fuse.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "../vdisk_fuse.h"

#define DEFAULT_THREADS 2
#define MAX_THREADS     16
#define QUEUE_DEPTH     128 /* requests in flight per thread (the kernel sends up to ~128) */
#define RING_ENTRIES    256 /* QUEUE_DEPTH + 1 for the engine, 2 polls of our own */
#define RECV_BATCH      8   /* requests received before the thread submits what it has */
#define SEEK_EXTENTS    8   /* extents one SEEK_DATA/SEEK_HOLE step asks for */
#define PAGE            4096u
#define MAX_IO          (1u << 20) /* max_write, and the largest read the kernel sends */
/* What libfuse reads per request: FUSE_MAX_MAX_PAGES pages plus a header page */
#define RECV_SIZE (MAX_IO + PAGE)
/* A request's buffer: a WRITE's payload starts at PAGE, a READ's data goes there */
#define BUF_SIZE (PAGE + RECV_SIZE + PAGE)
/* in header + write_in: a WRITE's payload starts this far into the request */
#define WRITE_HEADER (sizeof(struct fuse_in_header) + sizeof(struct fuse_write_in))
#define ATTR_TIMEOUT 1.0

/* user_data of our own SQEs (the engine's have VDISK_QUEUE_CQE_BIT) */
#define TAG_FUSE_POLL 1
#define TAG_STOP_POLL 2

enum io_kind { IO_READ, IO_WRITE, IO_FLUSH, IO_FALLOCATE, IO_SEEK };

/* One FUSE request on the engine, and the buffer it was received into. */
struct io {
    struct vdisk_request vr;
    fuse_req_t req;
    enum io_kind kind;
    int whence; /* IO_SEEK */
    char *buf;  /* BUF_SIZE bytes, page aligned, allocated on first use */
    void *tmp;  /* a READ larger than MAX_IO */
    struct vdisk_extent ext[SEEK_EXTENTS];
    struct io *next; /* free list */
};

/* A FUSE thread: its ring, its engine queue, its requests. Touched only by it once started. */
struct fuse_thread {
    struct vdisk_fuse *fs;
    pthread_t tid;
    bool started;
    struct io_uring ring;
    bool ring_ok;
    struct vdisk_queue *q;
    struct io *ios, *free;
    struct io *cur; /* the request being received and dispatched */
    unsigned inflight;
    bool poll_armed, stop_armed, readable, exiting;
    struct vdisk_queue_stats stats; /* its queue's, when it left */
};

struct vdisk_fuse {
    struct vdisk_image *img;
    struct fuse_session *se;
    char *mountpoint;
    uint64_t size;
    bool read_only;
    struct timespec mount_time;
    unsigned long conn_dev; /* /sys/fs/fuse/connections/<conn_dev>, 0 if unknown */
    int stop_efd;           /* written when threads must stop although the connection lives */

    struct fuse_thread threads[MAX_THREADS];
    unsigned nthreads;

    pthread_mutex_t lock; /* protects running, inited below */
    pthread_cond_t cond;
    unsigned running; /* threads still in their loop */
    bool inited;      /* INIT answered */
};

/* The thread running the handler libfuse calls (handlers run on the thread that received). */
extern __thread struct fuse_thread *fuse_self;

/* ops.c */
extern const struct fuse_lowlevel_ops vdisk_fuse_ops;
/* Log an image error to stderr (the server's log), with the library's message if LIB_MSG. */
void fuse_log_error(const char *what, int r, bool lib_msg);
/* Answer IO's FUSE request from its finished engine request. */
void fuse_io_done(struct fuse_thread *t, struct io *io, bool lib_msg);

/* thread.c */
/* A free request with its buffer, or NULL when all are in flight. */
struct io *fuse_io_get(struct fuse_thread *t);
/* IO is done with: back on T's free list. */
void fuse_io_put(struct fuse_thread *t, struct io *io);
/* T's ring, engine queue and requests; a message in ERRBUF on failure. */
int fuse_thread_setup(struct vdisk_fuse *fs, struct fuse_thread *t, char *errbuf, size_t errlen);
/* A thread's loop (pthread start routine, ARG the struct fuse_thread). */
void *fuse_thread_main(void *arg);
/* Free what fuse_thread_setup made (the thread has left, with nothing in flight). */
void fuse_thread_free(struct fuse_thread *t);

#endif
