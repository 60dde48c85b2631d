/* SPDX-License-Identifier: MIT */
/*
 * luks: LUKS1 and LUKS2 encrypted images without dm-crypt. open() reads the
 * header, derives each active keyslot's key from the passphrase (key-file= or
 * key-fd=), merges the anti-forensic stripes and checks the result against
 * the volume key digest; only a key that matches opens the image. Whole
 * sectors map DATA (transform) for the request engine, which reads them on
 * its ring and decrypts on completion; the rest maps OTHER: read() decrypts
 * and write() encrypts sector by sector (the IV is the sector number in the
 * segment's sector size, plus iv_tweak), through a bounce buffer; a write
 * that covers part of a sector reads, decrypts and merges that sector under
 * a lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "luks.h"

#define BOUNCE_MAX ((1u << 20) + 8192) /* a 1 MiB request and its partial sectors */

static const char *const luks_open_options[] = {"key-file", "key-fd", "keyslot", "no-key", NULL};
static const char *const luks_create_options[] = {
    "key-file", "key-fd",    "cipher",        "key-size",    "sector-size", "pbkdf",
    "hash",     "iter-time", "argon2-memory", "argon2-time", "argon2-cpus", NULL};

struct luks {
    struct luks_meta m;
    struct luks_cipher c;
    bool keyless;        /* no-key=on: the header only (vdisk info), no data */
    pthread_mutex_t rmw; /* partial-sector writes: read, merge, write as one */
};

static int luks_probe(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t size)
{
    (void)tail, (void)size;
    if (head_len < 8 || memcmp(head, LUKS_MAGIC, 6) != 0)
        return 0;
    return (head[6] == 0 && (head[7] == 1 || head[7] == 2)) ? 100 : 0;
}

static int luks_open(struct vdisk_node *node)
{
    struct luks *l = calloc(1, sizeof(*l));
    uint64_t file_size;
    uint8_t *vk = luks_secret_alloc(LUKS_MAX_KEY);
    int r = -ENOMEM;

    if (!l || !vk)
        goto err;
    r = vdisk_file_get_size(node->file, &file_size);
    if (r < 0)
        goto err;
    r = luks_read_header(node->file, node->path, 0, file_size, &l->m);
    if (r < 0)
        goto err;
    r = vdisk_options_get_bool(&node->opts, "no-key", false, &l->keyless);
    if (r == 0 && l->keyless && !node->read_only)
        r = vdisk_error(EINVAL, "%s: no-key=on opens the header only: read-only", node->path);
    if (r < 0)
        goto err;
    if (l->keyless)
        goto sized;
    r = luks_unlock(node->file, node->path, &l->m, &node->opts, vk, NULL);
    if (r < 0)
        goto err;
    r = luks_cipher_init(&l->c, l->m.cipher, vk, l->m.key_size, l->m.sector_size, l->m.iv_tweak);
    if (r < 0)
        goto err;
sized:
    node->size = l->m.size ? l->m.size : file_size - l->m.offset;
    node->size -= node->size % l->m.sector_size;
    pthread_mutex_init(&l->rmw, NULL);
    node->priv = l;
    luks_secret_free(vk, LUKS_MAX_KEY);
    return 0;
err:
    luks_secret_free(vk, LUKS_MAX_KEY);
    free(l);
    return r == -ENOMEM ? vdisk_error(ENOMEM, "%s: out of memory", node->path) : r;
}

static void luks_close(struct vdisk_node *node)
{
    struct luks *l = node->priv;

    if (!l)
        return;
    if (!l->keyless)
        luks_cipher_free(&l->c);
    pthread_mutex_destroy(&l->rmw);
    explicit_bzero(l, sizeof(*l));
    free(l);
    node->priv = NULL;
}

/* Whole sectors: the ciphertext, for a caller that runs luks_transform(); the rest OTHER. */
static int luks_map(struct vdisk_node *node, uint64_t off, uint64_t len, unsigned flags,
                    struct vdisk_map *m)
{
    struct luks *l = node->priv;
    uint32_t ss = l->m.sector_size;

    m->len = len;
    if (!(flags & VDISK_MAP_TRANSFORM) || off % ss || len % ss || l->keyless) {
        m->type = VDISK_MAP_OTHER;
        return 0;
    }
    m->type = VDISK_MAP_DATA;
    m->file = node->file;
    m->host = l->m.offset + off;
    m->transform = true;
    return 0;
}

/* Decrypt whole sectors read from the payload at OFF, or encrypt them before a write. */
static int luks_transform(struct vdisk_node *node, void *buf, size_t len, uint64_t off,
                          uint64_t host, bool write)
{
    struct luks *l = node->priv;

    (void)host; /* the IV counts guest sectors */
    return luks_cipher_run(&l->c, buf, len, off / l->m.sector_size, write);
}

static pthread_key_t bounce_key;
static pthread_once_t bounce_once = PTHREAD_ONCE_INIT;

static void bounce_key_init(void)
{
    pthread_key_create(&bounce_key, free);
}

/* This thread's bounce buffer (BOUNCE_MAX, aligned for O_DIRECT), kept for its next request. */
static uint8_t *bounce_get(void)
{
    void *p;

    pthread_once(&bounce_once, bounce_key_init);
    p = pthread_getspecific(bounce_key);
    if (!p && posix_memalign(&p, 4096, BOUNCE_MAX) == 0 && pthread_setspecific(bounce_key, p)) {
        free(p);
        p = NULL;
    }
    return p;
}

