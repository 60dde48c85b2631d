/* SPDX-License-Identifier: MIT */
/*
 * The vdisk utility's internals: commands, the records of open disks under
 * /run/vdisk, and the "ways" (vias) that give an image a block device.
 */
#ifndef VDISK_TOOL_H
#define VDISK_TOOL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "vdisk/vdisk.h"

/* Where records live; $VDISK_RUN_DIR overrides it (tests use their own). */
#define VDISK_RUN_DIR_DEFAULT "/run/vdisk"
const char *run_dir(void);

/* One open disk, as recorded in /run/vdisk/<id>.rec (key=value lines). */
struct disk_record {
    char id[17];      /* hash of the canonical image path, 16 hex digits */
    char image[4096]; /* canonical path */
    char format[16];
    char via[8];           /* kmod, loop, ublk, nbd, fuse */
    char device[64];       /* /dev/loop3, /dev/vdisk0, ... */
    char backing[4096];    /* file the block device reads (fuse file), else "" */
    char mountpoint[4096]; /* private FUSE mount, else "" */
    char socket[4096];     /* server socket (nbd), else "" */
    bool read_only;
    uint64_t size;
    pid_t pid; /* server process, 0 when the kernel serves it */

    bool snapshot;      /* writes went to a temporary overlay (gone with its server) */
    unsigned partition; /* the disk is this partition of the image; 0: all of it */
    bool file_known;    /* file_dev, file_ino: the file open checked (recover serves only it) */
    uint64_t file_dev, file_ino;
};

/* What `vdisk open` asks a via for. */
struct open_request {
    const char *image;   /* canonical path */
    const char *format;  /* probed or given */
    bool format_stated;  /* given with -f: servers open it as that, else they probe */
    const char *options; /* -o KEY=VAL,...: the format's open options, or NULL */
    unsigned caps;       /* VDISK_CAP_* of the image */
    bool read_only;
    bool direct;
    uint64_t size;          /* virtual size */
    uint64_t linear_offset; /* VDISK_CAP_LINEAR: where the data starts in the file */

    bool snapshot;            /* --snapshot: writes go to a temporary overlay (open_image.c) */
    const char *snapshot_dir; /* --snapshot-dir, or NULL */
    unsigned partition;       /* --partition N: that partition alone; 0 for the whole image */
    bool checked;             /* dev, ino: the file open checked; a way serves only that one */
    uint64_t dev, ino;
};

/*
 * A way to present an image as a block device. start() fills rec->device,
 * pid, etc.; it leaves nothing behind on failure. stop() undoes it; with
 * FORCE it also cleans up after a dead server. alive() is true while the
 * device still serves the recorded image.
 */
struct via {
    const char *name;
    bool linear_only; /* serves images whose bytes lie as they are in a file (VDISK_CAP_LINEAR) */
    bool (*available)(void); /* usable on this machine now */
    int (*start)(const struct open_request *req, struct disk_record *rec);
    int (*stop)(const struct disk_record *rec);
    bool (*alive)(const struct disk_record *rec);
};

extern const struct via via_loop;
extern const struct via via_nbd;
extern const struct via via_kmod;
extern const struct via via_fuse;
extern const struct via via_ublk;

/* Start a server that takes over REC's ublk device (its server died); updates rec->pid. */
int ublk_recover(struct disk_record *rec);
/* What the kernel says of REC's ublk device: live, quiesced (I/O waits), dead, gone. */
const char *ublk_kernel_state(const struct disk_record *rec, unsigned *queues);

/*
 * A RAM disk of SIZE bytes in vdisk.ko's own page store, with REC's id; fills
 * rec->device. 0; 1 if the loaded vdisk.ko predates RAM disks; -1 with a message.
 */
int kmod_ram_start(const char *size_text, uint64_t size, struct disk_record *rec);
/* Bytes of memory vdisk.ko's RAM disk DEVICE holds now, or -1. */
long long kmod_ram_bytes(const char *device);

/* Open REQ's image for a way, with FLAGS: snapshot overlay and partition applied (open_image.c). */
int open_image(const struct open_request *req, unsigned flags, struct vdisk_image **imgp);
/* Is IMG's file for REQ's image the one REQ checked (open_image.c)? 0, or -ESTALE. */
int open_image_same_file(const struct open_request *req, struct vdisk_image *img);

/*
 * --overlay OVERLAY over BASE (FORMAT: the base's, NULL to probe): make a qcow2
 * overlay when missing (*CREATED), else check it is one over BASE (overlay.c).
 * 0, or -1 with a message.
 */
int overlay_prepare(const char *overlay, const char *base, const char *format, bool *created);

/* IMG's partition table (partitions.c; free() it), or NULL with WHY filled. */
struct vdisk_partition_table *partitions_read(struct vdisk_image *img, char *why, size_t len);
/* Print it for vdisk info: text lines, or JSON members (T NULL: the error WHY). */
void partitions_text(const struct vdisk_partition_table *t, const char *why);
void partitions_json(const struct vdisk_partition_table *t, const char *why);

/* The via called NAME, or NULL. */
const struct via *via_find(const char *name);
/* The preferred available via for an image with CAPS (kmod, loop for linear; ublk, nbd, fuse else).
 */
