#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The format-independent commands as a user drives them: vdisk convert (content,
# sparseness, qemu-img made sources, qemu-img compare/check of the results, the
# progress bar on a terminal, no half-made DST), vdisk check (exit codes 0, 2, 3,
# 63 against images qemu-img agrees are clean, corrupt or leaky) and vdisk bench
# (read/write, direct or not, the pattern lands, bad knobs refused).
# About a minute.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run

alloc_kib() { du -k "$1" | cut -f1; }

# A 1 GiB raw image that is mostly holes: data at a few places (one unaligned,
# one straddling a chunk boundary) and 8 MiB of explicit zeroes that convert
# must not turn into allocated blocks.
SRC=$T/src.raw
truncate -s 1G "$SRC"
head -c 3M /dev/urandom | dd of="$SRC" bs=1M seek=5 conv=notrunc status=none
head -c 12345 /dev/urandom | dd of="$SRC" bs=1 seek=$((300 * 1048576 + 777)) conv=notrunc status=none
head -c 2M /dev/urandom | dd of="$SRC" bs=512K seek=$((2 * 700 + 1)) conv=notrunc status=none
head -c 1M /dev/urandom | dd of="$SRC" bs=1M seek=1023 conv=notrunc status=none
dd if=/dev/zero of="$SRC" bs=1M seek=600 count=8 conv=notrunc status=none
[ "$(alloc_kib "$SRC")" -ge 8192 ] && pass "source has allocated zeroes" || fail "source layout"

# convert raw -> raw
ok "convert raw -> raw" "$VDISK" convert -O raw "$SRC" "$T/dst.raw"
eq "raw copy has the same md5" "$(md5sum <"$T/dst.raw")" "$(md5sum <"$SRC")"
eq "raw copy has the same size" "$(stat -c %s "$T/dst.raw")" $((1 << 30))
kib=$(alloc_kib "$T/dst.raw")
[ "$kib" -le 8192 ] && pass "raw copy stays sparse (${kib} KiB allocated, zeroes skipped)" ||
    fail "raw copy allocates ${kib} KiB"
ok "qemu-img compare agrees" qemu-img compare -f raw -F raw "$SRC" "$T/dst.raw"
ok "convert with one thread and -f" "$VDISK" convert -m 1 -f raw -O raw "$SRC" "$T/dst1.raw"
ok "one-thread copy identical" cmp "$SRC" "$T/dst1.raw"
rm -f "$T/dst1.raw"
ok "convert from a direct source (-T none)" "$VDISK" convert -T none -O raw "$SRC" "$T/dst2.raw"
ok "direct-source copy identical" cmp "$SRC" "$T/dst2.raw"
ok "convert to a direct target (-t none)" "$VDISK" convert -t none -O raw "$SRC" "$T/dst3.raw"
ok "direct-target copy identical" cmp "$SRC" "$T/dst3.raw"
# direct writes into holes go one at a time (ext4): the data ranges are
# allocated before the copy, and the allocated zeroes given back after it
kib=$(alloc_kib "$T/dst3.raw")
[ "$kib" -le 8192 ] && pass "direct-target copy stays sparse (${kib} KiB allocated)" ||
    fail "direct-target copy allocates ${kib} KiB"
rm -f "$T/dst3.raw"
ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" strace -f -qq -e trace=fallocate,pwrite64 -o "$T/strace" \
    "$VDISK" convert -t none -O raw "$SRC" "$T/dst3.raw"
first=$(grep -E "fallocate|pwrite64" "$T/strace" | head -1)
case $first in
*"FALLOC_FL_KEEP_SIZE, "*) pass "direct target: data ranges allocated before the first write" ;;
*) fail "direct target: first allocating call was: $first" ;;
esac
ok "direct-target copy (traced) identical" cmp "$SRC" "$T/dst3.raw"
# zero blocks scattered through the data (64 MiB of alternating 4 KiB data and
# zero blocks: 8192 runs): equally sparse, without a punch per run (0.2-0.4 ms each)
python3 -c "import os,sys; d=os.urandom(4096); sys.stdout.buffer.write((d + bytes(4096)) * 8192)" >"$T/alt.raw"
ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" strace -f -qq -e trace=fallocate -o "$T/strace" \
    "$VDISK" convert -t none -O raw "$T/alt.raw" "$T/alt-copy.raw"
