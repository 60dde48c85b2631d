/* SPDX-License-Identifier: MIT */
/*
 * Records of open disks: one file per disk, RUN_DIR/<id>.rec, "key=value"
 * lines, replaced atomically. The id is a hash of the canonical image path,
 * as the seed's instance id is a hash of the file path.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdisk.h"

const char *run_dir(void)
{
    const char *d = getenv("VDISK_RUN_DIR");

    return d && *d ? d : VDISK_RUN_DIR_DEFAULT;
}

/*
 * Create the run directory (root only) if needed: 0700, ours. A symlink or a
 * directory of another user in its place is refused (it could steer records,
 * sockets and logs elsewhere); group or other access we left is taken away.
 */
static int ensure_run_dir(void)
{
    struct stat st;
    int fd;

    if (mkdir(run_dir(), 0700) < 0 && errno != EEXIST) {
        if ((errno == EACCES || errno == EPERM) && geteuid() != 0)
            return err("must be root (%s: %m)", run_dir());
        return err("%s: %m", run_dir());
    }
    fd = open(run_dir(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP || errno == ENOTDIR)
            return err("%s: not a directory (a symlink?): refused", run_dir());
        if ((errno == EACCES || errno == EPERM) && geteuid() != 0)
            return err("must be root (%s: %m)", run_dir());
        return err("%s: %m", run_dir());
    }
    if (fstat(fd, &st) < 0 || st.st_uid != geteuid()) {
        close(fd);
        return err("%s: owned by uid %u, not by us: refused", run_dir(), (unsigned)st.st_uid);
    }
    if ((st.st_mode & 077) && fchmod(fd, 0700) < 0) {
        close(fd);
        return err("%s: chmod 0700: %m", run_dir());
    }
    close(fd);
    return 0;
}

/* Open PATH in the run directory with FLAGS, never through a symlink; -1 with errno. */
static int run_open(const char *path, int flags)
{
    return open(path, flags | O_NOFOLLOW | O_CLOEXEC, 0600);
}

/* FNV-1a, 64 bits: stable across runs and machines, case sensitive. */
void record_id(const char *canonical_path, char id[17])
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (const unsigned char *p = (const unsigned char *)canonical_path; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    snprintf(id, 17, "%016" PRIx64, h);
}

static void record_path(const char *id, const char *suffix, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s.rec%s", run_dir(), id, suffix);
}

/* Write "KEY=VALUE\n" with VALUE escaped (\\, \n, \xHH): a record holds any path. */
static void put_field(FILE *f, const char *key, const char *value)
{
    fprintf(f, "%s=", key);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if (*p == '\\')
            fputs("\\\\", f);
        else if (*p == '\n')
            fputs("\\n", f);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
    fputc('\n', f);
}

int record_save(const struct disk_record *rec)
{
    char tmp[4200], path[4200];
    FILE *f;
    int fd;

    if (ensure_run_dir())
        return -1;
    record_path(rec->id, ".tmp", tmp, sizeof(tmp));
    record_path(rec->id, "", path, sizeof(path));
    /* a fresh file, 0600: whatever was left (or planted) at tmp is not written through */
    unlink(tmp);
    fd = run_open(tmp, O_WRONLY | O_CREAT | O_EXCL);
    f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        err("%s: %m", tmp);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    put_field(f, "id", rec->id);
    put_field(f, "image", rec->image);
    put_field(f, "format", rec->format);
    put_field(f, "via", rec->via);
    put_field(f, "device", rec->device);
    put_field(f, "backing", rec->backing);
    put_field(f, "mountpoint", rec->mountpoint);
    put_field(f, "socket", rec->socket);
    fprintf(f, "read_only=%d\nsize=%" PRIu64 "\npid=%d\n", rec->read_only, rec->size,
            (int)rec->pid);
    if (rec->snapshot)
        fprintf(f, "snapshot=1\n");
    if (rec->partition)
        fprintf(f, "partition=%u\n", rec->partition);
    if (rec->file_known)
        fprintf(f, "file_id=%" PRIu64 ":%" PRIu64 "\n", rec->file_dev, rec->file_ino);
    if (fflush(f) != 0 || fsync(fileno(f)) < 0) {
        fclose(f);
        unlink(tmp);
        return -err("%s: %m", tmp);
    }
    fclose(f);
    if (rename(tmp, path) < 0) {
        unlink(tmp);
        return -err("%s: %m", path);
    }
    return 0;
}

/* Unescape VALUE (as put_field wrote it) into a fixed field; -1 if malformed or too long. */
static int set_field(char *field, size_t size, const char *value)
{
    size_t n = 0;

    for (const char *p = value; *p; p++) {
        char c = *p;

        if (c == '\\') {
            p++;
            if (*p == '\\')
                c = '\\';
            else if (*p == 'n')
                c = '\n';
            else if (*p == 'x' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
                char hex[3] = {p[1], p[2], 0};

                c = (char)strtoul(hex, NULL, 16);
                p += 2;
            } else {
                return -1;
            }
        }
        if (n + 1 >= size)
            return -1;
        field[n++] = c;
    }
    field[n] = '\0';
    return 0;
}