const struct via *via_auto(unsigned caps);

/* The format to open REQ's image with: the one stated, or NULL to probe (and guard) again. */
static inline const char *open_format(const struct open_request *req)
{
    return req->format_stated ? req->format : NULL;
}

/*
 * A kernel way writes the file without vdisk seeing the writes: refuse an
 * image whose format was only probed and could not be remembered (a guest
 * could turn it into another format). 0, or -1 with a message.
 */
int kernel_way_allowed(const struct open_request *req, struct vdisk_image *img);

/* Messages: "vdisk: WHAT: WHY" on stderr. err() returns 1 (exit status). */
int err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Write S with control characters escaped (\n, \t, \xHH): text output of any path. */
void fput_escaped(FILE *out, const char *s);
/* Checks (checks.c). A SIZE (TEXT as given) a disk can have: 0, or -1 with a message. */
int check_disk_size(const char *text, uint64_t size);
/* May PATH be opened read-write (mode, read-only mount, immutable)? 0, or -1 with a hint to use -r.
 */
int check_writable(const char *path);
/* After a failed open of PATH: if a lock stopped it, say which open disk holds it. */
void lock_hint(const char *path);
/* The --help text of a command (help.c). */
const char *command_help(const char *name);
/* Print the usage lines of a command's help (for a usage error). */
void print_usage(FILE *out, const char *name);

/* Records (record.c). Each returns 0 or -1 with a message printed. */
void record_id(const char *canonical_path, char id[17]);
int record_save(const struct disk_record *rec);
/* 1 found, 0 not found, -1 error. */
int record_load(const char *id, struct disk_record *rec);
int record_remove(const char *id);
/* All records; *n set; caller frees. */
int record_list(struct disk_record **recs, size_t *n);
/* Serialise open/close against each other (flock on /run/vdisk/.lock). */
int record_lock(void);
void record_unlock(int fd);

/* The record for an image path, device path or id: 1 found, 0 not, -1 error. */
int find_record(const char *what, struct disk_record *rec);
/* Write S as a JSON string. */
void json_string(FILE *out, const char *s);

struct persist_entry;
/* Fill a persistent-table entry from open's options (cmd_persist.c). 0 or -1 with a message. */
int persist_entry_set(struct persist_entry *e, const char *image, const char *format,
                      const char *options, const char *via, bool read_only, bool direct);

/* Open the disk of a persistent-table entry (cmd_open.c): 0, or 1 with a message. */
int open_entry(const struct persist_entry *e);
/* Stop one disk and drop its record, record lock held; FORCE: kill its server first (cmd_close.c).
 */
int close_disk(const struct disk_record *rec, bool force);
/* --key-file FILE and --key-stdin (key.c): getopt_long entries and their codes. */
#define OPT_KEY_FILE  0x4b01
#define OPT_KEY_STDIN 0x4b02
#define KEY_LONGOPTS                                                                               \
    {"key-file", required_argument, NULL, OPT_KEY_FILE},                                           \
    {                                                                                              \
        "key-stdin", no_argument, NULL, OPT_KEY_STDIN                                              \
    }
/* Read the key for option C (ARG: its file) into a memfd; 0, or 1 with a message printed. */
int key_option(int c, const char *arg);
/* OPTIONS plus key-fd=N when a key was given (a static buffer), else OPTIONS as is. */
const char *key_options(const char *options);
/* Did call result R fail only because the image's format takes no key? */
bool key_not_taken(int r);
/* Close the key's descriptor (a server, once its image is open). */
void key_forget(void);
/* The key's descriptor (servers keep it open), or -1. */
int key_descriptor(void);
/* Use FD (a sealed memfd) as the key (key-ask.c). */
void key_adopt(int fd);
/* Ask WHAT's passphrase on the terminal (TWICE: and compare): a sealed memfd, or -1 (printed). */
int key_ask_fd(const char *what, bool twice);
/* No key given and PATH (FORMAT; NULL probes) is encrypted: ask on the terminal. 0, 1 (printed). */
int key_ask_if_needed(const char *path, const char *format);
/* R failed for want of a key for new image PATH: ask twice. 1 asked (retry), 0 not, -1 printed. */
int key_ask_new(int r, const char *path);

/* Commands (cmd_*.c): argc/argv start at the command name; return the exit status. */
int cmd_create(int argc, char **argv);
int cmd_open(int argc, char **argv);
int cmd_close(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_recover(int argc, char **argv);
int cmd_persist(int argc, char **argv);
int cmd_formats(int argc, char **argv);
int cmd_supervise(int argc, char **argv);
int cmd_luks(int argc, char **argv);
int cmd_commit(int argc, char **argv);
int cmd_rebase(int argc, char **argv);

/* nodes.c: the disk's device node root:disk 0660, its control node (ublk) root 0600 */
void nodes_secure(const char *device);
int cmd_resize(int argc, char **argv);
int cmd_save(int argc, char **argv);
/* RAM disks (cmd_ram.c): open one of SIZE_TEXT through VIA (0 or 1 with a message); info. */
int ram_open(const char *size_text, const char *via, bool read_only);
int ram_info(const struct disk_record *rec, bool json);

#endif
