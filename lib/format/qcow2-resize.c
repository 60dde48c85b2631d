/* SPDX-License-Identifier: MIT */
/*
 * qcow2 resize. Growing past what the L1 table covers writes a new, larger
 * L1 table into fresh contiguous clusters (refcounts durable first), then
 * points the header at it in one sector write, and only then frees the old
 * table: a crash leaves either the old or the new image, each consistent.
 * Shrinking changes only the size, and only when no cluster past the new end
 * is allocated (the L1 table may stay larger than needed, as the spec allows).
 * Sizes must be whole 512-byte sectors, as qemu-img requires.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "../error.h"
#include "qcow2.h"

/* Header bytes 24..48: size, crypt_method, l1_size, l1_table_offset. */
#define HDR_SIZE 24

/*
 * N contiguous fresh clusters at the end of the file, at *OFF, refcount 1
 * each. The refcount blocks they need must not land inside the run (the
 * allocator puts a new block at the start of its own range): the run is
 * marked in use the way a repair marks clusters (s->check_refs, consulted by
 * every allocation), and the file's end moved past it so that a new reftable
 * goes after it too.
 */
static int alloc_run(struct qcow2 *s, uint64_t n, uint64_t *off)
{
    uint64_t p = (s->file_size + s->cluster_size - 1) >> s->cluster_bits;
    uint16_t *mark = calloc(p + n, sizeof(*mark));
    int r = 0;

    if (!mark)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    for (uint64_t i = 0; i < n; i++)
        mark[p + i] = 1;
    s->check_refs = mark;
    s->check_nb = p + n;
    s->file_size = (p + n) << s->cluster_bits;
    for (uint64_t i = 0; i < n && r == 0; i++)
        r = qcow2_rc_set(s, p + i, 1);
    s->check_refs = NULL;
    s->check_nb = 0;
    free(mark);
    *off = p << s->cluster_bits;
    return r;
}

/* Write the header's size, L1 size and L1 offset in one sector write, then sync. */
static int write_header(struct qcow2 *s, uint64_t size, uint32_t l1_size, uint64_t l1_offset)
{
    uint8_t h[24];
    int r;

    put_be64(h, size);
    put_be32(h + 8, s->crypt_method);
    put_be32(h + 12, l1_size);
    put_be64(h + 16, l1_offset);
    r = vdisk_file_pwrite(s->file, h, sizeof(h), HDR_SIZE);

    return r ? r : qcow2_sync(s);
}

/* Replace the L1 table by one of N entries (N > l1_size), header last, old table freed. */
static int grow_l1(struct qcow2 *s, uint64_t size, uint64_t n)
{
    uint64_t cs = s->cluster_size, nc = (n * 8 + cs - 1) / cs, off = 0, *nl1, *be;
    uint64_t old_off = s->l1_offset, old_bytes = (uint64_t)s->l1_size * 8;
    int r;

    if (nc >= 1ull << s->rb_bits) /* the run would cover a whole refcount block's range */
        return vdisk_error(ENOTSUP,
                           "%s: %" PRIu64 " bytes needs an L1 table of %" PRIu64
                           " clusters, more than one refcount block covers at this cluster "
                           "size; convert to larger clusters first",
                           s->node->path, size, nc);
    nl1 = qcow2_alloc_buf(nc * cs);
    be = qcow2_alloc_buf(nc * cs);
    if (!nl1 || !be) {
        r = vdisk_error(ENOMEM, "%s: out of memory for a %" PRIu64 "-entry L1 table", s->node->path,
                        n);
        goto out;
    }
    memset(nl1, 0, nc * cs);
    memcpy(nl1, s->l1, old_bytes);
    r = qcow2_cache_grow_slots(&s->l2c, n);
    if (r < 0) {
        r = vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        goto out;
    }
    r = alloc_run(s, nc, &off);
    if (r == 0)
        r = qcow2_flush_locked(s); /* the new clusters' refcounts before anything points there */
    if (r < 0)
        goto out;
    for (uint64_t i = 0; i < nc * cs / 8; i++)
        be[i] = htobe64(nl1[i]);
    r = vdisk_file_pwrite(s->file, be, nc * cs, off);
    if (r == 0)
        r = qcow2_sync(s);
    if (r == 0)
        r = write_header(s, size, (uint32_t)n, off);
    if (r < 0)
        goto out;
    free(s->l1);
    s->l1 = nl1;
    nl1 = NULL;
    s->l1_size = (uint32_t)n;
    s->l1_offset = off;
    s->node->size = size;
    if (old_bytes) /* only now that nothing points at it */
        r = qcow2_queue_free(s, old_off, (old_bytes + cs - 1) / cs * cs);
    if (r == 0)
        r = qcow2_flush_locked(s);
out:
    free(nl1);
    free(be);
    return r;
}

