/* SPDX-License-Identifier: MIT */
/* Reading qcow2 compressed clusters (deflate or zstd). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "../error.h"
#include "qcow2.h"

/* Inflate a compressed cluster (entry E) into OUT (one cluster). */
static int decompress(struct qcow2 *s, uint64_t e, uint8_t *out)
{
    unsigned x = 62 - (s->cluster_bits - 8);
    uint64_t host = e & ((1ull << x) - 1);
    uint64_t nsec = ((e >> x) & ((1ull << (s->cluster_bits - 8)) - 1)) + 1;
    uint64_t csize = nsec * 512 - (host & 511);
    uint8_t *in;
    int r = 0;

    if (host >= s->file_size)
        return vdisk_error(EIO, "%s: compressed cluster at %llu is past the end", s->node->path,
                           (unsigned long long)host);
    if (csize > s->file_size - host)
        csize = s->file_size - host;
    in = malloc(csize);
    if (!in)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    r = vdisk_file_pread(s->file, in, csize, host);
    if (r < 0)
        goto out;
    if (s->compression == 0) {
        z_stream z = {0};
        int zr;

        if (inflateInit2(&z, -12) != Z_OK) {
            r = vdisk_error(ENOMEM, "%s: zlib init failed", s->node->path);
            goto out;
        }
        z.next_in = in;
        z.avail_in = (uInt)csize;
        z.next_out = out;
        z.avail_out = (uInt)s->cluster_size;
        zr = inflate(&z, Z_FINISH);
        if (zr != Z_STREAM_END && !(zr == Z_BUF_ERROR && z.avail_out == 0))
            r = -1;
        if (z.avail_out != 0)
            r = -1;
        inflateEnd(&z);
    } else {
        ZSTD_DCtx *d = ZSTD_createDCtx();
        ZSTD_inBuffer ib = {in, csize, 0};
        ZSTD_outBuffer ob = {out, s->cluster_size, 0};

        if (!d) {
            r = vdisk_error(ENOMEM, "%s: zstd init failed", s->node->path);
            goto out;
        }
        while (ob.pos < ob.size) {
            size_t zr = ZSTD_decompressStream(d, &ob, &ib);

            if (ZSTD_isError(zr) || zr == 0 || ib.pos == ib.size)
                break;
        }
        if (ob.pos != ob.size)
            r = -1;
        ZSTD_freeDCtx(d);
    }
    if (r == -1)
        r = vdisk_error(EIO, "%s: compressed cluster at %llu does not decompress", s->node->path,
                        (unsigned long long)host);
out:
    free(in);
    return r;
}

/* Bytes of a compressed cluster: [IN, IN+LEN) of the cluster with entry E. */
int qcow2_read_compressed(struct qcow2 *s, uint64_t e, uint8_t *buf, uint64_t in, uint64_t len)
{
    uint8_t *out = malloc(s->cluster_size);
    int r;

    if (!out)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    r = decompress(s, e, out);
    if (r == 0)
        memcpy(buf, out + in, len);
    free(out);
    return r;
}
