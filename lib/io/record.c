/* SPDX-License-Identifier: MIT */
/*
 * Test-only I/O hook: the write log for power-cut simulation and fault
 * injection (record.h). One mutex orders the log; records are appended with
 * write(2) to an O_APPEND file so that several processes may share it.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "file.h"
#include "record.h"

#define MAX_RULES 16
#define MAX_FILES 64
#define SNAP_MAX  (1ull << 30) /* larger files are not snapshotted (not recorded) */

struct rule {
    enum { R_READ, R_WRITE, R_FLUSH, R_GROW, R_ZERO } op;
    int err; /* errno, or 0 for a short write */
    unsigned nth, count, seen, fired;
};

volatile int vdisk_io_hooked;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = -1;
static char *log_path;
static dev_t log_dev;
static ino_t log_ino;
static char *paths[MAX_FILES + 1];
static unsigned nfiles;
static struct rule rules[MAX_RULES];
static unsigned nrules;
static char *arm_path;
static __thread uint64_t flush_mark;

/*
 * Open the log at PATH, on a high descriptor: a forked server closes or reuses
 * the low ones (vdisk's server keeps 0-3).
 */
static int log_open(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600), hi;
    struct stat st;

    if (fd < 0)
        return -errno;
    hi = fcntl(fd, F_DUPFD_CLOEXEC, 512);
    if (hi >= 0) {
        close(fd);
        fd = hi;
    }
    if (fstat(fd, &st) < 0) {
        close(fd);
        return -errno;
    }
    log_dev = st.st_dev;
    log_ino = st.st_ino;
    return fd;
}

/* Is log_fd still the log? A forked process may have closed it: open it again (lock held). */
static bool log_ours(void)
{
    struct stat st;

    if (fstat(log_fd, &st) == 0 && st.st_dev == log_dev && st.st_ino == log_ino)
        return true;
    log_fd = log_path ? log_open(log_path) : -1; /* never close: the number is someone else's */
    return log_fd >= 0;
}

/* Append one record and its bytes (lock held). */
static void put(uint32_t type, uint32_t file, uint64_t off, uint64_t len, uint64_t aux,
                const void *data, size_t dlen)
{
    struct vdisk_rec r = {
        .type = type, .file = file, .off = off, .len = len, .aux = aux, .pid = (uint32_t)getpid()};
    struct iovec iov[2] = {{&r, sizeof(r)}, {(void *)data, dlen}};
    size_t want = sizeof(r) + dlen;
    ssize_t n;

    if (log_fd < 0 || !log_ours())
        return;
    n = writev(log_fd, iov, data ? 2 : 1);
    if (n < 0 || (size_t)n != want) { /* a torn log would lie: stop recording */
        fprintf(stderr, "vdisk: io record: log write failed, recording stopped\n");
        close(log_fd);
        log_fd = -1;
        return;
    }
}

/* The id of PATH in the log, 0 if the log is full (lock held). */
static unsigned file_id(const char *path, bool *fresh)
{
    *fresh = false;
    for (unsigned i = 1; i <= nfiles; i++)
        if (strcmp(paths[i], path) == 0)
            return i;
    if (nfiles == MAX_FILES || !(paths[nfiles + 1] = strdup(path)))
        return 0;
    *fresh = true;
    return ++nfiles;
}

void vdisk_io_opened(struct vdisk_file *f)
{
    char *path = realpath(f->path, NULL), *buf;
    const char *name = path ? path : f->path;
    bool fresh;
    struct stat st;

    pthread_mutex_lock(&lock);
    if (log_fd < 0 || f->read_only || f->is_block_device)
        goto out;
    f->rec_id = (int)file_id(name, &fresh);
    if (!f->rec_id || !fresh)
        goto out;
    put(VDISK_REC_FILE, f->rec_id, 0, strlen(name), 0, name, strlen(name));
    if (fstat(f->fd_buffered, &st) < 0 || (uint64_t)st.st_size > SNAP_MAX ||
        !(buf = calloc(1, st.st_size ? st.st_size : 1))) {
        f->rec_id = 0;
        goto out;
    }
    if (pread(f->fd_buffered, buf, st.st_size, 0) == st.st_size)
        put(VDISK_REC_SNAP, f->rec_id, 0, st.st_size, 0, buf, st.st_size);
    else
        f->rec_id = 0;
    free(buf);
out:
    pthread_mutex_unlock(&lock);
    free(path);
}

