/* SPDX-License-Identifier: MIT */
/*
 * The I/O record log (lib/io/record.h) as crash-check sees it: the operations
 * in log order, the files they touch, and each file's durable content.
 */
#ifndef CRASH_LOG_H
#define CRASH_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../lib/io/record.h"

#define CRASH_MAX_FILES 64

struct crash_op {
    uint32_t type; /* VDISK_REC_* */
    uint32_t file; /* index in crash_log.files */
    uint64_t off, len, aux;
    uint64_t at; /* byte offset of the record in the log */
    const uint8_t *data;
};

struct crash_file {
    char *path;       /* as recorded (real path) */
    const char *base; /* its last component: the name in a state directory */
    bool snapped;
    uint8_t *dur; /* durable content: the snapshot and every op made durable */
    uint64_t dsize, dcap;
    size_t *ops; /* indexes in crash_log.ops, in order */
    size_t nops, cap;
    size_t done; /* ops[0..done) are in dur */
};

struct crash_log {
    uint8_t *map;
    size_t size;
    struct crash_op *ops;
    size_t nops;
    struct crash_file files[CRASH_MAX_FILES];
    unsigned nfiles;
};

/* Load LOG; -errno with a message on stderr. */
int crash_log_load(const char *path, struct crash_log *log);
void crash_log_free(struct crash_log *log);
/* Apply OP to F's durable content in memory. */
int crash_file_apply(struct crash_file *f, const struct crash_op *op);
/* Apply OP to the state file FD whose size is *SIZE. */
int crash_fd_apply(int fd, uint64_t *size, const struct crash_op *op);

#endif
