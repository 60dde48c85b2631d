/* SPDX-License-Identifier: MIT */
/*
 * VHD differencing disks: find the parent from the locators (W2ru relative,
 * W2ku absolute; UTF-16LE) or the header's parent name (UTF-16BE), open it
 * as vpc through the image layer, and check that its UUID is the one the
 * child was made against.
 */
#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../error.h"
#include "vpc.h"

#define MAX_LOCATOR 8192 /* bytes of one locator's path: far over any path Windows takes */

/* Convert LEN bytes from FROM to TO with iconv into a malloc'd, NUL-terminated string. */
static char *convert(const char *from, const char *to, const void *in, size_t len, size_t *outlen)
{
    iconv_t cd = iconv_open(to, from);
    size_t cap = len * 2 + 4, left = cap - 2;
    char *out = calloc(1, cap), *op = out, *ip = (char *)in;

    if (cd == (iconv_t)-1 || !out) {
        if (cd != (iconv_t)-1)
            iconv_close(cd);
        free(out);
        return NULL;
    }
    if (iconv(cd, &ip, &len, &op, &left) == (size_t)-1) {
        free(out);
        out = NULL;
    }
    iconv_close(cd);
    if (out && outlen)
        *outlen = (size_t)(op - out);
    return out;
}

int vpc_to_utf16(const char *in, bool be, uint8_t *out, size_t outlen)
{
    size_t n;
    char *u = convert("UTF-8", be ? "UTF-16BE" : "UTF-16LE", in, strlen(in), &n);

    if (!u)
        return -EILSEQ;
    if (n > outlen) {
        free(u);
        return -ENAMETOOLONG;
    }
    memcpy(out, u, n);
    free(u);
    return (int)n;
}

/* UTF-16 (BE or LE) of up to LEN bytes, ending at a NUL unit, as a Linux path (malloc'd). */
static char *utf16_path(const uint8_t *p, size_t len, bool be)
{
    size_t n = 0;
    char *s;

    while (n + 1 < len && (p[n] || p[n + 1]))
        n += 2;
    if (n == 0)
        return NULL;
    s = convert(be ? "UTF-16BE" : "UTF-16LE", "UTF-8", p, n, NULL);
    for (char *c = s; c && *c; c++)
        if (*c == '\\')
            *c = '/';
    while (s && strncmp(s, "./", 2) == 0 && s[2]) /* ".\\parent.vhd": the child's directory */
        memmove(s, s + 2, strlen(s + 2) + 1);
    return s;
}

/* The path in locator I (W2ru or W2ku), or NULL when it has none we can use. */
static int read_locator(struct vpc *s, int i, uint32_t want, char **out)
{
    const uint8_t *l = s->dyn + VD_LOCATORS + 24 * i;
    uint32_t code = get_be32(l), len = get_be32(l + 8);
    uint64_t off = get_be64(l + 16);
    uint8_t *buf;
    int r;

    *out = NULL;
    if (code != want || len == 0)
        return 0;
    if (len > MAX_LOCATOR || off > s->file_size || len > s->file_size - off)
        return vdisk_error(EINVAL, "%s: VHD parent locator %d (%u bytes at %llu) is invalid",
                           s->node->path, i, len, (unsigned long long)off);
    buf = malloc(len);
    if (!buf)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    r = vdisk_file_pread(s->file, buf, len, off);
    if (r == 0)
        *out = utf16_path(buf, len, false);
    free(buf);
    return r;
}

/* Does NAME (relative to the child) name a file that exists? */
static bool exists(struct vpc *s, const char *name)
{
    char *path;
    bool ok;

    /* a Windows drive path ("C:/...") names nothing here */
    if (!name || (name[0] && name[1] == ':'))
        return false;
    path = vdisk_node_resolve(s->node, name);
    ok = path && access(path, F_OK) == 0;
    free(path);
    return ok;
}

/* Print UUID U into OUT (37 bytes). */
static void uuid_str(const uint8_t *u, char *out)
{
    for (int i = 0, o = 0; i < 16; i++) {
        o += sprintf(out + o, "%02x", u[i]);
        if (i == 3 || i == 5 || i == 7 || i == 9)
            out[o++] = '-';
    }
}

/* Is the opened parent the one the child was made against? */
static int check_parent(struct vpc *s)
{
    struct vdisk_node *b = s->node->backing;
    const struct vpc *p = b->priv;
    char want[40] = "", got[40] = "";

    if (memcmp(p->footer + VF_UUID, s->dyn + VD_PARENT_UUID, 16) == 0)
        return 0;
    uuid_str(s->dyn + VD_PARENT_UUID, want);
    uuid_str(p->footer + VF_UUID, got);
    return vdisk_error(EINVAL,
                       "%s: parent %s has UUID %s, but %s was made against parent UUID %s: "
                       "not its parent (or the parent was changed)",
                       s->node->path, b->path, got, s->node->path, want);
}

int vpc_open_parent(struct vpc *s)
{
    char *cand[3] = {NULL, NULL, NULL};
    const char *pick = NULL;
    int r = 0;

    for (int i = 0; i < 8 && r == 0 && !cand[0]; i++)
        r = read_locator(s, i, VPC_PLAT_W2RU, &cand[0]);
    for (int i = 0; i < 8 && r == 0 && !cand[1]; i++)
        r = read_locator(s, i, VPC_PLAT_W2KU, &cand[1]);
    if (r < 0)
        goto out;
    cand[2] = utf16_path(s->dyn + VD_PARENT_NAME, 512, true);
    for (int i = 0; i < 3 && !pick; i++)
        if (exists(s, cand[i]))
            pick = cand[i];
    if (!pick) {
        r = vdisk_error(ENOENT,
                        "%s: VHD parent not found (relative locator '%s', absolute locator "
                        "'%s', parent name '%s')",
                        s->node->path, cand[0] ? cand[0] : "", cand[1] ? cand[1] : "",
                        cand[2] ? cand[2] : "");
        goto out;
    }
    s->parent = strdup(pick);
    if (!s->parent) {
        r = vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        goto out;
    }
    r = vdisk_node_open_backing(s->node, pick, "vpc");
    if (r == 0)
        r = check_parent(s);
out:
    for (int i = 0; i < 3; i++)
        free(cand[i]);
    return r;
}
