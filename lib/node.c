/* SPDX-License-Identifier: MIT */
/*
 * The image layer: nodes of an image graph and the one data path over the
 * drivers' map() (format.h has the contract).
 *
 * A read asks map() what lies at its offset and serves each extent itself:
 * DATA from the file, ZERO as zeroes, UNALLOCATED from the backing node
 * (zeroes past its end or without one), OTHER through the driver's read().
 * A write goes to the file where map() answers DATA (an in-place write) and
 * to the driver's write() elsewhere. Backing chains (relative names, stated
 * formats, cycles, depth) are opened here, once, for every format.
 *
 * Locking: node->lock serialises drivers that are not thread safe, around
 * every callback (map and release included). The DATA mappings of such a
 * driver are pinned here (node->pins) while their I/O runs without the lock;
 * discard and write-zeroes, which may free what a mapping points to, wait
 * for the pins to drop with the lock held, so no new mapping starts.
 * Thread-safe drivers lock for themselves and pin in release() if they need to.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "node.h"

#define PIN_HANDLE ((uintptr_t)1) /* a DATA mapping pinned by this layer */

/* Largest image any format may describe: off_t must hold every offset. */
#define VDISK_MAX_SIZE ((uint64_t)INT64_MAX)

static bool driver_locked(const struct vdisk_node *n)
{
    return !(n->fmt->flags & VDISK_FORMAT_THREAD_SAFE);
}

/* Does this layer pin N's DATA mappings (its driver does not release them itself)? */
static bool layer_pins(const struct vdisk_node *n)
{
    return driver_locked(n) && !n->fmt->release;
}

static void enter(struct vdisk_node *n)
{
    if (driver_locked(n))
        pthread_mutex_lock(&n->lock);
}

static void leave(struct vdisk_node *n)
{
    if (driver_locked(n))
        pthread_mutex_unlock(&n->lock);
}

/* With the lock held: wait until no DATA mapping of N is in use. */
static void wait_pins(struct vdisk_node *n)
{
    if (!layer_pins(n) || atomic_load(&n->pins) == 0)
        return;
    pthread_mutex_lock(&n->pin_lock);
    while (atomic_load(&n->pins) > 0)
        pthread_cond_wait(&n->pin_done, &n->pin_lock);
    pthread_mutex_unlock(&n->pin_lock);
}

int vdisk_check_range(struct vdisk_node *n, const char *what, uint64_t off, uint64_t len,
                      bool write)
{
    if (write && n->read_only)
        return vdisk_error(EROFS, "%s: %s: image is open read-only", n->path, what);
    if (write && atomic_load(&n->write_refused))
        return vdisk_error(EIO, "%s: %s refused: %s", n->path, what,
                           atomic_load(&n->write_refused));
    if (off > n->size || len > n->size - off)
        return vdisk_error(ENOSPC, "%s: %s of %llu bytes at %llu is past the end (%llu bytes)",
                           n->path, what, (unsigned long long)len, (unsigned long long)off,
                           (unsigned long long)n->size);
    return 0;
}

int node_map(struct vdisk_node *n, uint64_t off, uint64_t len, unsigned flags, struct vdisk_map *m)
{
    int r;

    memset(m, 0, sizeof(*m));
    if ((flags & VDISK_MAP_WRITE) && n->guard_probe && probe_window(n->size, off, len)) {
        m->type = VDISK_MAP_OTHER; /* node_write checks what the write does to the probe */
        m->len = len;
        return 0;
    }
    if (driver_locked(n)) {
        if (!(flags & VDISK_MAP_NOWAIT))
            pthread_mutex_lock(&n->lock);
        else if (pthread_mutex_trylock(&n->lock) != 0)
            return -EAGAIN;
    }
    r = n->fmt->map(n, off, len, flags, m);
    if (r == 0 && (m->len == 0 || m->len > len || m->type > VDISK_MAP_OTHER ||
                   (m->type == VDISK_MAP_DATA && !m->file))) {
        if (m->handle && n->fmt->release)
            n->fmt->release(n, m);
        r = vdisk_error(EIO, "%s: format %s mapped %llu bytes at %llu wrongly", n->path,
                        n->fmt->name, (unsigned long long)len, (unsigned long long)off);
    }
    if (r == 0 && m->type == VDISK_MAP_DATA && layer_pins(n)) {
        atomic_fetch_add(&n->pins, 1);
        m->handle = PIN_HANDLE;
    }
    if (driver_locked(n))
        pthread_mutex_unlock(&n->lock);
    return r;
}

