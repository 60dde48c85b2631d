/* SPDX-License-Identifier: MIT */
/*
 * VHDX (Hyper-V): the driver's state and its layout constants, shared by
 * vhdx.c (open, map, write), vhdx-meta.c (headers, regions, metadata, BAT),
 * vhdx-log.c (log replay and the log writer), vhdx-create.c and vhdx-check.c.
 * Spec: [MS-VHDX] v20160714. Everything on disk is little-endian.
 */
#ifndef VDISK_FORMAT_VHDX_H
#define VDISK_FORMAT_VHDX_H

#include <endian.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "../format.h"
#include "bytes.h"

#define MiB (1ull << 20)

#define VHDX_HDR1_OFF  (64 * 1024ull)
#define VHDX_HDR2_OFF  (128 * 1024ull)
#define VHDX_RT1_OFF   (192 * 1024ull)
#define VHDX_RT2_OFF   (256 * 1024ull)
#define VHDX_HDR_SIZE  4096u
#define VHDX_RT_SIZE   (64 * 1024u)
#define VHDX_RT_MAX    2047u /* region table entries */
#define VHDX_META_MAX  2047u /* metadata table entries */
#define VHDX_PAGE      4096u /* the log's sector */
#define VHDX_SB_SIZE   MiB   /* a sector bitmap block */
#define VHDX_MIN_BLOCK MiB
#define VHDX_MAX_BLOCK (256 * MiB)
#define VHDX_MAX_SIZE  (64ull << 40) /* 64 TiB */

/* payload block states (BAT entry bits 0-2) */
#define PAYLOAD_NOT_PRESENT       0
#define PAYLOAD_UNDEFINED         1
#define PAYLOAD_ZERO              2
#define PAYLOAD_UNMAPPED          3
#define PAYLOAD_FULLY_PRESENT     6
#define PAYLOAD_PARTIALLY_PRESENT 7
#define SB_NOT_PRESENT            0
#define SB_PRESENT                6
#define BAT_STATE(e)              ((unsigned)((e)&7))
#define BAT_OFFSET(e)             ((e) & ~(MiB - 1)) /* FileOffsetMB, in bytes */

typedef struct {
    uint8_t b[16];
} vhdx_guid; /* as stored: the first three fields little-endian */

extern const vhdx_guid VHDX_GUID_BAT, VHDX_GUID_META, VHDX_GUID_FILE_PARAMS, VHDX_GUID_DISK_SIZE,
    VHDX_GUID_PAGE83, VHDX_GUID_LOGICAL_SS, VHDX_GUID_PHYSICAL_SS, VHDX_GUID_PARENT_LOCATOR,
    VHDX_GUID_LOCATOR_TYPE;

/* A range of the file the log rewrote, for a read-only open (replay in memory). */
struct vhdx_overlay {
    uint64_t off, len;
    uint8_t *data; /* NULL: zeroes */
};

/* One dirty 4 KiB metadata page waiting for the next log entry. */
struct vhdx_dirty {
    uint64_t off;   /* file offset of the page */
    uint8_t *bytes; /* points into the BAT or a sector bitmap */
};

struct vhdx {
    struct vdisk_node *node;
    struct vdisk_file *file;
    uint64_t file_size;

    /* the current header (the valid one with the highest sequence number) */
    unsigned hdr_slot; /* 0 or 1 */
    uint64_t hdr_seq;
    vhdx_guid file_write_guid, data_write_guid, log_guid;
    uint32_t log_len;
    uint64_t log_off;
    char creator[256];

    /* regions and metadata */
    uint64_t bat_off, meta_off;
    uint32_t bat_len, meta_len;
    uint32_t block_size, lss, pss;
    bool leave_alloc, has_parent;
    uint64_t vsize;
    vhdx_guid page83;
    uint64_t chunk_ratio, data_blocks, bat_entries;
    uint32_t sectors_per_block;

    /* the BAT in file order (little-endian, as on disk) */
    uint64_t *bat;
    uint8_t *bat_page_dirty; /* one flag per 4 KiB page of the BAT */

    /* differencing: sector bitmap blocks by chunk, loaded on demand */
    uint8_t **sb;
    uint64_t nchunks;
    char *parent_name; /* the path that opened the parent */
    char *locator[5];  /* parent_linkage, parent_linkage2, relative_path, volume_path,
                          absolute_win32_path (UTF-8) */

    /* log state */
    const char *log_state;    /* "clean", "replayed" or "replayed in memory" */
    unsigned log_entries;     /* entries replayed at open */
    struct vhdx_overlay *ovl; /* read-only replay */
    unsigned novl;
    bool session;       /* header GUIDs renewed, log GUID set: writes may go */
    uint64_t log_seq;   /* next entry's sequence number */
    uint32_t log_pos;   /* where the next entry goes */
    int64_t stop_after; /* tests: _exit after this many log-commit writes (-1: never) */
    struct vhdx_dirty *dirty;
    unsigned ndirty, dirty_cap;

