/* SPDX-License-Identifier: MIT */
/*
 * The FUSE frontend (fuse.c): serves one libvdisk image as one regular file, the root
 * of a private FUSE mount over an empty regular file. A loop device on that
 * file gives any image format a block device where ublk and nbd are missing.
 */
#ifndef VDISK_FRONTEND_FUSE_H
#define VDISK_FRONTEND_FUSE_H

#include <stdbool.h>
#include <stddef.h>

#include "vdisk/vdisk.h"

struct vdisk_fuse;

struct vdisk_fuse_config {
    unsigned threads; /* FUSE threads, each with its io_uring and engine queue; 0: default (2) */
    bool debug;       /* libfuse's request trace on stderr */
};

/*
 * Mount IMG at MOUNTPOINT (an existing empty regular file) and start serving;
 * returns once the kernel's INIT is answered. On failure returns -errno with a
 * message in ERRBUF and leaves nothing mounted.
 */
int vdisk_fuse_start(struct vdisk_image *img, const char *mountpoint,
                     const struct vdisk_fuse_config *cfg, struct vdisk_fuse **fsp, char *errbuf,
                     size_t errlen);

/* Have all threads stopped (unmounted or connection aborted from outside)? */
bool vdisk_fuse_done(struct vdisk_fuse *fs);

/*
 * Unmount, make the threads finish what is in flight and exit (aborting the
 * connection if it lingers), log the engine's counters on stderr, free.
 */
void vdisk_fuse_stop(struct vdisk_fuse *fs);

/*
 * Abort the FUSE connection mounted at MOUNTPOINT through
 * /sys/fs/fuse/connections, so that nothing waits on a server that is gone.
 * Found through /proc/self/mountinfo: never touches the file itself.
 * Returns 0, or -ENOENT when nothing FUSE is mounted there.
 */
int vdisk_fuse_abort_mount(const char *mountpoint);

/* After vdisk_resize() of the served image: export SIZE bytes now (fuse/resize.c). 0 or -errno. */
int vdisk_fuse_set_size(struct vdisk_fuse *fs, uint64_t size);

#endif
