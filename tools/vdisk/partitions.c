/* SPDX-License-Identifier: MIT */
/* vdisk info: the partition table of an image (MBR or GPT), as text or JSON. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk.h"

struct vdisk_partition_table *partitions_read(struct vdisk_image *img, char *why, size_t len)
{
    struct vdisk_partition_table *t = calloc(1, sizeof(*t));

    why[0] = '\0';
    if (!t) {
        snprintf(why, len, "out of memory");
        return NULL;
    }
    if (vdisk_get_partitions(img, t) < 0) {
        snprintf(why, len, "%s", vdisk_last_error());
        free(t);
        return NULL;
    }
    return t;
}

void partitions_text(const struct vdisk_partition_table *t, const char *why)
{
    if (!t) {
        printf("partition table: unreadable: ");
        fput_escaped(stdout, why);
        putchar('\n');
        return;
    }
    if (!t->label[0])
        return;
    printf("partition table: %s, id %s, sector size %u", t->label, t->id, t->sector_size);
    if (strcmp(t->label, "gpt") == 0)
        printf(", usable sectors %" PRIu64 "-%" PRIu64, t->first_lba, t->last_lba);
    putchar('\n');
    for (unsigned i = 0; i < t->count; i++) {
        const struct vdisk_partition *p = &t->parts[i];

        printf("partition %u: start %" PRIu64 ", sectors %" PRIu64 ", type %s", p->number,
               p->start / t->sector_size, p->size / t->sector_size, p->type);
        if (p->bootable)
            printf(", bootable");
        if (p->uuid[0])
            printf(", uuid %s", p->uuid);
        if (p->name[0]) {
            printf(", name ");
            fput_escaped(stdout, p->name);
        }
        putchar('\n');
    }
}

void partitions_json(const struct vdisk_partition_table *t, const char *why)
{
    if (!t) {
        printf(", \"partition_error\": ");
        json_string(stdout, why);
        return;
    }
    printf(", \"partition_table\": ");
    json_string(stdout, t->label);
    printf(", \"partition_table_id\": ");
    json_string(stdout, t->id);
    printf(", \"sector_size\": %u, \"partitions\": [", t->sector_size);
    for (unsigned i = 0; i < t->count; i++) {
        const struct vdisk_partition *p = &t->parts[i];

        printf("%s{\"number\": %u, \"start\": %" PRIu64 ", \"size\": %" PRIu64
               ", \"start_sector\": %" PRIu64 ", \"sectors\": %" PRIu64 ", \"type\": ",
               i ? ", " : "", p->number, p->start, p->size, p->start / t->sector_size,
               p->size / t->sector_size);
        json_string(stdout, p->type);
        printf(", \"uuid\": ");
        json_string(stdout, p->uuid);
        printf(", \"name\": ");
        json_string(stdout, p->name);
        printf(", \"bootable\": %s}", p->bootable ? "true" : "false");
    }
    printf("]");
}