ok "scattered zeroes: direct-target copy identical" cmp "$T/alt.raw" "$T/alt-copy.raw"
kib=$(alloc_kib "$T/alt-copy.raw")
[ "$kib" -le $((32768 + 1024)) ] && pass "scattered zeroes: copy stays sparse (${kib} KiB for 32 MiB of data)" ||
    fail "scattered zeroes: copy allocates ${kib} KiB for 32 MiB of data"
n=$(grep -c fallocate "$T/strace" || true)
[ "$n" -le 4096 ] && pass "scattered zeroes: $n fallocate calls for 8192 zero runs" ||
    fail "scattered zeroes: $n fallocate calls for 8192 zero runs"
rm -f "$T/alt-copy.raw"
# a static VDI's data area is allocated on purpose: a direct copy into it keeps it so
ok "direct copy into a static VDI" "$VDISK" convert -t none -O vdi -o static=on "$T/alt.raw" "$T/alt.vdi"
kib=$(alloc_kib "$T/alt.vdi")
[ "$kib" -ge 65536 ] && pass "static VDI stays fully allocated (${kib} KiB)" ||
    fail "static VDI lost its allocation (${kib} KiB of 64 MiB)"
ok "direct copy into a static VDI compares equal" qemu-img compare -q -f raw -F vdi "$T/alt.raw" "$T/alt.vdi"
rm -f "$T/alt.raw" "$T/alt.vdi"
rm -f "$T/dst2.raw" "$T/dst3.raw"
fails_with "convert -t junk" "-t takes none, writeback or unsafe" "$VDISK" convert -t sometimes -O raw "$SRC" "$T/x.raw"
# -t unsafe (qemu-img's default): the same image, without waiting for the disk
ok "convert -t unsafe to qcow2" "$VDISK" convert -t unsafe -O qcow2 "$SRC" "$T/u.qcow2"
ok "unsafe qcow2 copy passes qemu-img check" qemu-img check -q "$T/u.qcow2"
ok "unsafe qcow2 copy compares equal" qemu-img compare -f raw -F qcow2 "$SRC" "$T/u.qcow2"
rm -f "$T/u.qcow2"
# LeakSanitizer cannot run under ptrace: off for the traced run (the asan stage)
syncs() { ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" strace -f -qq -e trace=fsync,fdatasync,sync_file_range -o "$T/strace" "$@" >/dev/null &&
    grep -c -E "fsync|fdatasync|sync_file_range" "$T/strace" || true; }
n=$(syncs "$VDISK" convert -O qcow2 "$SRC" "$T/s.qcow2")
[ "$n" -gt 0 ] && pass "default convert makes DST durable ($n sync calls)" || fail "default convert never syncs"
rm -f "$T/s.qcow2"
# (one sync is vdisk_create's, of the empty image's header, before any data)
eq "convert -t unsafe syncs no data" "$(syncs "$VDISK" convert -t unsafe -O qcow2 "$SRC" "$T/s.qcow2")" 1
rm -f "$T/s.qcow2"

# a qemu-img made raw source, written by qemu-io
qemu-img create -q -f raw "$T/q.raw" 64M
qemu-io -f raw -c "write -P 0x5a 1M 3M" -c "write -P 0x11 40M 4k" "$T/q.raw" >/dev/null
ok "convert qemu-img raw" "$VDISK" convert -O raw "$T/q.raw" "$T/q-copy.raw"
ok "qemu-img raw copy compares equal" qemu-img compare -f raw -F raw "$T/q.raw" "$T/q-copy.raw"

