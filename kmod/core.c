// SPDX-License-Identifier: GPL-2.0
/*
 * vdisk.ko - block devices /dev/vdiskN backed by a file or a block device,
 * or RAM (ram.c).
 *
 * The control device /dev/vdisk-control (root only) adds a disk from a file
 * descriptor, removes, queries and lists disks (uapi/vdisk_ctl.h). The driver
 * holds a reference to the struct file it was given, as loop does, so the
 * caller's open file description (and any lock on it) lives as long as the
 * disk.
 *
 * I/O of a file-backed disk: the request path, io.c.
 *
 * Locking: vdisk_mutex protects the idr, each disk's openers count and its
 * state. It is never held across add_disk() or del_gendisk(), which take the
 * disk's open_mutex (held when our open() runs): remove marks the disk
 * REMOVING under the mutex, so no new open succeeds, then tears down without
 * it. Control calls see only LIVE disks.
 *
 * RAM disks (VDISK_F_RAM) have no file, queue or worker: a bio-based disk
 * whose submit_bio serves the driver's own page store (ram.c).
 *
 * Teardown: removing a disk that is open (or mounted) fails with EBUSY.
 * Unloading the module removes every disk (none can be open then, because
 * an open block device holds a module reference).
 */
#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/capability.h>
#include <linux/ctype.h>
#include <linux/falloc.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/hdreg.h>
#include <linux/idr.h>
#include <linux/ioprio.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/uio.h>
#include <linux/version.h>
#include <linux/workqueue.h>

#include "ram.h"
#include "vdisk.h"

static int vdisk_major;
static DEFINE_IDR(vdisk_idr);
static DEFINE_MUTEX(vdisk_mutex);

/* Count an open; refuse once the disk is being removed. */
static int vdisk_get(struct vdisk_dev *dev)
{
	int ret = 0;

	mutex_lock(&vdisk_mutex);
	if (dev->state == VDISK_REMOVING)
		ret = -ENXIO;
	else
		dev->openers++;
	mutex_unlock(&vdisk_mutex);
	return ret;
}

/* Count a close. */
static void vdisk_put(struct vdisk_dev *dev)
{
	mutex_lock(&vdisk_mutex);
	dev->openers--;
	mutex_unlock(&vdisk_mutex);
}

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
static int vdisk_open(struct gendisk *disk, blk_mode_t mode)
{
	return vdisk_get(disk->private_data);
}

static void vdisk_release(struct gendisk *disk)
{
	vdisk_put(disk->private_data);
}
#else
static int vdisk_open(struct block_device *bdev, fmode_t mode)
{
	return vdisk_get(bdev->bd_disk->private_data);
}

static void vdisk_release(struct gendisk *disk, fmode_t mode)
{
	vdisk_put(disk->private_data);
}
#endif

/* HDIO_GETGEO: a made-up CHS geometry, 64 heads and 32 sectors. */
static int vdisk_getgeo(struct block_device *bdev, struct hd_geometry *geo)
{
	geo->heads = 64;
	geo->sectors = 32;
	geo->cylinders = get_capacity(bdev->bd_disk) >> 11;
	return 0;
}

/* Device nodes are group disk, 0660 (udev sets the group). */
static char *vdisk_devnode(struct gendisk *disk, umode_t *mode)
{
	if (mode)
		*mode = 0660;
	return NULL;
}

static const struct block_device_operations vdisk_fops = {
	.owner = THIS_MODULE,
	.open = vdisk_open,
	.release = vdisk_release,
	.getgeo = vdisk_getgeo,
	.devnode = vdisk_devnode,
};

/* RAM disk .submit_bio: served from the page store, in the caller's context. */
static void vdisk_ram_bio(struct bio *bio)
{
	struct vdisk_dev *dev = bio->bi_bdev->bd_disk->private_data;

	vdisk_ram_submit_bio(dev->ram, bio);
}

static const struct block_device_operations vdisk_ram_fops = {
	.owner = THIS_MODULE,
	.submit_bio = vdisk_ram_bio,
	.open = vdisk_open,
	.release = vdisk_release,
	.getgeo = vdisk_getgeo,
	.devnode = vdisk_devnode,
};

