// SPDX-License-Identifier: GPL-2.0
/*
 * vdisk.ko: the request path of a file-backed disk.
 *
 * queue_rq only hands the request to the disk's workqueue; the worker reads
 * or writes the backing file through an iov_iter over the request's pages.
 * With VDISK_F_DIRECT one work item drains a list of reads and writes,
 * submitting asynchronous direct I/O for each without waiting, so many
 * requests are in flight per disk at the cost of one wakeup per batch;
 * otherwise (and for flush, discard, write-zeroes) each request is its own
 * work item, and up to VDISK_WORKERS run at once. Flush is fsync, FUA is a
 * DSYNC write, discard punches a hole and write-zeroes zeroes a range; once
 * the backing file refuses either (EOPNOTSUPP), the disk stops advertising it.
 */
#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/ioprio.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/uio.h>
#include <linux/version.h>
#include <linux/workqueue.h>

#include "vdisk.h"

/* Zero the part of a read request past the first DONE bytes (short read). */
static void vdisk_zero_tail(struct request *rq, size_t done)
{
	struct req_iterator iter;
	struct bio_vec bv;

	rq_for_each_segment(bv, rq, iter) {
		if (done >= bv.bv_len) {
			done -= bv.bv_len;
			continue;
		}
		memzero_page(bv.bv_page, bv.bv_offset + done, bv.bv_len - done);
		done = 0;
	}
}

/* blk-mq .complete: end the request with the worker's result. */
static void vdisk_complete_rq(struct request *rq)
{
	struct vdisk_cmd *cmd = blk_mq_rq_to_pdu(rq);
	blk_status_t status = BLK_STS_OK;
	long ret = cmd->ret;

	kfree(cmd->bvec);
	cmd->bvec = NULL;
	if (ret < 0) {
		status = errno_to_blk_status(ret);
	} else if (req_op(rq) == REQ_OP_READ) {
		if (ret < blk_rq_bytes(rq))
			vdisk_zero_tail(rq, ret); /* backing file shrank */
	} else if (req_op(rq) == REQ_OP_WRITE) {
		if (ret != blk_rq_bytes(rq))
			status = BLK_STS_IOERR;
	}
	blk_mq_end_request(rq, status);
}

/* Hand the result to blk-mq, which calls vdisk_complete_rq. */
static void vdisk_finish(struct vdisk_cmd *cmd, long ret)
{
	cmd->ret = ret;
	blk_mq_complete_request(blk_mq_rq_from_pdu(cmd));
}

/* Completion of asynchronous direct I/O (any context). */
static void vdisk_aio_done(struct kiocb *iocb, long ret)
{
	vdisk_finish(container_of(iocb, struct vdisk_cmd, iocb), ret);
}

/* Read or write the request's pages at its offset in the backing file. */
static void vdisk_rw(struct vdisk_dev *dev, struct request *rq,
		     struct vdisk_cmd *cmd)
{
	bool write = req_op(rq) == REQ_OP_WRITE;
	loff_t pos = (loff_t)blk_rq_pos(rq) << SECTOR_SHIFT;
	struct file *file = dev->file;
	struct bio *bio = rq->bio;
	struct req_iterator rq_iter;
	struct iov_iter iter;
	struct bio_vec *bvec, tmp;
	unsigned int offset = 0, n = 0;
	long ret;

	rq_for_each_bvec(tmp, rq, rq_iter)
		n++;
	if (rq->bio != rq->biotail) {
		/* Several bios: gather their segments into one array. */
		bvec = kmalloc_array(n, sizeof(*bvec), GFP_NOIO);
		if (!bvec) {
			vdisk_finish(cmd, -ENOMEM);
			return;
		}
		cmd->bvec = bvec;
		n = 0;
		rq_for_each_bvec(tmp, rq, rq_iter)
			bvec[n++] = tmp;
	} else {
		/* One bio: use its vector from where the bio's iterator is. */
		bvec = __bvec_iter_bvec(bio->bi_io_vec, bio->bi_iter);
		offset = bio->bi_iter.bi_bvec_done;
	}
	iov_iter_bvec(&iter, write ? ITER_SOURCE : ITER_DEST, bvec, n,
		      blk_rq_bytes(rq));
	iter.iov_offset = offset;

	/* a clean kiocb: no O_APPEND etc. of the fd */
	memset(&cmd->iocb, 0, sizeof(cmd->iocb));
	cmd->iocb.ki_pos = pos;
	cmd->iocb.ki_filp = file;
	cmd->iocb.ki_ioprio = IOPRIO_PRIO_VALUE(IOPRIO_CLASS_NONE, 0);
	if (write && (rq->cmd_flags & REQ_FUA))
		cmd->iocb.ki_flags |= IOCB_DSYNC;
	if (dev->flags & VDISK_F_DIRECT) {
		cmd->iocb.ki_flags |= IOCB_DIRECT;
		cmd->iocb.ki_complete = vdisk_aio_done;
	}

	if (write && !cmd->iocb.ki_complete) {
		file_start_write(file); /* freeze protection, as vfs_write */
		ret = file->f_op->write_iter(&cmd->iocb, &iter);
		file_end_write(file);
	} else if (write) {
		ret = file->f_op->write_iter(&cmd->iocb, &iter); /* as loop */
	} else
		ret = file->f_op->read_iter(&cmd->iocb, &iter);
	if (ret != -EIOCBQUEUED)
		vdisk_finish(cmd, ret);
}

/*
 * The backing file refused fallocate MODE for RQ with EOPNOTSUPP: stop
 * advertising what cannot work, as loop does, so that the block layer stops
 * sending it (and zero-out falls back to writing zero pages). Only the
 * effective limits change, from the I/O path without the limits lock: the
 * kernel's helpers for this case (racy by design: a later refusal clears
 * again).
 */