void node_release(struct vdisk_node *n, struct vdisk_map *m)
{
    if (!m->handle)
        return;
    if (layer_pins(n)) {
        if (atomic_fetch_sub(&n->pins, 1) == 1) {
            pthread_mutex_lock(&n->pin_lock);
            pthread_cond_broadcast(&n->pin_done);
            pthread_mutex_unlock(&n->pin_lock);
        }
    } else {
        enter(n);
        n->fmt->release(n, m);
        leave(n);
    }
    m->handle = 0;
}

int vdisk_node_read_backing(struct vdisk_node *n, void *buf, uint64_t len, uint64_t off)
{
    struct vdisk_node *b = n->backing;
    uint64_t k = 0;
    int r;

    if (b && off < b->size)
        k = b->size - off < len ? b->size - off : len;
    if (k) {
        r = vdisk_node_read(b, buf, k, off);
        if (r < 0)
            return vdisk_error_prefix(-r, "%s: backing file %s", n->path, b->path);
    }
    memset((uint8_t *)buf + k, 0, len - k);
    return 0;
}

/* Bytes of an OTHER extent, from the driver. */
static int driver_read(struct vdisk_node *n, void *buf, uint64_t len, uint64_t off)
{
    int r;

    if (!n->fmt->read)
        return vdisk_error(EIO, "%s: format %s cannot read the extent at %llu", n->path,
                           n->fmt->name, (unsigned long long)off);
    enter(n);
    r = n->fmt->read(n, buf, len, off);
    leave(n);
    return r;
}

int vdisk_node_read(struct vdisk_node *n, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;

    while (len > 0) {
        struct vdisk_map m;
        int r = node_map(n, off, len, 0, &m);

        if (r < 0)
            return r;
        switch (m.type) {
        case VDISK_MAP_DATA:
            r = vdisk_file_pread(m.file, p, m.len, m.host);
            break;
        case VDISK_MAP_ZERO:
            memset(p, 0, m.len);
            break;
        case VDISK_MAP_UNALLOCATED:
            r = vdisk_node_read_backing(n, p, m.len, off);
            break;
        case VDISK_MAP_OTHER:
            r = driver_read(n, p, m.len, off);
            break;
        }
        node_release(n, &m);
        if (r < 0)
            return r;
        p += m.len;
        off += m.len;
        len -= m.len;
    }
    return 0;
}

/* Write BUF over N's extents (no probe guard). */
static int write_extents(struct vdisk_node *n, const uint8_t *p, size_t len, uint64_t off,
                         unsigned flags)
{
    unsigned mflags = VDISK_MAP_WRITE | ((flags & VDISK_WRITE_FUA) ? VDISK_MAP_FUA : 0);
    int r = 0;

    while (len > 0 && r == 0) {
        struct vdisk_map m;

        r = node_map(n, off, len, mflags, &m);
        if (r < 0)
            break;
        if (m.type == VDISK_MAP_DATA) {
            r = vdisk_file_pwrite_alloc(m.file, p, m.len, m.host);
            m.written = r == 0;
            node_release(n, &m);
        } else {
            node_release(n, &m);
            enter(n);
            r = n->fmt->write(n, p, m.len, off, 0);
            leave(n);
        }
        p += m.len;
        off += m.len;
        len -= m.len;
    }
    /* FUA: the data and whatever metadata it depends on, once for the whole write */
    if (r == 0 && (flags & VDISK_WRITE_FUA))
        r = node_flush(n);
    return r;
}

/*
 * Does a change of [OFF, OFF+LEN) need the probe guard? Then the caller holds
 * guard_lock from the check to the end of the change: two writes that each
 * look harmless must not together make a header.
 */
