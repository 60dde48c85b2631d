/* SPDX-License-Identifier: MIT */
/*
 * /dev/ublk-control: device commands as io_uring URING_CMDs (128-byte SQEs
 * carry struct ublksrv_ctrl_cmd). Kernels with UBLK_F_CMD_IOCTL_ENCODE (6.4+)
 * take ioctl-encoded opcodes, older ones the plain numbers; GET_FEATURES
 * (6.5+) tells which. Commands that wait (START_DEV waits for every queue to
 * fetch, DEL_DEV for the device to be freed) run in the kernel's io-wq: the
 * caller's thread just waits for the CQE.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define CTRL_ENTRIES 4

const char *ublk_ctrl_name(unsigned op)
{
    switch (op) {
    case UBLK_CMD_GET_DEV_INFO:
        return "GET_DEV_INFO";
    case UBLK_CMD_ADD_DEV:
        return "ADD_DEV";
    case UBLK_CMD_DEL_DEV:
        return "DEL_DEV";
    case UBLK_CMD_START_DEV:
        return "START_DEV";
    case UBLK_CMD_STOP_DEV:
        return "STOP_DEV";
    case UBLK_CMD_SET_PARAMS:
        return "SET_PARAMS";
    case UBLK_CMD_GET_PARAMS:
        return "GET_PARAMS";
    case UBLK_CMD_START_USER_RECOVERY:
        return "START_USER_RECOVERY";
    case UBLK_CMD_END_USER_RECOVERY:
        return "END_USER_RECOVERY";
    case UBLK_CMD_GET_FEATURES:
        return "GET_FEATURES";
    case UBLK_CMD_DEL_DEV_ASYNC:
        return "DEL_DEV_ASYNC";
    }
    return "command";
}

/* The opcode the kernel wants for OP: ioctl-encoded (reads as _IOR) or legacy. */
static unsigned encode(const struct ublk_ctrl *c, unsigned op)
{
    bool reads = op == UBLK_CMD_GET_DEV_INFO || op == UBLK_CMD_GET_PARAMS ||
                 op == UBLK_CMD_GET_DEV_INFO2 || op == UBLK_CMD_GET_FEATURES ||
                 op == UBLK_CMD_DEL_DEV_ASYNC;

    if (!c->ioctl_encode)
        return op;
    return reads ? UBLK_U_CTRL_R(op) : UBLK_U_CTRL(op);
}

int ublk_ctrl_cmd(struct ublk_ctrl *c, unsigned op, int id, uint64_t data0, void *buf, uint16_t len)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
    struct ublksrv_ctrl_cmd *cmd;
    struct io_uring_cqe *cqe;
    int r;

    if (!sqe)
        return -EBUSY;                /* one command at a time: never happens */
    memset(sqe, 0, 2 * sizeof(*sqe)); /* a 128-byte SQE */
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = c->fd;
    sqe->cmd_op = encode(c, op);
    cmd = (struct ublksrv_ctrl_cmd *)sqe->cmd;
    cmd->dev_id = (uint32_t)id;
    cmd->queue_id = ALL_QUEUES;
    cmd->addr = (uint64_t)(uintptr_t)buf;
    cmd->len = len;
    cmd->data[0] = data0;
    do
        r = io_uring_submit_and_wait(&c->ring, 1);
    while (r == -EINTR);
    if (r < 0)
        return r;
    do
        r = io_uring_wait_cqe(&c->ring, &cqe);
    while (r == -EINTR);
    if (r < 0)
        return r;
    r = cqe->res;
    io_uring_cqe_seen(&c->ring, cqe);
    return r;
}

int ublk_ctrl_del(struct ublk_ctrl *c, int id)
{
    int r = -EINVAL;

    /* DEL_DEV waits until nobody holds the disk open: a stuck opener would hang us */
    if (c->ioctl_encode)
        r = ublk_ctrl_cmd(c, UBLK_CMD_DEL_DEV_ASYNC, id, 0, NULL, 0);
    if (r == -EINVAL || r == -EOPNOTSUPP || r == -ENOTTY)
        r = ublk_ctrl_cmd(c, UBLK_CMD_DEL_DEV, id, 0, NULL, 0);
    return r;
}