/* Does a rule for OP match this call (grow: it extends the file)? */
static bool matches(const struct rule *r, struct vdisk_file *f, enum vdisk_io_op op, uint64_t len,
                    uint64_t off)
{
    struct stat st;

    switch (r->op) {
    case R_READ:
        return op == VDISK_IO_READ;
    case R_WRITE:
        return op == VDISK_IO_WRITE;
    case R_FLUSH:
        return op == VDISK_IO_FLUSH;
    case R_ZERO:
        return op == VDISK_IO_ZERO || op == VDISK_IO_PUNCH || op == VDISK_IO_ZERO_EXT;
    case R_GROW:
        if (op == VDISK_IO_TRUNCATE)
            off = 0;
        else if (op != VDISK_IO_WRITE && op != VDISK_IO_ZERO_EXT && op != VDISK_IO_ALLOC)
            return false;
        return fstat(f->fd_buffered, &st) == 0 && off + len > (uint64_t)st.st_size;
    }
    return false;
}

int vdisk_io_before(struct vdisk_file *f, enum vdisk_io_op op, const void *buf, uint64_t len,
                    uint64_t off)
{
    int ret = 0;

    pthread_mutex_lock(&lock);
    if (op == VDISK_IO_FLUSH && log_fd >= 0 && log_ours()) {
        off_t end = lseek(log_fd, 0, SEEK_END);

        flush_mark = end > 0 ? (uint64_t)end : 0;
    }
    if (nrules && (!arm_path || access(arm_path, F_OK) == 0)) {
        for (unsigned i = 0; i < nrules && ret == 0; i++) {
            struct rule *r = &rules[i];

            if (!matches(r, f, op, len, off) || ++r->seen < r->nth)
                continue;
            if (r->count && r->seen >= r->nth + r->count)
                continue;
            r->fired++;
            ret = r->err ? -r->err : 0;
            if (!r->err && op == VDISK_IO_WRITE && len > 1) { /* short: half now */
                size_t part = len / 2 > 512 ? (len / 2) & ~(size_t)511 : len / 2;
                ssize_t n = pwrite(f->fd_buffered, buf, part, (off_t)off);

                if (n > 0 && f->rec_id)
                    put(VDISK_REC_WRITE, f->rec_id, off, (uint64_t)n, 0, buf, (size_t)n);
                ret = n > 0 ? (int)n : 0;
            }
        }
    }
    pthread_mutex_unlock(&lock);
    return ret;
}

void vdisk_io_after(struct vdisk_file *f, enum vdisk_io_op op, const void *buf, uint64_t len,
                    uint64_t off)
{
    static const uint32_t type[] = {
        [VDISK_IO_WRITE] = VDISK_REC_WRITE,       [VDISK_IO_ZERO] = VDISK_REC_ZERO,
        [VDISK_IO_PUNCH] = VDISK_REC_ZERO,        [VDISK_IO_ZERO_EXT] = VDISK_REC_ZERO_EXT,
        [VDISK_IO_TRUNCATE] = VDISK_REC_TRUNCATE, [VDISK_IO_ALLOC] = VDISK_REC_ZERO_EXT,
        [VDISK_IO_FLUSH] = VDISK_REC_FLUSH,
    };

    if (!f->rec_id || op == VDISK_IO_READ)
        return;
    pthread_mutex_lock(&lock);
    if (op == VDISK_IO_FLUSH)
        put(VDISK_REC_FLUSH, f->rec_id, 0, 0, flush_mark, NULL, 0);
    else if (op == VDISK_IO_ALLOC) /* posix_fallocate: zeroes only where there were none */
        put(VDISK_REC_TRUNCATE, f->rec_id, 0, off + len, 1, NULL, 0);
    else
        put(type[op], f->rec_id, off, len, 0, op == VDISK_IO_WRITE ? buf : NULL,
            op == VDISK_IO_WRITE ? len : 0);
    pthread_mutex_unlock(&lock);
}