static bool guarded(struct vdisk_node *n, uint64_t off, uint64_t len)
{
    return n->guard_probe && probe_window(n->size, off, len);
}

int node_write(struct vdisk_node *n, const void *buf, size_t len, uint64_t off, unsigned flags)
{
    int r;

    if (!n->fmt->write)
        return vdisk_error(EROFS, "%s: format %s cannot be written", n->path, n->fmt->name);
    if (!guarded(n, off, len))
        return write_extents(n, buf, len, off, flags);
    pthread_mutex_lock(&n->guard_lock);
    r = probe_guard(n, buf, len, off);
    if (r == 0)
        r = write_extents(n, buf, len, off, flags);
    pthread_mutex_unlock(&n->guard_lock);
    return r;
}

/* fdatasync every file of N. */
static int flush_files(struct vdisk_node *n)
{
    int r = vdisk_file_flush(n->file);

    for (unsigned i = 0; i < n->nfiles && r == 0; i++)
        r = vdisk_file_flush(n->files[i]);
    return r;
}

int node_flush(struct vdisk_node *n)
{
    int r;

    if (n->read_only)
        return 0;
    if (!n->fmt->flush)
        return flush_files(n);
    enter(n);
    r = n->fmt->flush(n);
    leave(n);
    return r;
}

int node_discard(struct vdisk_node *n, uint64_t off, uint64_t len)
{
    bool guard = guarded(n, off, len);
    int r = 0;

    if (!n->fmt->discard)
        return 0;
    if (guard) {
        pthread_mutex_lock(&n->guard_lock);
        r = probe_guard(n, NULL, len, off);
    }
    if (r == 0) {
        enter(n);
        wait_pins(n);
        r = n->fmt->discard(n, off, len);
        leave(n);
    }
    if (guard)
        pthread_mutex_unlock(&n->guard_lock);
    return r;
}

/* Write zero buffers, for drivers that cannot do better. */
static int write_zero_buffers(struct vdisk_node *n, uint64_t off, uint64_t len, unsigned flags)
{
    enum { CHUNK = 1 << 20 };
    void *zero = calloc(1, CHUNK);
    int r = 0;

    if (!zero)
        return vdisk_error(ENOMEM, "%s: out of memory", n->path);
    while (len > 0 && r == 0) {
        size_t k = len < CHUNK ? len : CHUNK;

        r = node_write(n, zero, k, off, 0);
        off += k;
        len -= k;
    }
    free(zero);
    if (r == 0 && (flags & VDISK_ZERO_FUA))
        r = node_flush(n);
    return r;
}

int node_write_zeroes(struct vdisk_node *n, uint64_t off, uint64_t len, unsigned flags)
{
    bool guard = guarded(n, off, len);
    int r = 0;

    if (guard) {
        pthread_mutex_lock(&n->guard_lock);
        r = probe_guard(n, NULL, len, off);
    }
    if (r == 0) {
        r = -ENOTSUP;
        if (n->fmt->write_zeroes) {
            enter(n);
            wait_pins(n);
            r = n->fmt->write_zeroes(n, off, len, flags);
            leave(n);
        }
    }
    if (guard)
        pthread_mutex_unlock(&n->guard_lock);
    if (r != -ENOTSUP && r != -EOPNOTSUPP)
        return r;
    if (flags & VDISK_ZERO_NO_FALLBACK)
        return vdisk_error(ENOTSUP, "%s: fast zeroing is not supported", n->path);
    return write_zero_buffers(n, off, len, flags);
}

