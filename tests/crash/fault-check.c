/* SPDX-License-Identifier: MIT */
/*
 * fault-check: fault injection under the formats (lib/io/record.h), in process.
 * For each scenario the file layer fails chosen calls; the library must return
 * the errno, keep serving the requests that do not need the failing call, keep
 * the image consistent (vdisk check, then qemu-img check where it checks the
 * format), and keep every completed write. A failed flush is sticky: later
 * flushes of the open image fail too (their data may be lost) until a reopen.
 * Usage: fault-check FORMAT DIR    (FORMAT as crash-check's)
 * Prints PASS:/FAIL: lines (tests/lib.sh style); exits 1 on any failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vdisk/vdisk.h>

#include "../../lib/io/record.h"
#include "crash-model.h"

#define SIZE (8u << 20)
#define NG   (SIZE / CRASH_GRANULE)

struct fmt {
    const char *name, *format, *create, *open, *qemu;
};

static const struct fmt fmts[] = {
    {"raw", "raw", NULL, NULL, NULL},
    {"qcow2", "qcow2", NULL, NULL, "qcow2"},
    {"vpc", "vpc", "subformat=dynamic", NULL, NULL},
    {"vhdx", "vhdx", "block_size=1M", NULL, "vhdx"},
    {"vmdk", "vmdk", NULL, NULL, "vmdk"},
    {"vmdk-split", "vmdk", "subformat=twoGbMaxExtentSparse", NULL, "vmdk"},
    {"vdi", "vdi", NULL, NULL, "vdi"},
    {"luks", "luks", "key-file=%s/key,pbkdf=pbkdf2,iter-time=1", "key-file=%s/key", NULL},
};

static const struct fmt *F;
static char path[4096], create_opts[4096], open_opts[4096];
static const char *dir;
static unsigned failures;
/* what each granule may read as: old (before a failed request) or new */
static uint32_t want_old[NG], want_new[NG];
static uint32_t next_tag = 1;
static uint8_t *buf;

