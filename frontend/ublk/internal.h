/* SPDX-License-Identifier: MIT */
/*
 * Inside the ublk frontend: control.c speaks to /dev/ublk-control, queue.c
 * runs one hardware queue per thread, device.c puts a device together.
 */
#ifndef VDISK_UBLK_INTERNAL_H
#define VDISK_UBLK_INTERNAL_H

#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../vdisk_ublk.h"
#include "uapi.h"

#define DEFAULT_DEPTH 64
#define MAX_QUEUES    4
#define MAX_IO_BYTES  (512u << 10) /* largest request: each tag owns a buffer this big */
#define FIXED_BYTES   (64u << 10)  /* of each tag's buffer, registered with the ring */
#define BLOCK_SHIFT   9
#define ALL_QUEUES    0xffff
#define TAG_STOP      0xffffffffull /* user_data of the poll on the stop eventfd */

/* An open /dev/ublk-control with a ring of 128-byte SQEs for its commands. */
struct ublk_ctrl {
    int fd;
    struct io_uring ring;
    bool ioctl_encode; /* the kernel takes ioctl-encoded opcodes (else the legacy ones) */
    uint64_t features;
};

int ublk_ctrl_open(struct ublk_ctrl *c, char *errbuf, size_t errlen);
void ublk_ctrl_close(struct ublk_ctrl *c);
/* Run control command OP for device ID; DATA0 the inline argument; BUF/LEN in or out. */
int ublk_ctrl_cmd(struct ublk_ctrl *c, unsigned op, int id, uint64_t data0, void *buf,
                  uint16_t len);
/* Delete device ID without waiting for its openers (DEL_DEV_ASYNC), else DEL_DEV. */
int ublk_ctrl_del(struct ublk_ctrl *c, int id);
/* The name of control command OP, for messages. */
const char *ublk_ctrl_name(unsigned op);

struct ublk_dev;

/* One request tag of a queue. */
struct ublk_tag {
    uint8_t *buf; /* copy mode: the kernel copies to / from here */
    struct vdisk_request req;
    bool busy;   /* in the engine */
    bool dead;   /* the kernel aborted it: no more commands for it */
    int result;  /* to commit */
    bool commit; /* commit with the next submit */
};

/* One hardware queue: its thread, ring, engine queue and tags. */
struct ublk_queue {
    struct ublk_dev *dev;
    unsigned id;
    pthread_t thread;
    bool started;
    struct io_uring ring;
    bool ring_ok;
    struct vdisk_queue *q;
    const struct ublksrv_io_desc *descs; /* mmap'd from /dev/ublkcN */
    size_t descs_len;
    struct ublk_tag *tags;
    uint8_t *bufs; /* every tag's buffer, buf_stride apart */
    size_t bufs_len, buf_stride;
    unsigned ndead, nbusy;
    bool stopping; /* the device is stopped: no request can come any more */
    bool failed;
    unsigned delay_us; /* test switch VDISK_TEST_UBLK_DELAY_MS: each request waits first */
    bool null_read;    /* test switch VDISK_TEST_UBLK_NULL_READ: reads skip the image */
    char msg[256];
};

/* A device being served. */
struct ublk_dev {
    struct vdisk_image *img;
    struct ublk_ctrl ctrl;
    struct ublksrv_ctrl_dev_info info;
    int cdev;     /* /dev/ublkcN */
    int stop_efd; /* readable once STOP_DEV is done: the queues may leave */
    bool added;
    struct ublk_queue *queues;
    unsigned nqueues;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned ready, running; /* queues that fetched, queues still running */
};

/* Map queue Q's descriptors and make its tags' buffers. */
int ublk_queue_init(struct ublk_dev *d, struct ublk_queue *q, unsigned id);
/* The queue thread: fetch, serve, commit until every tag is aborted. */
void *ublk_queue_main(void *arg);
void ublk_queue_free(struct ublk_queue *q);

#endif