/* The guest offset of the first allocated cluster at or past cluster FROM, or UINT64_MAX. */
static int first_allocated(struct qcow2 *s, uint64_t from, uint64_t *at)
{
    uint64_t per = 1ull << s->l2_bits;

    *at = UINT64_MAX;
    for (uint64_t l1i = from >> s->l2_bits; l1i < s->l1_size; l1i++) {
        struct qcow2_table *t;
        int r;

        if (!(s->l1[l1i] & QCOW2_OFFSET_MASK))
            continue;
        r = qcow2_l2_load(s, l1i, &t);
        if (r < 0)
            return r;
        for (uint64_t i = l1i == from >> s->l2_bits ? from & (per - 1) : 0; t && i < per; i++) {
            uint64_t e, bm;

            l2_get(s, t, i, &e, &bm);
            if ((e & QCOW2_COMPRESSED) || (e & QCOW2_OFFSET_MASK)) {
                *at = ((l1i << s->l2_bits) + i) << s->cluster_bits;
                return 0;
            }
        }
    }
    return 0;
}

/* Grow (a new L1 table when needed) or shrink (only over unallocated clusters). */
int qcow2_resize(struct vdisk_node *node, uint64_t size, unsigned flags)
{
    struct qcow2 *s = node->priv;
    uint64_t cover = 1ull << (s->cluster_bits + s->l2_bits), need, at;
    int r;

    (void)flags;
    if (size & 511)
        return vdisk_error(EINVAL,
                           "%s: the new size %" PRIu64
                           " is not a multiple of 512 (qcow2 sizes are whole sectors)",
                           node->path, size);
    need = (size + cover - 1) / cover;
    if (need * 8 > QCOW2_MAX_L1_BYTES)
        return vdisk_error(EFBIG, "%s: %" PRIu64 " bytes needs an L1 table above %u bytes",
                           node->path, size, QCOW2_MAX_L1_BYTES);
    qcow2_lock_excl(s);
    qcow2_wait_pins(s);
    r = qcow2_flush_locked(s);
    if (r < 0)
        goto out;
    if (size < node->size) {
        if (s->nb_snapshots) {
            r = vdisk_error(ENOTSUP, "%s: has %u internal snapshots: not shrinking it", node->path,
                            s->nb_snapshots);
            goto out;
        }
        r = first_allocated(s, (size + s->cluster_size - 1) >> s->cluster_bits, &at);
        if (r == 0 && at != UINT64_MAX)
            r = vdisk_error(EPERM,
                            "%s: data lies at offset %" PRIu64 ", past the new size %" PRIu64
                            "; not shrinking (discard it first, or choose a larger size)",
                            node->path, at, size);
        if (r < 0)
            goto out;
    }
    if (need > s->l1_size) {
        r = grow_l1(s, size, need);
    } else {
        r = write_header(s, size, s->l1_size, s->l1_offset);
        if (r == 0)
            node->size = size;
    }
out:
    pthread_rwlock_unlock(&s->lock);
    return r;
}
