/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vdisk.ko RAM disks: a page store in the module itself, as the kernel's brd
 * keeps one (see ram.c). No backing file, no worker: bios are served in the
 * submitter's context.
 */
#ifndef VDISK_RAM_H
#define VDISK_RAM_H

#include <linux/blkdev.h>
#include <linux/types.h>

struct vdisk_ram;

/* The largest RAM disk: the machine's RAM, in bytes. */
u64 vdisk_ram_max_size(void);
/* A new empty page store; NULL if out of memory. */
struct vdisk_ram *vdisk_ram_create(void);
/* Free every page and the store (no I/O may be in flight). */
void vdisk_ram_destroy(struct vdisk_ram *ram);
/* Pages the store holds now. */
unsigned long vdisk_ram_pages(struct vdisk_ram *ram);
/* Drop whatever the store holds at or past byte FROM (resize). */
void vdisk_ram_truncate(struct vdisk_ram *ram, u64 from);
/* Serve BIO from the store, synchronously. */
void vdisk_ram_submit_bio(struct vdisk_ram *ram, struct bio *bio);
/* A bio-based gendisk for a RAM disk of logical block BLOCK_SIZE. */
struct gendisk *vdisk_ram_alloc_disk(unsigned int block_size);

#endif