static int parse_line(struct disk_record *rec, char *line)
{
    char *eq = strchr(line, '=');
    const char *v;

    if (!eq)
        return -1;
    *eq = '\0';
    v = eq + 1;
#define FIELD(name)                                                                                \
    if (strcmp(line, #name) == 0)                                                                  \
        return set_field(rec->name, sizeof(rec->name), v);
    FIELD(id)
    FIELD(image)
    FIELD(format)
    FIELD(via)
    FIELD(device)
    FIELD(backing)
    FIELD(mountpoint)
    FIELD(socket)
#undef FIELD
    if (strcmp(line, "read_only") == 0)
        rec->read_only = atoi(v) != 0;
    else if (strcmp(line, "size") == 0)
        rec->size = strtoull(v, NULL, 10);
    else if (strcmp(line, "pid") == 0)
        rec->pid = (pid_t)atoi(v);
    else if (strcmp(line, "snapshot") == 0)
        rec->snapshot = atoi(v) != 0;
    else if (strcmp(line, "partition") == 0)
        rec->partition = (unsigned)strtoul(v, NULL, 10);
    else if (strcmp(line, "file_id") == 0)
        rec->file_known = sscanf(v, "%" SCNu64 ":%" SCNu64, &rec->file_dev, &rec->file_ino) == 2;
    return 0; /* unknown keys: written by a newer vdisk, ignored */
}

int record_load(const char *id, struct disk_record *rec)
{
    char path[4200], line[4 * 4096 + 64]; /* an escaped path takes up to 4 bytes a byte */
    struct stat st;
    FILE *f;
    int fd, r = 1;

    if (strlen(id) != 16 || strspn(id, "0123456789abcdef") != 16)
        return 0;
    record_path(id, "", path, sizeof(path));
    fd = run_open(path, O_RDONLY);
    if (fd < 0) {
        /* a user who may not read the records sees no open disk (info still works) */
        if (errno == ENOENT || ((errno == EACCES || errno == EPERM) && geteuid() != 0))
            return 0;
        if (errno == ELOOP)
            return -err("%s: a symlink, not a record: refused", path);
        return -err("%s: %m", path);
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        close(fd);
        return -err("%s: not a record of ours (a file of uid %u): refused", path,
                    (unsigned)st.st_uid);
    }
    f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        return -err("%s: %m", path);
    }
    memset(rec, 0, sizeof(*rec));
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (parse_line(rec, line) < 0) {
            r = -err("%s: malformed record", path);
            break;
        }
    }
    fclose(f);
    return r;
}

int record_remove(const char *id)
{
    char path[4200];

    record_path(id, "", path, sizeof(path));
    if (unlink(path) < 0 && errno != ENOENT)
        return -err("%s: %m", path);
    return 0;
}

int record_list(struct disk_record **recs, size_t *n)
{
    struct disk_record *all = NULL;
    struct dirent *de;
    size_t count = 0;
    DIR *d;

    *recs = NULL;
    *n = 0;
    d = opendir(run_dir());
    if (!d) {
        if (errno == ENOENT)
            return 0;
        if ((errno == EACCES || errno == EPERM) && geteuid() != 0)
            return -err("must be root (%s: %m)", run_dir());
        return -err("%s: %m", run_dir());
    }
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        char id[17];
        struct disk_record *grown;

        if (len != 20 || strcmp(de->d_name + 16, ".rec") != 0)
            continue;
        memcpy(id, de->d_name, 16);
        id[16] = '\0';
        grown = realloc(all, (count + 1) * sizeof(*all));
        if (!grown) {
            closedir(d);
            free(all);
            return -err("out of memory");
        }
        all = grown;
        if (record_load(id, &all[count]) == 1)
            count++;
    }
    closedir(d);
    *recs = all;
    *n = count;
    return 0;
}

int record_lock(void)
{
    char path[4200];
    int fd;

    if (ensure_run_dir())
        return -1;
    snprintf(path, sizeof(path), "%s/.lock", run_dir());
    fd = run_open(path, O_RDWR | O_CREAT);
    if (fd < 0) {
        if (errno == ELOOP)
            return -err("%s: a symlink: refused", path);
        if ((errno == EACCES || errno == EPERM) && geteuid() != 0)
            return -err("must be root (%s: %m)", path);
        return -err("%s: %m", path);
    }
    if (flock(fd, LOCK_EX) < 0) {
        close(fd);
        return -err("%s: %m", path);
    }
    return fd;
}

void record_unlock(int fd)
{
    if (fd >= 0)
        close(fd);
}
