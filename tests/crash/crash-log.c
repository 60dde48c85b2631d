/* SPDX-License-Identifier: MIT */
/* Reading the I/O record log and applying its operations (crash-log.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crash-log.h"

/* (pid, id) of a recording process -> index in log->files */
struct idmap {
    uint32_t pid, id, file;
};

/* The file named PATH (LEN bytes), added if new; -1 when too many. */
static int file_by_path(struct crash_log *log, const char *path, size_t len)
{
    struct crash_file *f;
    const char *slash;

    for (unsigned i = 0; i < log->nfiles; i++)
        if (strlen(log->files[i].path) == len && memcmp(log->files[i].path, path, len) == 0)
            return (int)i;
    if (log->nfiles == CRASH_MAX_FILES)
        return -1;
    f = &log->files[log->nfiles];
    f->path = strndup(path, len);
    if (!f->path)
        return -1;
    slash = strrchr(f->path, '/');
    f->base = slash ? slash + 1 : f->path;
    return (int)log->nfiles++;
}

/* Make room for SIZE bytes of durable content. */
static int grow(struct crash_file *f, uint64_t size)
{
    if (size > f->dcap) {
        uint64_t cap = f->dcap ? f->dcap : 1 << 20;
        uint8_t *p;

        while (cap < size)
            cap *= 2;
        p = realloc(f->dur, cap);
        if (!p)
            return -ENOMEM;
        f->dur = p;
        f->dcap = cap;
    }
    if (size > f->dsize) {
        memset(f->dur + f->dsize, 0, size - f->dsize);
        f->dsize = size;
    }
    return 0;
}

int crash_file_apply(struct crash_file *f, const struct crash_op *op)
{
    uint64_t end = op->off + op->len;
    int r;

    switch (op->type) {
    case VDISK_REC_WRITE:
        if ((r = grow(f, end)) < 0)
            return r;
        memcpy(f->dur + op->off, op->data, op->len);
        return 0;
    case VDISK_REC_ZERO: /* KEEP_SIZE: only inside the file */
        if (op->off < f->dsize)
            memset(f->dur + op->off, 0, (end < f->dsize ? end : f->dsize) - op->off);
        return 0;
    case VDISK_REC_ZERO_EXT:
        if ((r = grow(f, end)) < 0)
            return r;
        memset(f->dur + op->off, 0, op->len);
        return 0;
    case VDISK_REC_TRUNCATE:
        if (op->len >= f->dsize)
            return grow(f, op->len);
        if (!op->aux) /* aux 1: preallocation only grows */
            f->dsize = op->len;
        return 0;
    }
    return 0;
}

int crash_fd_apply(int fd, uint64_t *size, const struct crash_op *op)
{
    uint64_t end = op->off + op->len;

    switch (op->type) {
    case VDISK_REC_WRITE:
        if (pwrite(fd, op->data, op->len, (off_t)op->off) != (ssize_t)op->len)
            return -EIO;
        if (end > *size)
            *size = end;
        return 0;
    case VDISK_REC_ZERO:
        if (op->off >= *size)
            return 0;
        if (end > *size)
            end = *size;
        return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)op->off,
                         (off_t)(end - op->off)) < 0
                   ? -errno
                   : 0;
    case VDISK_REC_ZERO_EXT:
        if (end > *size) {
            if (ftruncate(fd, (off_t)end) < 0)
                return -errno;
            *size = end;
        }
        return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)op->off,
                         (off_t)op->len) < 0
                   ? -errno
                   : 0;
    case VDISK_REC_TRUNCATE:
        if (op->aux && op->len <= *size)
            return 0;
        if (ftruncate(fd, (off_t)op->len) < 0)
            return -errno;
        *size = op->len;
        return 0;
    }
    return 0;
}