/* sysfs backing_file: the path of the backing file, as loop shows it. */
static ssize_t backing_file_show(struct device *d, struct device_attribute *a,
				 char *buf)
{
	struct vdisk_dev *dev = dev_to_disk(d)->private_data;
	char *p;
	ssize_t len;

	p = file_path(dev->file, buf, PAGE_SIZE - 1);
	if (IS_ERR(p))
		return PTR_ERR(p);
	len = strlen(p);
	memmove(buf, p, len);
	buf[len++] = '\n';
	return len;
}
static DEVICE_ATTR_RO(backing_file);

/* sysfs serial: the instance id given at add time. */
static ssize_t serial_show(struct device *d, struct device_attribute *a,
			   char *buf)
{
	struct vdisk_dev *dev = dev_to_disk(d)->private_data;

	return sysfs_emit(buf, "%s\n", dev->id);
}
static DEVICE_ATTR_RO(serial);

/* sysfs ram_bytes: the memory a RAM disk holds now. */
static ssize_t ram_bytes_show(struct device *d, struct device_attribute *a,
			      char *buf)
{
	struct vdisk_dev *dev = dev_to_disk(d)->private_data;

	return sysfs_emit(buf, "%llu\n",
			  (u64)vdisk_ram_pages(dev->ram) << PAGE_SHIFT);
}
static DEVICE_ATTR_RO(ram_bytes);

static struct attribute *vdisk_attrs[] = {
	&dev_attr_backing_file.attr,
	&dev_attr_serial.attr,
	&dev_attr_ram_bytes.attr,
	NULL,
};

/* backing_file for disks on a file, ram_bytes for RAM disks. */
static umode_t vdisk_attr_visible(struct kobject *kobj, struct attribute *attr,
				  int n)
{
	struct vdisk_dev *dev = dev_to_disk(kobj_to_dev(kobj))->private_data;

	if (attr == &dev_attr_backing_file.attr && dev->ram)
		return 0;
	if (attr == &dev_attr_ram_bytes.attr && !dev->ram)
		return 0;
	return attr->mode;
}

static const struct attribute_group vdisk_attr_group = {
	.name = "vdisk",
	.attrs = vdisk_attrs,
	.is_visible = vdisk_attr_visible,
};

static const struct attribute_group *vdisk_attr_groups[] = {
	&vdisk_attr_group,
	NULL,
};

/* True if ID is NUL-terminated and made of [A-Za-z0-9._-] only. */
static bool vdisk_id_valid(const char *id)
{
	size_t i;

	for (i = 0; i < VDISK_ID_LEN && id[i]; i++)
		if (!isalnum(id[i]) && id[i] != '.' && id[i] != '_' &&
		    id[i] != '-')
			return false;
	return i < VDISK_ID_LEN;
}

/* Size in bytes of the backing FILE, or -errno if it is not usable. */
static loff_t vdisk_backing_size(struct file *file)
{
	struct inode *inode = file->f_mapping->host;

	if (S_ISREG(inode->i_mode))
		return i_size_read(inode);
	if (S_ISBLK(inode->i_mode))
		return bdev_nr_bytes(I_BDEV(inode));
	return -EINVAL;
}

/* Logical block size of what holds FILE (direct I/O must align to it). */
static unsigned int vdisk_backing_lbs(struct file *file)
{
	struct inode *inode = file->f_mapping->host;

	if (S_ISBLK(inode->i_mode))
		return bdev_logical_block_size(I_BDEV(inode));
	if (inode->i_sb->s_bdev)
		return bdev_logical_block_size(inode->i_sb->s_bdev);
	return SECTOR_SIZE;
}

/* True if FILE can do direct I/O. */
static bool vdisk_can_direct(struct file *file)
{
#ifdef FMODE_CAN_ODIRECT
	return file->f_mode & FMODE_CAN_ODIRECT;
#else
	return file->f_mapping->a_ops && file->f_mapping->a_ops->direct_IO;
#endif
}

