/* SPDX-License-Identifier: MIT */
/* The table of persistent disks (persist.h): parse, add, remove, atomically. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "persist.h"
#include "vdisk.h"

#define MAX_LINE  (4 * 4096 + 2048)
#define MAX_LINES 10000

static const char header[] =
    "# Persistent vdisk disks: opened in this order at boot (vdisk open --all-persistent,\n"
    "# vdisk-persistent.service), closed in reverse order at shutdown. Edit with\n"
    "# `vdisk persist add|remove` or by hand, one disk a line:\n"
    "#   IMAGE  WAY  OPTIONS\n"
    "# WAY: auto, kmod, loop, nbd or fuse. OPTIONS, comma separated: ro or rw,\n"
    "# format=FMT, no-direct, o=KEY=VAL (a format open option; repeat for more).\n"
    "# In IMAGE, write space, tab, newline, # and backslash as \\040, \\011, \\012, \\043,\n"
    "# \\134.\n";

const char *persist_table(void)
{
    static char path[PATH_MAX];
    const char *d = getenv("VDISK_CONF_DIR");

    snprintf(path, sizeof(path), "%s/disks", d && *d ? d : VDISK_CONF_DIR_DEFAULT);
    return path;
}

/* Write PATH escaped as fstab does. */
static void put_path(FILE *f, const char *path)
{
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if (*p <= ' ' || *p == '\\' || *p == '#' || *p == 0x7f)
            fprintf(f, "\\%03o", *p);
        else
            fputc(*p, f);
    }
}

/* Unescape an fstab-style field in place; -1 on a bad escape. */
static int unescape(char *s)
{
    char *out = s;

    for (char *p = s; *p; p++) {
        if (*p != '\\') {
            *out++ = *p;
            continue;
        }
        if (p[1] < '0' || p[1] > '3' || p[2] < '0' || p[2] > '7' || p[3] < '0' || p[3] > '7')
            return -1;
        *out++ = (char)((p[1] - '0') << 6 | (p[2] - '0') << 3 | (p[3] - '0'));
        p += 3;
    }
    *out = '\0';
    return out == s ? -1 : 0;
}

/* Copy VALUE into a field of SIZE; -1 if too long. */
static int copy_field(char *field, size_t size, const char *value)
{
    if (strlen(value) >= size)
        return -1;
    strcpy(field, value);
    return 0;
}

/* Parse OPTIONS (comma separated) into E; -1 with *why set on a bad one. */
static int parse_options(char *options, struct persist_entry *e, const char **why)
{
    char *save = NULL;

    for (char *o = strtok_r(options, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
        if (strcmp(o, "ro") == 0) {
            e->read_only = true;
        } else if (strcmp(o, "rw") == 0 || strcmp(o, "defaults") == 0) {
            e->read_only = false;
        } else if (strcmp(o, "no-direct") == 0) {
            e->direct = false;
        } else if (strncmp(o, "format=", 7) == 0) {
            if (copy_field(e->format, sizeof(e->format), o + 7) < 0 || !o[7])
                return *why = "bad format=", -1;
        } else if (strncmp(o, "o=", 2) == 0 && strchr(o + 2, '=')) {
            size_t len = strlen(e->options);

            if (len + strlen(o + 2) + 2 > sizeof(e->options))
                return *why = "too many o= options", -1;
            snprintf(e->options + len, sizeof(e->options) - len, "%s%s", len ? "," : "", o + 2);
        } else {
            *why = "unknown option (ro, rw, format=FMT, no-direct, o=KEY=VAL)";
            return -1;
        }
    }
    return 0;
}

/* Parse one non-comment LINE: 1 an entry, 0 blank or comment, -1 malformed (*why). */
static int parse_line(char *line, struct persist_entry *e, const char **why)
{
    char *fields[4] = {0}, *save = NULL, *p;
    int n = 0;

    if ((p = strchr(line, '#')))
        *p = '\0';
    for (char *f = strtok_r(line, " \t", &save); f; f = strtok_r(NULL, " \t", &save)) {
        if (n == 3)
            return *why = "more than three fields (IMAGE WAY OPTIONS)", -1;
        fields[n++] = f;
    }
    if (n == 0)
        return 0;
    memset(e, 0, sizeof(*e));
    e->direct = true;
    if (unescape(fields[0]) < 0 || copy_field(e->image, sizeof(e->image), fields[0]) < 0)
        return *why = "bad IMAGE (escape space, tab, newline, backslash as \\040 ...)", -1;
    if (e->image[0] != '/')
        return *why = "IMAGE must be an absolute path", -1;
    if (copy_field(e->via, sizeof(e->via), n > 1 ? fields[1] : "auto") < 0)
        return *why = "bad WAY", -1;
    if (n > 2 && parse_options(fields[2], e, why) < 0)
        return -1;
    return 1;
}

int persist_load(struct persist_entry **entries, size_t *n)
{
    struct persist_entry *all = NULL, e;
    const char *path = persist_table(), *why = NULL;
    char *line = malloc(MAX_LINE);
    unsigned lineno = 0;
    size_t count = 0;
    FILE *f;
    int r = 0;

    *entries = NULL;
    *n = 0;
    if (!line)
        return -err("out of memory");
    f = fopen(path, "r");
    if (!f) {
        free(line);
        return errno == ENOENT ? 0 : -err("%s: %m", path);
    }
    while (fgets(line, MAX_LINE, f)) {
        struct persist_entry *grown;
        int k;

        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            r = -err("%s:%u: line too long", path, lineno);
            break;
        }
        line[strcspn(line, "\n")] = '\0';
        k = parse_line(line, &e, &why);
        if (k < 0) {
            r = -err("%s:%u: %s", path, lineno, why);
            break;
        }
        if (k == 0)
            continue;
        if (count == MAX_LINES) {
            r = -err("%s: more than %d disks", path, MAX_LINES);
            break;
        }
        e.line = lineno;
        grown = realloc(all, (count + 1) * sizeof(*all));
        if (!grown) {
            r = -err("out of memory");
            break;
        }
        all = grown;
        all[count++] = e;
    }
    fclose(f);
    free(line);
    if (r < 0) {
        free(all);
        return r;
    }
    *entries = all;
    *n = count;
    return 0;
}

