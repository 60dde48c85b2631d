/* SPDX-License-Identifier: MIT */
/*
 * vdisk open --overlay FILE BASE: the kept qcow2 overlay over a base of any
 * format, made when missing (backing file BASE, its format recorded), checked
 * to be over BASE when it exists.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk.h"

/* The format of BASE (FORMAT if stated, else probed) in *NAME (a static string). 0 or -1. */
static int base_format(const char *base, const char *format, const char **name)
{
    struct vdisk_image *img;
    struct vdisk_info info;

    if (vdisk_open(base, format, VDISK_OPEN_RDONLY | VDISK_OPEN_NOLOCK, NULL, &img) < 0)
        return -err("%s", vdisk_last_error());
    if (vdisk_get_info(img, &info) < 0) {
        err("%s", vdisk_last_error());
        vdisk_close(img);
        return -1;
    }
    *name = info.format; /* the format table's */
    vdisk_close(img);
    return 0;
}

/* Is the existing OVERLAY a qcow2 whose backing file is the file REAL? 0, or -1 with a message. */
static int check_existing(const char *overlay, const char *real)
{
    struct vdisk_image *img;
    struct vdisk_info info;
    char *dir = NULL, *path = NULL, got[PATH_MAX];
    int r = -1;

    if (vdisk_open(overlay, NULL, VDISK_OPEN_RDONLY | VDISK_OPEN_NOLOCK, NULL, &img) < 0)
        return -err("%s", vdisk_last_error());
    if (vdisk_get_info(img, &info) < 0) {
        err("%s", vdisk_last_error());
        goto out;
    }
    if (strcmp(info.format, "qcow2") != 0 || !info.backing_file) {
        err("%s: exists and is not a qcow2 overlay (a %s image%s); give a new file name", overlay,
            info.format, info.backing_file ? "" : " without a backing file");
        goto out;
    }
    if (info.backing_file[0] == '/') {
        path = strdup(info.backing_file);
    } else {
        dir = strdup(overlay);
        if (dir && strrchr(dir, '/'))
            *strrchr(dir, '/') = '\0';
        else if (dir)
            strcpy(dir, ".");
        if (dir && asprintf(&path, "%s/%s", dir, info.backing_file) < 0)
            path = NULL;
    }
    if (!path || !realpath(path, got) || strcmp(got, real) != 0) {
        err("%s: is an overlay over %s, not over %s", overlay, info.backing_file, real);
        goto out;
    }
    r = 0;
out:
    free(path);
    free(dir);
    vdisk_close(img);
    return r;
}

int overlay_prepare(const char *overlay, const char *base, const char *format, bool *created)
{
    char real[PATH_MAX], *opts = NULL;
    const char *fmt = NULL;
    int r;

    *created = false;
    if (!realpath(base, real))
        return -err("%s: %m (the base of an overlay must exist)", base);
    if (access(overlay, F_OK) == 0)
        return check_existing(overlay, real);
    if (errno != ENOENT)
        return -err("%s: %m", overlay);
    if (base_format(real, format, &fmt) < 0)
        return -1;
    if (strchr(real, ','))
        return -err("%s: a base path with a comma cannot be recorded as a backing file", real);
    if (asprintf(&opts, "backing_file=%s,backing_fmt=%s", real, fmt) < 0)
        return -err("%s: out of memory", overlay);
    r = vdisk_create(overlay, "qcow2", 0, opts); /* size 0: the base's */
    free(opts);
    if (r < 0)
        return -err("%s", vdisk_last_error());
    *created = true;
    return 0;
}