static void result(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void result(bool ok, const char *fmt, ...)
{
    va_list ap;

    printf("%s: fault %s: ", ok ? "PASS" : "FAIL", F->name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    failures += !ok;
}

/* Write granules [G, G+N) with a new tag; the model says both may be there until it succeeds. */
static int write_tag(struct vdisk_image *img, uint64_t g, unsigned n)
{
    uint32_t tag = ++next_tag;
    int r;

    if (g + n > NG)
        return -EINVAL;
    for (unsigned i = 0; i < n; i++) {
        crash_pattern(buf + (size_t)i * CRASH_GRANULE, tag, g + i);
        want_new[g + i] = tag;
    }
    r = vdisk_write(img, buf, (size_t)n * CRASH_GRANULE, g * CRASH_GRANULE, 0);
    for (unsigned i = 0; r == 0 && i < n; i++) /* on failure either may read back */
        want_old[g + i] = tag;
    return r;
}

/* Does the image read as the model allows (old, or new where a write failed)? */
static bool verify(struct vdisk_image *img, const char *when)
{
    for (uint64_t off = 0; off < SIZE; off += 1 << 20) {
        if (vdisk_read(img, buf, 1 << 20, off) < 0) {
            result(false, "%s: read at %llu: %s", when, (unsigned long long)off,
                   vdisk_last_error());
            return false;
        }
        for (unsigned i = 0; i < (1u << 20) / CRASH_GRANULE; i++) {
            uint64_t g = off / CRASH_GRANULE + i;
            int64_t t = crash_decode(buf + (size_t)i * CRASH_GRANULE, g);

            if (t < 0 || ((uint32_t)t != want_old[g] && (uint32_t)t != want_new[g])) {
                result(false, "%s: granule %llu reads as %lld, want %u or %u", when,
                       (unsigned long long)g, (long long)t, want_old[g], want_new[g]);
                return false;
            }
            want_old[g] = want_new[g] = (uint32_t)t; /* what reads back now stays */
        }
    }
    return true;
}

/* Close, reopen, check with vdisk and qemu-img, read everything back. */
static bool consistent(struct vdisk_image **img, const char *scenario)
{
    struct vdisk_check_result res = {0};
    int r;

    if (*img)
        vdisk_close(*img); /* may fail (a sticky flush error): the reopen decides */
    *img = NULL;
    vdisk_io_fault_clear();
    r = vdisk_open(path, F->format, 0, open_opts[0] ? open_opts : NULL, img);
    if (r < 0) {
        result(false, "%s: reopen: %s", scenario, vdisk_last_error());
        return false;
    }
    r = vdisk_check(*img, 0, &res);
    if ((r < 0 && r != -ENOTSUP) || res.corruptions) {
        result(false, "%s: vdisk check: %llu corruptions (%s)", scenario,
               (unsigned long long)res.corruptions, r < 0 ? vdisk_last_error() : "");
        return false;
    }
    if (!verify(*img, scenario))
        return false;
    if (F->qemu) {
        char *argv[] = {"qemu-img", "check", "-q", "-f", (char *)F->qemu, path, NULL};

        vdisk_close(*img);
        *img = NULL;
        r = crash_run_quiet(argv);
        if (r != 0 && r != 3) {
            result(false, "%s: qemu-img check -f %s: exit %d", scenario, F->qemu, r);
            return false;
        }
        if (vdisk_open(path, F->format, 0, open_opts[0] ? open_opts : NULL, img) < 0) {
            result(false, "%s: reopen after qemu-img: %s", scenario, vdisk_last_error());
            return false;
        }
    }
    return true;
}

/* Arm RULE; say so on failure. */
static bool arm(const char *rule)
{
    vdisk_io_fault_clear();
    if (vdisk_io_fault_add(rule) < 0) {
        result(false, "bad rule %s", rule);
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    struct vdisk_image *img = NULL;
    char key[4096];
    FILE *kf;
    int r;

    if (argc != 3) {
        fprintf(stderr, "usage: fault-check FORMAT DIR\n");
        return 2;
    }
    for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++)
        if (strcmp(argv[1], fmts[i].name) == 0)
            F = &fmts[i];
    if (!F) {
        fprintf(stderr, "fault-check: %s: unknown format\n", argv[1]);
        return 2;
    }
    dir = argv[2];
    mkdir(dir, 0700);
    snprintf(key, sizeof(key), "%s/key", dir);
    if ((kf = fopen(key, "w"))) {
        fputs("fault-check passphrase", kf);
        fclose(kf);
    }
    snprintf(path, sizeof(path), "%s/disk", dir);
    if (F->create)
        snprintf(create_opts, sizeof(create_opts), F->create, dir);
    if (F->open)
        snprintf(open_opts, sizeof(open_opts), F->open, dir);
    buf = aligned_alloc(4096, 1 << 20);
    unlink(path);
    {
        char s1[4200];

        snprintf(s1, sizeof(s1), "%s-s001.vmdk", path);
        unlink(s1);
    }
    if (!buf || vdisk_create(path, F->format, SIZE, create_opts[0] ? create_opts : NULL) < 0 ||
        vdisk_open(path, F->format, 0, open_opts[0] ? open_opts : NULL, &img) < 0) {
        printf("FAIL: fault %s: create/open: %s\n", F->name, vdisk_last_error());
        return 1;
    }
    /* the model starts as the image reads now (LUKS: noise) */
    for (unsigned g = 0; g < NG; g++) {
        if (vdisk_read(img, buf, CRASH_GRANULE, (uint64_t)g * CRASH_GRANULE) < 0)
            return 1;
        if (crash_decode(buf, g) != 0) { /* make it known content */
            crash_pattern(buf, 1, g);
            if (vdisk_write(img, buf, CRASH_GRANULE, (uint64_t)g * CRASH_GRANULE, 0) < 0)
                return 1;
            want_old[g] = want_new[g] = 1;
        }
    }
    /* a first write and flush: something to keep */
    r = write_tag(img, 0, 64);
    if (r == 0)
        r = vdisk_flush(img);
    result(r == 0, "baseline write and flush");

    /* EIO on a data write */
    if (arm("write:EIO:1:1")) {
        r = write_tag(img, 256, 16);
        result(r == -EIO, "write EIO: the write fails with EIO (got %d)", r);
        r = write_tag(img, 256, 16);
        result(r == 0, "write EIO: the retry succeeds (%s)", r ? vdisk_last_error() : "ok");
        result(consistent(&img, "write EIO"), "write EIO: image consistent, data kept");
    }
    /* ENOSPC when the file grows: allocating writes fail, in-place ones go on */
    if (arm("grow:ENOSPC:1:0")) {
        r = write_tag(img, 1024, 16);
        if (strcmp(F->format, "raw") == 0 || strcmp(F->format, "luks") == 0)
            result(r == 0, "grow ENOSPC: a %s file never grows: the write succeeds (got %d)",
                   F->format, r);
        else
            result(r == -ENOSPC, "grow ENOSPC: an allocating write fails with ENOSPC (got %d)", r);
        r = write_tag(img, 0, 8);
        result(r == 0, "grow ENOSPC: a write to allocated space still succeeds (%s)",
               r ? vdisk_last_error() : "ok");
        r = vdisk_read(img, buf, 65536, 0);
        result(r == 0, "grow ENOSPC: reads still served");
        vdisk_io_fault_clear(); /* space freed */
        r = write_tag(img, 1024, 16);
        result(r == 0, "grow ENOSPC: the retry after space is freed succeeds (%s)",
               r ? vdisk_last_error() : "ok");
        r = vdisk_flush(img);
        result(r == 0, "grow ENOSPC: flush after the retry succeeds");
        result(consistent(&img, "grow ENOSPC"), "grow ENOSPC: image consistent, data kept");
    }
    /* ENOSPC on any write, for a while */
    if (arm("write:ENOSPC:1:3")) {
        int r1 = write_tag(img, 1536, 8);

        r = write_tag(img, 64, 4);
        result(r1 == -ENOSPC, "write ENOSPC: the client sees ENOSPC (got %d)", r1);
        (void)r;
        vdisk_io_fault_clear();
        r = write_tag(img, 1536, 8);
        result(r == 0, "write ENOSPC: the retry succeeds");
        result(consistent(&img, "write ENOSPC"), "write ENOSPC: image consistent, data kept");
    }
    /* EIO on read */
    if (arm("read:EIO:1:1")) {
        r = vdisk_read(img, buf, 4096, 0);
        result(r == -EIO, "read EIO: the read fails with EIO (got %d)", r);
        r = vdisk_read(img, buf, 4096, 0);
        result(r == 0 && crash_decode(buf, 0) == want_old[0], "read EIO: the next read works");
        vdisk_io_fault_clear();
    }
    /* short writes everywhere: the library finishes them */
    if (arm("write:short:1:0")) {
        r = write_tag(img, 1900, 32);
        if (r == 0)
            r = write_tag(img, 100, 3);
        if (r == 0)
            r = vdisk_flush(img);
        result(r == 0 && vdisk_io_fault_fired() > 0,
               "short writes: completed by the library (%u short)", vdisk_io_fault_fired());
        result(consistent(&img, "short writes"), "short writes: image consistent, data kept");
    }
    /* a failed flush is sticky */
    if (arm("flush:EIO:1:1")) {
        uint32_t saved[16];

        memcpy(saved, want_old + 512, sizeof(saved));
        r = write_tag(img, 512, 16); /* VHD and VHDX flush when they allocate */
        int f1 = vdisk_flush(img);

        vdisk_io_fault_clear();
        int f2 = vdisk_flush(img);

        result((r == 0 && f1 == -EIO) || (r == -EIO && f1 < 0),
               "flush EIO: the write or the flush fails with EIO (got %d, %d)", r, f1);
        result(f2 < 0, "flush EIO: a later flush fails too, the data may be lost (got %d)", f2);
        uint32_t saved2[4];

        memcpy(saved2, want_old + 600, sizeof(saved2));
        r = write_tag(img, 600, 4);
        result(r == 0 || r == -EIO, "flush EIO: writes after it still answer (%d)", r);
        for (unsigned g = 600; g < 604; g++) /* never flushed (close fails): old or new */
            want_new[g] = saved2[g - 600];
        for (unsigned g = 512; g < 528; g++) /* the flush failed: old or new both allowed */
            if (want_old[g] != saved[g - 512])
                want_new[g] = saved[g - 512];
        result(consistent(&img, "flush EIO"), "flush EIO: after a reopen the image is consistent");
        r = write_tag(img, 512, 16);
        result(r == 0 && vdisk_flush(img) == 0, "flush EIO: after a reopen flushes work again");
    }
    /* EIO in the middle of metadata updates: every write call from the 2nd fails */
    if (arm("write:EIO:2:0")) {
        r = write_tag(img, 1800, 200);
        result(r == -EIO || r == 0, "write EIO mid-allocation: fails cleanly (got %d)", r);
        vdisk_io_fault_clear();
        (void)vdisk_flush(img);
        result(consistent(&img, "EIO mid-allocation"),
               "write EIO mid-allocation: image consistent after a reopen");
    }
    if (img)
        vdisk_close(img);
    printf("fault-check: %s: %u failures\n", F->name, failures);
    return failures ? 1 : 0;
}
