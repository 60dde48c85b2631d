/* SPDX-License-Identifier: MIT */
/*
 * `vdisk COMMAND --help`: one text per command, every option it takes. The
 * man pages (man/vdisk-COMMAND.8.scd) list the same options; a test keeps the
 * two in step.
 */
#include <stdio.h>
#include <string.h>

#include "vdisk.h"

static const struct help {
    const char *name;
    const char *text;
} helps[] = {
    {"create",
     "usage: vdisk create [-f FMT] [-o KEY=VAL,...] IMAGE SIZE\n"
     "Create a new image of SIZE bytes (IMAGE must not exist).\n"
     "  -f, --format FMT       image format (default raw; see vdisk formats)\n"
     "  -o, --options KEY=VAL  the format's create options, comma separated\n"
     "      --key-file FILE    the key of an encrypted image (luks, qcow2 encrypt.format=luks)\n"
     "      --key-stdin        read the key from standard input\n"
     "  -h, --help             show this help\n"},
    {"open",
     "usage: vdisk open [-r] [-f FMT] [-o KEY=VAL,...] [--via WAY] [--no-direct]\n"
     "                  [--persist] IMAGE [SIZE]\n"
     "       vdisk open --snapshot [--snapshot-dir DIR] [--partition N] IMAGE\n"
     "       vdisk open --overlay OVERLAY [--partition N] IMAGE\n"
     "       vdisk open --all-persistent\n"
     "       vdisk open --ram SIZE [--via WAY]\n"
     "Give IMAGE a block device (creating a raw or FMT image of SIZE, default 100 MiB,\n"
     "when it does not exist) and print the device.\n"
     "  -r, --read-only        open read-only\n"
     "  -f, --format FMT       image format (default: probed, or from the extension)\n"
     "  -o, --options KEY=VAL  the format's open options, comma separated\n"
     "      --via WAY          auto, kmod, loop, ublk, nbd or fuse (default auto)\n"
     "      --no-direct        go through the page cache (no O_DIRECT)\n"
     "      --persist          also record the disk in the persistent table\n"
     "      --all-persistent   open every disk of the persistent table\n"
     "      --snapshot         IMAGE read-only; writes go to a temporary overlay, gone at close\n"
     "      --snapshot-dir DIR  where the snapshot's unlinked overlay lives (default $TMPDIR,\n"
     "                         else /var/tmp)\n"
     "      --overlay OVERLAY  writes go to the qcow2 OVERLAY over IMAGE (made when missing)\n"
     "      --partition N      the disk is partition N of the image alone\n"
     "      --ram SIZE         a RAM disk of SIZE instead of an image\n"
     "      --key-file FILE    the key of an encrypted image (luks, qcow2 encrypt.format=luks)\n"
     "      --key-stdin        read the key from standard input\n"
     "  -h, --help             show this help\n"},
    {"recover", "usage: vdisk recover IMAGE|DEVICE|ID\n"
                "Give a ublk disk whose server died a new server: it takes the same device over\n"
                "and the waiting I/O resumes.\n"
                "  -h, --help             show this help\n"},
    {"close", "usage: vdisk close [--force] IMAGE|DEVICE|ID | --all | --all-persistent\n"
              "Take a disk's block device away and stop its server.\n"
              "  -a, --all              close every open disk\n"
              "      --force            kill the server first (no flush): for a server that hangs\n"
              "      --all-persistent   close the disks of the persistent table, last first\n"
              "  -h, --help             show this help\n"},
    {"list", "usage: vdisk list [--json]\n"
             "List the open disks and whether their servers are alive.\n"
             "      --json             print JSON\n"
             "  -h, --help             show this help\n"},
    {"info",
     "usage: vdisk info [--json] IMAGE|DEVICE|ID\n"
     "Show an image's metadata and, when it is open, its disk.\n"
     "      --json             print JSON\n"
     "      --key-file FILE    the key of an encrypted image (luks, qcow2 encrypt.format=luks)\n"
     "      --key-stdin        read the key from standard input\n"
     "  -h, --help             show this help\n"},
    {"serve",
     "usage: vdisk serve [--socket PATH | --listen [HOST:]PORT] [-r] [-f FMT] [--direct]\n"
     "                   [--name NAME] [-q] [-v] [--tls=off|on|require] [--tls-certs DIR]\n"
     "                   [--tls-psk FILE] [--tls-verify-peer] [--max-connections N]\n"
     "                   [--handshake-timeout SECS] [--snapshot [--snapshot-dir DIR]] IMAGE\n"
     "Export IMAGE over NBD in the foreground until SIGTERM or SIGINT.\n"
     "  -s, --socket PATH      listen on a Unix socket\n"
     "  -l, --listen [HOST:]PORT  listen on TCP (default 127.0.0.1:10809; without TLS\n"
     "                         every local user can read and write the image)\n"
     "      --tls=off|on|require  STARTTLS: none, offered, or required before any export\n"
     "                         (default: require with credentials, else off)\n"
     "      --tls-certs DIR    X.509: DIR/server-cert.pem, server-key.pem, ca-cert.pem\n"
     "      --tls-psk FILE     pre-shared keys, as psktool writes them\n"
     "      --tls-verify-peer  clients need a certificate signed by DIR/ca-cert.pem\n"
     "      --max-connections N  clients at once, handshakes included (default 16)\n"
     "      --handshake-timeout SECS  drop a client not in transmission by then (default 10)\n"
     "  -r, --read-only        export read-only\n"
     "  -f, --format FMT       image format (default: probed)\n"
     "      --direct           open the image with O_DIRECT\n"
     "  -n, --name NAME        export name\n"
     "  -t, --threads N        accepted for old scripts, ignored\n"
     "  -q, --quiet            log nothing\n"
     "  -v, --verbose          log every connection\n"
     "      --snapshot         IMAGE read-only; writes go to a temporary overlay, gone at exit\n"
     "      --snapshot-dir DIR  where its unlinked overlay lives (default $TMPDIR, else\n"
     "                         /var/tmp)\n"
     "      --key-file FILE    the key of an encrypted image (luks, qcow2 encrypt.format=luks)\n"
     "      --key-stdin        read the key from standard input\n"
     "  -h, --help             show this help\n"},
    {"convert",
     "usage: vdisk convert [-p | --progress=json] [-m THREADS] [-t CACHE] [-T CACHE]\n"
     "                     [-f FMT] -O FMT [-o KEY=VAL,...] SRC DST\n"
     "Copy SRC, of any format, into a new image DST, sparse.\n"
     "  -p                     show progress (on a terminal only)\n"
     "      --progress=json    print progress as JSON lines on stdout, for scripts\n"
     "  -m THREADS             copy with 1 to 64 threads (8; 16 with -t none)\n"
     "  -t CACHE               DST cache: writeback (default), none or unsafe\n"
     "  -T CACHE               SRC cache: writeback (default), none or unsafe\n"
     "  -f FMT                 SRC format (default: probed)\n"
     "  -O FMT                 DST format (required)\n"
     "  -o KEY=VAL             DST create options, comma separated\n"
     "      --key-file FILE    the key of an encrypted image (luks, qcow2 encrypt.format=luks)\n"
     "      --key-stdin        read the key from standard input\n"
     "  -h, --help             show this help\n"},
    {"check",
     "usage: vdisk check [-q] [-f FMT] [-r leaks|all] [--json] IMAGE\n"
     "Check an image's metadata, and repair it with -r.\n"
     "  -q                     print nothing, the exit status tells\n"
     "  -f FMT                 image format (default: probed)\n"
     "  -r, --repair leaks|all  repair leaks, or everything\n"
     "      --json             print JSON\n"
     "      --key-file FILE    the key of an encrypted image (luks, qcow2 encrypt.format=luks)\n"
     "      --key-stdin        read the key from standard input\n"
     "  -h, --help             show this help\n"
     "exit status: 0 no errors, 1 check failed to run, 2 corruption, 3 leaked clusters,\n"
     "             63 the format has no metadata to check (raw, iso)\n"},
    {"bench",
     "usage: vdisk bench [-c COUNT] [-d DEPTH] [-f FMT] [--flush-interval=N] [-i AIO] [-n]\n"
     "                   [--no-drain] [-o OFFSET] [--pattern=BYTE] [-q] [-s BUFFER_SIZE]\n"
     "                   [-S STEP] [-t CACHE] [-w] [-U] [--random] IMAGE\n"
     "Measure libvdisk's I/O on IMAGE, with the knobs of qemu-img bench.\n"
     "  -c COUNT               requests to run (default 75000)\n"
     "  -d DEPTH               requests in flight (default 64)\n"
     "  -f FMT                 image format (default: probed)\n"
     "      --flush-interval=N  flush after every N writes\n"
     "  -i AIO                 threads, native or io_uring (one engine here)\n"
     "  -n                     native AIO: O_DIRECT\n"
     "      --no-drain         flush without waiting for the requests in flight\n"
     "  -o OFFSET              first offset\n"
     "      --pattern=BYTE     byte written with -w\n"
     "  -q                     print only the result\n"
     "  -s BUFFER_SIZE         request size (default 4K)\n"
     "  -S STEP                distance between requests\n"
     "  -t CACHE               none, directsync, writeback, writethrough or unsafe\n"
     "  -w                     write instead of read\n"
     "  -U                     do not lock the image\n"
     "      --random           random offsets\n"
     "      --key-file FILE    the key of an encrypted image (luks, qcow2 encrypt.format=luks)\n"
     "      --key-stdin        read the key from standard input\n"
     "  -h, --help             show this help\n"},
    {"persist",
     "usage: vdisk persist add [-r] [-f FMT] [-o KEY=VAL,...] [--via WAY] [--no-direct]\n"
     "                         IMAGE\n"
     "       vdisk persist remove IMAGE|ID\n"
     "       vdisk persist list\n"
     "Edit the table of persistent disks (/etc/vdisk/disks), opened at boot.\n"
     "  -r, --read-only        open read-only\n"
     "  -f, --format FMT       image format\n"
     "  -o, --options KEY=VAL  the format's open options\n"
     "      --via WAY          auto, kmod, loop, ublk, nbd or fuse\n"
     "      --no-direct        go through the page cache\n"
     "  -h, --help             show this help\n"},
    {"supervise", "usage: vdisk supervise IMAGE|ID\n"
                  "Keep a disk of the persistent table open, as vdisk@ID.service does: open it\n"
                  "(or adopt it), watch its server, close it and exit 1 when the server dies.\n"
                  "  -h, --help             show this help\n"},
    {"luks",
     "usage: vdisk luks dump IMAGE\n"
     "       vdisk luks add-key [--key-file F|--key-stdin] [--new-key-file N] [-o KDF-OPTS] IMAGE\n"
     "       vdisk luks remove-key [--key-file F|--key-stdin] IMAGE\n"
     "Show, add or remove the keyslots of a LUKS1 or LUKS2 image, as cryptsetup's\n"
     "luksDump, luksAddKey and luksRemoveKey do. Keys not given are asked on the terminal.\n"
     "      --key-file FILE    an existing key\n"
     "      --key-stdin        read the existing key from standard input\n"
     "      --new-key-file N   the key to add\n"
     "  -o KDF-OPTS            pbkdf=argon2id|argon2i|pbkdf2,iter-time=MS,argon2-memory=KIB,\n"
     "                         argon2-time=N\n"
     "  -h, --help             show this help\n"},
    {"commit", "usage: vdisk commit [--yes] OVERLAY\n"
               "Write what OVERLAY holds into its base image, then empty it (a qcow2 overlay).\n"
               "Without --yes it says what it would do and changes nothing.\n"
               "  -y, --yes              do it\n"
               "  -h, --help             show this help\n"},
    {"rebase",
     "usage: vdisk rebase -b NEWBASE [-F FMT] [-u] OVERLAY\n"
     "Put the qcow2 OVERLAY over NEWBASE (\"\": over no base). It shows the same disk after:\n"
     "what the old and new bases differ in is copied into it first.\n"
     "  -b, --backing NEWBASE  the new base, relative to OVERLAY's directory\n"
     "  -F, --backing-format FMT  its format (default: probed)\n"
     "  -u, --unsafe           only rewrite the name (the bases hold the same data)\n"
     "  -h, --help             show this help\n"},
    {"resize",
     "usage: vdisk resize [-f FMT] [--shrink] IMAGE|DEVICE|ID [+|-]SIZE\n"
     "Change an image's virtual size (raw, qcow2, vpc, vdi, vhdx, vmdk), like\n"
     "qemu-img resize (a bare number is bytes). On a raw disk open through loop or\n"
     "kmod, and on a disk of any format open through fuse or nbd, the device grows\n"
     "with it; then grow its file system (resize2fs).\n"
     "  -f, --format FMT       image format (default: probed)\n"
     "      --shrink           allow a smaller size (refused where data would be cut off)\n"
     "  -h, --help             show this help\n"},
    {"save", "usage: vdisk save -O FMT [-o KEY=VAL,...] DEVICE|ID FILE\n"
             "Write the content of an open RAM disk (see vdisk open) to a new image FILE,\n"
             "sparse: blocks of zeroes stay holes. Unmount it (or sync) first.\n"
             "  -O FMT                 the new image's format (required)\n"
             "  -o KEY=VAL             its create options, comma separated\n"
             "  -h, --help             show this help\n"},
    {"formats", "usage: vdisk formats\n"
                "List the image formats this vdisk knows, one a line.\n"
                "  -h, --help             show this help\n"},
};

/* The --help text of command NAME, or NULL. */
const char *command_help(const char *name)
{
    for (size_t i = 0; i < sizeof(helps) / sizeof(helps[0]); i++)
        if (strcmp(helps[i].name, name) == 0)
            return helps[i].text;
    return NULL;
}

void print_usage(FILE *out, const char *name)
{
    const char *h = command_help(name);

    /* the usage lines: up to the first that starts neither with "usage:" nor a space */
    while (h && *h && (strncmp(h, "usage:", 6) == 0 || *h == ' ')) {
        const char *nl = strchr(h, '\n');

        fwrite(h, 1, nl ? (size_t)(nl - h + 1) : strlen(h), out);
        h = nl ? nl + 1 : "";
    }
    fprintf(out, "(vdisk %s --help tells more)\n", name);
}
