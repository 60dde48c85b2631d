/* SPDX-License-Identifier: MIT */
/*
 * The table of persistent disks, CONF_DIR/disks (/etc/vdisk/disks; tests set
 * $VDISK_CONF_DIR): one disk a line, "IMAGE WAY OPTIONS", opened in order at
 * boot by `vdisk open --all-persistent` and closed in reverse order. A person
 * may edit it: # starts a comment, blank lines are kept. IMAGE escapes space,
 * tab, newline, # and backslash as fstab does (\040, \011, \012, \043, \134). OPTIONS
 * is a comma-separated list: ro or rw, format=FMT, no-direct, and o=KEY=VAL
 * for each of the format's open options.
 */
#ifndef VDISK_PERSIST_H
#define VDISK_PERSIST_H

#include <stdbool.h>
#include <stddef.h>

#define VDISK_CONF_DIR_DEFAULT "/etc/vdisk"

struct persist_entry {
    char image[4096];   /* canonical path */
    char format[32];    /* "" to probe */
    char options[1024]; /* the format's open options, KEY=VAL,...; "" for none */
    char via[16];       /* auto, kmod, loop, nbd, fuse, ... */
    bool read_only;
    bool direct;
    unsigned line; /* line number in the table, for messages */
};

/* The table's path. */
const char *persist_table(void);
/* All entries; *n set; caller frees. 0, or -1 with a message (a bad line names its number). */
int persist_load(struct persist_entry **entries, size_t *n);
/* Add E, or replace the entry of the same image in place. 0 or -1 with a message. */
int persist_add(const struct persist_entry *e);
/* Remove the entry whose image (or its id) is WHAT: 1 removed, 0 none, -1 error. */
int persist_remove(const char *what);

#endif
