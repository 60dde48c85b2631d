/* SPDX-License-Identifier: MIT */
/* "key=value,key=value" option strings for vdisk_create(). */
#ifndef VDISK_OPTIONS_H
#define VDISK_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#define VDISK_OPTIONS_MAX 16

struct vdisk_options {
    int count;
    char *key[VDISK_OPTIONS_MAX];
    char *value[VDISK_OPTIONS_MAX];
    char *buf; /* owns the strings */
};

/* Parse TEXT (may be NULL); refuse keys not in ALLOWED (NULL = none allowed). */
int vdisk_options_parse(const char *text, const char *const *allowed, const char *format,
                        struct vdisk_options *opts);
void vdisk_options_free(struct vdisk_options *opts);

/* The value of KEY, or NULL. */
const char *vdisk_options_get(const struct vdisk_options *opts, const char *key);
/* KEY as a size ("64K"), or DEF when absent. */
int vdisk_options_get_size(const struct vdisk_options *opts, const char *key, uint64_t def,
                           uint64_t *out);
/* KEY as on/off (also true/false, yes/no, 1/0), or DEF when absent. */
int vdisk_options_get_bool(const struct vdisk_options *opts, const char *key, bool def, bool *out);

#endif
