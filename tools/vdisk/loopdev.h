/* SPDX-License-Identifier: MIT */
/* Loop devices over a file: used by --via loop and by --via fuse. */
#ifndef VDISK_LOOPDEV_H
#define VDISK_LOOPDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Bind a free loop device to SIZE bytes at OFFSET of FILE_FD (LOOP_CONFIGURE;
 * SIZE 0: to the end); its path into DEVICE.
 */
int loopdev_attach(int file_fd, uint64_t offset, uint64_t size, const char *name, bool read_only,
                   bool direct, char *device, size_t device_len);
/* Is DEVICE bound to FILE (canonical path)? */
bool loopdev_serves(const char *device, const char *file);
/* Unbind DEVICE from FILE and wait until the file is let go; refuses while mounted. */
int loopdev_detach(const char *device, const char *file);

#endif
