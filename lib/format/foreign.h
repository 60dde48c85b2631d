/* SPDX-License-Identifier: MIT */
/*
 * Container formats qemu-img knows that libvdisk does not serve (yet). Their
 * probes keep such a file from being opened as raw, where a write would
 * destroy the image: the image layer refuses it with a message naming it.
 */
#ifndef VDISK_FORMAT_FOREIGN_H
#define VDISK_FORMAT_FOREIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A container format libvdisk recognises but does not serve. */
struct vdisk_foreign {
    const char *name;  /* qemu-img's format name: vhdx, vpc, vmdk, ... */
    const char *title; /* for people: "VHDX (Hyper-V)" */
    /* 0 not this format, up to 100 a full signature match; same arguments as vdisk_format */
    int (*probe)(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t file_size);
};

/*
 * The foreign format whose probe matches best (score > 0), or NULL. HEAD =
 * first 64 KiB (zero padded; HEAD_LEN bytes are the file's), TAIL = last 512
 * bytes (meaningful when FILE_SIZE >= 512).
 */
const struct vdisk_foreign *vdisk_foreign_probe(const uint8_t *head, size_t head_len,
                                                const uint8_t *tail, uint64_t file_size);
/* By qemu-img's format name; NULL if NAME is not a foreign format. */
const struct vdisk_foreign *vdisk_foreign_find(const char *name);
/* By a file name extension (without the dot: "vhd", "vmdk", "hdd"), or NULL. */
const struct vdisk_foreign *vdisk_foreign_find_ext(const char *ext);
/*
 * Record why PATH cannot be served (CREATE: cannot be made) as FMT and
 * return -ENOTSUP.
 */
int vdisk_foreign_refuse(const char *path, const struct vdisk_foreign *fmt, bool create);

#endif
