/* SPDX-License-Identifier: MIT */
/* qcow2 flush: metadata made durable in dependency order. */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>

#include "../error.h"
#include "qcow2.h"

/*
 * Make metadata durable in order: data and refcounts, sync; L2 tables, sync;
 * L1, sync; then release the clusters that updates dropped.
 */
int qcow2_flush_locked(struct qcow2 *s)
{
    bool wrote = false;
    int r = qcow2_flush_refcounts(s);

    for (unsigned i = 0; i < s->l2c.n && r == 0; i++) {
        struct qcow2_table *t = &s->l2c.t[i];

        if (!t->dirty)
            continue;
        r = vdisk_file_pwrite(s->file, t->buf, s->cluster_size, t->offset);
        if (r == 0)
            t->dirty = false;
        wrote = true;
    }
    if (r == 0 && wrote)
        r = qcow2_sync(s);
    if (r == 0 && s->l1_dirty_lo < s->l1_dirty_hi) {
        uint64_t lo = s->l1_dirty_lo & ~63ull, hi = (s->l1_dirty_hi + 63) & ~63ull;
        uint64_t *be = qcow2_alloc_buf((hi - lo) * 8);

        if (!be)
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        for (uint64_t i = lo; i < hi; i++)
            be[i - lo] = htobe64(s->l1[i]);
        r = vdisk_file_pwrite(s->file, be, (hi - lo) * 8, s->l1_offset + lo * 8);
        free(be);
        if (r == 0)
            r = qcow2_sync(s);
        if (r == 0)
            s->l1_dirty_lo = s->l1_dirty_hi = 0;
    }
    if (r == 0)
        r = qcow2_apply_frees(s);
    return r;
}

/* Is any metadata waiting to be written? Shared lock suffices. */
static bool meta_dirty(struct qcow2 *s)
{
    if (s->nfrees || s->rt_dirty || s->l1_dirty_lo < s->l1_dirty_hi)
        return true;
    for (unsigned i = 0; i < s->l2c.n; i++)
        if (s->l2c.t[i].dirty)
            return true;
    for (unsigned i = 0; i < s->rbc.n; i++)
        if (s->rbc.t[i].dirty)
            return true;
    return false;
}

int qcow2_flush(struct vdisk_node *node)
{
    struct qcow2 *s = node->priv;
    bool dirty;
    int r;

    /* only data to make durable: sync without stopping other requests */
    pthread_rwlock_rdlock(&s->lock);
    dirty = meta_dirty(s);
    pthread_rwlock_unlock(&s->lock);
    if (!dirty)
        return qcow2_sync(s);
    qcow2_lock_excl(s);
    r = qcow2_flush_locked(s);
    pthread_rwlock_unlock(&s->lock);
    return r;
}
