// SPDX-License-Identifier: MIT
/*
 * ioctl-fuzz: hostile control calls for the VM, only clean errors expected.
 *   ioctl-fuzz vdisk SEED N FILE   N random ioctls on /dev/vdisk-control and on
 *                                  the /dev/vdiskN nodes of the disks that
 *                                  random ADDs make (FILE: a scratch backing file)
 *   ioctl-fuzz ublk SEED N         N random control commands on /dev/ublk-control:
 *                                  URING_CMD with legacy and ioctl-encoded opcodes
 *                                  and junk ublksrv_ctrl_cmd payloads, and ioctl()
 * Commands are numbers near the real ones (and some fully random), arguments
 * NULL, kernel addresses, unmapped pages, a struct cut by a PROT_NONE page,
 * random bytes, or plausible structs with one field wrong (sizes, versions,
 * fds of every kind, huge sizes and counts). Disks and ublk devices that a
 * call happens to create are removed again (at most a few live at a time);
 * those that existed before are never touched. Prints a summary line; exits
 * non-zero on a result the kernel must never give (a call that hangs, a
 * device it cannot remove). The guest log is checked for oopses by the harness.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <linux/blkpg.h>
#include <linux/fs.h>
#include <linux/hdreg.h>
#include <linux/io_uring.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "uapi/vdisk_ctl.h"

#define MAX_LIVE 4

static uint64_t rng;

/* xorshift64*: reproducible from the seed. */
static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
}

static unsigned pick(unsigned n)
{
    return (unsigned)(rnd() % n);
}

static unsigned char *page2; /* two pages: the second PROT_NONE */
static long pagesz;

/* A hostile argument pointer: bad addresses, or a buffer of LEN random bytes. */
static void *bad_ptr(size_t len, unsigned char *buf, size_t cap)
{
    static const uintptr_t bad[] = {0,
                                    1,
                                    4095,
                                    0xffff888000000000ull,
                                    0xffffffffff600000ull,
                                    0x00007ffffffff000ull,
                                    (uintptr_t)-1};

    switch (pick(8)) {
    case 0:
        return (void *)bad[pick(sizeof(bad) / sizeof(bad[0]))];
    case 1: /* the struct runs into a PROT_NONE page */
        return page2 + pagesz - (len > 1 ? 1 + pick((unsigned)len - 1) : 1);
    default:
        for (size_t i = 0; i < cap; i++)
            buf[i] = (unsigned char)rnd();
        return buf;
    }
}

/* ---- vdisk.ko ------------------------------------------------------------ */

static int added[64], nadded; /* indexes of disks this run made */
static int fds[8], nfds;      /* backing fd candidates */

static void forget_disk(int ctl, int index)
{
    struct vdisk_ctl_disk d = {.struct_size = sizeof(d), .version = VDISK_CTL_VERSION};

    d.index = (unsigned)index;
    if (ioctl(ctl, VDISK_CTL_REMOVE, &d) < 0 && errno != ENXIO)
        fprintf(stderr, "ioctl-fuzz: remove vdisk%d: %m\n", index);
}

/* Remove the disks this run made; 0 if all went. */
static int remove_added(int ctl)
{
    int left = 0;

    for (int i = nadded - 1; i >= 0; i--) {
        struct vdisk_ctl_disk d = {.struct_size = sizeof(d), .version = VDISK_CTL_VERSION};

        d.index = (unsigned)added[i];
        if (ioctl(ctl, VDISK_CTL_REMOVE, &d) < 0 && errno != ENXIO) {
            fprintf(stderr, "ioctl-fuzz: vdisk%d cannot be removed: %m\n", added[i]);
            left++;
        }
    }
    nadded = 0;
    return left;
}