/* Allocate the gendisk with its queue limits (API differs before 6.11). */
static struct gendisk *vdisk_alloc_disk(struct vdisk_dev *dev, bool discard)
{
	unsigned int max_discard = discard ? UINT_MAX >> SECTOR_SHIFT : 0;
	struct gendisk *disk;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
	struct queue_limits lim = {
		.logical_block_size = dev->block_size,
		.physical_block_size = dev->block_size,
		.io_min = dev->block_size,
		.max_hw_sectors = VDISK_MAX_SECTORS,
		.max_segments = USHRT_MAX,
		.max_segment_size = UINT_MAX,
		.max_hw_discard_sectors = max_discard,
		.max_write_zeroes_sectors = max_discard,
		.features = BLK_FEAT_WRITE_CACHE | BLK_FEAT_FUA,
	};

	disk = blk_mq_alloc_disk(&dev->tag_set, &lim, dev);
#else
	disk = blk_mq_alloc_disk(&dev->tag_set, dev);
	if (IS_ERR(disk))
		return disk;
	blk_queue_logical_block_size(disk->queue, dev->block_size);
	blk_queue_physical_block_size(disk->queue, dev->block_size);
	blk_queue_io_min(disk->queue, dev->block_size);
	blk_queue_max_hw_sectors(disk->queue, VDISK_MAX_SECTORS);
	blk_queue_max_segments(disk->queue, USHRT_MAX);
	blk_queue_max_segment_size(disk->queue, UINT_MAX);
	blk_queue_max_discard_sectors(disk->queue, max_discard);
	blk_queue_max_write_zeroes_sectors(disk->queue, max_discard);
	blk_queue_write_cache(disk->queue, true, true);
	blk_queue_flag_set(QUEUE_FLAG_NONROT, disk->queue);
#endif
	return disk;
}

/* Check the block size, size and id of an ADD request; 0 or -EINVAL. */
static int vdisk_check_shape(const struct vdisk_ctl_disk *req)
{
	if (req->block_size != 512 && req->block_size != 4096)
		return -EINVAL;
	if (req->size == 0 || req->size % req->block_size)
		return -EINVAL;
	if (!vdisk_id_valid(req->id))
		return -EINVAL;
	return 0;
}

/* Check an ADD request against the backing file; 0 or -errno. */
static int vdisk_check_add(const struct vdisk_ctl_disk *req, struct file *file)
{
	loff_t backing;

	if (req->flags & ~VDISK_F_ALL || vdisk_check_shape(req))
		return -EINVAL;
	backing = vdisk_backing_size(file);
	if (backing < 0)
		return backing;
	if (req->size > backing)
		return -ENOSPC;
	if (!(req->flags & VDISK_F_READ_ONLY) && !(file->f_mode & FMODE_WRITE))
		return -EBADF; /* a writable disk needs a writable fd */
	if (req->flags & VDISK_F_DIRECT) {
		if (!vdisk_can_direct(file))
			return -EOPNOTSUPP;
		if (req->block_size < vdisk_backing_lbs(file))
			return -EINVAL;
	}
	return 0;
}

/* Check an ADD request for a RAM disk; 0 or -errno. */
static int vdisk_check_ram(const struct vdisk_ctl_disk *req)
{
	if (req->fd != -1 ||
	    (req->flags & (VDISK_F_READ_ONLY | VDISK_F_DIRECT)))
		return -EINVAL;
	if (vdisk_check_shape(req))
		return -EINVAL;
	if (req->size > vdisk_ram_max_size())
		return -EFBIG; /* allocation is lazy, but more than RAM cannot
				  be kept */
	return 0;
}