int ublk_ctrl_open(struct ublk_ctrl *c, char *errbuf, size_t errlen)
{
    uint64_t features = 0;
    int r;

    c->fd = open(VDISK_UBLK_CONTROL, O_RDWR | O_CLOEXEC);
    if (c->fd < 0) {
        r = -errno;
        snprintf(errbuf, errlen, "%s: %s%s", VDISK_UBLK_CONTROL, strerror(errno),
                 errno == ENOENT ? " (this kernel has no ublk: modprobe ublk_drv, Linux 6.0+)"
                                 : "");
        return r;
    }
    r = io_uring_queue_init(CTRL_ENTRIES, &c->ring, IORING_SETUP_SQE128);
    if (r < 0) {
        snprintf(errbuf, errlen, "%s: io_uring with 128-byte SQEs: %s", VDISK_UBLK_CONTROL,
                 strerror(-r));
        close(c->fd);
        c->fd = -1;
        return r;
    }
    c->ioctl_encode = true;
    r = ublk_ctrl_cmd(c, UBLK_CMD_GET_FEATURES, -1, 0, &features, sizeof(features));
    if (r < 0) { /* before 6.5: no probe; assume the legacy opcodes of 6.0 */
        c->ioctl_encode = false;
        features = 0;
    } else {
        c->ioctl_encode = (features & UBLK_F_CMD_IOCTL_ENCODE) != 0;
    }
    if (getenv("VDISK_TEST_UBLK_LEGACY")) /* test switch: the opcodes of kernels before 6.4 */
        c->ioctl_encode = false;
    c->features = features;
    return 0;
}

void ublk_ctrl_close(struct ublk_ctrl *c)
{
    if (c->fd < 0)
        return;
    io_uring_queue_exit(&c->ring);
    close(c->fd);
    c->fd = -1;
}

int vdisk_ublk_features(uint64_t *features, char *errbuf, size_t errlen)
{
    struct ublk_ctrl c;
    int r = ublk_ctrl_open(&c, errbuf, errlen);

    if (r < 0)
        return r;
    *features = c.features;
    ublk_ctrl_close(&c);
    return 0;
}

int vdisk_ublk_state(int id, int *state, int *pid, unsigned *queues, char *errbuf, size_t errlen)
{
    struct ublksrv_ctrl_dev_info info = {0};
    struct ublk_ctrl c;
    int r = ublk_ctrl_open(&c, errbuf, errlen);

    if (r < 0)
        return r;
    r = ublk_ctrl_cmd(&c, UBLK_CMD_GET_DEV_INFO, id, 0, &info, sizeof(info));
    ublk_ctrl_close(&c);
    if (r < 0) {
        snprintf(errbuf, errlen, "ublk device %d: GET_DEV_INFO: %s", id, strerror(-r));
        return r;
    }
    *state = info.state;
    *pid = info.ublksrv_pid;
    if (queues)
        *queues = info.nr_hw_queues;
    return 0;
}

int vdisk_ublk_remove(int id, char *errbuf, size_t errlen)
{
    struct ublksrv_ctrl_dev_info info = {0};
    struct ublk_ctrl c;
    int r = ublk_ctrl_open(&c, errbuf, errlen);

    if (r < 0)
        return r;
    r = ublk_ctrl_cmd(&c, UBLK_CMD_GET_DEV_INFO, id, 0, &info, sizeof(info));
    if (r == -ENODEV || r == -ENOENT) {
        ublk_ctrl_close(&c);
        return -ENOENT;
    }
    /* STOP fails what waits (a quiesced device's requests) and removes the disk */
    r = ublk_ctrl_cmd(&c, UBLK_CMD_STOP_DEV, id, 0, NULL, 0);
    if (r < 0 && r != -ENODEV) {
        snprintf(errbuf, errlen, "/dev/ublkb%d: STOP_DEV: %s", id, strerror(-r));
        goto out;
    }
    r = ublk_ctrl_del(&c, id);
    if (r == -ENODEV)
        r = 0;
    if (r < 0)
        snprintf(errbuf, errlen, "/dev/ublkb%d: DEL_DEV: %s", id, strerror(-r));
out:
    ublk_ctrl_close(&c);
    return r;
}
