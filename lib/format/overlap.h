/* SPDX-License-Identifier: MIT */
/*
 * A set of metadata byte ranges of an image file, so that a driver can tell
 * cheaply whether a new allocation or a data write would land on its own
 * metadata (QEMU's "overlap checks"). Sorted by start; lookups are a binary
 * search plus a walk back bounded by the longest range.
 */
#ifndef VDISK_OVERLAP_H
#define VDISK_OVERLAP_H

#include <stddef.h>
#include <stdint.h>

struct overlap_range {
    uint64_t off, len;
    const char *what; /* "L1 table", "block map": a static string */
};

struct overlap_set {
    struct overlap_range *r;
    size_t n, cap;
    uint64_t maxlen;
};

/* Add [OFF, OFF+LEN) named WHAT (a no-op for an empty range); -ENOMEM. */
int overlap_add(struct overlap_set *o, uint64_t off, uint64_t len, const char *what);
/* The range that [OFF, OFF+LEN) overlaps (NULL for none). */
const struct overlap_range *overlap_find(const struct overlap_set *o, uint64_t off, uint64_t len);
/* Forget every range (the memory stays for reuse). */
void overlap_clear(struct overlap_set *o);
void overlap_free(struct overlap_set *o);

#endif
