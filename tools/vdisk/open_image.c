/* SPDX-License-Identifier: MIT */
/*
 * How every way opens the image of an open request: as it is, under a
 * temporary snapshot overlay (--snapshot), and/or one partition of it
 * (--partition N). Each way opens the image again by its path: the file it
 * gets must be the one `vdisk open` checked (st_dev, st_ino of the library's
 * descriptor), or the open is refused, so a path swapped in between (a
 * rename over it, a symlink) is never served.
 */
#include <errno.h>
#include <stdio.h>

#include "vdisk.h"
#include "../../lib/error.h" /* the message survives the close */

int open_image_same_file(const struct open_request *req, struct vdisk_image *img)
{
    uint64_t dev, ino;
    int r;

    if (!req->checked)
        return 0;
    r = vdisk_file_id(img, req->image, &dev, &ino);
    if (r < 0)
        return r;
    if (dev == req->dev && ino == req->ino)
        return 0;
    return vdisk_error(ESTALE,
                       "%s: the file was replaced after it was checked (inode %llu, now %llu): "
                       "not serving it; open it again",
                       req->image, (unsigned long long)req->ino, (unsigned long long)ino);
}

int open_image(const struct open_request *req, unsigned flags, struct vdisk_image **imgp)
{
    struct vdisk_image *img;
    int r;

    if (req->snapshot)
        r = vdisk_open_snapshot(req->image, open_format(req), flags, req->options,
                                req->snapshot_dir, &img);
    else
        r = vdisk_open(req->image, open_format(req), flags, req->options, &img);
    if (r < 0)
        return r;
    r = open_image_same_file(req, img);
    if (r < 0) {
        char msg[1024];

        snprintf(msg, sizeof(msg), "%s", vdisk_last_error());
        vdisk_close(img);
        return vdisk_error(-r, "%s", msg);
    }
    if (req->partition) {
        r = vdisk_select_partition(img, req->partition);
        if (r < 0) {
            char msg[1024];

            snprintf(msg, sizeof(msg), "%s", vdisk_last_error());
            vdisk_close(img);
            return vdisk_error(-r, "%s", msg);
        }
    }
    *imgp = img;
    return 0;
}