/* A disk request: plausible, with random fields mixed in. */
static void vdisk_req(struct vdisk_ctl_disk *d)
{
    static const uint64_t sizes[] = {0,          512,        4096,
                                     1 << 20,    16 << 20,   (16 << 20) + 512,
                                     1ull << 40, UINT64_MAX, UINT64_MAX - 511};
    static const unsigned bss[] = {0, 1, 512, 1024, 4096, 8192, 0xffffffff};

    memset(d, 0, sizeof(*d));
    d->struct_size = pick(8) ? sizeof(*d) : (unsigned)rnd();
    d->version = pick(8) ? VDISK_CTL_VERSION : (unsigned)rnd();
    d->fd = pick(6) ? fds[pick((unsigned)nfds)] : (int)rnd();
    d->flags = pick(3) ? pick(16) : (unsigned)rnd(); /* 8: VDISK_F_RAM */
    if ((d->flags & VDISK_F_RAM) && pick(2))
        d->fd = -1;
    d->block_size = bss[pick(sizeof(bss) / sizeof(bss[0]))];
    d->index = pick(3) ? pick(8) : (unsigned)rnd();
    d->size = pick(4) ? sizes[pick(sizeof(sizes) / sizeof(sizes[0]))] : rnd();
    d->reserved = pick(10) ? 0 : (unsigned)rnd();
    switch (pick(4)) {
    case 0: /* no NUL, or junk */
        for (int i = 0; i < VDISK_ID_LEN; i++)
            d->id[i] = (char)(pick(2) ? 'a' + pick(26) : rnd());
        break;
    default:
        snprintf(d->id, sizeof(d->id), "fz%u", pick(1000));
    }
}

/* One ioctl on a node of a disk this run made. */
static void vdisk_node_call(void)
{
    static const unsigned long cmds[] = {
        BLKROSET,   BLKROGET,   BLKGETSIZE, BLKGETSIZE64,  BLKFLSBUF, BLKSSZGET,    BLKBSZGET,
        BLKBSZSET,  BLKDISCARD, BLKZEROOUT, BLKSECDISCARD, BLKRRPART, BLKIOMIN,     BLKIOOPT,
        BLKPBSZGET, BLKRAGET,   BLKRASET,   HDIO_GETGEO,   BLKPG,     BLKGETDISKSEQ};
    static unsigned char buf[1 << 16]; /* room for whatever a random command writes */
    uint64_t range[2];
    unsigned long cmd;
    char path[32];
    void *arg;
    int fd;

    if (!nadded)
        return;
    snprintf(path, sizeof(path), "/dev/vdisk%d", added[pick((unsigned)nadded)]);
    fd = open(path, pick(2) ? O_RDWR : O_RDONLY);
    if (fd < 0)
        return;
    switch (pick(4)) {
    case 0:
        cmd = _IO(0x12, pick(256)) | ((unsigned long)pick(4) << _IOC_DIRSHIFT) |
              ((unsigned long)pick(64) << _IOC_SIZESHIFT);
        break;
    case 1:
        cmd = (unsigned)rnd();
        break;
    default:
        cmd = cmds[pick(sizeof(cmds) / sizeof(cmds[0]))];
    }
    if (cmd == BLKROSET && pick(2)) {
        static int zero;
        arg = &zero;
    } else if ((cmd == BLKDISCARD || cmd == BLKZEROOUT) && pick(2)) {
        range[0] = rnd() % (32 << 20) & ~511ull;
        range[1] = pick(2) ? rnd() : rnd() % (1 << 20) & ~511ull;
        arg = range;
    } else {
        arg = bad_ptr(64, buf, 512);
    }
    ioctl(fd, cmd, arg);
    close(fd);
}