/* Add a disk from REQ; fill REQ's index, major and minor. */
static int vdisk_add(struct vdisk_ctl_disk *req)
{
	struct vdisk_dev *dev;
	struct gendisk *disk;
	struct file *file = NULL;
	int ret;

	if (req->flags & VDISK_F_RAM) {
		ret = vdisk_check_ram(req);
		if (ret)
			return ret;
	} else {
		file = fget(req->fd);
		if (!file)
			return -EBADF;
		ret = vdisk_check_add(req, file);
		if (ret)
			goto out_fput;
	}

	ret = -ENOMEM;
	dev = kzalloc(sizeof(*dev), GFP_KERNEL);
	if (!dev)
		goto out_fput;
	dev->file = file;
	dev->flags = req->flags;
	dev->block_size = req->block_size;
	dev->size = req->size;
	memcpy(dev->id, req->id, VDISK_ID_LEN);
	spin_lock_init(&dev->lock);
	INIT_LIST_HEAD(&dev->pending);
	INIT_WORK(&dev->batch_work, vdisk_batch_work);
	if (req->flags & VDISK_F_RAM) {
		dev->ram = vdisk_ram_create();
		if (!dev->ram)
			goto out_free;
	}

	mutex_lock(&vdisk_mutex);
	ret = idr_alloc(&vdisk_idr, dev, 0, VDISK_MAX_DISKS, GFP_KERNEL);
	if (ret >= 0)
		dev->index = ret; /* state VDISK_ADDING: invisible to control */
	mutex_unlock(&vdisk_mutex);
	if (ret < 0)
		goto out_free;

	if (dev->ram) {
		disk = vdisk_ram_alloc_disk(dev->block_size);
		ret = IS_ERR(disk) ? PTR_ERR(disk) : 0;
		if (ret)
			goto out_idr;
		goto setup;
	}
	ret = -ENOMEM;
	dev->wq = alloc_workqueue("vdisk%d", WQ_MEM_RECLAIM | WQ_UNBOUND,
				  VDISK_WORKERS, dev->index);
	if (!dev->wq)
		goto out_idr;

	dev->tag_set.ops = &vdisk_mq_ops;
	dev->tag_set.nr_hw_queues = 1;
	dev->tag_set.queue_depth = VDISK_QUEUE_DEPTH;
	dev->tag_set.numa_node = NUMA_NO_NODE;
	dev->tag_set.cmd_size = sizeof(struct vdisk_cmd);
	/* no I/O scheduler by default: the backing store schedules, as for loop
	 */
	dev->tag_set.flags =
		BLK_MQ_F_SHOULD_MERGE | BLK_MQ_F_NO_SCHED_BY_DEFAULT;
	dev->tag_set.driver_data = dev;
	ret = blk_mq_alloc_tag_set(&dev->tag_set);
	if (ret)
		goto out_wq;

	disk = vdisk_alloc_disk(dev, file->f_op->fallocate != NULL);
	if (IS_ERR(disk)) {
		ret = PTR_ERR(disk);
		goto out_tags;
	}
setup:
	dev->disk = disk;
	disk->major = vdisk_major;
	disk->first_minor = dev->index * VDISK_MINORS;
	disk->minors = VDISK_MINORS;
	disk->fops = dev->ram ? &vdisk_ram_fops : &vdisk_fops;
	disk->private_data = dev;
	if (dev->flags & VDISK_F_REMOVABLE)
		disk->flags |= GENHD_FL_REMOVABLE;
	snprintf(disk->disk_name, DISK_NAME_LEN, "vdisk%d", dev->index);
	set_capacity(disk, dev->size >> SECTOR_SHIFT);
	set_disk_ro(disk, dev->flags & VDISK_F_READ_ONLY);

	ret = device_add_disk(NULL, disk, vdisk_attr_groups);
	if (ret)
		goto out_disk;
	mutex_lock(&vdisk_mutex);
	dev->state = VDISK_LIVE;
	mutex_unlock(&vdisk_mutex);

	req->index = dev->index;
	req->major = vdisk_major;
	req->minor = disk->first_minor;
	req->openers = 0;
	return 0;

out_disk:
	put_disk(disk);
	if (dev->ram)
		goto out_idr;
out_tags:
	blk_mq_free_tag_set(&dev->tag_set);
out_wq:
	destroy_workqueue(dev->wq);
out_idr:
	mutex_lock(&vdisk_mutex);
	idr_remove(&vdisk_idr, dev->index);
	mutex_unlock(&vdisk_mutex);
out_free:
	if (dev->ram)
		vdisk_ram_destroy(dev->ram);
	kfree(dev);
out_fput:
	if (file)
		fput(file);
	return ret;
}

