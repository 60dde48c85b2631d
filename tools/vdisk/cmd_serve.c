/* SPDX-License-Identifier: MIT */
/*
 * vdisk serve [--socket PATH | --listen [HOST:]PORT] [-r] [-f FMT] [--tls ...]
 *             [--snapshot [--snapshot-dir DIR]] IMAGE
 * Export an image over NBD in the foreground until SIGTERM or SIGINT; the
 * image is then flushed and unlocked. With --snapshot the writes go to an
 * unlinked temporary overlay: the base is opened read-only, and the overlay's
 * blocks are freed when the process exits, however it ends.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vdisk.h"
#include "nbd-server.h"

static struct nbd_server *the_server;

/* long options without a short one */
enum {
    OPT_TLS = 0x5301,
    OPT_TLS_CERTS,
    OPT_TLS_PSK,
    OPT_TLS_VERIFY,
    OPT_MAX_CONNS,
    OPT_HANDSHAKE,
    OPT_SNAPSHOT,
    OPT_SNAPSHOT_DIR,
};

static void on_signal(int sig)
{
    (void)sig;
    if (the_server)
        nbd_server_stop(the_server);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: vdisk serve [--socket PATH | --listen [HOST:]PORT] [-r] [-f FMT] "
                 "[--direct] [--name NAME] [--quiet] [--verbose]\n"
                 "       [--tls=off|on|require] [--tls-certs DIR] [--tls-psk FILE] "
                 "[--tls-verify-peer]\n"
                 "       [--max-connections N] [--handshake-timeout SECS]\n"
                 "       [--snapshot [--snapshot-dir DIR]] IMAGE\n"
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

/* A count option's value, 1 to MAX; 0 (with a message) when it is not one. */
static unsigned count_arg(const char *opt, const char *arg, unsigned max)
{
    char *end;
    unsigned long v = strtoul(arg, &end, 10);

    if (!*arg || *end || v < 1 || v > max || arg[0] == '-') {
        err("%s %s: want a number from 1 to %u", opt, arg, max);
        return 0;
    }
    return (unsigned)v;
}

/* The --tls mode ARG names, or -1 (with a message). */
static int tls_mode(const char *arg)
{
    if (strcmp(arg, "off") == 0)
        return NBD_TLS_OFF;
    if (strcmp(arg, "on") == 0)
        return NBD_TLS_ON;
    if (strcmp(arg, "require") == 0)
        return NBD_TLS_REQUIRE;
    err("--tls=%s: want off, on or require", arg);
    return -1;
}

/* Print the URI of the listening socket FD (the address it is bound to, port included). */
static void print_uri(int fd, const char *sock, const char *name, bool tls)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (sock) {
        printf("%s:///%s?socket=%s\n", tls ? "nbds+unix" : "nbd+unix", name, sock);
        return;
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
        printf("%s://[%s]:%u/%s\n", tls ? "nbds" : "nbd", host, port, name);
        return;
    }
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;

        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
    }
    printf("%s://%s:%u/%s\n", tls ? "nbds" : "nbd", host, port, name);
}