static int fuzz_vdisk(long n, const char *file)
{
    static const unsigned cmds[] = {VDISK_CTL_ADD, VDISK_CTL_REMOVE, VDISK_CTL_QUERY,
                                    VDISK_CTL_LIST};
    static unsigned char buf[1 << 16];
    long adds = 0, rams = 0, ok = 0;
    int ctl = open(VDISK_CTL_DEVICE, O_RDWR | O_CLOEXEC), p[2];

    if (ctl < 0) {
        fprintf(stderr, "ioctl-fuzz: %s: %m\n", VDISK_CTL_DEVICE);
        return 1;
    }
    /* backing candidates: the file rw and ro, O_DIRECT, a directory, a pipe, the control node */
    fds[nfds++] = open(file, O_RDWR);
    fds[nfds++] = open(file, O_RDONLY);
    fds[nfds++] = open(file, O_RDWR | O_DIRECT);
    fds[nfds++] = open("/", O_RDONLY | O_DIRECTORY);
    if (pipe(p) == 0)
        fds[nfds++] = p[0];
    fds[nfds++] = ctl;
    fds[nfds++] = -1;
    for (long i = 0; i < n; i++) {
        struct vdisk_ctl_disk d;
        struct vdisk_ctl_list l;
        unsigned cmd;
        void *arg;

        if (pick(5) == 0) {
            vdisk_node_call();
            continue;
        }
        switch (pick(10)) {
        case 0:
            cmd = (unsigned)rnd();
            break;
        case 1: /* the right magic, any number, direction and size */
            cmd = _IOC(pick(4), VDISK_CTL_MAGIC, pick(16), pick(1 << 14));
            break;
        default:
            cmd = cmds[pick(4)];
        }
        if (pick(3) == 0) {
            arg = bad_ptr(sizeof(d), buf, 512);
        } else if (cmd == VDISK_CTL_LIST) {
            static uint32_t out[4];

            l = (struct vdisk_ctl_list){.struct_size = sizeof(l), .version = VDISK_CTL_VERSION};
            l.max = pick(2) ? pick(8) : (unsigned)rnd();
            l.indexes = pick(2) ? (uintptr_t)out : (uintptr_t)bad_ptr(16, buf, 512);
            if (l.max > 4 && l.indexes == (uintptr_t)out)
                l.max = 4;
            arg = &l;
        } else {
            vdisk_req(&d);
            if (cmd == VDISK_CTL_REMOVE && nadded && pick(2))
                d.index = (unsigned)added[pick((unsigned)nadded)];
            arg = &d;
        }
        if (ioctl(ctl, cmd, arg) == 0) {
            ok++;
            if (cmd == VDISK_CTL_ADD && arg == &d) {
                adds++;
                rams += !!(d.flags & VDISK_F_RAM);
                if (nadded == MAX_LIVE) /* keep only a few */
                    forget_disk(ctl, added[--nadded]);
                added[nadded++] = (int)d.index;
            } else if (cmd == VDISK_CTL_REMOVE && arg == &d) {
                for (int j = 0; j < nadded; j++)
                    if (added[j] == (int)d.index)
                        added[j--] = added[--nadded];
            }
        }
    }
    printf("vdisk: %ld calls, %ld succeeded, %ld disks added (%ld RAM disks)\n", n, ok, adds, rams);
    return remove_added(ctl) ? 1 : 0;
}

/* ---- ublk ---------------------------------------------------------------- */

struct ctrl_cmd { /* struct ublksrv_ctrl_cmd (6.12 uapi) */
    uint32_t dev_id;
    uint16_t queue_id, len;
    uint64_t addr, data[1];
    uint16_t dev_path_len, pad;
    uint32_t reserved;
};

static struct {
    int fd;
    unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
    struct io_uring_cqe *cqes;
    unsigned char *sqes;
} ring;

static int ring_init(void)
{
    struct io_uring_params p = {.flags = IORING_SETUP_SQE128};
    unsigned char *sq, *cq;

    ring.fd = (int)syscall(__NR_io_uring_setup, 4, &p);
    if (ring.fd < 0)
        return -errno;
    sq = mmap(NULL, p.sq_off.array + p.sq_entries * 4, PROT_READ | PROT_WRITE, MAP_SHARED, ring.fd,
              IORING_OFF_SQ_RING);
    cq = mmap(NULL, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe),
              PROT_READ | PROT_WRITE, MAP_SHARED, ring.fd, IORING_OFF_CQ_RING);
    ring.sqes = mmap(NULL, p.sq_entries * 128, PROT_READ | PROT_WRITE, MAP_SHARED, ring.fd,
                     IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || ring.sqes == MAP_FAILED)
        return -ENOMEM;
    ring.sq_tail = (unsigned *)(sq + p.sq_off.tail);
    ring.sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    ring.sq_array = (unsigned *)(sq + p.sq_off.array);
    ring.cq_head = (unsigned *)(cq + p.cq_off.head);
    ring.cq_tail = (unsigned *)(cq + p.cq_off.tail);
    ring.cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    ring.cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    return 0;
}

