/* SPDX-License-Identifier: MIT */
/* vdisk: the control utility. Dispatches to one cmd_*() per command. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk.h"

static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;
} commands[] = {
    {"create", cmd_create, "create [-f FMT] [-o KEY=VAL,...] IMAGE SIZE"},
    {"open", cmd_open,
     "open [-r] [-f FMT] [--no-direct] [--via auto|kmod|loop|ublk|nbd|fuse] IMAGE [SIZE]"},
    {"recover", cmd_recover, "recover IMAGE|DEVICE|ID"},
    {"close", cmd_close, "close [--force] IMAGE|DEVICE|ID | --all"},
    {"list", cmd_list, "list [--json]"},
    {"info", cmd_info, "info [--json] IMAGE|DEVICE"},
    {"serve", cmd_serve,
     "serve [--socket PATH | --listen [HOST:]PORT] [-r] [-f FMT] [--direct] [--name NAME] IMAGE"},
    {"convert", cmd_convert, "convert [-p] [-m THREADS] [-f FMT] -O FMT [-o KEY=VAL,...] SRC DST"},
    {"check", cmd_check, "check [-q] [-f FMT] [-r leaks|all] [--json] IMAGE"},
    {"bench", cmd_bench,
     "bench [-c COUNT] [-d DEPTH] [-f FMT] [-n] [-o OFFSET] [-s SIZE] [-S STEP] [-t CACHE]\n"
     "              [-w] [--pattern=BYTE] [--flush-interval=N] [--no-drain] [--random] IMAGE"},
};

/* Print "vdisk: MESSAGE" to stderr and return 1, the failure exit status. */
int err(const char *fmt, ...)
{
    va_list ap;

    fputs("vdisk: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

void warn(const char *fmt, ...)
{
    va_list ap;

    fputs("vdisk: warning: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void usage(FILE *out)
{
    fputs("usage: vdisk COMMAND [ARGS]\n", out);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  vdisk %s\n", commands[i].usage);
    fputs("SIZE takes K, M, G, T suffixes (binary); a bare number means MiB.\n", out);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    err("unknown command '%s' (try vdisk --help)", argv[1]);
    return 2;
}
