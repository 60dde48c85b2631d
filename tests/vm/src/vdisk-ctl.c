// SPDX-License-Identifier: MIT
/*
 * vdisk-ctl: a bare client of /dev/vdisk-control for the VM tests.
 *   vdisk-ctl add [-r] [-d] [-R] [-b BS] [-s BYTES] [-i ID] FILE   prints N
 *   vdisk-ctl add -m ... FILE|-   a RAM disk (VDISK_F_RAM): FILE's fd, or -1
 *   vdisk-ctl remove N | query N | list
 *   vdisk-ctl hostile      bad calls, each must fail cleanly (PASS/FAIL lines)
 *   vdisk-ctl fuzz SEED N  N random ioctls with random bytes
 *   vdisk-ctl geo DEV      HDIO_GETGEO: "HEADS SECTORS CYLINDERS"
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/hdreg.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "uapi/vdisk_ctl.h"

static int failures;

/* Open the control device or exit. */
static int ctl_open(void)
{
    int fd = open(VDISK_CTL_DEVICE, O_RDWR | O_CLOEXEC);

    if (fd < 0) {
        fprintf(stderr, "vdisk-ctl: %s: %m\n", VDISK_CTL_DEVICE);
        exit(1);
    }
    return fd;
}

/* A request with the header filled in. */
static struct vdisk_ctl_disk disk_req(void)
{
    struct vdisk_ctl_disk d;

    memset(&d, 0, sizeof(d));
    d.struct_size = sizeof(d);
    d.version = VDISK_CTL_VERSION;
    d.block_size = 512;
    d.fd = -1;
    return d;
}