# progress: a bar on a terminal, nothing otherwise
script -qec "'$VDISK' convert -p -O raw '$T/q.raw' '$T/p1.raw'" /dev/null >"$T/pty.out" 2>&1
grep -q '(100.00/100%)' "$T/pty.out" && pass "-p on a pty prints progress to 100%" ||
    fail "-p on a pty: $(head -c 200 "$T/pty.out" | od -c | head -3)"
[ "$(tr '\r' '\n' <"$T/pty.out" | grep -c '/100%)')" -ge 2 ] && pass "-p updates the bar with \\r" ||
    fail "-p printed one update only"
"$VDISK" convert -p -O raw "$T/q.raw" "$T/p2.raw" 2>"$T/nopty.err"
eq "-p without a terminal prints nothing" "$(cat "$T/nopty.err")" ""

# failures leave nothing behind, and never touch an existing DST
echo keep >"$T/exists.raw"
fails_with "convert onto an existing file" "exists" "$VDISK" convert -O raw "$SRC" "$T/exists.raw"
eq "existing DST untouched" "$(cat "$T/exists.raw")" keep
fails_with "convert to an unknown format" "unknown image format" \
    "$VDISK" convert -O nope "$SRC" "$T/nope.img"
[ -e "$T/nope.img" ] && fail "unknown format left a file" || pass "unknown format leaves no DST"
fails_with "convert a missing source" "No such file" "$VDISK" convert -O raw "$T/missing" "$T/m.raw"
[ -e "$T/m.raw" ] && fail "missing source left a file" || pass "missing source leaves no DST"
fails_with "convert without -O" "usage" "$VDISK" convert "$SRC" "$T/x.raw"
fails_with "convert -m junk" "thread count" "$VDISK" convert -m 0 -O raw "$SRC" "$T/x.raw"
# out of space half-way: a 4 MiB tmpfs cannot hold the 7 MiB of data
mkdir -p "$T/small"
if mount -t tmpfs -o size=4M vdisk-test "$T/small" 2>/dev/null; then
    at_exit umount "$T/small"
    fails_with "convert onto a full file system fails" "No space left" \
        "$VDISK" convert -O raw "$SRC" "$T/small/full.raw"
    eq "full file system: DST removed" "$(ls -A "$T/small")" ""
else
    # without mount rights: a file size limit makes the writes fail half-way
    (trap '' XFSZ; ulimit -f 4096; exec "$VDISK" convert -O raw "$T/q.raw" "$T/big-limit.raw") \
        2>"$T/limit.err" && fail "convert past the file size limit succeeded" ||
        pass "convert past the file size limit fails"
    [ -e "$T/big-limit.raw" ] && fail "file size limit: DST left" || pass "file size limit: DST removed"
fi

# Ctrl-C half-way: the copy stops and DST is removed. The signal goes as soon as
# DST exists (convert catches signals before it creates DST); even a copy that
# has finished by then must see it before it exits, so the outcome is fixed.
head -c 256M /dev/urandom >"$T/big.raw"
"$VDISK" convert -m 1 -t none -O raw "$T/big.raw" "$T/int.raw" 2>"$T/int.err" &
pid=$!
while [ ! -e "$T/int.raw" ] && kill -0 $pid 2>/dev/null; do :; done
kill -INT $pid
wait $pid
rc=$?
[ $rc -ne 0 ] && grep -q "interrupted" "$T/int.err" && pass "SIGINT stops convert (exit $rc)" ||
    fail "SIGINT: exit $rc: $(cat "$T/int.err")"
[ -e "$T/int.raw" ] && fail "SIGINT left DST" || pass "SIGINT removes DST"
rm -f "$T/big.raw"

# check on a format without metadata: documented exit 63 and a clear message
"$VDISK" check "$SRC" >/dev/null 2>"$T/check.err"
eq "check raw exits 63 (as qemu-img)" "$?" 63
grep -q "format raw has no metadata to check" "$T/check.err" && pass "check raw says why" ||
    fail "check raw message: $(cat "$T/check.err")"
"$VDISK" check --help | grep -q "63 the format has no metadata" && pass "check --help documents 63" ||
    fail "check --help lacks the exit codes"
