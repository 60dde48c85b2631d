/* SPDX-License-Identifier: MIT */
/*
 * A bounded cache of qcow2 metadata tables with clock replacement. The caller
 * holds s->lock and writes back dirty victims itself (L2 tables and refcount
 * blocks have different ordering rules).
 */
#include <errno.h>
#include <stdlib.h>

#include "../error.h"
#include "qcow2.h"

/* Memory aligned for O_DIRECT, zeroed. */
void *qcow2_alloc_buf(size_t size)
{
    void *p;

    if (posix_memalign(&p, 4096, size ? size : 1))
        return NULL;
    memset(p, 0, size);
    return p;
}

/* N tables of SIZE bytes, looked up by an index below NSLOT. */
int qcow2_cache_init(struct qcow2_cache *c, unsigned n, size_t size, uint64_t nslot)
{
    memset(c, 0, sizeof(*c));
    c->n = n;
    c->size = size;
    c->t = calloc(n, sizeof(*c->t));
    if (!c->t)
        return -ENOMEM;
    for (unsigned i = 0; i < n; i++)
        c->t[i].index = -1; /* buffers come on first use: hostile sizes cost nothing */
    return qcow2_cache_grow_slots(c, nslot);
}

void qcow2_cache_destroy(struct qcow2_cache *c)
{
    if (c->t)
        for (unsigned i = 0; i < c->n; i++)
            free(c->t[i].buf);
    free(c->t);
    free(c->slot);
    memset(c, 0, sizeof(*c));
}

/* Allow indexes up to NSLOT (the reftable grew). */
int qcow2_cache_grow_slots(struct qcow2_cache *c, uint64_t nslot)
{
    int32_t *slot;

    if (nslot <= c->nslot && c->slot)
        return 0;
    slot = realloc(c->slot, (nslot ? nslot : 1) * sizeof(*slot));
    if (!slot)
        return -ENOMEM;
    for (uint64_t i = c->nslot; i < nslot; i++)
        slot[i] = -1;
    c->slot = slot;
    c->nslot = nslot;
    return 0;
}

/* The cached table for INDEX, or NULL. */
struct qcow2_table *qcow2_cache_find(struct qcow2_cache *c, uint64_t index)
{
    struct qcow2_table *t;

    if (index >= c->nslot || c->slot[index] < 0)
        return NULL;
    t = &c->t[c->slot[index]];
    __atomic_store_n(&t->ref, true, __ATOMIC_RELAXED); /* also under the shared lock */
    return t;
}

/* The entry to replace next: free ones first, then not recently used; NULL on ENOMEM. */
struct qcow2_table *qcow2_cache_victim(struct qcow2_cache *c)
{
    for (;;) {
        struct qcow2_table *t = &c->t[c->hand];

        c->hand = (c->hand + 1) % c->n;
        if (t->index >= 0 && t->ref) {
            t->ref = false;
            continue;
        }
        if (!t->buf && !(t->buf = qcow2_alloc_buf(c->size)))
            return NULL;
        return t;
    }
}

int qcow2_cache_take(struct qcow2 *s, struct qcow2_cache *c, uint64_t index,
                     int (*writeback)(struct qcow2 *s, struct qcow2_table *t),
                     struct qcow2_table **tp)
{
    struct qcow2_table *t = qcow2_cache_find(c, index);
    int r;

    if (!t) {
        t = qcow2_cache_victim(c);
        if (!t)
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        r = writeback(s, t);
        if (r < 0)
            return r;
    }
    *tp = t;
    return 0;
}

/* Make T (written back already) hold the table INDEX at OFFSET. */
void qcow2_cache_assign(struct qcow2_cache *c, struct qcow2_table *t, uint64_t index,
                        uint64_t offset)
{
    if (t->index >= 0)
        c->slot[t->index] = -1;
    t->index = (int64_t)index;
    t->offset = offset;
    t->dirty = false;
    t->ref = true;
    c->slot[index] = (int32_t)(t - c->t);
}

/* Forget T without writing it. */
void qcow2_cache_drop(struct qcow2_cache *c, struct qcow2_table *t)
{
    if (t->index >= 0)
        c->slot[t->index] = -1;
    t->index = -1;
    t->dirty = false;
}
