// SPDX-License-Identifier: GPL-2.0
/*
 * vdisk.ko RAM disks: the page store.
 *
 * As the kernel's brd keeps one: an xarray of pages indexed by page number,
 * a page allocated (zeroed) on the first write that touches it, holes read
 * as zeroes. Discard and write-zeroes free the pages they cover whole and
 * zero the parts of the others, so the memory comes back as the file system
 * trims. Bios are served in the submitter's context, with no queue, worker
 * or file in between (BLK_FEAT_SYNCHRONOUS): that is what makes brd fast.
 * A REQ_NOWAIT write allocates with GFP_NOWAIT and ends with BLK_STS_AGAIN
 * when that fails.
 *
 * Copies run under rcu_read_lock() and erased pages are freed through
 * call_rcu(), so a discard never frees a page under a concurrent copy.
 */
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/version.h>
#include <linux/xarray.h>

#include "ram.h"

/* Discard and write-zeroes bios of at most 1 GiB: bounds one bio's work. */
#define RAM_MAX_ZERO_SECTORS (1u << (30 - SECTOR_SHIFT))

struct vdisk_ram {
	struct xarray pages; /* page index -> struct page */
	atomic_long_t nr_pages;
};

u64 vdisk_ram_max_size(void)
{
	return (u64)totalram_pages() << PAGE_SHIFT;
}

struct vdisk_ram *vdisk_ram_create(void)
{
	struct vdisk_ram *ram = kzalloc(sizeof(*ram), GFP_KERNEL);

	if (ram)
		xa_init(&ram->pages);
	return ram;
}

/* RCU callback: free a page erased from the store. */
static void ram_free_rcu(struct rcu_head *head)
{
	__free_page(container_of(head, struct page, rcu_head));
}

void vdisk_ram_destroy(struct vdisk_ram *ram)
{
	struct page *page;
	unsigned long idx;

	xa_for_each(&ram->pages, idx, page) {
		__free_page(page);
		cond_resched();
	}
	xa_destroy(&ram->pages);
	rcu_barrier(); /* pages discarded earlier are back too, and no callback
			  outlives the module */
	kfree(ram);
}

unsigned long vdisk_ram_pages(struct vdisk_ram *ram)
{
	return atomic_long_read(&ram->nr_pages);
}

/* Make sure page IDX exists; 0 or -ENOMEM. */
static int ram_insert(struct vdisk_ram *ram, pgoff_t idx, gfp_t gfp)
{
	struct page *page, *old;

	page = alloc_page(gfp | __GFP_ZERO | __GFP_HIGHMEM | __GFP_NOWARN);
	if (!page)
		return -ENOMEM;
	old = xa_cmpxchg(&ram->pages, idx, NULL, page, gfp);
	if (xa_is_err(old)) {
		__free_page(page);
		return xa_err(old);
	}
	if (old)
		__free_page(page); /* another writer was first */
	else
		atomic_long_inc(&ram->nr_pages);
	return 0;
}

/*
 * Copy LEN bytes between BPAGE at BOFF and the store at byte POS (all
 * within one store page); a write allocates the page, a read of a hole
 * gives zeroes. 0 or -ENOMEM.
 */
static int ram_copy(struct vdisk_ram *ram, bool write, struct page *bpage,
		    unsigned int boff, u64 pos, unsigned int len, gfp_t gfp)
{
	pgoff_t idx = pos >> PAGE_SHIFT;
	unsigned int off = offset_in_page(pos);
	struct page *page;
	int ret;

	for (;;) {
		rcu_read_lock();
		page = xa_load(&ram->pages, idx);
		if (page || !write)
			break;
		rcu_read_unlock(); /* allocation may sleep (GFP_NOIO) */
		ret = ram_insert(ram, idx, gfp);
		if (ret)
			return ret;
	}
	if (write) {
		memcpy_page(page, off, bpage, boff, len);
	} else {
		if (page)
			memcpy_page(bpage, boff, page, off, len);
		else
			memzero_page(bpage, boff, len);
		flush_dcache_page(bpage);
	}
	rcu_read_unlock();
	return 0;
}

/* Zero LEN bytes at POS inside one store page, if it is there. */
static void ram_zero_part(struct vdisk_ram *ram, u64 pos, unsigned int len)
{
	struct page *page;

	rcu_read_lock();
	page = xa_load(&ram->pages, pos >> PAGE_SHIFT);
	if (page)
		memzero_page(page, offset_in_page(pos), len);
	rcu_read_unlock();
}

/* Free the store pages FIRST..LAST that exist. */
static void ram_erase(struct vdisk_ram *ram, unsigned long first,
		      unsigned long last)
{
	struct page *page;
	unsigned long idx;

	xa_for_each_range(&ram->pages, idx, page, first, last)
	{
		page = xa_erase(&ram->pages, idx);
		if (page) {
			atomic_long_dec(&ram->nr_pages);
			call_rcu(&page->rcu_head, ram_free_rcu);
		}
	}
}

