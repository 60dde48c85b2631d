/* SPDX-License-Identifier: MIT */
/* The temporary snapshot overlay driver (snapshot-overlay.c): a sparse file plus a bitmap. */
#ifndef VDISK_SNAPSHOT_OVERLAY_H
#define VDISK_SNAPSHOT_OVERLAY_H

#include "format.h"

/* Not in the format table: only vdisk_open_snapshot opens it, over an open base node. */
extern const struct vdisk_format vdisk_format_snapshot;

#endif