int cmd_serve(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'},
        {"listen", required_argument, NULL, 'l'},
        {"read-only", no_argument, NULL, 'r'},
        {"format", required_argument, NULL, 'f'},
        {"direct", no_argument, NULL, 'D'},
        {"name", required_argument, NULL, 'n'},
        {"threads", required_argument, NULL, 't'},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        KEY_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {"tls", required_argument, NULL, OPT_TLS},
        {"tls-certs", required_argument, NULL, OPT_TLS_CERTS},
        {"tls-psk", required_argument, NULL, OPT_TLS_PSK},
        {"tls-verify-peer", no_argument, NULL, OPT_TLS_VERIFY},
        {"max-connections", required_argument, NULL, OPT_MAX_CONNS},
        {"handshake-timeout", required_argument, NULL, OPT_HANDSHAKE},
        {"snapshot", no_argument, NULL, OPT_SNAPSHOT},
        {"snapshot-dir", required_argument, NULL, OPT_SNAPSHOT_DIR},
        {NULL, 0, NULL, 0},
    };
    int tls = -1; /* not given: require when credentials are */
    struct nbd_server_opts opts = {0};
    const char *sock = NULL, *listen_addr = NULL, *format = NULL, *snapshot_dir = NULL;
    bool snapshot = false;
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
        case OPT_TLS:
            tls = tls_mode(optarg);
            if (tls < 0)
                return 2;
            break;
        case OPT_TLS_CERTS:
            opts.tls_certs = optarg;
            break;
        case OPT_TLS_PSK:
            opts.tls_psk = optarg;
            break;
        case OPT_TLS_VERIFY:
            opts.tls_verify_peer = true;
            break;
        case OPT_MAX_CONNS:
            opts.max_conns = count_arg("--max-connections", optarg, 1024);
            if (!opts.max_conns)
                return 2;
            break;
        case OPT_HANDSHAKE:
            opts.handshake_secs = count_arg("--handshake-timeout", optarg, 3600);
            if (!opts.handshake_secs)
                return 2;
            break;
        case OPT_SNAPSHOT:
            snapshot = true;
            break;
        case OPT_SNAPSHOT_DIR:
            snapshot_dir = optarg;
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
    if (tls < 0)
        tls = opts.tls_certs || opts.tls_psk ? NBD_TLS_REQUIRE : NBD_TLS_OFF;
    opts.tls = (enum nbd_tls)tls;
    if (tls != NBD_TLS_OFF && !opts.tls_certs && !opts.tls_psk) {
        err("--tls=%s: needs --tls-certs DIR or --tls-psk FILE",
            tls == NBD_TLS_ON ? "on" : "require");
        return 2;
    }
    if (tls == NBD_TLS_OFF && (opts.tls_certs || opts.tls_psk || opts.tls_verify_peer)) {
        err("--tls=off: TLS credentials given but TLS is off");
        return 2;
    }
    if (opts.tls_verify_peer && !opts.tls_certs) {
        err("--tls-verify-peer: needs --tls-certs DIR (its ca-cert.pem)");
        return 2;
    }
    if (snapshot_dir && !snapshot)
        return err("--snapshot-dir needs --snapshot");
    if (snapshot && (flags & VDISK_OPEN_RDONLY))
        return err("--snapshot and --read-only: a snapshot takes writes (that are gone at exit); "
                   "choose one");
    /* --snapshot: the base read-only, the writes in an unlinked overlay, gone when we exit */
    if ((snapshot ? vdisk_open_snapshot(argv[optind], format, flags, key_options(NULL),
                                        snapshot_dir, &img)
                  : vdisk_open(argv[optind], format, flags, key_options(NULL), &img)) < 0) {
        err("%s", vdisk_last_error());
        lock_hint(argv[optind]);
        return 1;
    }
    if (nbd_server_new(img, &opts, &the_server) < 0) {
        err("%s: cannot set up the server%s", argv[optind],
            tls != NBD_TLS_OFF ? " (TLS credentials above)" : "");
        goto out_close;
    }
    fd = sock ? nbd_listen_unix(sock)
              : nbd_listen_tcp(listen_addr ? listen_addr : "127.0.0.1:10809");
    if (fd < 0)
        goto out_free;
    trap_signals();
    if (!sock && tls != NBD_TLS_REQUIRE && !opts.quiet)
        warn("%s: served over TCP without %s: anyone who can reach the port (every local "
             "user on 127.0.0.1, anyone on the network otherwise) can read%s it; use "
             "--socket PATH or --tls=require",
             argv[optind], tls == NBD_TLS_ON ? "requiring TLS" : "TLS",
             vdisk_is_read_only(img) ? "" : " and write");
    print_uri(fd, sock, opts.export_name ? opts.export_name : "", tls != NBD_TLS_OFF);
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
