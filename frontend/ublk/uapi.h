/* SPDX-License-Identifier: MIT */
/*
 * The ublk user-space block driver interface of Linux 6.12, the part vdisk
 * uses, written from the kernel's documentation (Documentation/block/ublk.rst,
 * include/uapi/linux/ublk_cmd.h): Debian 12's own header is 6.1's and lacks
 * the ioctl-encoded commands. Layouts and numbers are the kernel's ABI.
 */
#ifndef VDISK_UBLK_UAPI_H
#define VDISK_UBLK_UAPI_H

#include <linux/ioctl.h>
#include <stdint.h>

/* /dev/ublk-control commands (the legacy opcode is the ioctl number) */
enum {
    UBLK_CMD_GET_DEV_INFO = 0x02,
    UBLK_CMD_ADD_DEV = 0x04,
    UBLK_CMD_DEL_DEV = 0x05,
    UBLK_CMD_START_DEV = 0x06,
    UBLK_CMD_STOP_DEV = 0x07,
    UBLK_CMD_SET_PARAMS = 0x08,
    UBLK_CMD_GET_PARAMS = 0x09,
    UBLK_CMD_START_USER_RECOVERY = 0x10,
    UBLK_CMD_END_USER_RECOVERY = 0x11,
    UBLK_CMD_GET_DEV_INFO2 = 0x12,
    UBLK_CMD_GET_FEATURES = 0x13,  /* ioctl-encoded only (6.5) */
    UBLK_CMD_DEL_DEV_ASYNC = 0x14, /* ioctl-encoded only (6.9): does not wait for openers */
};

/* /dev/ublkcN commands, one per request tag */
enum {
    UBLK_IO_FETCH_REQ = 0x20,
    UBLK_IO_COMMIT_AND_FETCH_REQ = 0x21,
    UBLK_IO_NEED_GET_DATA = 0x22,
};

/* results of FETCH/COMMIT_AND_FETCH (CQE res) */
#define UBLK_IO_RES_OK            0
#define UBLK_IO_RES_NEED_GET_DATA 1
#define UBLK_IO_RES_ABORT         (-19) /* -ENODEV: the queue is going away */

/* the descriptor area of queue Q in /dev/ublkcN's mmap */
#define UBLKSRV_CMD_BUF_OFFSET 0
#define UBLK_MAX_QUEUE_DEPTH   4096
#define UBLK_MAX_NR_QUEUES     4096
#define UBLK_MAX_IO_BYTES      (32u << 20) /* the offset encoding's 25 bits */

/* feature flags (dev_info.flags, GET_FEATURES) */
#define UBLK_F_SUPPORT_ZERO_COPY      (1ull << 0)
#define UBLK_F_URING_CMD_COMP_IN_TASK (1ull << 1)
#define UBLK_F_NEED_GET_DATA          (1ull << 2)
#define UBLK_F_USER_RECOVERY          (1ull << 3)
#define UBLK_F_USER_RECOVERY_REISSUE  (1ull << 4)
#define UBLK_F_UNPRIVILEGED_DEV       (1ull << 5)
#define UBLK_F_CMD_IOCTL_ENCODE       (1ull << 6)
#define UBLK_F_USER_COPY              (1ull << 7)
#define UBLK_F_ZONED                  (1ull << 8)
#define UBLK_F_AUTO_BUF_REG           (1ull << 11) /* 6.16: untested here, never asked for */

/* dev_info.state */
#define UBLK_S_DEV_DEAD     0
#define UBLK_S_DEV_LIVE     1
#define UBLK_S_DEV_QUIESCED 2

/* The control command, in the SQE's command area (needs 128-byte SQEs). */
struct ublksrv_ctrl_cmd {
    uint32_t dev_id;
    uint16_t queue_id; /* 0xffff when not about a queue */
    uint16_t len;      /* of the buffer at addr */
    uint64_t addr;
    uint64_t data[1];
    uint16_t dev_path_len;
    uint16_t pad;
    uint32_t reserved;
};