/* Tear down a disk that is REMOVING (or was never live); nobody can open it. */
static void vdisk_destroy(struct vdisk_dev *dev)
{
	del_gendisk(dev->disk); /* drains in-flight I/O */
	put_disk(dev->disk);
	if (dev->ram) {
		vdisk_ram_destroy(
			dev->ram); /* all its memory, before REMOVE returns */
		kfree(dev);
		return;
	}
	blk_mq_free_tag_set(&dev->tag_set);
	destroy_workqueue(dev->wq);
	fput(dev->file);
	kfree(dev);
}

/* Remove disk INDEX unless it is open; 0 or -errno. */
static int vdisk_remove(u32 index)
{
	struct vdisk_dev *dev;
	int ret = 0;

	mutex_lock(&vdisk_mutex);
	dev = idr_find(&vdisk_idr, index);
	if (!dev || dev->state != VDISK_LIVE)
		ret = -ENXIO;
	else if (dev->openers)
		ret = -EBUSY;
	else {
		dev->state = VDISK_REMOVING;
		idr_remove(&vdisk_idr, index);
	}
	mutex_unlock(&vdisk_mutex);
	if (!ret)
		vdisk_destroy(dev);
	return ret;
}

/* Fill REQ from disk REQ->index; 0 or -errno. */
static int vdisk_query(struct vdisk_ctl_disk *req)
{
	struct vdisk_dev *dev;
	int ret = 0;

	mutex_lock(&vdisk_mutex);
	dev = idr_find(&vdisk_idr, req->index);
	if (!dev || dev->state != VDISK_LIVE) {
		ret = -ENXIO;
	} else {
		req->fd = -1;
		req->flags = dev->flags;
		req->block_size = dev->block_size;
		req->size = dev->size;
		req->major = vdisk_major;
		req->minor = dev->disk->first_minor;
		req->openers = dev->openers;
		memcpy(req->id, dev->id, VDISK_ID_LEN);
	}
	mutex_unlock(&vdisk_mutex);
	return ret;
}

/* RESIZE: set disk REQ->index to REQ->size bytes (its file grew first); 0 or
 * -errno. */
static int vdisk_resize(const struct vdisk_ctl_disk *req)
{
	struct vdisk_dev *dev;
	loff_t backing;
	int ret = 0;

	mutex_lock(&vdisk_mutex);
	dev = idr_find(&vdisk_idr, req->index);
	if (!dev || dev->state != VDISK_LIVE) {
		ret = -ENXIO;
		goto out;
	}
	backing =
		dev->ram ? vdisk_ram_max_size() : vdisk_backing_size(dev->file);
	if (req->size == 0 || req->size % dev->block_size)
		ret = -EINVAL;
	else if (backing < 0)
		ret = backing;
	else if (req->size > backing)
		ret = -ENOSPC;
	if (ret == -ENOSPC && dev->ram)
		ret = -EFBIG;
	if (ret)
		goto out;
	/* RAM: what lay past the smaller size must not reappear */
	if (dev->ram && req->size > dev->size)
		vdisk_ram_truncate(dev->ram, dev->size);
	dev->size = req->size;
	/* the block layer bounds requests by the capacity; the uevent tells
	 * udev */
	set_capacity_and_notify(dev->disk, dev->size >> SECTOR_SHIFT);
	if (dev->ram)
		vdisk_ram_truncate(dev->ram, dev->size);
out:
	mutex_unlock(&vdisk_mutex);
	return ret;
}