/* Write E as one table line. */
static void put_entry(FILE *f, const struct persist_entry *e)
{
    char opts[1024];
    char *save = NULL;

    put_path(f, e->image);
    fprintf(f, " %s %s", e->via[0] ? e->via : "auto", e->read_only ? "ro" : "rw");
    if (e->format[0])
        fprintf(f, ",format=%s", e->format);
    if (!e->direct)
        fputs(",no-direct", f);
    snprintf(opts, sizeof(opts), "%s", e->options);
    for (char *o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save))
        fprintf(f, ",o=%s", o);
    fputc('\n', f);
}

/*
 * Rewrite the table: every line as it was, except the entry whose image is
 * DROP (if any), which becomes ADD (or goes); ADD is appended if it replaced
 * nothing. 1 if DROP was found, 0 if not, -1 on error.
 */
static int rewrite(const char *drop, const struct persist_entry *add)
{
    const char *path = persist_table();
    char tmp[PATH_MAX + 8], dir[PATH_MAX], *line = malloc(MAX_LINE), *copy = malloc(MAX_LINE);
    struct persist_entry e;
    const char *why;
    bool found = false;
    FILE *in, *out = NULL;
    int r = -1;

    if (!line || !copy) {
        err("out of memory");
        goto out;
    }
    snprintf(dir, sizeof(dir), "%s", path);
    *strrchr(dir, '/') = '\0';
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        if ((errno == EACCES || errno == EPERM) && geteuid() != 0)
            err("must be root (%s: %m)", dir);
        else
            err("%s: %m", dir);
        goto out;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    in = fopen(path, "r");
    if (!in && errno != ENOENT) {
        err("%s: %m", path);
        goto out;
    }
    out = fopen(tmp, "w");
    if (!out) {
        if ((errno == EACCES || errno == EPERM) && geteuid() != 0)
            err("must be root (%s: %m)", tmp);
        else
            err("%s: %m", tmp);
        if (in)
            fclose(in);
        goto out;
    }
    if (!in)
        fputs(header, out);
    while (in && fgets(line, MAX_LINE, in)) {
        memcpy(copy, line, MAX_LINE);
        copy[strcspn(copy, "\n")] = '\0';
        if (parse_line(copy, &e, &why) == 1 && strcmp(e.image, drop) == 0) {
            if (!found && add)
                put_entry(out, add);
            found = true;
            continue;
        }
        fputs(line, out);
        if (!strchr(line, '\n'))
            fputc('\n', out);
    }
    if (in)
        fclose(in);
    if (!found && add)
        put_entry(out, add);
    if (fflush(out) != 0 || fsync(fileno(out)) < 0) {
        err("%s: %m", tmp);
        fclose(out);
        unlink(tmp);
        goto out;
    }
    fclose(out);
    if (rename(tmp, path) < 0) {
        err("%s: %m", path);
        unlink(tmp);
        goto out;
    }
    r = found;
out:
    free(line);
    free(copy);
    return r;
}

int persist_add(const struct persist_entry *e)
{
    return rewrite(e->image, e) < 0 ? -1 : 0;
}

int persist_remove(const char *what)
{
    struct persist_entry *all;
    char canonical[PATH_MAX], id[17];
    const char *image = NULL;
    size_t n;
    int r;

    if (persist_load(&all, &n) < 0)
        return -1;
    if (!realpath(what, canonical))
        snprintf(canonical, sizeof(canonical), "%s", what); /* the image may be gone */
    for (size_t i = 0; i < n && !image; i++) {
        record_id(all[i].image, id);
        if (strcmp(all[i].image, canonical) == 0 || strcmp(all[i].image, what) == 0 ||
            strcmp(id, what) == 0)
            image = all[i].image;
    }
    r = image ? rewrite(image, NULL) : 0;
    free(all);
    return r;
}