    uint64_t alloc_end; /* next free MiB-aligned file offset for a new block */
    /* blocks trimmed since the last commit: their space goes back to the file system only
       once the BAT that no longer uses it is durable */
    uint64_t *punch;
    unsigned npunch, punch_cap;
    /* thread safety: map() of what needs no change runs shared; everything else exclusive */
    pthread_rwlock_t lock;
    atomic_uint pins; /* DATA mappings in use: trims wait for them (exclusive held) */
    pthread_mutex_t pin_lock;
    pthread_cond_t pin_done;
};

/* BAT index of payload block I, and of the sector bitmap of chunk C. */
static inline uint64_t vhdx_bat_index(const struct vhdx *s, uint64_t i)
{
    return i + i / s->chunk_ratio;
}
static inline uint64_t vhdx_sb_index(const struct vhdx *s, uint64_t c)
{
    return c * (s->chunk_ratio + 1) + s->chunk_ratio;
}
static inline uint64_t vhdx_entry(const struct vhdx *s, uint64_t idx)
{
    return le64toh(s->bat[idx]);
}

/* Is entry IDX's state one the spec does not allow there? */
static inline bool vhdx_bad_state(const struct vhdx *s, uint64_t idx)
{
    unsigned st = BAT_STATE(vhdx_entry(s, idx));

    if (idx % (s->chunk_ratio + 1) == s->chunk_ratio)
        return st != SB_NOT_PRESENT && st != SB_PRESENT;
    return st == 4 || st == 5 || (st == PAYLOAD_PARTIALLY_PRESENT && !s->has_parent);
}

/* vhdx-meta.c */
uint32_t vhdx_crc32c(uint32_t crc, const void *buf, size_t len);
/* CRC-32C of BUF with its 4-byte checksum field at CSUM_AT taken as zero. */
uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t csum_at);
bool vhdx_guid_is_zero(const vhdx_guid *g);
void vhdx_guid_new(vhdx_guid *g);
/* "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}" (39 bytes with the NUL); parse: 0 or -EINVAL. */
void vhdx_guid_format(const vhdx_guid *g, char out[39]);
int vhdx_guid_parse(const char *text, vhdx_guid *g);
/* UTF-16LE of LEN bytes to a malloc'd UTF-8 string (iconv); NULL on bad input. */
char *vhdx_utf16_to_utf8(const uint8_t *p, size_t len);
/* UTF-8 to UTF-16LE in OUT (at most CAP bytes): bytes written, or -1. */
long vhdx_utf8_to_utf16(const char *text, uint8_t *out, size_t cap);
int vhdx_read_headers(struct vhdx *s);
/* Write the header (current fields) twice, to both slots, flushing after each. */
int vhdx_write_headers(struct vhdx *s);
int vhdx_read_regions(struct vhdx *s);
int vhdx_read_metadata(struct vhdx *s);
int vhdx_read_bat(struct vhdx *s);
/* Read file bytes as the (possibly in-memory replayed) log left them. */
int vhdx_pread_meta(struct vhdx *s, void *buf, size_t len, uint64_t off);
/* Does [OFF, OFF+LEN) of the file touch the in-memory replay? */
bool vhdx_overlay_hits(const struct vhdx *s, uint64_t off, uint64_t len);
/* The sector bitmap of chunk C (loaded, or NULL when not present); -errno. */
int vhdx_sb_get(struct vhdx *s, uint64_t c, uint8_t **bm);

/* vhdx-log.c */
/* Replay the log (the header's log GUID is not zero): to disk if writable, else in memory. */
int vhdx_log_replay(struct vhdx *s);
/* Queue the 4 KiB metadata page at file offset OFF (its bytes at P) for the next entry. */
int vhdx_log_dirty(struct vhdx *s, uint64_t off, uint8_t *p);
/* Write queued pages through the log: flush data, entry, flush, apply, flush. */
int vhdx_log_commit(struct vhdx *s);
/* Begin a write session: new File/DataWriteGuid and log GUID, both headers. */
int vhdx_session_begin(struct vhdx *s);
/* End it at close: commit, clear the log GUID. */
int vhdx_session_end(struct vhdx *s);
/* tests: count one file write of a log commit; _exit when the budget is spent. */
void vhdx_crash_point(struct vhdx *s);

/* vhdx-create.c */
int vhdx_create(struct vdisk_node *node, uint64_t size, const struct vdisk_options *opts);

/* vhdx-check.c */
int vhdx_check(struct vdisk_node *node, unsigned flags, struct vdisk_check_result *res);
/* vhdx-resize.c: S->lock held exclusive, no mapping pinned. */
int vhdx_resize(struct vdisk_node *node, uint64_t size, unsigned flags);

/* vhdx-overlap.c: blocks over metadata or each other refuse the session's writes. */
int vhdx_overlap_scan(struct vhdx *s);

/* May a block of LEN bytes lie at file offset OFF (inside the file, off the header area and
 * regions)? */
bool vhdx_area_ok(const struct vhdx *s, uint64_t off, uint64_t len);

#endif