/* LIST: copy the indexes of live disks to user space; 0 or -errno. */
static int vdisk_list(struct vdisk_ctl_list *req)
{
	u32 __user *out = u64_to_user_ptr(req->indexes);
	struct vdisk_dev *dev;
	u32 *ids, n = 0;
	int id, ret = 0;

	if (req->max > VDISK_MAX_DISKS)
		return -EINVAL;
	ids = kcalloc(VDISK_MAX_DISKS, sizeof(*ids), GFP_KERNEL);
	if (!ids)
		return -ENOMEM;
	mutex_lock(&vdisk_mutex);
	idr_for_each_entry(&vdisk_idr, dev, id)
		if (dev->state == VDISK_LIVE)
			ids[n++] = id;
	mutex_unlock(&vdisk_mutex);
	if (copy_to_user(out, ids, min(n, req->max) * sizeof(*ids)))
		ret = -EFAULT;
	req->count = n;
	kfree(ids);
	return ret;
}

/* Copy a versioned control struct of SIZE bytes from user space. */
static int vdisk_copy_in(void *kreq, void __user *arg, size_t size)
{
	u32 head[2]; /* struct_size, version */

	if (copy_from_user(kreq, arg, size))
		return -EFAULT;
	memcpy(head, kreq, sizeof(head));
	if (head[0] != size)
		return -EINVAL;
	if (head[1] != VDISK_CTL_VERSION)
		return -EPROTO;
	return 0;
}

/* ioctl on /dev/vdisk-control. */
static long vdisk_ctl_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	void __user *uarg = (void __user *)arg;
	struct vdisk_ctl_disk disk;
	struct vdisk_ctl_list list;
	int ret;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	switch (cmd) {
	case VDISK_CTL_ADD:
	case VDISK_CTL_REMOVE:
	case VDISK_CTL_QUERY:
	case VDISK_CTL_RESIZE:
		ret = vdisk_copy_in(&disk, uarg, sizeof(disk));
		if (ret)
			return ret;
		if (disk.reserved)
			return -EINVAL;
		if (cmd == VDISK_CTL_REMOVE)
			return vdisk_remove(disk.index);
		if (cmd == VDISK_CTL_RESIZE)
			return vdisk_resize(&disk);
		ret = cmd == VDISK_CTL_ADD ? vdisk_add(&disk)
					   : vdisk_query(&disk);
		if (!ret && copy_to_user(uarg, &disk, sizeof(disk)))
			ret = -EFAULT; /* the disk stays; LIST finds it */
		return ret;
	case VDISK_CTL_LIST:
		ret = vdisk_copy_in(&list, uarg, sizeof(list));
		if (ret)
			return ret;
		ret = vdisk_list(&list);
		if (!ret && copy_to_user(uarg, &list, sizeof(list)))
			ret = -EFAULT;
		return ret;
	default:
		return -ENOTTY;
	}
}

static const struct file_operations vdisk_ctl_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = vdisk_ctl_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice vdisk_ctl_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "vdisk-control",
	.fops = &vdisk_ctl_fops,
	.mode = 0600,
};

static int __init vdisk_init(void)
{
	int ret;

	vdisk_major = register_blkdev(0, "vdisk");
	if (vdisk_major < 0)
		return vdisk_major;
	ret = misc_register(&vdisk_ctl_misc);
	if (ret) {
		unregister_blkdev(vdisk_major, "vdisk");
		return ret;
	}
	return 0;
}

/* Unload: no disk can be open (an open holds the module), remove them all. */
static void __exit vdisk_exit(void)
{
	struct vdisk_dev *dev;
	int id;

	misc_deregister(&vdisk_ctl_misc);
	mutex_lock(&vdisk_mutex);
	idr_for_each_entry(&vdisk_idr, dev, id)
		dev->state = VDISK_REMOVING;
	mutex_unlock(&vdisk_mutex);
	idr_for_each_entry(&vdisk_idr, dev, id)
		vdisk_destroy(dev);
	idr_destroy(&vdisk_idr);
	unregister_blkdev(vdisk_major, "vdisk");
}

module_init(vdisk_init);
module_exit(vdisk_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vdisk: block devices backed by files or RAM");
MODULE_ALIAS_MISCDEV(MISC_DYNAMIC_MINOR);
MODULE_ALIAS("devname:vdisk-control");