"$VDISK" check -r bogus "$SRC" 2>/dev/null
eq "check -r bogus exits 1" "$?" 1
"$VDISK" check "$T/missing" 2>/dev/null
eq "check of a missing image exits 1" "$?" 1

# bench: reads and writes, page cache and direct, the pattern really lands
B=$T/bench.raw
"$VDISK" create "$B" 64M
for mode in "" "-w" "-n" "-w -n" "--random" "-w --random -t writethrough"; do
    # shellcheck disable=SC2086
    if "$VDISK" bench -c 4000 -d 16 -s 4k $mode "$B" >"$T/bench.out" 2>"$T/bench.err"; then
        rate=$(sed -n 's/^\([0-9]*\) requests\/s.*/\1/p' "$T/bench.out")
        grep -q '^Run completed in [0-9.]* seconds\.$' "$T/bench.out" && [ "${rate:-0}" -gt 100 ] &&
            pass "bench $mode: ${rate} requests/s" || fail "bench $mode output: $(cat "$T/bench.out")"
    else
        fail "bench $mode: $(cat "$T/bench.err")"
    fi
done
rm -f "$B"
"$VDISK" create "$B" 64M
ok "bench -w --pattern writes" "$VDISK" bench -w -c 16 -d 4 -s 64k --pattern=0xab "$B"
head -c 1M /dev/zero | tr '\0' '\253' >"$T/ab"
ok "pattern 0xab covers the first 1 MiB" cmp -n 1048576 "$T/ab" "$B"
eq "nothing written past count*size" "$(dd if="$B" bs=1M skip=1 count=1 status=none | tr -d '\0' | wc -c)" 0
# with io_uring and O_DIRECT the buffers are registered (WRITE_FIXED): the same bytes land
rm -f "$B"
"$VDISK" create "$B" 64M
ok "bench -w -n with registered buffers" "$VDISK" bench -w -n -c 64 -d 8 -s 64k --pattern=0xcd "$B"
ok "registered buffers: the pattern lands" cmp -n 4194304 "$B" <(head -c 4M /dev/zero | tr '\0' '\315')
# without io_uring (as under Docker's default seccomp profile) the queue's workers do it all
rm -f "$B"
"$VDISK" create "$B" 64M
VDISK_NO_IO_URING=1 ok "bench -w -n without io_uring" "$VDISK" bench -w -n -c 64 -d 8 -s 64k --pattern=0xab "$B"
ok "without io_uring the pattern lands too" cmp -n 4194304 "$B" <(head -c 4M /dev/zero | tr '\0' '\253')
ok "bench -w with drained flushes" "$VDISK" bench -w -c 2000 -d 8 --flush-interval=500 "$B"
ok "bench -w --no-drain flushes" "$VDISK" bench -w -c 2000 -d 8 --flush-interval=500 --no-drain "$B"
ok "bench step and offset wrap around" "$VDISK" bench -c 5000 -d 4 -s 1M -S 3M -o 5M "$B"
fails_with "bench depth 0" "invalid queue depth" "$VDISK" bench -d 0 "$B"
fails_with "bench size 0" "invalid buffer size" "$VDISK" bench -s 0 "$B"
fails_with "bench count junk" "invalid request count" "$VDISK" bench -c 12x "$B"
fails_with "bench cache junk" "invalid cache mode" "$VDISK" bench -t sometimes "$B"
fails_with "bench -n needs direct" "needs -t none" "$VDISK" bench -n -t writeback "$B"
fails_with "bench buffer larger than image" "does not fit" "$VDISK" bench -d 1 -s 128M "$B"
fails_with "bench offset past end" "does not fit" "$VDISK" bench -o 1G "$B"
fails_with "bench huge buffers" "more than 1 GiB" "$VDISK" bench -d 1024 -s 1G "$B"
fails_with "bench pattern junk" "invalid pattern" "$VDISK" bench -w --pattern=300 "$B"