int node_block_status(struct vdisk_node *n, uint64_t off, uint64_t len, struct vdisk_extent *ext)
{
    struct vdisk_map m;
    int r = node_map(n, off, len, 0, &m);

    if (r < 0)
        return r;
    ext->offset = off;
    ext->length = m.len;
    ext->flags = 0;
    switch (m.type) {
    case VDISK_MAP_DATA:
        /* a linear node's file is the disk: the file's holes are the disk's */
        if (n->caps & VDISK_CAP_LINEAR) {
            uint64_t end;
            bool data;

            r = vdisk_file_extent(m.file, m.host, m.host + m.len, &data, &end);
            if (r == 0) {
                ext->length = end - m.host;
                ext->flags = data ? 0 : VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO;
            }
        }
        break;
    case VDISK_MAP_ZERO:
        ext->flags = VDISK_EXTENT_ZERO | VDISK_EXTENT_HOLE;
        break;
    case VDISK_MAP_UNALLOCATED:
        ext->flags = VDISK_EXTENT_ZERO | VDISK_EXTENT_HOLE;
        if (n->backing && off < n->backing->size) {
            struct vdisk_extent b;
            uint64_t k = n->backing->size - off < m.len ? n->backing->size - off : m.len;

            r = node_block_status(n->backing, off, k, &b);
            if (r < 0)
                r = vdisk_error_prefix(-r, "%s: backing file %s", n->path, n->backing->path);
            ext->length = b.length;
            ext->flags = b.flags;
        }
        break;
    case VDISK_MAP_OTHER:
        break;
    }
    node_release(n, &m);
    if (r == 0 && (ext->length == 0 || ext->length > len))
        r = vdisk_error(EIO, "%s: format %s returned a bad extent", n->path, n->fmt->name);
    return r;
}

int node_cache(struct vdisk_node *n, uint64_t off, uint64_t len)
{
    while (len > 0) {
        struct vdisk_map m;
        int r = node_map(n, off, len, 0, &m);

        if (r < 0)
            return r;
        if (m.type == VDISK_MAP_DATA && !m.file->direct)
            (void)posix_fadvise(m.file->fd_buffered, (off_t)m.host, (off_t)m.len,
                                POSIX_FADV_WILLNEED);
        else if (m.type == VDISK_MAP_UNALLOCATED && n->backing && off < n->backing->size)
            r = node_cache(n->backing, off,
                           n->backing->size - off < m.len ? n->backing->size - off : m.len);
        node_release(n, &m);
        if (r < 0)
            return r;
        off += m.len;
        len -= m.len;
    }
    return 0;
}

/* ---- the graph ---- */

char *vdisk_node_resolve(const struct vdisk_node *n, const char *path)
{
    const char *base = n->path;
    char *dir, *copy, *out = NULL;

    if (path[0] == '/')
        return strdup(path);
    copy = strdup(base);
    if (!copy)
        return NULL;
    dir = dirname(copy);
    if (asprintf(&out, "%s/%s", dir, path) < 0)
        out = NULL;
    free(copy);
    return out;
}

/* Open PATH in N's mode (plus EXTRA file flags), not locked yet. */
static int open_unlocked(struct vdisk_node *n, const char *path, unsigned extra,
                         struct vdisk_file **filep)
{
    unsigned fflags = extra;

    if (n->read_only)
        fflags |= VDISK_FILE_RDONLY;
    if (n->flags & VDISK_OPEN_DIRECT)
        fflags |= VDISK_FILE_DIRECT;
    if (n->flags & VDISK_OPEN_UNSAFE)
        fflags |= VDISK_FILE_UNSAFE;
    return vdisk_file_open(path, fflags, filep);
}

/* Take the QEMU-compatible lock on FILE for N's mode; closes FILE on failure. */
static int lock_file(struct vdisk_node *n, struct vdisk_file **filep)
{
    int r;

    if (n->flags & VDISK_OPEN_NOLOCK)
        return 0;
    r = vdisk_file_lock(*filep, !n->read_only);
    if (r < 0) {
        vdisk_file_close(*filep);
        *filep = NULL;
    }
    return r;
}

/* Open PATH for node N with N's mode, locked as N's files are. */
static int open_file(struct vdisk_node *n, const char *path, struct vdisk_file **filep)
{
    int r = open_unlocked(n, path, 0, filep);

    return r < 0 ? r : lock_file(n, filep);
}

/* Add FILE to N's files. */
static int keep_file(struct vdisk_node *n, struct vdisk_file *file)
{
    struct vdisk_file **f = realloc(n->files, (n->nfiles + 1) * sizeof(*f));

    if (!f)
        return vdisk_error(ENOMEM, "%s: out of memory", n->path);
    f[n->nfiles++] = file;
    n->files = f;
    return 0;
}

