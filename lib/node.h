/* SPDX-License-Identifier: MIT */
/*
 * The image layer inside libvdisk: the image handle (image.c), the node
 * graph and its generic data path (node.c), probing and the format table
 * (probe.c). The request engine (queue.c) uses node_map/node_release to send
 * I/O straight to files, and the node_* calls for the rest.
 */
#ifndef VDISK_NODE_H
#define VDISK_NODE_H

#include <stdatomic.h>

#include "format.h"

/* An open image: the top node of its graph, and what the user asked for. */
struct vdisk_image {
    struct vdisk_node *root;
    bool format_probed; /* probed, neither stated nor remembered */
    const char **files; /* every file the graph reads, NULL terminated */
};

/* The probe window: what probes look at, and what a guarded node refuses to change. */
#define VDISK_PROBE_HEAD 65536u
#define VDISK_PROBE_TAIL 512u

/* ---- image.c ---- */

/* Fill IMG->files: every file the graph under IMG->root reads, top first. */
int image_list_files(struct vdisk_image *img);

/* ---- node.c ---- */

/*
 * Open PATH as a node in FMT (NULL: probe, node->probed says so). ABOVE is
 * the node it backs (NULL for a top image); OPTIONS its open options as text
 * (NULL for none), checked against the format's keys.
 */
int node_open(const char *path, const struct vdisk_format *fmt, unsigned flags, const char *options,
              struct vdisk_node *above, struct vdisk_node **np);
/*
 * node_open with the open node BACKING as the new node's backing node
 * (whatever its header names): an overlay over a node opened by the caller.
 * On success the new node owns BACKING; on failure the caller still does.
 */
int node_open_over(const char *path, const struct vdisk_format *fmt, unsigned flags,
                   const char *options, struct vdisk_node *backing, struct vdisk_node **np);
/* Close the node and everything below it. */
void node_close(struct vdisk_node *n);

/* map() under the node's locking rules; validates the answer. */
int node_map(struct vdisk_node *n, uint64_t off, uint64_t len, unsigned flags, struct vdisk_map *m);
/* Give back what node_map() holds in M (nothing when M's handle is 0). */
void node_release(struct vdisk_node *n, struct vdisk_map *m);

/* The generic data path; ranges already checked by the caller. */
int node_write(struct vdisk_node *n, const void *buf, size_t len, uint64_t off, unsigned flags);
int node_flush(struct vdisk_node *n);
int node_discard(struct vdisk_node *n, uint64_t off, uint64_t len);
int node_write_zeroes(struct vdisk_node *n, uint64_t off, uint64_t len, unsigned flags);
int node_block_status(struct vdisk_node *n, uint64_t off, uint64_t len, struct vdisk_extent *ext);
int node_cache(struct vdisk_node *n, uint64_t off, uint64_t len);

/* ---- probe.c ---- */

/* The best format for an open FILE by its probe score; foreign formats are refused. */
int probe_file(struct vdisk_file *file, const struct vdisk_format **fmtp);
/* The format a file was remembered as (xattr), or NULL. */
const struct vdisk_format *probe_remembered(struct vdisk_file *file);
/* Remember FMT for FILE; false where the file system keeps no user xattrs. */
bool probe_remember(struct vdisk_file *file, const struct vdisk_format *fmt);
/* Forget what FILE was remembered as. */
void probe_forget(struct vdisk_file *file);
/*
 * For a guarded node: would writing BUF (NULL: zeroes) at [OFF, OFF+LEN)
 * make its file probe as a format that is not linear? -EPERM if so.
 */
int probe_guard(struct vdisk_node *n, const void *buf, uint64_t len, uint64_t off);
/* Does [OFF, OFF+LEN) touch the probe window of a file of SIZE bytes? */
bool probe_window(uint64_t size, uint64_t off, uint64_t len);

#endif
