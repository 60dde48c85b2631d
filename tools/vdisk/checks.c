/* SPDX-License-Identifier: MIT */
/*
 * Checks the commands share, each with a message that tells the user what to
 * do: sizes, read-only files, and who holds an image's lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "vdisk.h"

#define SECTOR 512

int check_disk_size(const char *text, uint64_t size)
{
    if (size == 0)
        return -err("%s: size must be greater than zero", text);
    if (size < SECTOR)
        return -err("%s: size is %llu bytes, below one %d-byte sector: too small for a disk", text,
                    (unsigned long long)size, SECTOR);
    return 0;
}

int check_writable(const char *path)
{
    struct statvfs vfs;
    struct stat st;
    int fd, flags = 0;

    if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
        return 0; /* block devices: opened O_EXCL by the library, which says why not */
    if (!(st.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH)))
        return -err("%s: file is read-only (mode %04o); open it read-only with -r", path,
                    (unsigned)(st.st_mode & 07777));
    if (statvfs(path, &vfs) == 0 && (vfs.f_flag & ST_RDONLY))
        return -err("%s: on a read-only file system; open it read-only with -r", path);
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 && (flags & FS_IMMUTABLE_FL)) {
            close(fd);
            return -err("%s: file is immutable (chattr +i); open it read-only with -r", path);
        }
        close(fd);
    }
    if (access(path, W_OK) < 0 && (errno == EACCES || errno == EPERM || errno == EROFS))
        return -err("%s: %m; open it read-only with -r", path);
    return 0;
}

/* Is PATH one of the files the recorded disk REC reads (its image or a backing file)? */
static bool disk_reads(const struct disk_record *rec, const char *path)
{
    struct vdisk_image *img;
    struct vdisk_info info;
    bool found = false;

    if (strcmp(rec->image, path) == 0)
        return true;
    if (vdisk_open(rec->image, rec->format, VDISK_OPEN_RDONLY | VDISK_OPEN_NOLOCK, NULL, &img) < 0)
        return false;
    if (vdisk_get_info(img, &info) == 0)
        for (const char *const *f = info.files; f && *f && !found; f++)
            found = strcmp(*f, path) == 0;
    vdisk_close(img);
    return found;
}

void lock_hint(const char *path)
{
    char canonical[4096];
    struct disk_record *recs;
    size_t n;
    bool named = false;

    if (!strstr(vdisk_last_error(), "in use by another process"))
        return;
    if (!realpath(path, canonical) || record_list(&recs, &n) < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        if (!disk_reads(&recs[i], canonical))
            continue;
        err("%s: held by the open disk %s (id %s, image %s); see vdisk list", path,
            recs[i].device[0] ? recs[i].device : "(no device)", recs[i].id, recs[i].image);
        named = true;
    }
    if (!named)
        err("%s: no disk in vdisk list holds it: another program has it open (QEMU, vdisk "
            "serve; fuser -v %s tells)",
            path, path);
    free(recs);
}
