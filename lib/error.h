/* SPDX-License-Identifier: MIT */
/* Per-thread error messages behind vdisk_last_error(). */
#ifndef VDISK_ERROR_H
#define VDISK_ERROR_H

/* Record a message (printf style, %m allowed) and return -ERR (ERR > 0). */
int vdisk_error(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Put a prefix (printf style) before this thread's message, as in
 * "top.qcow2: backing file base.raw: <message>", and return -ERR.
 */
int vdisk_error_prefix(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clear this thread's message. */
void vdisk_error_clear(void);

#endif