/* Zero bytes [POS, END): free whole pages, zero the parts of the others. */
static void ram_zero(struct vdisk_ram *ram, u64 pos, u64 end)
{
	u64 full_end = end & PAGE_MASK;

	if (pos < end && offset_in_page(pos)) {
		unsigned int n =
			min_t(u64, end - pos, PAGE_SIZE - offset_in_page(pos));

		ram_zero_part(ram, pos, n);
		pos += n;
	}
	if (pos >= end)
		return;
	if (full_end > pos) {
		ram_erase(ram, pos >> PAGE_SHIFT, (full_end >> PAGE_SHIFT) - 1);
		pos = full_end;
	}
	if (pos < end)
		ram_zero_part(ram, pos, end - pos);
}

void vdisk_ram_truncate(struct vdisk_ram *ram, u64 from)
{
	u64 next = round_up(from, PAGE_SIZE);

	if (next != from)
		ram_zero_part(ram, from, next - from);
	ram_erase(ram, next >> PAGE_SHIFT, ULONG_MAX);
}

void vdisk_ram_submit_bio(struct vdisk_ram *ram, struct bio *bio)
{
	u64 pos = (u64)bio->bi_iter.bi_sector << SECTOR_SHIFT;
	bool write = op_is_write(bio_op(bio));
	gfp_t gfp = (bio->bi_opf & REQ_NOWAIT) ? GFP_NOWAIT : GFP_NOIO;
	struct bvec_iter iter;
	struct bio_vec bv;
	int ret;

	switch (bio_op(bio)) {
	case REQ_OP_READ:
	case REQ_OP_WRITE:
		break;
	case REQ_OP_DISCARD:
	case REQ_OP_WRITE_ZEROES:
		ram_zero(ram, pos, pos + bio->bi_iter.bi_size);
		bio_endio(bio);
		return;
	case REQ_OP_FLUSH: /* nothing is cached */
		bio_endio(bio);
		return;
	default:
		bio->bi_status = BLK_STS_NOTSUPP;
		bio_endio(bio);
		return;
	}
	/* single-page segments; one may straddle two store pages (512-byte
	 * blocks) */
	bio_for_each_segment(bv, bio, iter)
	{
		unsigned int done = 0, n;

		while (done < bv.bv_len) {
			n = min_t(unsigned int, bv.bv_len - done,
				  PAGE_SIZE - offset_in_page(pos));
			ret = ram_copy(ram, write, bv.bv_page,
				       bv.bv_offset + done, pos, n, gfp);
			if (ret) {
				if (bio->bi_opf & REQ_NOWAIT)
					bio_wouldblock_error(bio);
				else
					bio_io_error(bio);
				return;
			}
			done += n;
			pos += n;
		}
	}
	bio_endio(bio);
}

struct gendisk *vdisk_ram_alloc_disk(unsigned int block_size)
{
	struct gendisk *disk;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 9, 0)
	struct queue_limits lim =
	{.logical_block_size = block_size,
	 .physical_block_size = PAGE_SIZE,
	 .max_hw_discard_sectors = RAM_MAX_ZERO_SECTORS,
	 .max_write_zeroes_sectors = RAM_MAX_ZERO_SECTORS,
	 .max_discard_segments = 1,
	 .discard_granularity = PAGE_SIZE,
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
	 /* as brd: callers may wait inline; not rotational, no entropy */
	 .features = BLK_FEAT_SYNCHRONOUS | BLK_FEAT_NOWAIT,
#endif
	};

	disk = blk_alloc_disk(&lim, NUMA_NO_NODE);
#else
	disk = blk_alloc_disk(NUMA_NO_NODE);
#endif
	if (IS_ERR_OR_NULL(disk))
		return disk ? disk : ERR_PTR(-ENOMEM);
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 9, 0)
	blk_queue_logical_block_size(disk->queue, block_size);
	blk_queue_physical_block_size(disk->queue, PAGE_SIZE);
	blk_queue_max_discard_sectors(disk->queue, RAM_MAX_ZERO_SECTORS);
	blk_queue_max_write_zeroes_sectors(disk->queue, RAM_MAX_ZERO_SECTORS);
	blk_queue_max_discard_segments(disk->queue, 1);
	disk->queue->limits.discard_granularity = PAGE_SIZE;
#endif
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 11, 0)
	blk_queue_flag_set(QUEUE_FLAG_NONROT, disk->queue);
	blk_queue_flag_clear(QUEUE_FLAG_ADD_RANDOM, disk->queue);
	blk_queue_flag_set(QUEUE_FLAG_NOWAIT, disk->queue);
#endif
	return disk;
}
