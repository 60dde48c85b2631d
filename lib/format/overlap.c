/* SPDX-License-Identifier: MIT */
/* A sorted set of metadata ranges (see overlap.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "../format.h"
#include "overlap.h"

/* Index of the first range starting at or after OFF. */
static size_t lower_bound(const struct overlap_set *o, uint64_t off)
{
    size_t lo = 0, hi = o->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (o->r[mid].off < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int overlap_add(struct overlap_set *o, uint64_t off, uint64_t len, const char *what)
{
    size_t i;

    if (!len)
        return 0;
    if (off + len < off) /* to the end of the address space */
        len = UINT64_MAX - off;
    i = lower_bound(o, off);
    if (i < o->n && o->r[i].off == off && o->r[i].len == len)
        return 0; /* already there */
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 16;
        struct overlap_range *r = realloc(o->r, cap * sizeof(*r));

        if (!r)
            return -ENOMEM;
        o->r = r;
        o->cap = cap;
    }
    memmove(o->r + i + 1, o->r + i, (o->n - i) * sizeof(*o->r));
    o->r[i] = (struct overlap_range){off, len, what};
    o->n++;
    if (len > o->maxlen)
        o->maxlen = len;
    return 0;
}

const struct overlap_range *overlap_find(const struct overlap_set *o, uint64_t off, uint64_t len)
{
    uint64_t end = off + len < off ? UINT64_MAX : off + len;
    size_t i = lower_bound(o, end); /* ranges from i on start at or past the end */

    while (i > 0) {
        const struct overlap_range *r = &o->r[--i];

        if (r->off + r->len > off)
            return r;
        if (r->off <= off && off - r->off >= o->maxlen) /* no earlier range reaches OFF */
            break;
    }
    return NULL;
}

void overlap_clear(struct overlap_set *o)
{
    o->n = 0;
    o->maxlen = 0;
}

void overlap_free(struct overlap_set *o)
{
    free(o->r);
    *o = (struct overlap_set){0};
}

int vdisk_node_refuse_writes(struct vdisk_node *node, const char *fmt, ...)
{
    char *why = NULL, *none = NULL;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&why, fmt, ap);
    va_end(ap);
    if (n < 0)
        return vdisk_error(EIO, "%s: metadata damaged (out of memory for the details)", node->path);
    vdisk_error(EIO, "%s: %s: writes refused; `vdisk check` reports it", node->path, why);
    if (!atomic_compare_exchange_strong(&node->write_refused, &none, why))
        free(why); /* the first reason stays */
    return -EIO;
}