static void update_hooked(void)
{
    vdisk_io_hooked = log_fd >= 0 || nrules > 0;
}

int vdisk_io_record_start(const char *path)
{
    int fd = log_open(path);
    struct stat st;

    if (fd < 0)
        return fd;
    pthread_mutex_lock(&lock);
    if (log_fd >= 0)
        close(log_fd);
    log_fd = fd;
    free(log_path);
    log_path = strdup(path);
    if (fstat(fd, &st) == 0 && st.st_size == 0 &&
        write(fd, VDISK_REC_MAGIC, 8) != 8) { /* nothing to do: put() notices */
    }
    for (unsigned i = 1; i <= nfiles; i++)
        free(paths[i]);
    nfiles = 0;
    update_hooked();
    pthread_mutex_unlock(&lock);
    return 0;
}

void vdisk_io_record_stop(void)
{
    pthread_mutex_lock(&lock);
    if (log_fd >= 0)
        close(log_fd);
    log_fd = -1;
    free(log_path);
    log_path = NULL;
    update_hooked();
    pthread_mutex_unlock(&lock);
}

void vdisk_io_record_mark(uint64_t type, uint64_t a, uint64_t b)
{
    pthread_mutex_lock(&lock);
    put(VDISK_REC_MARK, 0, a, b, type, NULL, 0);
    pthread_mutex_unlock(&lock);
}

/* An errno name this layer injects, or -1. */
static int err_of(const char *s)
{
    if (strcmp(s, "EIO") == 0)
        return EIO;
    if (strcmp(s, "ENOSPC") == 0)
        return ENOSPC;
    if (strcmp(s, "EDQUOT") == 0)
        return EDQUOT;
    if (strcmp(s, "short") == 0)
        return 0;
    return -1;
}

int vdisk_io_fault_add(const char *spec)
{
    static const char *const ops[] = {"read", "write", "flush", "grow", "zero"};
    char *copy = strdup(spec), *save = NULL, *tok;
    int ret = 0;

    if (!copy)
        return -ENOMEM;
    pthread_mutex_lock(&lock);
    for (tok = strtok_r(copy, ",", &save); tok && ret == 0; tok = strtok_r(NULL, ",", &save)) {
        char op[16], err[16];
        unsigned nth = 1, count = 1, i;
        int n = sscanf(tok, "%15[a-z]:%15[A-Za-z]:%u:%u", op, err, &nth, &count);

        for (i = 0; i < 5 && n >= 2 && strcmp(op, ops[i]) != 0; i++)
            ;
        if (n < 2 || i == 5 || err_of(err) < 0 || nth == 0 || nrules == MAX_RULES) {
            ret = -EINVAL;
            break;
        }
        rules[nrules++] = (struct rule){.op = i, .err = err_of(err), .nth = nth, .count = count};
    }
    update_hooked();
    pthread_mutex_unlock(&lock);
    free(copy);
    return ret;
}

void vdisk_io_fault_clear(void)
{
    pthread_mutex_lock(&lock);
    nrules = 0;
    update_hooked();
    pthread_mutex_unlock(&lock);
}

unsigned vdisk_io_fault_fired(void)
{
    unsigned n = 0;

    pthread_mutex_lock(&lock);
    for (unsigned i = 0; i < nrules; i++)
        n += rules[i].fired;
    pthread_mutex_unlock(&lock);
    return n;
}

/* The environment switches (record.h), read once when the library loads. */
__attribute__((constructor)) static void record_init(void)
{
    const char *rec = getenv("VDISK_IO_RECORD"), *fault = getenv("VDISK_IO_FAULT");
    const char *arm = getenv("VDISK_IO_FAULT_ARM");

    if (rec && *rec && vdisk_io_record_start(rec) < 0)
        fprintf(stderr, "vdisk: VDISK_IO_RECORD=%s: cannot open the log\n", rec);
    if (fault && *fault && vdisk_io_fault_add(fault) < 0)
        fprintf(stderr, "vdisk: VDISK_IO_FAULT=%s: invalid (OP:ERR[:NTH[:COUNT]])\n", fault);
    if (arm && *arm)
        arm_path = strdup(arm);
}
