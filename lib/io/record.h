/* SPDX-License-Identifier: MIT */
/*
 * Test-only I/O hook under the formats (lib/io/record.c): records every write,
 * zero, punch, truncate and flush made on writable image files to a log that
 * tests/crash/crash-check replays into power-cut states, and fails chosen calls
 * (fault injection). Off unless a test installs it (the calls below) or the
 * environment asks for it:
 *   VDISK_IO_RECORD=LOG         record to LOG (appended by every process)
 *   VDISK_IO_FAULT=RULE[,RULE]  RULE = OP:ERR[:NTH[:COUNT]]; OP read|write|flush|grow|zero;
 *                               ERR EIO|ENOSPC|EDQUOT|short; fail the NTH call of OP (1 = the
 *                               first) and COUNT calls from there (0: every one)
 *   VDISK_IO_FAULT_ARM=PATH     count and fail only while PATH exists
 * The file layer pays one NULL test of vdisk_io_hooked per call when it is off.
 */
#ifndef VDISK_IO_RECORD_H
#define VDISK_IO_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vdisk_file;

enum vdisk_io_op {
    VDISK_IO_READ,
    VDISK_IO_WRITE,
    VDISK_IO_FLUSH,
    VDISK_IO_ZERO,     /* zero range, KEEP_SIZE */
    VDISK_IO_PUNCH,    /* punch hole, KEEP_SIZE */
    VDISK_IO_ZERO_EXT, /* zero range that may extend the file */
    VDISK_IO_TRUNCATE, /* len: new size */
    VDISK_IO_ALLOC,    /* preallocate: may extend the file, zeroes */
};

/* Log records: a header, then LEN bytes for FILE (the path), SNAP and WRITE. */
enum vdisk_rec_type {
    VDISK_REC_FILE = 1, /* file id, path */
    VDISK_REC_SNAP,     /* the whole file when first opened writable */
    VDISK_REC_WRITE,
    VDISK_REC_ZERO, /* zeroes, clipped to the file's size */
    VDISK_REC_ZERO_EXT,
    VDISK_REC_TRUNCATE,
    VDISK_REC_FLUSH, /* aux: log size when the flush started: the records before are durable */
    VDISK_REC_MARK,  /* a test's own marker: aux its type, off and len its values */
};

struct vdisk_rec {
    uint32_t type;
    uint32_t file; /* the recording process's id for a file */
    uint64_t off;
    uint64_t len;
    uint64_t aux;
    uint32_t pid; /* the recording process: several may share a log */
    uint32_t pad;
};

#define VDISK_REC_MAGIC "VDREC001"

/* Set while recording or faults are on: the file layer calls the hooks. */
extern volatile int vdisk_io_hooked;

/* Before OP: 0 go on, -errno fail the call, >0 bytes of a write already done (short write). */
int vdisk_io_before(struct vdisk_file *f, enum vdisk_io_op op, const void *buf, uint64_t len,
                    uint64_t off);
/* After OP succeeded. */
void vdisk_io_after(struct vdisk_file *f, enum vdisk_io_op op, const void *buf, uint64_t len,
                    uint64_t off);
/* F was opened: a writable file gets an id and a snapshot in the log. */
void vdisk_io_opened(struct vdisk_file *f);

/* For tests in process. */
int vdisk_io_record_start(const char *log);
void vdisk_io_record_stop(void);
void vdisk_io_record_mark(uint64_t type, uint64_t a, uint64_t b);
int vdisk_io_fault_add(const char *rules);
void vdisk_io_fault_clear(void);
/* Calls each rule failed so far. */
unsigned vdisk_io_fault_fired(void);

#endif
