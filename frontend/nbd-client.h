/* SPDX-License-Identifier: MIT */
/* The client side of the NBD handshake, for handing a socket to the kernel. */
#ifndef VDISK_NBD_CLIENT_H
#define VDISK_NBD_CLIENT_H

#include <stdint.h>

/*
 * On connected socket FD, negotiate export NAME with NBD_OPT_GO (simple
 * replies only, as the kernel's client wants). Sets the export's size and
 * transmission flags. 0 or -errno.
 */
int nbd_client_go(int fd, const char *name, uint64_t *size, uint16_t *flags);

#endif
