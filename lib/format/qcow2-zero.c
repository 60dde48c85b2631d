/* SPDX-License-Identifier: MIT */
/* qcow2 discard and write-zeroes: whole clusters (or subclusters) change state, data is freed. */
#include <errno.h>
#include <stdlib.h>

#include "../error.h"
#include "qcow2.h"

/*
 * Set whole clusters of [OFF, OFF+LEN) to read as zeroes (ZERO) or to be
 * unallocated, releasing their clusters. Locked.
 */
static int clear_clusters(struct qcow2 *s, uint64_t off, uint64_t len, bool zero)
{
    uint64_t cs = s->cluster_size, end = off + len;
    uint64_t ne = (zero && !s->ext_l2) ? QCOW2_ZERO : 0;
    uint64_t nbm = (zero && s->ext_l2) ? 0xffffffff00000000ull : 0;
    int r = qcow2_mark_dirty(s);

    qcow2_wait_pins(s);

    while (r == 0 && off < end) {
        uint64_t l1i = l1_index(s, off), e, bm;
        struct qcow2_table *t;

        if (!zero && !(s->l1[l1i] & QCOW2_OFFSET_MASK)) { /* nothing to free here */
            off = (l1i + 1) << (s->cluster_bits + s->l2_bits);
            continue;
        }
        r = qcow2_l2_load(s, l1i, &t);
        if (r < 0)
            break;
        e = bm = 0;
        if (t)
            l2_get(s, t, l2_index(s, off), &e, &bm);
        if (e != ne || bm != nbm) {
            r = qcow2_l2_for_write(s, l1i, &t);
            if (r == 0) {
                l2_set(s, t, l2_index(s, off), ne, nbm);
                r = qcow2_free_entry(s, e);
            }
        }
        off += cs;
    }
    if (r == 0 && s->nfrees > QCOW2_MAX_FREES)
        r = qcow2_flush_locked(s);
    return r;
}

/* Discard whole clusters: unallocated, or zero where a backing file shows through. */
int qcow2_discard(struct vdisk_node *node, uint64_t off, uint64_t len)
{
    struct qcow2 *s = node->priv;
    uint64_t cs = s->cluster_size, a = (off + cs - 1) & ~(cs - 1), b = (off + len) & ~(cs - 1);
    int r;

    if (s->corrupt)
        return qcow2_refuse_corrupt(s);
    if (off + len == node->size)
        b = (off + len + cs - 1) & ~(cs - 1);
    if (a >= b || (s->node->backing && s->version < 3))
        return 0; /* discard is advisory */
    qcow2_lock_excl(s);
    r = clear_clusters(s, a, b - a, s->node->backing != NULL);
    pthread_rwlock_unlock(&s->lock);
    return r;
}

/* Zero whole subclusters [A, B) of one cluster with extended L2; -ENOTSUP if shared. */
static int zero_subclusters(struct qcow2 *s, uint64_t off, uint64_t len)
{
    uint64_t l1i = l1_index(s, off), l2i = l2_index(s, off), e = 0, bm = 0;
    unsigned sa = (unsigned)((off & (s->cluster_size - 1)) >> s->sc_bits);
    unsigned sb = sa + (unsigned)(len >> s->sc_bits);
    struct qcow2_table *t;
    int r = qcow2_mark_dirty(s);

    qcow2_wait_pins(s);

    if (r == 0)
        r = qcow2_l2_load(s, l1i, &t);
    if (r < 0)
        return r;
    if (t)
        l2_get(s, t, l2i, &e, &bm);
    if ((e & QCOW2_COMPRESSED) || ((e & QCOW2_OFFSET_MASK) && !(e & QCOW2_COPIED)))
        return -ENOTSUP;
    r = qcow2_l2_for_write(s, l1i, &t);
    if (r == 0)
        l2_set(s, t, l2i, e, (bm & ~sc_mask(sa, sb)) | (sc_mask(sa, sb) << 32));
    return r;
}

int qcow2_write_zeroes(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags)
{
    struct qcow2 *s = node->priv;
    uint64_t cs = s->cluster_size, unit = 1ull << s->sc_bits, end = off + len;
    uint8_t *zero = NULL;
    int r = 0;

    if (s->corrupt)
        return qcow2_refuse_corrupt(s);
    if (s->version < 3 && s->node->backing)
        return -ENOTSUP; /* no zero flag: unallocated would show the backing file */
    if ((flags & VDISK_ZERO_NO_FALLBACK) && ((off | len) & (unit - 1)) && end != node->size)
        return -ENOTSUP;
    while (r == 0 && off < end) {
        uint64_t cend = (off | (cs - 1)) + 1, n;

        if (cend > end)
            cend = end;
        n = cend - off;
        if (!(off & (cs - 1)) && (n == cs || cend == node->size)) {
            uint64_t run = (end - off) & ~(cs - 1);

            if (!run)
                run = n;
            qcow2_lock_excl(s);
            /* unallocated reads as zeroes unless a backing file shows through */
            r = clear_clusters(s, off, run, s->node->backing != NULL);
            pthread_rwlock_unlock(&s->lock);
            off += run;
            continue;
        }
        if (s->ext_l2) {
            uint64_t a = (off + unit - 1) & ~(unit - 1), b = cend & ~(unit - 1);

            if (cend == node->size)
                b = (cend + unit - 1) & ~(unit - 1);
            if (a < b) {
                qcow2_lock_excl(s);
                r = zero_subclusters(s, a, b - a);
                pthread_rwlock_unlock(&s->lock);
                if (r == 0) {
                    if (a > off)
                        r = qcow2_write_zeroes(node, off, a - off, flags & ~VDISK_ZERO_FUA);
                    if (r == 0 && cend > b && b < node->size)
                        r = qcow2_write_zeroes(node, b, cend - b, flags & ~VDISK_ZERO_FUA);
                    off = cend;
                    continue;
                }
                if (r != -ENOTSUP || (flags & VDISK_ZERO_NO_FALLBACK))
                    break;
                r = 0;
            }
        }
        if (!zero && !(zero = calloc(1, cs))) {
            r = vdisk_error(ENOMEM, "%s: out of memory", node->path);
            break;
        }
        r = qcow2_write(node, zero, n, off, 0);
        off = cend;
    }
    free(zero);
    if (r == 0 && (flags & VDISK_ZERO_FUA))
        r = qcow2_flush(node);
    return r;
}
