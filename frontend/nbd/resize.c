/* SPDX-License-Identifier: MIT */
/*
 * A new export size, after the image was resized through the same engine:
 * requests are checked against it from now on, and new connections are told
 * it in their handshake. A client connected before keeps the size it was
 * told (NBD has no message for a change): the kernel's client is given the
 * new one by its owner (via_nbd.c, NBD_SET_SIZE).
 */
#include "internal.h"

void nbd_server_set_size(struct nbd_server *srv, uint64_t size)
{
    __atomic_store_n(&srv->size, size, __ATOMIC_RELEASE);
}