int vdisk_node_open_file(struct vdisk_node *n, const char *name, struct vdisk_file **filep)
{
    char *path = vdisk_node_resolve(n, name);
    int r;

    if (!path)
        return vdisk_error(ENOMEM, "%s: out of memory", n->path);
    r = open_file(n, path, filep);
    if (r == 0) {
        r = keep_file(n, *filep);
        if (r < 0)
            vdisk_file_close(*filep);
    }
    free(path);
    return r;
}

int vdisk_node_create_file(struct vdisk_node *n, const char *name, struct vdisk_file **filep)
{
    char *path = vdisk_node_resolve(n, name);
    int r;

    if (!path)
        return vdisk_error(ENOMEM, "%s: out of memory", n->path);
    r = open_unlocked(n, path, VDISK_FILE_CREATE, filep);
    if (r == 0) {
        r = keep_file(n, *filep);
        if (r < 0) {
            vdisk_file_close(*filep);
            unlink(path);
        }
    }
    free(path);
    return r;
}

int vdisk_node_open_backing(struct vdisk_node *n, const char *name, const char *format)
{
    const struct vdisk_format *fmt;
    unsigned flags = VDISK_OPEN_RDONLY | (n->flags & (VDISK_OPEN_DIRECT | VDISK_OPEN_NOLOCK));
    char *path, *real;
    int r;

    if (n->backing) /* given, already open (an overlay over an open node: node_open_over) */
        return 0;
    path = vdisk_node_resolve(n, name);
    if (!path)
        return vdisk_error(ENOMEM, "%s: out of memory", n->path);
    real = realpath(path, NULL);
    if (!real) {
        r = vdisk_error(errno, "%s: backing file %s: %m", n->path, path);
        free(path);
        return r;
    }
    for (struct vdisk_node *a = n; a; a = a->above) {
        if (a->real && strcmp(a->real, real) == 0) {
            r = vdisk_error(ELOOP, "%s: backing chain has a cycle through %s", n->path, real);
            goto out;
        }
    }
    if (n->depth >= VDISK_MAX_CHAIN) {
        r = vdisk_error(ELOOP, "%s: backing chain deeper than %d images", n->path, VDISK_MAX_CHAIN);
        goto out;
    }
    if (!format) {
        r = vdisk_error(EINVAL,
                        "%s: backing file %s has no stated format: give it (e.g. -o "
                        "backing_fmt=raw; vdisk never probes a backing file)",
                        n->path, name);
        goto out;
    }
    fmt = vdisk_format_find(format);
    if (!fmt) {
        r = vdisk_error(ENOTSUP, "%s: backing file %s: unknown format '%s'", n->path, name, format);
        goto out;
    }
    r = node_open(path, fmt, flags, NULL, n, &n->backing);
    if (r < 0 && r != -ELOOP) /* a loop's message already names the images */
        r = vdisk_error_prefix(-r, "%s: backing file %s", n->path, path);
out:
    free(real);
    free(path);
    return r;
}

/* Free N itself (its driver closed, its children gone). */
static void node_free(struct vdisk_node *n)
{
    for (unsigned i = 0; i < n->nfiles; i++)
        vdisk_file_close(n->files[i]);
    free(n->files);
    vdisk_file_close(n->file);
    vdisk_options_free(&n->opts);
    pthread_mutex_destroy(&n->lock);
    pthread_mutex_destroy(&n->guard_lock);
    pthread_mutex_destroy(&n->pin_lock);
    pthread_cond_destroy(&n->pin_done);
    free(n->real);
    free(n->path);
    free(atomic_load(&n->write_refused));
    free(n);
}

/* A node for PATH with no file or driver yet. */
static int node_new(const char *path, unsigned flags, struct vdisk_node *above,
                    struct vdisk_node **np)
{
    struct vdisk_node *n = calloc(1, sizeof(*n));

