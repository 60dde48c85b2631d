/* SPDX-License-Identifier: MIT */
/*
 * How every way opens the image of an open request: as it is, under a
 * temporary snapshot overlay (--snapshot), and/or one partition of it
 * (--partition N).
 */
#include <stdio.h>

#include "vdisk.h"
#include "../../lib/error.h" /* the message survives the close */

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