static void on_alarm(int sig)
{
    (void)sig;
}

/* One URING_CMD on FD with opcode OP and 80 bytes of command CMD; its result, or 1 on a hang. */
static int uring_cmd(int fd, unsigned op, const void *cmd, int *res)
{
    unsigned tail = *ring.sq_tail, idx = tail & *ring.sq_mask;
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)(ring.sqes + idx * 128);
    int r;

    memset(sqe, 0, 128);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fd;
    sqe->cmd_op = op;
    memcpy(sqe->cmd, cmd, 80);
    ring.sq_array[idx] = idx;
    __atomic_store_n(ring.sq_tail, tail + 1, __ATOMIC_RELEASE);
    alarm(10);
    r = (int)syscall(__NR_io_uring_enter, ring.fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0);
    while (r >= 0 && __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE) == *ring.cq_head)
        r = (int)syscall(__NR_io_uring_enter, ring.fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0);
    alarm(0);
    if (r < 0)
        return errno == EINTR ? 1 : -errno;
    *res = ring.cqes[*ring.cq_head & *ring.cq_mask].res;
    __atomic_store_n(ring.cq_head, *ring.cq_head + 1, __ATOMIC_RELEASE);
    return 0;
}

static char before[1 << 20]; /* /sys/class/ublk-char entries before the run */

/* Delete the ublk devices that were not there before but KEEP; how many could not go. */
static int ublk_cleanup(int ctl, int keep)
{
    DIR *d = opendir("/sys/class/ublk-char");
    struct dirent *e;
    int left = 0;

    if (!d)
        return 0;
    while ((e = readdir(d))) {
        char name[300];
        struct ctrl_cmd c = {0};
        unsigned char sqe_cmd[80] = {0};
        int res;

        if (strncmp(e->d_name, "ublkc", 5))
            continue;
        snprintf(name, sizeof(name), " %s ", e->d_name);
        if (strstr(before, name) || keep-- > 0)
            continue;
        c.dev_id = (uint32_t)atoi(e->d_name + 5);
        c.queue_id = (uint16_t)-1;
        memcpy(sqe_cmd, &c, sizeof(c));
        if (uring_cmd(ctl, 0x05 /* DEL_DEV */, sqe_cmd, &res) || res < 0) {
            fprintf(stderr, "ioctl-fuzz: %s cannot be deleted (%d)\n", e->d_name, res);
            left++;
        }
    }
    closedir(d);
    return left;
}