static void vdisk_unsupported(struct request *rq, int mode)
{
	struct request_queue *q = rq->q;

	rq->rq_flags |= RQF_QUIET; /* expected, not worth a log line */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
	if (mode & FALLOC_FL_PUNCH_HOLE)
		blk_queue_disable_discard(q);
	if (req_op(rq) == REQ_OP_WRITE_ZEROES)
		blk_queue_disable_write_zeroes(q);
#else
	if (mode & FALLOC_FL_PUNCH_HOLE)
		blk_queue_max_discard_sectors(q, 0);
	if (req_op(rq) == REQ_OP_WRITE_ZEROES)
		blk_queue_max_write_zeroes_sectors(q, 0);
#endif
}

/* fallocate MODE over the request's range (discard, write-zeroes). */
static long vdisk_fallocate(struct vdisk_dev *dev, struct request *rq, int mode)
{
	loff_t pos = (loff_t)blk_rq_pos(rq) << SECTOR_SHIFT;
	int ret;

	ret = vfs_fallocate(dev->file, mode | FALLOC_FL_KEEP_SIZE, pos,
			    blk_rq_bytes(rq));
	if (ret == -EOPNOTSUPP)
		vdisk_unsupported(rq, mode);
	if (ret == -EOPNOTSUPP || ret == -EINVAL)
		return -EOPNOTSUPP;
	return ret;
}

/* Do one request's I/O on the backing file (in a worker). */
static void vdisk_do(struct vdisk_cmd *cmd)
{
	struct request *rq = blk_mq_rq_from_pdu(cmd);
	struct vdisk_dev *dev = rq->q->queuedata;
	long ret;

	if (op_is_write(req_op(rq)) && (dev->flags & VDISK_F_READ_ONLY)) {
		vdisk_finish(cmd, -EROFS);
		return;
	}
	switch (req_op(rq)) {
	case REQ_OP_READ:
	case REQ_OP_WRITE:
		vdisk_rw(dev, rq, cmd);
		return;
	case REQ_OP_FLUSH:
		ret = vfs_fsync(dev->file, 0);
		break;
	case REQ_OP_DISCARD:
		ret = vdisk_fallocate(dev, rq, FALLOC_FL_PUNCH_HOLE);
		break;
	case REQ_OP_WRITE_ZEROES:
		ret = vdisk_fallocate(dev, rq,
				      (rq->cmd_flags & REQ_NOUNMAP)
					      ? FALLOC_FL_ZERO_RANGE
					      : FALLOC_FL_PUNCH_HOLE);
		break;
	default:
		ret = -EOPNOTSUPP;
		break;
	}
	if (ret == 0 && (rq->cmd_flags & REQ_FUA) && req_op(rq) != REQ_OP_FLUSH)
		ret = vfs_fsync(dev->file, 1);
	vdisk_finish(cmd, ret);
}

/* Worker for one request (buffered I/O). */
static void vdisk_work(struct work_struct *work)
{
	unsigned int noio = memalloc_noio_save();

	vdisk_do(container_of(work, struct vdisk_cmd, work));
	memalloc_noio_restore(noio);
}

/* Worker draining the disk's pending list (direct I/O). */
void vdisk_batch_work(struct work_struct *work)
{
	struct vdisk_dev *dev =
		container_of(work, struct vdisk_dev, batch_work);
	unsigned int noio = memalloc_noio_save();
	struct vdisk_cmd *cmd, *next;
	LIST_HEAD(batch);

	for (;;) {
		spin_lock_irq(&dev->lock);
		list_splice_init(&dev->pending, &batch);
		spin_unlock_irq(&dev->lock);
		if (list_empty(&batch))
			break;
		list_for_each_entry_safe(cmd, next, &batch, list) {
			list_del_init(&cmd->list);
			vdisk_do(cmd);
		}
	}
	memalloc_noio_restore(noio);
}

/* blk-mq .queue_rq: start the request and leave the I/O to a worker. */
static blk_status_t vdisk_queue_rq(struct blk_mq_hw_ctx *hctx,
				   const struct blk_mq_queue_data *bd)
{
	struct vdisk_dev *dev = hctx->queue->queuedata;
	struct vdisk_cmd *cmd = blk_mq_rq_to_pdu(bd->rq);

	blk_mq_start_request(bd->rq);
	cmd->bvec = NULL;
	if ((dev->flags & VDISK_F_DIRECT) &&
	    (req_op(bd->rq) == REQ_OP_READ || req_op(bd->rq) == REQ_OP_WRITE)) {
		spin_lock_irq(&dev->lock);
		list_add_tail(&cmd->list, &dev->pending);
		spin_unlock_irq(&dev->lock);
		queue_work(dev->wq, &dev->batch_work);
	} else {
		queue_work(dev->wq, &cmd->work);
	}
	return BLK_STS_OK;
}

/* blk-mq .init_request: set up the request's work item once. */
static int vdisk_init_request(struct blk_mq_tag_set *set, struct request *rq,
			      unsigned int hctx_idx, unsigned int numa_node)
{
	struct vdisk_cmd *cmd = blk_mq_rq_to_pdu(rq);

	INIT_WORK(&cmd->work, vdisk_work);
	INIT_LIST_HEAD(&cmd->list);
	cmd->bvec = NULL;
	return 0;
}

const struct blk_mq_ops vdisk_mq_ops = {
	.queue_rq = vdisk_queue_rq,
	.complete = vdisk_complete_rq,
	.init_request = vdisk_init_request,
};