/* What ADD_DEV takes and GET_DEV_INFO returns. */
struct ublksrv_ctrl_dev_info {
    uint16_t nr_hw_queues;
    uint16_t queue_depth;
    uint16_t state;
    uint16_t pad0;
    uint32_t max_io_buf_bytes;
    uint32_t dev_id;
    int32_t ublksrv_pid;
    uint32_t pad1;
    uint64_t flags;
    uint64_t ublksrv_flags; /* the server's own, kept by the kernel */
    uint32_t owner_uid;
    uint32_t owner_gid;
    uint64_t reserved1;
    uint64_t reserved2;
};

/* request operations (op_flags bits 0-7) and flags (bits 8-31) */
#define UBLK_IO_OP_READ         0
#define UBLK_IO_OP_WRITE        1
#define UBLK_IO_OP_FLUSH        2
#define UBLK_IO_OP_DISCARD      3
#define UBLK_IO_OP_WRITE_SAME   4
#define UBLK_IO_OP_WRITE_ZEROES 5
#define UBLK_IO_F_FUA           (1u << 13)
#define UBLK_IO_F_NOUNMAP       (1u << 15)

/* One request, as the kernel describes it in the mmap'd area. */
struct ublksrv_io_desc {
    uint32_t op_flags;
    uint32_t nr_sectors;
    uint64_t start_sector;
    uint64_t addr;
};

/* The per-tag command, in a 64-byte SQE's command area. */
struct ublksrv_io_cmd {
    uint16_t q_id;
    uint16_t tag;
    int32_t result; /* COMMIT: bytes done, or -errno */
    uint64_t addr;  /* FETCH: the tag's buffer (copy mode) */
};

/* SET_PARAMS */
#define UBLK_ATTR_READ_ONLY      (1u << 0)
#define UBLK_ATTR_ROTATIONAL     (1u << 1)
#define UBLK_ATTR_VOLATILE_CACHE (1u << 2)
#define UBLK_ATTR_FUA            (1u << 3)

struct ublk_param_basic {
    uint32_t attrs;
    uint8_t logical_bs_shift;
    uint8_t physical_bs_shift;
    uint8_t io_opt_shift;
    uint8_t io_min_shift;
    uint32_t max_sectors;
    uint32_t chunk_sectors;
    uint64_t dev_sectors;
    uint64_t virt_boundary_mask;
};

struct ublk_param_discard {
    uint32_t discard_alignment;
    uint32_t discard_granularity;
    uint32_t max_discard_sectors;
    uint32_t max_write_zeroes_sectors;
    uint16_t max_discard_segments;
    uint16_t reserved0;
};

struct ublk_param_devt {
    uint32_t char_major;
    uint32_t char_minor;
    uint32_t disk_major;
    uint32_t disk_minor;
};

struct ublk_param_zoned {
    uint32_t max_open_zones;
    uint32_t max_active_zones;
    uint32_t max_zone_append_sectors;
    uint8_t reserved[20];
};

#define UBLK_PARAM_TYPE_BASIC   (1u << 0)
#define UBLK_PARAM_TYPE_DISCARD (1u << 1)
#define UBLK_PARAM_TYPE_DEVT    (1u << 2)

struct ublk_params {
    uint32_t len; /* sizeof(struct ublk_params) */
    uint32_t types;
    struct ublk_param_basic basic;
    struct ublk_param_discard discard;
    struct ublk_param_devt devt;
    struct ublk_param_zoned zoned;
};

/* ioctl encodings (type 'u'), used when the kernel has UBLK_F_CMD_IOCTL_ENCODE */
#define UBLK_U_CTRL(nr)   _IOWR('u', nr, struct ublksrv_ctrl_cmd)
#define UBLK_U_CTRL_R(nr) _IOR('u', nr, struct ublksrv_ctrl_cmd)
#define UBLK_U_IO(nr)     _IOWR('u', nr, struct ublksrv_io_cmd)

_Static_assert(sizeof(struct ublksrv_ctrl_cmd) == 32, "ublk ABI");
_Static_assert(sizeof(struct ublksrv_ctrl_dev_info) == 64, "ublk ABI");
_Static_assert(sizeof(struct ublksrv_io_desc) == 24, "ublk ABI");
_Static_assert(sizeof(struct ublksrv_io_cmd) == 16, "ublk ABI");
_Static_assert(sizeof(struct ublk_params) == 112, "ublk ABI");

#endif
