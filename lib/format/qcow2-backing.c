/* SPDX-License-Identifier: MIT */
/*
 * qcow2: rewrite the backing file pointer of a closed image (vdisk rebase):
 * the name after the header extensions, the backing format extension, and
 * the header fields that point at the name, in one write of the header
 * cluster. Every other extension is kept as it was.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "../node.h"
#include "qcow2.h"

#define HDR_BACKING_OFFSET 8
#define HDR_BACKING_SIZE   16
#define HDR_CLUSTER_BITS   20

/* Lay the extensions of OLD (from HLEN to CS) into NEW without the backing format one. */
static int copy_extensions(const char *path, const uint8_t *old, uint8_t *new, uint32_t hlen,
                           uint32_t cs, uint32_t *end)
{
    uint32_t in = hlen, out = hlen;

    while (in + 8 <= cs) {
        uint32_t type = get_be32(old + in), len = get_be32(old + in + 4);
        uint32_t padded = (len + 7) & ~7u;

        if (type == QCOW2_EXT_END)
            break;
        if (len > cs - in - 8)
            return vdisk_error(EINVAL, "%s: header extension 0x%x overruns the header cluster",
                               path, type);
        if (type != QCOW2_EXT_BACKING_FMT) {
            memcpy(new + out, old + in, 8 + len);
            out += 8 + padded;
        }
        in += 8 + padded;
    }
    *end = out;
    return 0;
}

int vdisk_qcow2_set_backing(const char *path, const char *name, const char *format)
{
    const struct vdisk_format *bfmt = NULL;
    struct vdisk_file *f = NULL;
    uint8_t head[QCOW2_V3_HEADER], *old = NULL, *new = NULL;
    uint32_t version, cs, hlen = QCOW2_V2_HEADER, end = 0;
    size_t nlen = name ? strlen(name) : 0, flen;
    int r;

    vdisk_error_clear();
    if (nlen > QCOW2_MAX_BACKING_NAME)
        return vdisk_error(ENAMETOOLONG, "%s: backing file name is too long", path);
    if (nlen) {
        bfmt = format ? vdisk_format_find(format) : NULL;
        if (!bfmt)
            return vdisk_error(EINVAL, "%s: backing file %s needs a known format", path, name);
        format = bfmt->qemu_name ? bfmt->qemu_name : bfmt->name;
    }
    flen = nlen ? strlen(format) : 0;
    r = vdisk_file_open(path, 0, &f);
    if (r == 0)
        r = vdisk_file_lock(f, true);
    if (r == 0)
        r = vdisk_file_pread(f, head, sizeof(head), 0);
    if (r < 0)
        goto out;
    version = get_be32(head + 4);
    cs = 1u << (head[HDR_CLUSTER_BITS + 3] & 31);
    if (get_be32(head) != QCOW2_MAGIC || (version != 2 && version != 3) ||
        get_be32(head + HDR_CLUSTER_BITS) < QCOW2_MIN_CLUSTER_BITS ||
        get_be32(head + HDR_CLUSTER_BITS) > QCOW2_MAX_CLUSTER_BITS) {
        r = vdisk_error(EINVAL, "%s: not a qcow2 image vdisk can rebase", path);
        goto out;
    }
    if (version == 3) {
        hlen = get_be32(head + 100);
        if (get_be64(head + QCOW2_HDR_INCOMPAT) & (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT)) {
            r = vdisk_error(EINVAL,
                            "%s: image is dirty or corrupt; open it (or vdisk check -r all) first",
                            path);
            goto out;
        }
        if (hlen < QCOW2_V3_HEADER || hlen > cs || (hlen & 7)) {
            r = vdisk_error(EINVAL, "%s: invalid qcow2 header length %u", path, hlen);
            goto out;
        }
    }
    old = calloc(1, cs);
    new = calloc(1, cs);
    if (!old || !new) {
        r = vdisk_error(ENOMEM, "%s: out of memory", path);
        goto out;
    }
    r = vdisk_file_pread(f, old, cs, 0);
    if (r < 0)
        goto out;
    memcpy(new, old, hlen);
    r = copy_extensions(path, old, new, hlen, cs, &end);
    if (r < 0)
        goto out;
    if (flen) { /* the backing format, as QEMU names it */
        if ((uint64_t)end + 8 + ((flen + 7) & ~7u) + 8 + nlen > cs) {
            r = vdisk_error(ENOSPC, "%s: no room for the backing file name in the header", path);
            goto out;
        }
        put_be32(new + end, QCOW2_EXT_BACKING_FMT);
        put_be32(new + end + 4, (uint32_t)flen);
        memcpy(new + end + 8, format, flen);
        end += 8 + ((flen + 7) & ~7u);
    }
    if ((uint64_t)end + 8 + nlen > cs) {
        r = vdisk_error(ENOSPC, "%s: no room for the backing file name in the header", path);
        goto out;
    }
    end += 8; /* the end marker, zero */
    memcpy(new + end, name ? name : "", nlen);
    put_be64(new + HDR_BACKING_OFFSET, nlen ? end : 0);
    put_be32(new + HDR_BACKING_SIZE, (uint32_t)nlen);
    r = vdisk_file_pwrite(f, new, cs, 0);
    if (r == 0)
        r = vdisk_file_flush(f);
out:
    if (r < 0 && !vdisk_last_error()[0])
        vdisk_error(-r, "%s: cannot rewrite the backing file pointer", path);
    free(old);
    free(new);
    vdisk_file_close(f);
    return r;
}