# convert to and from qcow2, checked by qemu-img
ok "convert raw -> qcow2" "$VDISK" convert -O qcow2 "$SRC" "$T/v.qcow2"
ok "vdisk's qcow2 passes qemu-img check" qemu-img check -q "$T/v.qcow2"
ok "raw -> qcow2 compares equal" qemu-img compare -f raw -F qcow2 "$SRC" "$T/v.qcow2"
kib=$(alloc_kib "$T/v.qcow2")
[ "$kib" -le 12288 ] && pass "qcow2 copy stays small (${kib} KiB)" || fail "qcow2 copy is ${kib} KiB"
ok "convert qcow2 -> raw" "$VDISK" convert -O raw "$T/v.qcow2" "$T/back.raw"
ok "round trip identical" cmp "$SRC" "$T/back.raw"
ok "convert with -o cluster_size" "$VDISK" convert -O qcow2 -o cluster_size=4096 "$T/q.raw" "$T/c4k.qcow2"
ok "cluster_size=4096 copy compares equal" qemu-img compare "$T/q.raw" "$T/c4k.qcow2"
eq "cluster_size option reached qcow2" \
    "$(qemu-img info --output=json "$T/c4k.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster-size"])')" 4096

# an odd-sized source: qcow2 counts sectors, so DST is rounded up to 512 as qemu-img does
head -c 1234567 /dev/urandom >"$T/odd.raw"
ok "convert odd-sized raw -> qcow2" "$VDISK" convert -O qcow2 "$T/odd.raw" "$T/odd.qcow2"
ok "odd-sized qcow2 compares equal" qemu-img compare -f raw -F qcow2 "$T/odd.raw" "$T/odd.qcow2"
ok "convert odd-sized raw -> raw" "$VDISK" convert -O raw "$T/odd.raw" "$T/odd2.raw"
ok "odd-sized raw copy is exact" cmp "$T/odd.raw" "$T/odd2.raw"

# a qemu-img made qcow2 as source
qemu-img create -q -f qcow2 "$T/qm.qcow2" 256M
qemu-io -f qcow2 -c "write -P 0x33 0 1M" -c "write -P 0x44 100M 64k" -c "write -z 101M 1M" \
    "$T/qm.qcow2" >/dev/null
ok "convert qemu-img qcow2 -> raw" "$VDISK" convert -O raw "$T/qm.qcow2" "$T/qm.raw"
ok "qemu-img qcow2 -> raw compares equal" qemu-img compare -F raw "$T/qm.qcow2" "$T/qm.raw"
ok "convert qemu-img qcow2 -> qcow2" "$VDISK" convert -O qcow2 "$T/qm.qcow2" "$T/qm2.qcow2"
ok "qcow2 -> qcow2 compares equal" qemu-img compare "$T/qm.qcow2" "$T/qm2.qcow2"
ok "qcow2 -> qcow2 passes qemu-img check" qemu-img check -q "$T/qm2.qcow2"

# a failure half-way through a qcow2 target leaves nothing
(trap '' XFSZ; ulimit -f 2048; exec "$VDISK" convert -O qcow2 "$SRC" "$T/limit.qcow2") 2>"$T/limit.err" &&
    fail "qcow2 convert past the file size limit succeeded" ||
    pass "qcow2 convert past the file size limit fails: $(head -c 120 "$T/limit.err")"
[ -e "$T/limit.qcow2" ] && fail "qcow2 failure left DST" || pass "qcow2 failure removed DST"

