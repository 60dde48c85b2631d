/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vdisk.ko's file-backed disks: what the control side (core.c) and the
 * request path (io.c) share.
 */
#ifndef VDISK_KMOD_H
#define VDISK_KMOD_H

#include <linux/blk-mq.h>
#include <linux/fs.h>
#include <linux/list.h>
#include <linux/spinlock.h>
#include <linux/workqueue.h>

#include "uapi/vdisk_ctl.h"

#define VDISK_MINORS 16	       /* per disk: the whole disk and 15 partitions */
#define VDISK_MAX_DISKS 1024   /* indexes 0..1023 */
#define VDISK_QUEUE_DEPTH 128  /* requests per disk */
#define VDISK_WORKERS 16       /* concurrent workers per disk */
#define VDISK_MAX_SECTORS 2048 /* 1 MiB requests */

struct vdisk_dev {
	int index;
	u32 flags; /* VDISK_F_* */
	u32 block_size;
	u64 size;
	char id[VDISK_ID_LEN];
	struct file *file;     /* backing file; we hold a reference */
	struct vdisk_ram *ram; /* RAM disk: the page store (no file) */
	struct gendisk *disk;
	struct blk_mq_tag_set tag_set;
	struct workqueue_struct *wq;
	struct work_struct batch_work; /* direct I/O: drains pending */
	spinlock_t lock;	       /* protects pending */
	struct list_head pending;      /* direct I/O: requests to submit */
	unsigned int openers;	       /* under vdisk_mutex */
	enum { VDISK_ADDING, VDISK_LIVE, VDISK_REMOVING } state; /* ditto */
};

/* Per-request state, in the request's pdu. */
struct vdisk_cmd {
	struct work_struct work; /* buffered I/O */
	struct list_head list;	 /* direct I/O: on dev->pending */
	struct kiocb iocb;
	struct bio_vec *bvec; /* allocated when the request has several bios */
	long ret;
};

/* The request path of a file-backed disk (io.c). */
extern const struct blk_mq_ops vdisk_mq_ops;
/* Direct I/O: submit every request on dev->pending without waiting. */
void vdisk_batch_work(struct work_struct *work);

#endif
