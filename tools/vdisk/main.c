/* SPDX-License-Identifier: MIT */
/* vdisk: the control utility. Dispatches to one cmd_*() per command. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk.h"

#ifndef VDISK_VERSION
#define VDISK_VERSION "unknown"
#endif

static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"create", cmd_create, "create a new image"},
    {"open", cmd_open, "give an image a block device"},
    {"recover", cmd_recover, "give a ublk disk whose server died a new server"},
    {"close", cmd_close, "take a disk's block device away"},
    {"list", cmd_list, "list the open disks"},
    {"info", cmd_info, "show an image's metadata and its disk"},
    {"serve", cmd_serve, "export an image over NBD"},
    {"convert", cmd_convert, "copy an image into a new one of any format"},
    {"check", cmd_check, "check and repair an image's metadata"},
    {"luks", cmd_luks, "dump, add or remove a key of a LUKS image"},
    {"commit", cmd_commit, "write an overlay back into its base image"},
    {"rebase", cmd_rebase, "put an overlay over another base image"},
    {"bench", cmd_bench, "measure I/O on an image"},
    {"persist", cmd_persist, "edit the table of disks opened at boot"},
    {"supervise", cmd_supervise, "keep a persistent disk open (vdisk@ID.service)"},
    {"formats", cmd_formats, "list the image formats"},
    {"resize", cmd_resize, "change an image's size, offline or on an open disk"},
    {"save", cmd_save, "write a RAM disk's content to a new image"},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

/* Copy S to OUT, control characters escaped (\n, \t, \xHH, \\ stays \). */
void fput_escaped(FILE *out, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\n')
            fputs("\\n", out);
        else if (*p == '\t')
            fputs("\\t", out);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(out, "\\x%02x", *p);
        else
            fputc(*p, out);
    }
}

/* Print "vdisk: PREFIX MESSAGE" to stderr, control characters escaped. */
static void vmessage(const char *prefix, const char *fmt, va_list ap)
{
    char buf[8192];

    vsnprintf(buf, sizeof(buf), fmt, ap);
    fputs(prefix, stderr);
    fput_escaped(stderr, buf);
    fputc('\n', stderr);
}

/* Print "vdisk: MESSAGE" to stderr and return 1, the failure exit status. */
int err(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vmessage("vdisk: ", fmt, ap);
    va_end(ap);
    return 1;
}

void warn(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vmessage("vdisk: warning: ", fmt, ap);
    va_end(ap);
}

static void usage(FILE *out)
{
    fputs("usage: vdisk COMMAND [OPTIONS] [ARGS]\n"
          "       vdisk --version | --help | COMMAND --help\n"
          "commands:\n",
          out);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fputs("SIZE is a decimal number (1.5G allowed) with an optional suffix B, K, M, G, T, P, E\n"
          "(binary); a bare number means MiB. See vdisk(8) and vdisk-COMMAND(8).\n"
          "An encrypted image (luks, qcow2 encrypt.format=luks) takes its key with --key-file F\n"
          "or --key-stdin on create, open, info, serve, convert, check and bench.\n",
          out);
}

/* Does the command line ask for help (--help anywhere, or -h first)? */
static bool wants_help(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[2], "-h") == 0)
        return true;
    for (int i = 2; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--help") == 0)
            return true;
    return false;
}

int cmd_formats(int argc, char **argv)
{
    (void)argv;
    if (argc != 1) {
        print_usage(stderr, "formats");
        return 2;
    }
    for (const char *const *f = vdisk_formats(); *f; f++)
        printf("%s\n", *f);
    return 0;
}

int main(int argc, char **argv)
{
    static char prefix[64];

    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("vdisk %s\n", VDISK_VERSION);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(argv[1], commands[i].name) != 0)
            continue;
        if (wants_help(argc, argv)) {
            fputs(command_help(commands[i].name), stdout);
            return 0;
        }
        /* getopt's messages start with argv[0]: make them "vdisk: open: ..." */
        snprintf(prefix, sizeof(prefix), "vdisk: %s", commands[i].name);
        argv[1] = prefix;
        return commands[i].run(argc - 1, argv + 1);
    }
    err("unknown command '%s' (try vdisk --help)", argv[1]);
    return 2;
}
