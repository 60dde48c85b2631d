/* SPDX-License-Identifier: MIT */
/*
 * What a guest may read after a power cut, granule by granule (4 KiB). The
 * workload marks its requests in the log (VDISK_REC_MARK): a write of tag T,
 * write-zeroes, discard, a completed flush, a completed FUA write. Each granule
 * holds the tag of the write that wrote it (0: zeroes). After a cut, a granule
 * may read as its content at the last completed flush (or FUA write of it), or
 * as any write, zeroing or discard issued on it since: nothing else (no mix of
 * two writes inside a granule, no stale data from before that flush).
 * A discard may leave the old data, so it adds zeroes to what a granule may be.
 */
#ifndef CRASH_MODEL_H
#define CRASH_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#define CRASH_GRANULE 4096
#define CRASH_SET_MAX 6
#define CRASH_INITIAL UINT32_MAX /* as before the workload (not zeroes: LUKS) */

enum crash_mark {
    MARK_WRITE = 1, /* off, len; tag in aux >> 8 */
    MARK_ZERO,
    MARK_DISCARD,
    MARK_FLUSH_DONE,
    MARK_FUA_DONE, /* off, len; tag in aux >> 8 */
};

struct crash_set {
    uint8_t n;
    bool any; /* too many values to follow: unchecked */
    uint32_t v[CRASH_SET_MAX];
};

struct crash_model {
    uint64_t ngran;
    struct crash_set *dur, *cur, *pend;
};

int crash_model_init(struct crash_model *m, uint64_t size);
void crash_model_free(struct crash_model *m);
/* Apply a mark record (aux: kind | tag << 8). */
void crash_model_mark(struct crash_model *m, uint64_t aux, uint64_t off, uint64_t len);
/* May granule G read as TAG now? */
bool crash_model_allows(const struct crash_model *m, uint64_t g, uint32_t tag);

/* Fill a granule with the pattern of TAG at granule G; decode one (-1: not a pattern). */
void crash_pattern(uint8_t *buf, uint32_t tag, uint64_t g);
int64_t crash_decode(const uint8_t *buf, uint64_t g);

/* Run ARGV with its output thrown away; its exit status, or -1. */
int crash_run_quiet(char *const argv[]);

#endif
