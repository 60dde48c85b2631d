/* SPDX-License-Identifier: MIT */
/*
 * qcow2 with encrypt.format=luks (crypt_method 2): a LUKS1 header and its key
 * material live in clusters of the image (the full disk encryption header
 * extension points at them; keyslot offsets are relative to it), and every
 * data cluster is encrypted with the LUKS header's cipher, the IV being the
 * *physical* 512-byte sector: host offset / 512 (qcow2.txt, "Data
 * encryption"). Metadata is never encrypted. Writes come here in whole
 * sectors (qcow2-cluster.c merges partial ones under the lock), encrypted in a
 * copy: the caller's buffer stays as it was. The engine reads whole sectors of
 * allocated clusters itself and decrypts them with qcow2_crypt_transform().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "luks.h"
#include "qcow2.h"

int qcow2_crypt_open(struct qcow2 *s)
{
    struct vdisk_node *node = s->node;
    uint8_t *vk = luks_secret_alloc(LUKS_MAX_KEY);
    struct luks_meta *m = calloc(1, sizeof(*m));
    uint64_t size;
    int r = -ENOMEM;

    if (!vk || !m || !(s->crypt = calloc(1, sizeof(*s->crypt))))
        goto out;
    r = vdisk_error(EINVAL, "%s: encrypted (LUKS) but no valid encryption header extension",
                    node->path);
    if (!s->fde_offset || (s->fde_offset & (s->cluster_size - 1)) || !s->fde_len ||
        s->fde_offset >= s->file_size)
        goto out;
    size = s->file_size - s->fde_offset;
    r = luks_read_header(s->file, node->path, s->fde_offset, size, m);
    if (r == 0 && m->sector_size != 512)
        r = vdisk_error(ENOTSUP, "%s: LUKS sector size %u inside qcow2", node->path,
                        m->sector_size);
    if (r == 0)
        r = luks_unlock(s->file, node->path, m, &node->opts, vk, NULL);
    if (r == 0)
        r = luks_cipher_init(s->crypt, m->cipher, vk, m->key_size, 512, 0);
    if (r == 0)
        snprintf(s->crypt_cipher, sizeof(s->crypt_cipher), "%s", m->cipher);
out:
    luks_secret_free(vk, LUKS_MAX_KEY);
    free(m);
    if (r == -ENOMEM)
        r = vdisk_error(ENOMEM, "%s: out of memory", node->path);
    if (r < 0) {
        free(s->crypt);
        s->crypt = NULL;
    }
    return r;
}

void qcow2_crypt_close(struct qcow2 *s)
{
    if (!s->crypt)
        return;
    luks_cipher_free(s->crypt);
    free(s->crypt);
    s->crypt = NULL;
}

/* Read LEN guest bytes whose ciphertext lies at HOST: the sectors around them, decrypted. */
int qcow2_crypt_read(struct qcow2 *s, uint8_t *buf, uint64_t len, uint64_t host)
{
    uint64_t start = host & ~511ull, end = (host + len + 511) & ~511ull;
    uint8_t *tmp;
    int r;

    if (start == host && end == host + len) {
        r = vdisk_file_pread(s->file, buf, len, host);
        return r < 0 ? r : luks_cipher_run(s->crypt, buf, len, host / 512, false);
    }
    tmp = malloc(end - start);
    if (!tmp)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    r = vdisk_file_pread(s->file, tmp, end - start, start);
    if (r == 0)
        r = luks_cipher_run(s->crypt, tmp, end - start, start / 512, false);
    if (r == 0)
        memcpy(buf, tmp + (host - start), len);
    free(tmp);
    return r;
}

/* Encrypt LEN bytes of BUF (whole sectors) into a copy and write it at HOST. */
int qcow2_crypt_write(struct qcow2 *s, const uint8_t *buf, uint64_t len, uint64_t host)
{
    uint8_t *tmp;
    int r;

    if ((host | len) & 511)
        return vdisk_error(EIO, "%s: encrypted write of part of a sector at %llu", s->node->path,
                           (unsigned long long)host);
    tmp = qcow2_alloc_buf(len);
    if (!tmp)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    memcpy(tmp, buf, len);
    r = luks_cipher_run(s->crypt, tmp, len, host / 512, true);
    if (r == 0)
        r = vdisk_file_pwrite(s->file, tmp, len, host);
    free(tmp);
    return r;
}

int qcow2_crypt_transform(struct vdisk_node *node, void *buf, size_t len, uint64_t off,
                          uint64_t host, bool write)
{
    struct qcow2 *s = node->priv;

    (void)off; /* the IV counts host sectors */
    return luks_cipher_run(s->crypt, buf, len, host / 512, write);
}