int crash_log_load(const char *path, struct crash_log *log)
{
    struct idmap map[256];
    unsigned nmap = 0;
    size_t cap = 0, pos = 8;
    struct stat st;
    int fd, r = 0;

    memset(log, 0, sizeof(*log));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        fprintf(stderr, "crash-check: %s: %m\n", path);
        if (fd >= 0)
            close(fd);
        return -errno;
    }
    log->size = st.st_size;
    log->map = log->size ? mmap(NULL, log->size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    close(fd);
    if (log->map == MAP_FAILED || log->size < 8 || memcmp(log->map, VDISK_REC_MAGIC, 8) != 0) {
        fprintf(stderr, "crash-check: %s: not an I/O record log\n", path);
        log->map = NULL;
        return -EINVAL;
    }
    while (pos + sizeof(struct vdisk_rec) <= log->size) {
        struct vdisk_rec rec;
        struct crash_op *op;
        const uint8_t *data = log->map + pos + sizeof(rec);
        size_t dlen = 0;
        int file = -1;

        memcpy(&rec, log->map + pos, sizeof(rec));
        if (rec.type == VDISK_REC_FILE || rec.type == VDISK_REC_SNAP || rec.type == VDISK_REC_WRITE)
            dlen = rec.len;
        if (dlen > log->size - pos - sizeof(rec)) {
            fprintf(stderr, "crash-check: %s: truncated record at %zu\n", path, pos);
            r = -EINVAL;
            break;
        }
        if (rec.type == VDISK_REC_FILE) {
            file = file_by_path(log, (const char *)data, dlen);
            if (file < 0 || nmap == 256) {
                r = -E2BIG;
                break;
            }
            map[nmap++] = (struct idmap){rec.pid, rec.file, (uint32_t)file};
        } else if (rec.type != VDISK_REC_MARK) {
            for (unsigned i = nmap; i-- > 0;)
                if (map[i].pid == rec.pid && map[i].id == rec.file) {
                    file = (int)map[i].file;
                    break;
                }
            for (unsigned i = nmap; file < 0 && i-- > 0;) /* a forked child: its parent's ids */
                if (map[i].id == rec.file)
                    file = (int)map[i].file;
            if (file < 0) {
                fprintf(stderr, "crash-check: %s: record of an unknown file at %zu\n", path, pos);
                r = -EINVAL;
                break;
            }
        }
        if (rec.type == VDISK_REC_SNAP) {
            struct crash_file *f = &log->files[file];

            if (!f->snapped) { /* a later process's snapshot is the live state: the log has it */
                struct crash_op o = {
                    .type = VDISK_REC_WRITE, .off = 0, .len = rec.len, .data = data};

                f->snapped = true;
                f->dsize = 0;
                if ((r = crash_file_apply(f, &o)) < 0)
                    break;
            }
        } else if (rec.type != VDISK_REC_FILE) {
            if (log->nops == cap) {
                cap = cap ? cap * 2 : 4096;
                op = realloc(log->ops, cap * sizeof(*op));
                if (!op) {
                    r = -ENOMEM;
                    break;
                }
                log->ops = op;
            }
            op = &log->ops[log->nops];
            *op = (struct crash_op){.type = rec.type,
                                    .file = file < 0 ? 0 : (uint32_t)file,
                                    .off = rec.off,
                                    .len = rec.len,
                                    .aux = rec.aux,
                                    .at = pos,
                                    .data = dlen ? data : NULL};
            if (file >= 0) {
                struct crash_file *f = &log->files[file];

                if (f->nops == f->cap) {
                    size_t *p = realloc(f->ops, (f->cap ? f->cap * 2 : 1024) * sizeof(*p));

                    if (!p) {
                        r = -ENOMEM;
                        break;
                    }
                    f->ops = p;
                    f->cap = f->cap ? f->cap * 2 : 1024;
                }
                f->ops[f->nops++] = log->nops;
            }
            log->nops++;
        }
        pos += sizeof(rec) + dlen;
    }
    if (r < 0)
        crash_log_free(log);
    return r;
}

void crash_log_free(struct crash_log *log)
{
    for (unsigned i = 0; i < log->nfiles; i++) {
        free(log->files[i].path);
        free(log->files[i].dur);
        free(log->files[i].ops);
    }
    free(log->ops);
    if (log->map)
        munmap(log->map, log->size);
    memset(log, 0, sizeof(*log));
}
