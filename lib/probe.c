/* SPDX-License-Identifier: MIT */
/*
 * Which format a file is: the table of formats, probing by content, and the
 * defences against a guest that rewrites its own disk to look like another
 * format (QEMU's CVE-2008-2004): a linear image that vdisk opened for writing
 * is remembered as its format in an extended attribute of the file
 * (user.vdisk.format), and a later probe that disagrees is refused; a node
 * whose format was not stated refuses writes that would make it probe as a
 * non-linear format (one that could name other files to read).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#include "error.h"
#include "format/foreign.h"
#include "node.h"

#define XATTR_FORMAT "user.vdisk.format"

/* Every format, most specific probe first; raw last (it matches anything). */
static const struct vdisk_format *const formats[] = {
    &vdisk_format_iso,
    &vdisk_format_qcow2,
    &vdisk_format_vhdx,
    &vdisk_format_vmdk,
    &vdisk_format_vpc,
    &vdisk_format_vdi,
    &vdisk_format_luks,
    &vdisk_format_raw,
};
#define N_FORMATS (sizeof(formats) / sizeof(formats[0]))

const struct vdisk_format *vdisk_format_find(const char *name)
{
    if (strcmp(name, "vhd") == 0) /* what users call vpc */
        name = "vpc";
    for (size_t i = 0; i < N_FORMATS; i++)
        if (strcmp(formats[i]->name, name) == 0)
            return formats[i];
    return NULL;
}

const char *const *vdisk_formats(void)
{
    static const char *names[N_FORMATS + 1];

    for (size_t i = 0; i < N_FORMATS; i++)
        names[i] = formats[i]->name;
    return names;
}

/*
 * The format whose probe scores best on HEAD and TAIL; *FOREIGN (may be NULL)
 * a container format we do not serve that matches where only raw said yes.
 */
static const struct vdisk_format *best_format(const uint8_t *head, size_t head_len,
                                              const uint8_t *tail, uint64_t size,
                                              const struct vdisk_foreign **foreign)
{
    const struct vdisk_format *best = NULL;
    int best_score = -1;

    for (size_t i = 0; i < N_FORMATS; i++) {
        int score = formats[i]->probe(head, head_len, tail, size);

        if (score > best_score) {
            best_score = score;
            best = formats[i];
        }
    }
    /* only raw said yes: never serve a foreign container as raw */
    *foreign = best_score <= 1 ? vdisk_foreign_probe(head, head_len, tail, size) : NULL;
    return best;
}

/* Read FILE's probe window into HEAD (VDISK_PROBE_HEAD bytes) and TAIL. */
static int read_window(struct vdisk_file *file, uint8_t *head, uint8_t *tail, uint64_t *size)
{
    int r = vdisk_file_get_size(file, size);

    if (r == 0)
        r = vdisk_file_pread(file, head, VDISK_PROBE_HEAD, 0);
    memset(tail, 0, VDISK_PROBE_TAIL);
    if (r == 0 && *size >= VDISK_PROBE_TAIL)
        r = vdisk_file_pread(file, tail, VDISK_PROBE_TAIL, *size - VDISK_PROBE_TAIL);
    return r;
}

int probe_file(struct vdisk_file *file, const struct vdisk_format **fmtp)
{
    uint8_t *head = malloc(VDISK_PROBE_HEAD), tail[VDISK_PROBE_TAIL];
    const struct vdisk_foreign *foreign = NULL;
    uint64_t size;
    int r;

    if (!head)
        return vdisk_error(ENOMEM, "%s: out of memory", file->path);
    r = read_window(file, head, tail, &size);
    if (r == 0)
        *fmtp = best_format(head, size < VDISK_PROBE_HEAD ? size : VDISK_PROBE_HEAD, tail, size,
                            &foreign);
    if (r == 0 && foreign)
        r = vdisk_foreign_refuse(file->path, foreign, false);
    free(head);
    return r;
}

int vdisk_probe(const char *path, const char **format)
{
    const struct vdisk_format *fmt = NULL;
    struct vdisk_file *file;
    int r;

    vdisk_error_clear();
    r = vdisk_file_open(path, VDISK_FILE_RDONLY, &file);
    if (r < 0)
        return r;
    r = probe_file(file, &fmt);
    vdisk_file_close(file);
    if (r == 0)
        *format = fmt->name;
    return r;
}

const struct vdisk_format *probe_remembered(struct vdisk_file *file)
{
    char name[32];
    ssize_t n = fgetxattr(file->fd_buffered, XATTR_FORMAT, name, sizeof(name) - 1);

    if (n <= 0)
        return NULL;
    name[n] = '\0';
    return vdisk_format_find(name);
}

bool probe_remember(struct vdisk_file *file, const struct vdisk_format *fmt)
{
    const struct vdisk_format *was = probe_remembered(file);

    if (was == fmt)
        return true;
    return fsetxattr(file->fd_buffered, XATTR_FORMAT, fmt->name, strlen(fmt->name), 0) == 0;
}

void probe_forget(struct vdisk_file *file)
{
    (void)fremovexattr(file->fd_buffered, XATTR_FORMAT);
}

bool probe_window(uint64_t size, uint64_t off, uint64_t len)
{
    uint64_t tail = size > VDISK_PROBE_TAIL ? size - VDISK_PROBE_TAIL : 0;

    return len > 0 && (off < VDISK_PROBE_HEAD || off + len > tail);
}

/* Copy the part of BUF (NULL: zeroes) at guest [OFF, OFF+LEN) that falls in [AT, AT+N) into W. */
static void overlay(uint8_t *w, uint64_t at, uint64_t n, const void *buf, uint64_t off,
                    uint64_t len)
{
    uint64_t a = off > at ? off : at, b = off + len < at + n ? off + len : at + n;

    if (a >= b)
        return;
    if (buf)
        memcpy(w + (a - at), (const uint8_t *)buf + (a - off), b - a);
    else
        memset(w + (a - at), 0, b - a);
}

int probe_guard(struct vdisk_node *n, const void *buf, uint64_t len, uint64_t off)
{
    uint8_t *head = malloc(VDISK_PROBE_HEAD), tail[VDISK_PROBE_TAIL];
    const struct vdisk_foreign *foreign = NULL;
    const struct vdisk_format *fmt;
    uint64_t size;
    int r;

    if (!head)
        return vdisk_error(ENOMEM, "%s: out of memory", n->path);
    r = read_window(n->file, head, tail, &size);
    if (r < 0)
        goto out;
    overlay(head, 0, VDISK_PROBE_HEAD, buf, off, len);
    if (size >= VDISK_PROBE_TAIL)
        overlay(tail, size - VDISK_PROBE_TAIL, VDISK_PROBE_TAIL, buf, off, len);
    fmt =
        best_format(head, size < VDISK_PROBE_HEAD ? size : VDISK_PROBE_HEAD, tail, size, &foreign);
    if (foreign || (fmt != n->fmt && !(fmt->caps & VDISK_CAP_LINEAR)))
        r = vdisk_error(EPERM,
                        "%s: refused a write of %llu bytes at %llu: the image would then "
                        "look like a %s image (its format was probed; open it with -f %s to "
                        "allow such writes)",
                        n->path, (unsigned long long)len, (unsigned long long)off,
                        foreign ? foreign->name : fmt->name, n->fmt->name);
out:
    free(head);
    return r;
}
