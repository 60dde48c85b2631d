/* SPDX-License-Identifier: MIT */
/* vdisk info [--json] IMAGE|DEVICE: the image's metadata and, if open, its disk. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk.h"

/* The names of the capabilities in CAPS, for text and JSON. */
static const char *const cap_names[] = {"thread-safe", "read-only", "linear"};
#define N_CAPS (sizeof(cap_names) / sizeof(cap_names[0]))

static void print_text(const struct vdisk_info *in, const struct disk_record *rec, bool open,
                       const struct vdisk_partition_table *pt, const char *why)
{
    /* paths escaped: a newline in one must not make a line of its own */
    printf("image: ");
    fput_escaped(stdout, in->path);
    printf("\nformat: %s\nvirtual size: %" PRIu64 "\nfile size: %" PRIu64 "\ndisk size: %" PRIu64
           "\n",
           in->format, in->virtual_size, in->file_size, in->allocated_bytes);
    if (in->cluster_size)
        printf("cluster size: %u\n", in->cluster_size);
    if (in->backing_file) {
        printf("backing file: ");
        fput_escaped(stdout, in->backing_file);
        printf(" (%s)\n", in->backing_format ? in->backing_format : "no format stated");
    }
    if (in->dirty)
        printf("dirty: yes\n");
    printf("capabilities:");
    for (unsigned i = 0; i < N_CAPS; i++)
        if (in->caps & (1u << i))
            printf(" %s", cap_names[i]);
    printf("\n");
    if (in->caps & VDISK_CAP_LINEAR)
        printf("data offset: %" PRIu64 "\n", in->linear_offset);
    for (unsigned i = 0; i < in->ndetails; i++) {
        const struct vdisk_info_detail *d = &in->details[i];

        for (const char *k = d->key; *k; k++)
            putchar(*k == '_' ? ' ' : *k);
        printf(": ");
        fput_escaped(stdout, d->value);
        putchar('\n');
    }
    printf("format from: %s\n", in->format_probed ? "probe" : "stated or remembered");
    for (const char *const *f = in->files; f && *f; f++) { /* every file it reads, top first */
        printf("reads file: ");
        fput_escaped(stdout, *f);
        putchar('\n');
    }
    partitions_text(pt, why);
    if (open)
        printf("device: %s\nvia: %s\nid: %s\nread-only: %s\n", rec->device, rec->via, rec->id,
               rec->read_only ? "yes" : "no");
    if (open && rec->snapshot)
        printf("snapshot: yes (the writes go to a temporary overlay, gone at close)\n");
    if (open && rec->partition)
        printf("partition: %u (the disk is this partition alone)\n", rec->partition);
    if (open && rec->pid)
        printf("server pid: %d\n", (int)rec->pid);
    if (open && strcmp(rec->via, "ublk") == 0) {
        unsigned queues;
        const char *state = ublk_kernel_state(rec, &queues);

        printf("ublk device: %s, %u queue%s%s\n", state, queues, queues == 1 ? "" : "s",
               strcmp(state, "quiesced") == 0 ? " (I/O waits: vdisk recover)" : "");
    }
}

