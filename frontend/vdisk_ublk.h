/* SPDX-License-Identifier: MIT */
/*
 * The ublk frontend (frontend/ublk/): serves one libvdisk image as
 * /dev/ublkbN through the kernel's ublk driver. One thread per hardware
 * queue, each with one io_uring that carries the ublk commands and the
 * image's I/O (the request engine on that ring); copy mode.
 */
#ifndef VDISK_FRONTEND_UBLK_H
#define VDISK_FRONTEND_UBLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vdisk/vdisk.h"

#define VDISK_UBLK_CONTROL "/dev/ublk-control"

struct vdisk_ublk;

struct vdisk_ublk_config {
    unsigned queues; /* hardware queues (threads); 0: one per CPU, at most 4 */
    unsigned depth;  /* requests in flight per queue; 0: 64 */
    bool read_only;  /* a read-only block device */
    bool recovery;   /* USER_RECOVERY + REISSUE: the device outlives a dead server */
    int recover_id;  /* >= 0: take over /dev/ublkbN of a dead server instead of adding one */
    unsigned discard_granularity; /* bytes; 0: 4096 */
    /*
     * Leave START_DEV to vdisk_ublk_start_dev() in another process: the
     * kernel scans partitions in START_DEV and releases the scan's block
     * device in the io-wq worker that ran it; in the server, a server killed
     * during the scan could then never exit (6.12: its io-wq waits for that
     * release, which waits for the server's own I/O).
     */
    bool defer_start;
    /* called once the device number is known, before the device starts (may be NULL) */
    void (*on_id)(int id, void *arg);
    void *on_id_arg;
};

/*
 * Add a device for IMG (or take over cfg->recover_id), start its queues and
 * the device; returns once /dev/ublkbN exists and is served. On failure
 * returns -errno with a message in ERRBUF and leaves no device behind (a
 * device being recovered stays as it was).
 */
int vdisk_ublk_start(struct vdisk_image *img, const struct vdisk_ublk_config *cfg,
                     struct vdisk_ublk **up, char *errbuf, size_t errlen);

/* START_DEV for device ID served by process SERVER_PID (see defer_start); root:disk 0660. */
int vdisk_ublk_start_dev(int id, int server_pid, char *errbuf, size_t errlen);

/* The device number N of /dev/ublkbN, its queues and their depth. */
int vdisk_ublk_id(const struct vdisk_ublk *u);
unsigned vdisk_ublk_queues(const struct vdisk_ublk *u);
unsigned vdisk_ublk_depth(const struct vdisk_ublk *u);

/* Have all queues stopped (the device was stopped from outside)? */
bool vdisk_ublk_done(struct vdisk_ublk *u);

/* Stop the device (queued I/O fails), let the queues finish, delete it, free. */
void vdisk_ublk_stop(struct vdisk_ublk *u);

/*
 * Stop and delete device ID whose server is gone (waiting I/O fails).
 * 0, -ENOENT when there is no such device, or -errno with a message.
 */
int vdisk_ublk_remove(int id, char *errbuf, size_t errlen);

/* Device ID's state (UBLK_S_DEV_*: 0 dead, 1 live, 2 quiesced), server pid, hardware queues. */
int vdisk_ublk_state(int id, int *state, int *pid, unsigned *queues, char *errbuf, size_t errlen);

/* The kernel's ublk feature flags (GET_FEATURES); -errno when it has no ublk. */
int vdisk_ublk_features(uint64_t *features, char *errbuf, size_t errlen);

#endif
