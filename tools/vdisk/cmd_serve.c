/* SPDX-License-Identifier: MIT */
/*
 * vdisk serve [--socket PATH | --listen [HOST:]PORT] [-r] [-f FMT] IMAGE
 * Export an image over NBD in the foreground until SIGTERM or SIGINT; the
 * image is then flushed and unlocked.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk.h"
#include "nbd-server.h"

static struct nbd_server *the_server;

static void on_signal(int sig)
{
    (void)sig;
    if (the_server)
        nbd_server_stop(the_server);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: vdisk serve [--socket PATH | --listen [HOST:]PORT] [-r] [-f FMT] "
                 "[--direct] [--name NAME] [--quiet] [--verbose] IMAGE\n"
                 "  default: --listen 127.0.0.1:10809\n");
}

/* Trap the stop signals (no SA_RESTART: poll wakes) and ignore SIGPIPE. */
static void trap_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal};

    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int cmd_serve(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'},  {"listen", required_argument, NULL, 'l'},
        {"read-only", no_argument, NULL, 'r'},     {"format", required_argument, NULL, 'f'},
        {"direct", no_argument, NULL, 'D'},        {"name", required_argument, NULL, 'n'},
        {"threads", required_argument, NULL, 't'}, {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},       KEY_LONGOPTS,
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    struct nbd_server_opts opts = {0};
    const char *sock = NULL, *listen_addr = NULL, *format = NULL;
    struct vdisk_image *img;
    unsigned flags = 0;
    int c, fd, r, status = 1;

    while ((c = getopt_long(argc, argv, "s:l:rf:n:t:qvh", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
        case OPT_KEY_STDIN:
            if (key_option(c, optarg))
                return 1;
            break;
        case 's':
            sock = optarg;
            break;
        case 'l':
            listen_addr = optarg;
            break;
        case 'r':
            flags |= VDISK_OPEN_RDONLY;
            break;
        case 'f':
            format = optarg;
            break;
        case 'D':
            flags |= VDISK_OPEN_DIRECT;
            break;
        case 'n':
            opts.export_name = optarg;
            break;
        case 't': /* accepted for old scripts: a connection is one thread on the engine now */
            opts.threads = (unsigned)atoi(optarg);
            if (opts.threads < 1 || opts.threads > 64)
                return err("--threads %s: want 1 to 64", optarg);
            break;
        case 'q':
            opts.quiet = true;
            break;
        case 'v':
            opts.verbose = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (argc - optind != 1 || (sock && listen_addr)) {
        usage(stderr);
        return 2;
    }
    if (opts.export_name && strlen(opts.export_name) > 4096)
        return err("--name: longer than 4096 bytes");
    if (vdisk_open(argv[optind], format, flags, key_options(NULL), &img) < 0) {
        err("%s", vdisk_last_error());
        lock_hint(argv[optind]);
        return 1;
    }
    if (nbd_server_new(img, &opts, &the_server) < 0) {
        err("%s: cannot set up the server", argv[optind]);
        goto out_close;
    }
    fd = sock ? nbd_listen_unix(sock)
              : nbd_listen_tcp(listen_addr ? listen_addr : "127.0.0.1:10809");
    if (fd < 0)
        goto out_free;
    trap_signals();
    if (sock)
        printf("nbd+unix:///%s?socket=%s\n", opts.export_name ? opts.export_name : "", sock);
    else
        printf("nbd://%s/%s\n", listen_addr ? listen_addr : "127.0.0.1:10809",
               opts.export_name ? opts.export_name : "");
    fflush(stdout);
    r = nbd_server_serve(the_server, fd);
    close(fd);
    if (sock)
        unlink(sock);
    if (r < 0)
        err("%s: serving stopped: %s", argv[optind], strerror(-r));
    else
        status = 0;
out_free:
    nbd_server_free(the_server);
    the_server = NULL;
out_close:
    if (vdisk_close(img) < 0) {
        err("%s", vdisk_last_error());
        status = 1;
    }
    return status;
}
