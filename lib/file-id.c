/* SPDX-License-Identifier: MIT */
/*
 * The identity (st_dev, st_ino) of a file an image has open, taken from its
 * descriptor: what the library reads, not what the path names by now. The
 * tool compares it with the file it checked, so that a path swapped between
 * the check and the serving is refused, never served.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "io/file.h"
#include "node.h"

/* The stat of F's descriptor; -errno. */
static int file_id(const struct vdisk_file *f, uint64_t *dev, uint64_t *ino)
{
    struct stat st;

    if (fstat(f->fd, &st) < 0)
        return vdisk_error(errno, "%s: %m", f->path);
    *dev = st.st_dev;
    *ino = st.st_ino;
    return 0;
}

int vdisk_file_id(struct vdisk_image *img, const char *path, uint64_t *dev, uint64_t *ino)
{
    for (struct vdisk_node *v = img->root; v; v = v->backing) {
        if (v->file && strcmp(v->file->path, path) == 0)
            return file_id(v->file, dev, ino);
        for (unsigned k = 0; k < v->nfiles; k++)
            if (strcmp(v->files[k]->path, path) == 0)
                return file_id(v->files[k], dev, ino);
    }
    return vdisk_error(ENOENT, "%s: not a file of this image", path);
}