# check: clean, leaked and corrupt images, each confirmed by qemu-img check
qcow2_poke() { # qcow2_poke IMAGE leak|corrupt: edit refcounts/L2 of a 2-cluster image
    python3 - "$1" "$2" <<'EOF'
import struct, sys
path, what = sys.argv[1], sys.argv[2]
with open(path, 'r+b') as f:
    h = f.read(104)
    cbits = struct.unpack('>I', h[20:24])[0]
    l1_off = struct.unpack('>Q', h[40:48])[0]
    rt_off = struct.unpack('>Q', h[48:56])[0]
    order = struct.unpack('>I', h[96:100])[0] if struct.unpack('>I', h[4:8])[0] >= 3 else 4
    assert order == 4, "test expects 16-bit refcounts"
    mask = 0x00fffffffffffe00
    f.seek(l1_off); l2_off = struct.unpack('>Q', f.read(8))[0] & mask
    f.seek(rt_off); rb_off = struct.unpack('>Q', f.read(8))[0] & mask
    f.seek(l2_off + 8); data1 = struct.unpack('>Q', f.read(8))[0] & mask
    if what == 'leak':      # drop the L2 entry of cluster 1: its data cluster leaks
        f.seek(l2_off + 8); f.write(b'\0' * 8)
    else:                   # refcount 0 on a cluster in use: corruption
        f.seek(rb_off + 2 * (data1 >> cbits)); f.write(b'\0\0')
EOF
}
mk_two() { qemu-img create -q -f qcow2 "$1" 16M &&
    qemu-io -f qcow2 -c "write -P 1 0 64k" -c "write -P 2 64k 64k" "$1" >/dev/null; }

mk_two "$T/clean.qcow2"
"$VDISK" check "$T/clean.qcow2" >"$T/check.out" 2>&1
eq "check clean qcow2 exits 0" "$?" 0
grep -q "No errors were found on the image." "$T/check.out" && pass "check clean report" ||
    fail "check clean report: $(cat "$T/check.out")"
"$VDISK" check --json "$T/clean.qcow2" >"$T/check.json"
python3 -c "import json; d=json.load(open('$T/check.json')); assert d['corruptions']==0 and d['leaks']==0 and d['format']=='qcow2' and d['total-clusters']>0" &&
    pass "check --json parses" || fail "check --json: $(cat "$T/check.json")"

mk_two "$T/leak.qcow2" && qcow2_poke "$T/leak.qcow2" leak
qemu-img check -q "$T/leak.qcow2" >/dev/null 2>&1
eq "qemu-img sees the leak (exit 3)" "$?" 3
"$VDISK" check "$T/leak.qcow2" >"$T/check.out" 2>&1
eq "check leaked qcow2 exits 3" "$?" 3
grep -q "leaked clusters were found" "$T/check.out" && pass "check reports leaks" ||
    fail "check leak report: $(cat "$T/check.out")"
"$VDISK" check -r leaks "$T/leak.qcow2" >"$T/check.out" 2>&1
eq "check -r leaks repairs (exit 0)" "$?" 0
grep -q "found and repaired" "$T/check.out" && pass "check -r reports the repair" ||
    fail "check -r report: $(cat "$T/check.out")"
ok "qemu-img agrees the leak is gone" qemu-img check -q "$T/leak.qcow2"

mk_two "$T/bad.qcow2" && qcow2_poke "$T/bad.qcow2" corrupt
qemu-img check -q "$T/bad.qcow2" >/dev/null 2>&1
eq "qemu-img sees the corruption (exit 2)" "$?" 2
"$VDISK" check "$T/bad.qcow2" >"$T/check.out" 2>&1
eq "check corrupt qcow2 exits 2" "$?" 2
grep -q "errors were found on the image" "$T/check.out" && pass "check reports corruption" ||
    fail "check corruption report: $(cat "$T/check.out")"
"$VDISK" check -r all "$T/bad.qcow2" >/dev/null 2>&1
eq "check -r all repairs the corruption (exit 0)" "$?" 0
ok "qemu-img agrees the repair is sound" qemu-img check -q "$T/bad.qcow2"

# bench on qcow2: writes leave a consistent image
"$VDISK" create -f qcow2 "$T/b.qcow2" 64M
ok "bench -w -n on qcow2" "$VDISK" bench -w -n -c 4000 -d 16 -s 4k --pattern=7 "$T/b.qcow2"
ok "bench --random on qcow2" "$VDISK" bench -w --random -c 4000 -d 16 -s 4k "$T/b.qcow2"
ok "qcow2 after bench passes qemu-img check" qemu-img check -q "$T/b.qcow2"
ok "bench read -n on qcow2" "$VDISK" bench -n -c 4000 -d 16 -s 4k "$T/b.qcow2"
finish