/* add: open FILE and hand its descriptor to the driver. */
static int cmd_add(int argc, char **argv)
{
    struct vdisk_ctl_disk d = disk_req();
    const char *file;
    struct stat st;
    int opt, fd, ctl;

    while ((opt = getopt(argc, argv, "mrdRb:s:i:")) != -1) {
        switch (opt) {
        case 'm':
            d.flags |= VDISK_F_RAM;
            break;
        case 'r':
            d.flags |= VDISK_F_READ_ONLY;
            break;
        case 'd':
            d.flags |= VDISK_F_DIRECT;
            break;
        case 'R':
            d.flags |= VDISK_F_REMOVABLE;
            break;
        case 'b':
            d.block_size = strtoul(optarg, NULL, 0);
            break;
        case 's':
            d.size = strtoull(optarg, NULL, 0);
            break;
        case 'i':
            snprintf(d.id, sizeof(d.id), "%s", optarg);
            break;
        default:
            return 2;
        }
    }
    if (optind != argc - 1)
        return 2;
    file = argv[optind];
    if ((d.flags & VDISK_F_RAM) && !strcmp(file, "-")) {
        ctl = ctl_open();
        if (ioctl(ctl, VDISK_CTL_ADD, &d) < 0) {
            fprintf(stderr, "vdisk-ctl: add RAM: %m\n");
            return 1;
        }
        printf("%u\n", d.index);
        return 0;
    }
    fd = open(file, ((d.flags & VDISK_F_READ_ONLY) ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        fprintf(stderr, "vdisk-ctl: %s: %m\n", file);
        return 1;
    }
    if (!d.size) {
        if (S_ISBLK(st.st_mode))
            ioctl(fd, _IOR(0x12, 114, size_t), &d.size); /* BLKGETSIZE64 */
        else
            d.size = st.st_size;
    }
    d.fd = fd;
    ctl = ctl_open();
    if (ioctl(ctl, VDISK_CTL_ADD, &d) < 0) {
        fprintf(stderr, "vdisk-ctl: add %s: %m\n", file);
        return 1;
    }
    printf("%u\n", d.index);
    return 0;
}

/* remove N */
static int cmd_remove(const char *n)
{
    struct vdisk_ctl_disk d = disk_req();
    int ctl = ctl_open();

    d.index = strtoul(n, NULL, 0);
    if (ioctl(ctl, VDISK_CTL_REMOVE, &d) < 0) {
        fprintf(stderr, "vdisk-ctl: remove vdisk%s: %m\n", n);
        return 1;
    }
    return 0;
}

/* query N: key=value lines. */
static int cmd_query(const char *n)
{
    struct vdisk_ctl_disk d = disk_req();
    int ctl = ctl_open();

    d.index = strtoul(n, NULL, 0);
    if (ioctl(ctl, VDISK_CTL_QUERY, &d) < 0) {
        fprintf(stderr, "vdisk-ctl: query vdisk%s: %m\n", n);
        return 1;
    }
    printf("index=%u\nflags=%u\nblock_size=%u\nsize=%llu\ndev=%u:%u\nopeners=%u\nid=%s\n", d.index,
           d.flags, d.block_size, (unsigned long long)d.size, d.major, d.minor, d.openers, d.id);
    return 0;
}

/* list: one index a line. */
static int cmd_list(void)
{
    struct vdisk_ctl_list l;
    __u32 idx[1024];
    int ctl = ctl_open();

    memset(&l, 0, sizeof(l));
    l.struct_size = sizeof(l);
    l.version = VDISK_CTL_VERSION;
    l.max = 1024;
    l.indexes = (unsigned long)idx;
    if (ioctl(ctl, VDISK_CTL_LIST, &l) < 0) {
        fprintf(stderr, "vdisk-ctl: list: %m\n");
        return 1;
    }
    for (__u32 i = 0; i < l.count && i < l.max; i++)
        printf("%u\n", idx[i]);
    return 0;
}

/* expect: the ioctl must have failed with errno WANT (0: any error). */
static void expect(const char *what, int ret, int want)
{
    if (ret == 0) {
        printf("FAIL: hostile: %s succeeded\n", what);
        failures++;
    } else if (want && errno != want) {
        printf("FAIL: hostile: %s: errno %d (%s), wanted %d\n", what, errno, strerror(errno), want);
        failures++;
    } else {
        printf("PASS: hostile: %s -> %s\n", what, strerror(errno));
    }
}

/* hostile FILE DIR: malformed calls against the control device. */
static int cmd_hostile(const char *file, const char *dir)
{
    int ctl = ctl_open();
    int fd = open(file, O_RDWR), dfd = open(dir, O_RDONLY | O_DIRECTORY);
    int rofd = open(file, O_RDONLY);
    struct vdisk_ctl_disk d;
    struct vdisk_ctl_list l;
    struct stat st;

    if (fd < 0 || dfd < 0 || rofd < 0 || fstat(fd, &st) < 0) {
        printf("FAIL: hostile: cannot open %s or %s: %m\n", file, dir);
        return 1;
    }
#define ADD(desc, want, ...)                                                                       \
    do {                                                                                           \
        d = disk_req();                                                                            \
        d.fd = fd;                                                                                 \
        d.size = st.st_size;                                                                       \
        __VA_ARGS__;                                                                               \
        expect(desc, ioctl(ctl, VDISK_CTL_ADD, &d), want);                                         \
    } while (0)
    ADD("add with fd -1", EBADF, d.fd = -1);
    ADD("add with a closed fd", EBADF, d.fd = 1000);
    ADD("add with a directory", EINVAL, d.fd = dfd);
    ADD("add with the control device itself", EINVAL, d.fd = ctl);
    ADD("add with size 0", EINVAL, d.size = 0);
    ADD("add with size 1000 (not a multiple of 512)", EINVAL, d.size = 1000);
    ADD("add with size 4096+512 at block size 4096", EINVAL, d.block_size = 4096; d.size = 4608);
    ADD("add with size beyond the file", ENOSPC, d.size = st.st_size + 512);
    ADD("add with block size 1024", EINVAL, d.block_size = 1024);
    ADD("add with block size 0", EINVAL, d.block_size = 0);
    ADD("add with unknown flag 1<<3", EINVAL, d.flags = 1u << 3);
    ADD("add with unknown flag 1<<31", EINVAL, d.flags = 1u << 31);
    ADD("add with struct_size - 1", EINVAL, d.struct_size--);
    ADD("add with struct_size + 8", EINVAL, d.struct_size += 8);
    ADD("add with version 0", EPROTO, d.version = 0);
    ADD("add with version 2", EPROTO, d.version = 2);
    ADD("add with reserved field set", EINVAL, d.reserved = 1);
    ADD("add with an id that is not NUL-terminated", EINVAL, memset(d.id, 'a', sizeof(d.id)));
    ADD("add with an id holding a slash", EINVAL, strcpy(d.id, "../../x"));
    ADD("add writable from a read-only fd", EBADF, d.fd = rofd);
    expect("add with a bad user pointer", ioctl(ctl, VDISK_CTL_ADD, (void *)16), EFAULT);
    expect("add with a NULL pointer", ioctl(ctl, VDISK_CTL_ADD, NULL), EFAULT);

    d = disk_req();
    d.index = 999;
    expect("remove of an unknown disk", ioctl(ctl, VDISK_CTL_REMOVE, &d), ENXIO);
    d.index = 0xffffffff;
    expect("remove of index 2^32-1", ioctl(ctl, VDISK_CTL_REMOVE, &d), ENXIO);
    expect("query of index 2^32-1", ioctl(ctl, VDISK_CTL_QUERY, &d), ENXIO);
    d.version = 7;
    expect("remove with version 7", ioctl(ctl, VDISK_CTL_REMOVE, &d), EPROTO);

    memset(&l, 0, sizeof(l));
    l.struct_size = sizeof(l);
    l.version = VDISK_CTL_VERSION;
    l.max = 1u << 30;
    expect("list with max 2^30", ioctl(ctl, VDISK_CTL_LIST, &l), EINVAL);
    l.max = 16;
    l.indexes = 8; /* bad pointer; fine while no disk exists? no: copy of 0 bytes */
    if (ioctl(ctl, VDISK_CTL_LIST, &l) == 0 && l.count == 0)
        printf("PASS: hostile: list with a bad pointer and no disks copies nothing\n");
    else
        expect("list with a bad pointer", -1, EFAULT);
    l.struct_size = 8;
    expect("list with struct_size 8", ioctl(ctl, VDISK_CTL_LIST, &l), EINVAL);

    expect("ioctl 0", ioctl(ctl, 0, 0), ENOTTY);
    expect("BLKGETSIZE64 on the control device", ioctl(ctl, _IOR(0x12, 114, size_t), &d), ENOTTY);
    expect("ADD number with a wrong encoded size",
           ioctl(ctl, _IOWR(VDISK_CTL_MAGIC, 0x01, struct vdisk_ctl_list), &l), ENOTTY);
    return failures ? 1 : 0;
}

/* fuzz SEED N: random ioctl numbers and random bytes; only errors expected
 * (a random ADD could succeed with a valid fd; remove anything it made). */
static int cmd_fuzz(unsigned seed, long n)
{
    static const unsigned cmds[] = {VDISK_CTL_ADD, VDISK_CTL_REMOVE, VDISK_CTL_QUERY,
                                    VDISK_CTL_LIST, VDISK_CTL_RESIZE};
    int ctl = ctl_open();
    unsigned char buf[512];
    long ok = 0, i;

    srandom(seed);
    for (i = 0; i < n; i++) {
        unsigned cmd;

        for (size_t j = 0; j < sizeof(buf); j++)
            buf[j] = random();
        if (random() % 2) {
            /* a real command with a plausible header and random rest */
            cmd = cmds[random() % (sizeof(cmds) / sizeof(cmds[0]))];
            ((__u32 *)buf)[0] = random() % 4 ? _IOC_SIZE(cmd) : random();
            ((__u32 *)buf)[1] = random() % 4 ? VDISK_CTL_VERSION : random();
        } else {
            cmd = random() % 2 ? (unsigned)random()
                               : _IOC(random() % 4, VDISK_CTL_MAGIC, random() % 16, random() % 512);
        }
        if (ioctl(ctl, cmd, random() % 8 ? (void *)buf : (void *)(long)random()) == 0) {
            ok++;
            if (cmd == VDISK_CTL_ADD)
                ioctl(ctl, VDISK_CTL_REMOVE, buf);
        }
    }
    printf("PASS: fuzz: %ld random ioctls (%ld accepted), no crash\n", n, ok);
    return 0;
}

/* geo DEV: print the HDIO_GETGEO geometry. */
static int cmd_geo(const char *dev)
{
    struct hd_geometry g;
    int fd = open(dev, O_RDONLY);

    if (fd < 0 || ioctl(fd, HDIO_GETGEO, &g) < 0) {
        fprintf(stderr, "vdisk-ctl: %s: %m\n", dev);
        return 1;
    }
    printf("%u %u %u\n", g.heads, g.sectors, g.cylinders);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "add"))
        return cmd_add(argc - 1, argv + 1);
    if (argc == 3 && !strcmp(argv[1], "remove"))
        return cmd_remove(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "query"))
        return cmd_query(argv[2]);
    if (argc == 2 && !strcmp(argv[1], "list"))
        return cmd_list();
    if (argc == 4 && !strcmp(argv[1], "hostile"))
        return cmd_hostile(argv[2], argv[3]);
    if (argc == 4 && !strcmp(argv[1], "fuzz"))
        return cmd_fuzz(strtoul(argv[2], NULL, 0), strtol(argv[3], NULL, 0));
    if (argc == 3 && !strcmp(argv[1], "geo"))
        return cmd_geo(argv[2]);
    fprintf(stderr, "usage: vdisk-ctl add [-m] [-r] [-d] [-R] [-b BS] [-s BYTES] [-i ID] FILE | "
                    "remove N | query N | list | hostile FILE DIR | fuzz SEED N | geo DEV\n");
    return 2;
}