static int fuzz_ublk(long n)
{
    /* any len up to 64 KiB: the kernel may fill all of it */
    static unsigned char info[1 << 16], buf[1 << 16];
    unsigned char sqe_cmd[80];
    long ok = 0, adds = 0, hangs = 0;
    int ctl = open("/dev/ublk-control", O_RDWR | O_CLOEXEC), left = 0;
    DIR *d = opendir("/sys/class/ublk-char");
    struct sigaction sa = {.sa_handler = on_alarm};
    struct dirent *e;

    if (ctl < 0) {
        fprintf(stderr, "ioctl-fuzz: /dev/ublk-control: %m\n");
        return 1;
    }
    if (ring_init() < 0) {
        fprintf(stderr, "ioctl-fuzz: io_uring: %m\n");
        return 1;
    }
    sigaction(SIGALRM, &sa, NULL); /* no SA_RESTART: a hung call returns EINTR */
    strcpy(before, " ");
    while (d && (e = readdir(d)) && strlen(before) + strlen(e->d_name) + 2 < sizeof(before)) {
        strcat(before, e->d_name);
        strcat(before, " ");
    }
    if (d)
        closedir(d);
    for (long i = 0; i < n; i++) {
        struct ctrl_cmd c;
        unsigned op, nr;
        int res = 0, r;

        /* START_DEV and END_USER_RECOVERY wait for a server's queues: not without one */
        do
            nr = pick(8) ? 1 + pick(0x16) : pick(256);
        while (nr == 0x06 || nr == 0x11);
        switch (pick(4)) {
        case 0:
            op = nr; /* legacy opcode */
            break;
        case 1:
            op = (unsigned)rnd();
            if ((op & 0xff) == 0x06 || (op & 0xff) == 0x11)
                op &= ~0xffu;
            break;
        default:
            op = _IOC(pick(4) ? _IOC_READ | _IOC_WRITE : pick(4), 'u', nr,
                      pick(4) ? sizeof(c) : pick(128));
        }
        memset(&c, 0, sizeof(c));
        c.dev_id = pick(2) ? pick(4) : (pick(2) ? (uint32_t)-1 : (uint32_t)rnd());
        c.queue_id = pick(2) ? (uint16_t)-1 : (uint16_t)rnd();
        c.len = pick(2) ? 64 : (uint16_t)rnd();
        for (size_t j = 0; j < 256; j++)
            info[j] = (unsigned char)rnd();
        if (pick(2)) { /* a dev_info that ADD_DEV may accept: 1 queue, small depth */
            memset(info, 0, 64);
            info[0] = 1;
            info[2] = (unsigned char)(1 + pick(64));
            info[8] = 0;
            info[9] = 0;
            info[10] = 1; /* max_io_buf_bytes 64 KiB */
            memcpy(info + 12, &c.dev_id, 4);
            if (pick(2))
                info[24] = (unsigned char)pick(256); /* flags */
        }
        c.addr = pick(4) ? (uintptr_t)info : (uintptr_t)bad_ptr(64, buf, 512);
        c.data[0] = pick(2) ? 0 : rnd();
        c.dev_path_len = pick(4) ? 0 : (uint16_t)rnd();
        c.reserved = pick(8) ? 0 : (uint32_t)rnd();
        memset(sqe_cmd, 0, sizeof(sqe_cmd));
        memcpy(sqe_cmd, &c, sizeof(c));
        if (pick(8) == 0)
            for (size_t j = 0; j < sizeof(sqe_cmd); j++)
                sqe_cmd[j] = (unsigned char)rnd();
        if (pick(6) == 0) { /* ioctl() too: the control node has none */
            if (ioctl(ctl, op, pick(2) ? (void *)&c : bad_ptr(32, buf, 512)) == 0)
                ok++;
            continue;
        }
        r = uring_cmd(ctl, op, sqe_cmd, &res);
        if (r == 1) {
            fprintf(stderr, "ioctl-fuzz: ublk op 0x%x did not complete in 10 s\n", op);
            hangs++;
            break;
        }
        if (r == 0 && res >= 0) {
            ok++;
            if ((op & 0xff) == 0x04) {
                adds++;
                left += ublk_cleanup(ctl, 2); /* two stay for the commands that follow */
            }
        }
    }
    left += ublk_cleanup(ctl, 0);
    printf("ublk: %ld calls, %ld succeeded, %ld devices added, %d left, %ld hung\n", n, ok, adds,
           left, hangs);
    return left || hangs;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: ioctl-fuzz vdisk SEED N FILE | ublk SEED N\n");
        return 2;
    }
    rng = strtoull(argv[2], NULL, 0) * 2654435761u + 1;
    pagesz = sysconf(_SC_PAGESIZE);
    page2 = mmap(NULL, 2 * pagesz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page2 == MAP_FAILED || mprotect(page2 + pagesz, pagesz, PROT_NONE))
        return 1;
    if (!strcmp(argv[1], "vdisk") && argc == 5)
        return fuzz_vdisk(atol(argv[3]), argv[4]);
    if (!strcmp(argv[1], "ublk"))
        return fuzz_ublk(atol(argv[3]));
    fprintf(stderr, "usage: ioctl-fuzz vdisk SEED N FILE | ublk SEED N\n");
    return 2;
}
