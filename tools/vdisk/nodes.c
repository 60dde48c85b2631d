/* SPDX-License-Identifier: MIT */
/*
 * Device nodes of an open disk: root:disk 0660 for the block device, 0600
 * root for a control node (a ublk server's /dev/ublkcN), whatever devtmpfs
 * gave them and whether or not udev runs (it applies the same on Debian).
 * A disk is then never open to every local user.
 */
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdisk.h"

#define DISK_MODE 0660
#define CTL_MODE  0600
#define DISK_GID                                                                                   \
    6 /* Debian's fixed gid of group disk (base-passwd), for a system without /etc/group */

/* The gid of group "disk". */
static gid_t disk_gid(void)
{
    struct group *g = getgrnam("disk");

    return g ? g->gr_gid : DISK_GID;
}

/* Give node PATH, which must be a device of TYPE (S_IFBLK or S_IFCHR), owner root:GID and MODE. */
static void node_set(const char *path, mode_t type, gid_t gid, mode_t mode)
{
    struct stat st;

    if (lstat(path, &st) < 0 || (st.st_mode & S_IFMT) != type)
        return; /* not there (yet), or not a device node: nothing of ours to change */
    if ((st.st_uid != 0 || st.st_gid != gid) && chown(path, 0, gid) < 0)
        warn("%s: chown root:%u: %m", path, (unsigned)gid);
    if ((st.st_mode & 07777) != mode && chmod(path, mode) < 0)
        warn("%s: chmod %04o: %m", path, (unsigned)mode);
}

void nodes_secure(const char *device)
{
    int id;

    if (geteuid() != 0 || strncmp(device, "/dev/", 5) != 0)
        return;
    node_set(device, S_IFBLK, disk_gid(), DISK_MODE);
    if (sscanf(device, "/dev/ublkb%d", &id) == 1) {
        char ctl[64];

        snprintf(ctl, sizeof(ctl), "/dev/ublkc%d", id);
        node_set(ctl, S_IFCHR, 0, CTL_MODE);
    }
}