static void print_json(const struct vdisk_info *in, const struct disk_record *rec, bool open,
                       const struct vdisk_partition_table *pt, const char *why)
{
    printf("{\"image\": ");
    json_string(stdout, in->path);
    printf(", \"format\": ");
    json_string(stdout, in->format);
    printf(", \"virtual_size\": %" PRIu64 ", \"file_size\": %" PRIu64
           ", \"allocated_bytes\": %" PRIu64 ", \"cluster_size\": %u, \"dirty\": %s",
           in->virtual_size, in->file_size, in->allocated_bytes, in->cluster_size,
           in->dirty ? "true" : "false");
    if (in->backing_file) {
        printf(", \"backing_file\": ");
        json_string(stdout, in->backing_file);
        printf(", \"backing_format\": ");
        json_string(stdout, in->backing_format ? in->backing_format : "");
    }
    printf(", \"capabilities\": [");
    for (unsigned i = 0, n = 0; i < N_CAPS; i++)
        if (in->caps & (1u << i))
            printf("%s\"%s\"", n++ ? ", " : "", cap_names[i]);
    printf("], \"data_offset\": %" PRIu64 ", \"format_probed\": %s, \"files\": [",
           in->linear_offset, in->format_probed ? "true" : "false");
    for (const char *const *f = in->files; f && *f; f++) {
        printf("%s", f == in->files ? "" : ", ");
        json_string(stdout, *f);
    }
    printf("]");
    partitions_json(pt, why);
    for (unsigned i = 0; i < in->ndetails; i++) {
        printf(", ");
        json_string(stdout, in->details[i].key);
        printf(": ");
        json_string(stdout, in->details[i].value);
    }
    if (open) {
        printf(", \"device\": ");
        json_string(stdout, rec->device);
        printf(", \"via\": ");
        json_string(stdout, rec->via);
        printf(", \"id\": \"%s\", \"read_only\": %s, \"pid\": %d", rec->id,
               rec->read_only ? "true" : "false", (int)rec->pid);
        printf(", \"snapshot\": %s, \"partition\": %u", rec->snapshot ? "true" : "false",
               rec->partition);
        if (strcmp(rec->via, "ublk") == 0) {
            unsigned queues;
            const char *state = ublk_kernel_state(rec, &queues);

            printf(", \"ublk_state\": \"%s\", \"queues\": %u", state, queues);
        }
    }
    printf("}\n");
}

int cmd_info(int argc, char **argv)
{
    static const struct option longopts[] = {{"json", no_argument, NULL, 'j'},
                                             {"help", no_argument, NULL, 'h'},
                                             KEY_LONGOPTS,
                                             {NULL, 0, NULL, 0}};
    struct disk_record rec;
    struct vdisk_image *img;
    struct vdisk_info info;
    struct vdisk_partition_table *pt;
    char why[1024];
    const char *path;
    bool json = false;
    int c, open, r;

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == OPT_KEY_FILE || c == OPT_KEY_STDIN) {
            if (key_option(c, optarg))
                return 1;
            continue;
        }
        if (c != 'j') {
            fprintf(stderr, "usage: vdisk info [--json] [--key-file F|--key-stdin] IMAGE|DEVICE\n");
            return c == 'h' ? 0 : 2;
        }
        json = true;
    }
    if (argc - optind != 1) {
        fprintf(stderr, "usage: vdisk info [--json] IMAGE|DEVICE\n");
        return 2;
    }
    path = argv[optind];
    open = find_record(path, &rec);
    if (open < 0)
        return 1;
    if (open && strcmp(rec.format, "ram") == 0)
        return ram_info(&rec, json); /* cmd_ram.c: no image file to read */
    if (open)
        path = rec.image;
    /* like qemu-img info -U: read metadata even while another process writes */
    r = vdisk_open(path, open ? rec.format : NULL, VDISK_OPEN_RDONLY | VDISK_OPEN_NOLOCK,
                   key_options(NULL), &img);
    if (r == -ENOKEY && key_descriptor() < 0) { /* encrypted, no key: the header's fields */
        char why[512];

        snprintf(why, sizeof(why), "%s", vdisk_last_error());
        if (vdisk_open(path, open ? rec.format : NULL, VDISK_OPEN_RDONLY | VDISK_OPEN_NOLOCK,
                       "no-key=on", &img) < 0)
            return err("%s", why); /* a format without it (encrypted qcow2) */
        r = 0;
    }
    if (r < 0)
        return err("%s", vdisk_last_error());
    if (vdisk_get_info(img, &info) < 0) {
        vdisk_close(img);
        return err("%s", vdisk_last_error());
    }
    pt = partitions_read(img, why, sizeof(why));
    if (json)
        print_json(&info, &rec, open, pt, why);
    else
        print_text(&info, &rec, open, pt, why);
    free(pt);
    vdisk_close(img);
    return 0;
}