/* Read and decrypt whole sectors [OFF, OFF+LEN) of the payload into BUF. */
static int read_sectors(struct vdisk_node *node, uint8_t *buf, size_t len, uint64_t off)
{
    struct luks *l = node->priv;
    int r = vdisk_file_pread(node->file, buf, len, l->m.offset + off);

    return r < 0 ? r : luks_cipher_run(&l->c, buf, len, off / l->m.sector_size, false);
}

static int luks_read(struct vdisk_node *node, void *buf, size_t len, uint64_t off)
{
    struct luks *l = node->priv;
    uint32_t ss = l->m.sector_size;
    uint8_t *bounce;
    int r = 0;

    if (l->keyless)
        return vdisk_error(ENOKEY, "%s: opened without its key (no-key=on): no data to read",
                           node->path);
    if (off % ss == 0 && len % ss == 0)
        return read_sectors(node, buf, len, off); /* in place */
    bounce = bounce_get();
    if (!bounce)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    while (len && r == 0) {
        uint64_t start = off / ss * ss;
        size_t n = len < start + BOUNCE_MAX - off ? len : start + BOUNCE_MAX - off;
        size_t span = (off + n - start + ss - 1) / ss * ss;

        r = read_sectors(node, bounce, span, start);
        if (r == 0)
            memcpy(buf, bounce + (off - start), n);
        buf = (uint8_t *)buf + n, off += n, len -= n;
    }
    return r;
}

/* Encrypt and write [OFF, OFF+LEN) of SRC, merging partial sectors at its ends; within BOUNCE. */
static int write_span(struct vdisk_node *node, const uint8_t *src, size_t len, uint64_t off,
                      uint8_t *bounce)
{
    struct luks *l = node->priv;
    uint32_t ss = l->m.sector_size;
    uint64_t start = off / ss * ss, end = (off + len + ss - 1) / ss * ss;
    int r = 0;

    if (off != start)
        r = read_sectors(node, bounce, ss, start);
    if (r == 0 && (off + len) % ss && (end - ss != start || off == start))
        r = read_sectors(node, bounce + (end - ss - start), ss, end - ss);
    if (r < 0)
        return r;
    memcpy(bounce + (off - start), src, len);
    r = luks_cipher_run(&l->c, bounce, end - start, start / ss, true);
    return r < 0 ? r : vdisk_file_pwrite(node->file, bounce, end - start, l->m.offset + start);
}

static int luks_write(struct vdisk_node *node, const void *buf, size_t len, uint64_t off,
                      unsigned flags)
{
    struct luks *l = node->priv;
    uint32_t ss = l->m.sector_size;
    bool partial = off % ss || len % ss;
    size_t cap = BOUNCE_MAX;
    uint8_t *bounce = bounce_get();
    int r = 0;

    if (!bounce)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    if (partial)
        pthread_mutex_lock(&l->rmw);
    while (len && r == 0) {
        uint64_t start = off / ss * ss;
        size_t n = len < start + cap - ss - off ? len : start + cap - ss - off;

        r = write_span(node, buf, n, off, bounce);
        buf = (const uint8_t *)buf + n, off += n, len -= n;
    }
    if (partial)
        pthread_mutex_unlock(&l->rmw);
    if (r == 0 && (flags & VDISK_WRITE_FUA))
        r = vdisk_file_flush(node->file);
    return r;
}

/* `vdisk info`: what cryptsetup luksDump would say first (never the key). */
static int luks_get_info(struct vdisk_node *node, struct vdisk_info *info)
{
    struct luks *l = node->priv;

    vdisk_info_add(info, "luks_version", "%d", l->m.version);
    vdisk_info_add(info, "cipher", "%s", l->m.cipher);
    vdisk_info_add(info, "key_bits", "%u", l->m.key_size * 8);
    vdisk_info_add(info, "sector_size", "%u", l->m.sector_size);
    vdisk_info_add(info, "payload_offset", "%llu", (unsigned long long)l->m.offset);
    vdisk_info_add(info, "uuid", "%s", l->m.uuid);
    if (l->keyless)
        vdisk_info_add(info, "key", "not given: header fields only");
    for (int i = 0; i < l->m.nslots; i++) {
        const struct luks_slot *s = &l->m.slots[i];
        char key[32];

        snprintf(key, sizeof(key), "keyslot_%d", s->id);
        if (s->kdf.type == LUKS_KDF_PBKDF2)
            vdisk_info_add(info, key, "pbkdf2 %s, %u iterations", s->kdf.hash, s->kdf.iterations);
        else
            vdisk_info_add(info, key, "%s, time %u, memory %u KiB, %u threads",
                           s->kdf.type == LUKS_KDF_ARGON2I ? "argon2i" : "argon2id", s->kdf.time,
                           s->kdf.memory, s->kdf.cpus);
    }
    return 0;
}

const struct vdisk_format vdisk_format_luks = {
    .name = "luks",
    .flags = VDISK_FORMAT_THREAD_SAFE,
    .caps = VDISK_CAP_THREAD_SAFE,
    .create_options = luks_create_options,
    .open_options = luks_open_options,
    .probe = luks_probe,
    .create = luks_create,
    .open = luks_open,
    .close = luks_close,
    .map = luks_map,
    .transform = luks_transform,
    .read = luks_read,
    .write = luks_write,
    .get_info = luks_get_info,
};
