/* SPDX-License-Identifier: MIT */
/* vdisk list [--json]: every recorded disk, and whether its server is alive. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk.h"

/* open; wait (a ublk device whose server died: its I/O waits for vdisk recover); dead. */
static const char *record_state(const struct disk_record *rec)
{
    const struct via *via = via_find(rec->via);

    if (via && via->alive(rec))
        return "open";
    if (via == &via_ublk && rec->device[0] && access(rec->device, F_OK) == 0)
        return "wait";
    return "dead";
}

static void print_json(const struct disk_record *recs, size_t n)
{
    printf("[");
    for (size_t i = 0; i < n; i++) {
        const struct disk_record *r = &recs[i];

        printf("%s\n  {\"id\": ", i ? "," : "");
        json_string(stdout, r->id);
        printf(", \"device\": ");
        json_string(stdout, r->device);
        printf(", \"via\": ");
        json_string(stdout, r->via);
        printf(", \"format\": ");
        json_string(stdout, r->format);
        printf(", \"image\": ");
        json_string(stdout, r->image);
        printf(", \"read_only\": %s, \"size\": %" PRIu64 ", \"pid\": %d, \"state\": \"%s\"}",
               r->read_only ? "true" : "false", r->size, (int)r->pid, record_state(r));
    }
    printf("%s]\n", n ? "\n" : "");
}

int cmd_list(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    struct disk_record *recs;
    bool json = false;
    size_t n;
    int c;

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c != 'j') {
            fprintf(stderr, "usage: vdisk list [--json]\n");
            return c == 'h' ? 0 : 2;
        }
        json = true;
    }
    if (optind != argc) {
        fprintf(stderr, "usage: vdisk list [--json]\n");
        return 2;
    }
    if (record_list(&recs, &n) < 0)
        return 1;
    if (json) {
        print_json(recs, n);
    } else if (n) {
        printf("%-16s  %-12s  %-4s  %-6s  %-2s  %10s  %-5s  %s\n", "ID", "DEVICE", "VIA", "FORMAT",
               "RO", "SIZE", "STATE", "IMAGE");
        for (size_t i = 0; i < n; i++)
            printf("%-16s  %-12s  %-4s  %-6s  %-2s  %10" PRIu64 "  %-5s  %s\n", recs[i].id,
                   recs[i].device, recs[i].via, recs[i].format, recs[i].read_only ? "ro" : "rw",
                   recs[i].size, record_state(&recs[i]), recs[i].image);
    }
    free(recs);
    return 0;
}
