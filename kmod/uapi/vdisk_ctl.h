/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note OR MIT */
/*
 * vdisk control interface: ioctls on /dev/vdisk-control (root only) that add,
 * remove, query and list the disks of vdisk.ko. Shared by the driver and the
 * vdisk utility. Every structure starts with its size and the interface
 * version; the driver refuses sizes, versions and flags it does not know.
 */
#ifndef _UAPI_VDISK_CTL_H
#define _UAPI_VDISK_CTL_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define VDISK_CTL_DEVICE "/dev/vdisk-control"
#define VDISK_CTL_VERSION 1

/* Disk flags (struct vdisk_ctl_disk.flags). */
#define VDISK_F_READ_ONLY (1u << 0) /* refuse writes */
#define VDISK_F_DIRECT (1u << 1)    /* O_DIRECT, asynchronous I/O on the file */
#define VDISK_F_REMOVABLE (1u << 2) /* report removable media */
/* A RAM disk: no backing file (fd -1), size bytes of pages kept by the
 * driver, allocated on first write, freed by discard and on REMOVE; size at
 * most the machine's RAM (EFBIG), not with READ_ONLY or DIRECT. Drivers
 * before it refuse the flag with EINVAL. */
#define VDISK_F_RAM (1u << 3)
#define VDISK_F_ALL \
	(VDISK_F_READ_ONLY | VDISK_F_DIRECT | VDISK_F_REMOVABLE | VDISK_F_RAM)

#define VDISK_ID_LEN 64 /* instance id, NUL-terminated, [A-Za-z0-9._-] */

/* One disk: ADD takes fd, flags, block_size, size, id and fills the rest;
 * QUERY takes index and fills everything but fd; REMOVE takes index. */
struct vdisk_ctl_disk {
	__u32 struct_size; /* sizeof(struct vdisk_ctl_disk) */
	__u32 version;	   /* VDISK_CTL_VERSION */
	__s32 fd;	   /* backing file or block device (ADD) */
	__u32 flags;	   /* VDISK_F_* */
	__u32 block_size;  /* logical block size: 512 or 4096 */
	__u32 index;	   /* N of /dev/vdiskN (out for ADD, in otherwise) */
	__u64 size;	   /* bytes, > 0, multiple of block_size, <= backing */
	__u32 major;	   /* out */
	__u32 minor;	   /* out */
	__u32 openers;	   /* out: current opens of the block device */
	__u32 reserved;	   /* must be 0 */
	char id[VDISK_ID_LEN];
};

/* LIST: fills up to max indexes into the __u32 array at user address
 * indexes and sets count to the number of disks (which may exceed max). */
struct vdisk_ctl_list {
	__u32 struct_size; /* sizeof(struct vdisk_ctl_list) */
	__u32 version;	   /* VDISK_CTL_VERSION */
	__u32 max;
	__u32 count;
	__u64 indexes; /* user pointer to __u32[max] */
};

#define VDISK_CTL_MAGIC 0xd5
#define VDISK_CTL_ADD _IOWR(VDISK_CTL_MAGIC, 0x01, struct vdisk_ctl_disk)
#define VDISK_CTL_REMOVE _IOW(VDISK_CTL_MAGIC, 0x02, struct vdisk_ctl_disk)
#define VDISK_CTL_QUERY _IOWR(VDISK_CTL_MAGIC, 0x03, struct vdisk_ctl_disk)
#define VDISK_CTL_LIST _IOWR(VDISK_CTL_MAGIC, 0x04, struct vdisk_ctl_list)
/* RESIZE: takes index and size (> 0, a multiple of the block size, within the
 * backing file); the capacity changes at once and a change uevent follows. */
#define VDISK_CTL_RESIZE _IOW(VDISK_CTL_MAGIC, 0x05, struct vdisk_ctl_disk)

#endif
