/* SPDX-License-Identifier: MIT */
/*
 * The copy engine behind `vdisk convert`: copies one libvdisk image into
 * another of any format, skipping holes and zero blocks, with a few threads.
 */
#ifndef VDISK_TOOL_COPY_H
#define VDISK_TOOL_COPY_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vdisk/vdisk.h"

/* Granularity of zero detection: a block of zero bytes is not written. */
#define COPY_ZERO_BLOCK 4096

struct copy_options {
    unsigned threads;                   /* requests in flight; 0 means the default */
    size_t chunk;                       /* bytes per request; 0 means the default */
    bool progress;                      /* print "    (xx.xx/100%)\r" on stderr */
    bool progress_json;                 /* print {"done":..} lines on stdout, every 1% */
    bool unsafe;                        /* DST won't be flushed: don't start its writeback */
    bool direct;                        /* DST is written with O_DIRECT: more in flight */
    volatile sig_atomic_t *interrupted; /* stop early when it becomes non-zero */
    uint64_t bytes_written;             /* out: data bytes written to DST */
};

/*
 * Copy all of SRC into DST, which must read as zeroes (a new image) and be at
 * least as large. Returns 0 or -errno with *msg (size msg_len) set.
 */
int copy_image(struct vdisk_image *src, struct vdisk_image *dst, struct copy_options *opts,
               char *msg, size_t msg_len);

/* Is BUF[0..LEN) all zero bytes? */
bool buffer_is_zero(const void *buf, size_t len);

/*
 * In BUF (the bytes at image offset OFF, LEN long), find the first run of
 * blocks (COPY_ZERO_BLOCK, aligned to the image) holding a non-zero byte, at
 * or after *start (relative to BUF). Returns false when none is left; else
 * sets *start and *len to the run (clipped to BUF).
 */
bool next_data_run(const uint8_t *buf, size_t len, uint64_t off, size_t *start, size_t *run_len);

#endif