    if (!n)
        return vdisk_error(ENOMEM, "%s: out of memory", path);
    n->path = strdup(path);
    if (!n->path) {
        free(n);
        return vdisk_error(ENOMEM, "%s: out of memory", path);
    }
    n->flags = flags;
    n->read_only = flags & VDISK_OPEN_RDONLY;
    n->above = above;
    n->depth = above ? above->depth + 1 : 0;
    pthread_mutex_init(&n->lock, NULL);
    pthread_mutex_init(&n->guard_lock, NULL);
    pthread_mutex_init(&n->pin_lock, NULL);
    pthread_cond_init(&n->pin_done, NULL);
    *np = n;
    return 0;
}

/* Probe N's file; refuse a file remembered as another format (written through its disk?). */
static int probe_node(struct vdisk_node *n)
{
    const struct vdisk_format *was = probe_remembered(n->file), *fmt = NULL;
    int r = probe_file(n->file, &fmt);

    if (r < 0)
        return r;
    if (was && was != fmt)
        return vdisk_error(EPERM,
                           "%s: vdisk served this file as %s, but it now looks like a %s "
                           "image (written through its own disk?); give -f %s to open it as "
                           "before, or -f %s if you changed it on purpose",
                           n->path, was->name, fmt->name, was->name, fmt->name);
    n->fmt = fmt;
    return 0;
}

/* node_open, with BACKING (or NULL) as the node's backing node before its driver opens. */
static int open_node(const char *path, const struct vdisk_format *fmt, unsigned flags,
                     const char *options, struct vdisk_node *above, struct vdisk_node *backing,
                     struct vdisk_node **np)
{
    struct vdisk_node *n = NULL;
    int r = node_new(path, flags, above, &n);

    if (r < 0)
        return r;
    n->backing = backing;
    n->fmt = fmt;
    n->probed = !fmt;
    if (fmt && (fmt->caps & VDISK_CAP_READ_ONLY))
        n->read_only = true;
    r = open_unlocked(n, path, 0, &n->file);
    if (r < 0)
        goto err;
    if (!fmt) {
        r = probe_node(n);
        if (r < 0)
            goto err;
        if ((n->fmt->caps & VDISK_CAP_READ_ONLY) && !n->read_only) {
            /* the format can never be written: reopen read-only */
            n->read_only = true;
            vdisk_file_close(n->file);
            n->file = NULL;
            r = open_unlocked(n, path, 0, &n->file);
            if (r < 0)
                goto err;
        }
    }
    r = vdisk_options_parse(options, n->fmt->open_options, n->fmt->name, &n->opts);
    if (r < 0)
        goto err;
    r = lock_file(n, &n->file);
    if (r < 0)
        goto err;
    n->caps = n->fmt->caps;
    n->real = realpath(path, NULL);
    r = n->fmt->open(n);
    if (r < 0)
        goto err;
    if (n->size > VDISK_MAX_SIZE) {
        r = vdisk_error(EFBIG, "%s: virtual size %llu is too large", path,
                        (unsigned long long)n->size);
        n->fmt->close(n);
        goto err;
    }
    /* data after a header (linear_offset > 0), or in another file than the probed one
     * (linear_file), cannot rewrite what the file probes as */
    n->guard_probe = n->probed && (n->caps & VDISK_CAP_LINEAR) && n->linear_offset == 0 &&
                     !n->linear_file && !n->read_only;
    *np = n;
    return 0;

err:
    if (n->backing != backing) /* a given backing node stays the caller's */
        node_close(n->backing);
    node_free(n);
    return r;
}

int node_open(const char *path, const struct vdisk_format *fmt, unsigned flags, const char *options,
              struct vdisk_node *above, struct vdisk_node **np)
{
    return open_node(path, fmt, flags, options, above, NULL, np);
}

int node_open_over(const char *path, const struct vdisk_format *fmt, unsigned flags,
                   const char *options, struct vdisk_node *backing, struct vdisk_node **np)
{
    int r = open_node(path, fmt, flags, options, NULL, backing, np);

    if (r == 0)
        backing->above = *np;
    return r;
}

void node_close(struct vdisk_node *n)
{
    if (!n)
        return;
    n->fmt->close(n);
    node_close(n->backing);
    node_free(n);
}
