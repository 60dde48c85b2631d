#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# --via fuse serves through the request engine (vdisk_queue) for every format: a qcow2
# image written and read through the loop device (data checked with qemu-img); the
# server's log at exit counts the engine's requests, and the reads of allocated
# clusters went to the files on the io_uring; the FUSE file of a qcow2 answers
# SEEK_DATA/SEEK_HOLE, fallocate and fsync through the engine, on one thread. A few seconds.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
command -v python3 >/dev/null || { fail "python3 is needed"; finish; }
img=$T/e.qcow2 ref=$T/ref.raw

# The server's log is removed by close: keep it open on fd 3 to read what it says at exit.
hold_log() {
    local id
    id=$("$VDISK" info --json "$1" | sed -n 's/.*"id": "\([0-9a-f]*\)".*/\1/p')
    exec 3<"$VDISK_RUN_DIR/$id.fuse.log"
}
# engine FIELD: a number from the server's "engine:" line on fd 3 (read once, after close).
engine_line() { ENGINE=$(grep 'vdisk-fuse: engine:' <&3); exec 3<&-; }
engine() {
    case $1 in
    requests) sed -n 's/.*engine: \([0-9]*\) requests.*/\1/p' <<<"$ENGINE" ;;
    ring) sed -n 's/.* \([0-9]*\) on the ring.*/\1/p' <<<"$ENGINE" ;;
    ring_ios) sed -n 's/.*(\([0-9]*\) file I\/Os).*/\1/p' <<<"$ENGINE" ;;
    workers) sed -n 's/.* \([0-9]*\) at its workers.*/\1/p' <<<"$ENGINE" ;;
    threads) sed -n 's/.* \([0-9]*\) threads.*/\1/p' <<<"$ENGINE" ;;
    esac
}
# at_least DESC N MIN
at_least() { [ -n "$2" ] && [ "$2" -ge "$3" ] && pass "$1 ($2)" || fail "$1 (got '$2', want >= $3)"; }

head -c 32M /dev/urandom >"$T/data"
cp "$T/data" "$ref" && truncate -s 64M "$ref"
ok "create a 64 MiB qcow2" "$VDISK" create -f qcow2 "$img" 64

# 1. write 32 MiB through the device: allocating writes (the engine's workers)
dev=$("$VDISK" open --via fuse "$img") && pass "open qcow2 via fuse" || fail "open"
hold_log "$img"
ok "write 32 MiB through the device" dd if="$T/data" of="$dev" bs=1M oflag=direct status=none
ok "close" "$VDISK" close "$img"
engine_line
at_least "writes: the server's log counts the engine's requests" "$(engine requests)" 32
at_least "writes: allocating writes ran on the engine's workers" "$(engine workers)" 32
ok "the qcow2 holds the data (qemu-img compare)" qemu-img compare -f qcow2 -F raw "$img" "$ref"

# 2. read it back on a fresh server: allocated clusters are read from the ring
dev=$("$VDISK" open --via fuse "$img") && pass "reopen" || fail "reopen"
hold_log "$img"
dd if="$dev" of="$T/back" bs=1M count=32 iflag=direct status=none
ok "reads return the data" cmp "$T/data" "$T/back"
ok "close after reads" "$VDISK" close "$img"
engine_line
echo "    server: $ENGINE"
at_least "reads: requests went through the engine" "$(engine requests)" 32
# 32 reads of 1 MiB (the kernel may cut each in two requests): the first loads the L2
# table on a worker, the others map to allocated clusters and go to the ring
at_least "reads: the reads of allocated clusters went to the ring" "$(engine ring)" 31
at_least "reads: ... as file I/Os on the ring" "$(engine ring_ios)" 31
w=$(engine workers)
[ -n "$w" ] && [ "$w" -le 8 ] && pass "reads: few requests at the workers (flushes, L2 loads: $w)" ||
    fail "reads: $w requests at the workers, want <= 8"
eq "reads: the engine ran on the default number of threads" "$(engine threads)" 2

# 3. the FUSE file of a qcow2: allocation map, fallocate, fsync; one thread
export VDISK_FUSE_THREADS=1
dev=$("$VDISK" open --via fuse "$img") && pass "open with one thread" || fail "open with one thread"
hold_log "$img"
mp=$(rec_field "$img" mountpoint)
out=$(python3 - "$mp" <<'EOF' 2>&1
import errno, os, sys, ctypes
f = os.open(sys.argv[1], os.O_RDWR)
M = 1 << 20
def say(ok, what): print(("PASS: " if ok else "FAIL: ") + what)
say(os.lseek(f, 0, os.SEEK_DATA) == 0, "SEEK_DATA at 0 is 0")
say(os.lseek(f, 0, os.SEEK_HOLE) == 32 * M, "SEEK_HOLE finds the end of the data at 32M")
say(os.lseek(f, 40 * M, os.SEEK_HOLE) == 40 * M, "SEEK_HOLE in the hole stays")
try:
    os.lseek(f, 33 * M, os.SEEK_DATA); say(False, "SEEK_DATA after the data")
except OSError as e:
    say(e.errno == errno.ENXIO, "SEEK_DATA after the data is ENXIO")
os.pwrite(f, b'w' * 4096, 48 * M)
say(os.lseek(f, 33 * M, os.SEEK_DATA) == 48 * M, "SEEK_DATA finds a cluster written at 48M")
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
say(libc.fallocate(f, 3, M, M) == 0, "fallocate PUNCH_HOLE|KEEP_SIZE 1M..2M")
say(os.pread(f, M, M) == bytes(M), "punched range reads zeroes")
say(libc.fallocate(f, 0x10 | 1, 2 * M, 65536) == 0, "fallocate ZERO_RANGE|KEEP_SIZE 2M..2M+64K")
say(os.pread(f, 65536, 2 * M) == bytes(65536), "zeroed range reads zeroes")
os.fsync(f); say(True, "fsync")
os.close(f)
EOF
)
echo "$out"
FAILS=$((FAILS + $(grep -c '^FAIL: ' <<<"$out")))
ok "close after the file checks" "$VDISK" close "$img"
engine_line
eq "one thread: the log says so" "$(engine threads)" 1
at_least "file checks: lseek, fallocate and fsync went through the engine" "$(engine workers)" 5
unset VDISK_FUSE_THREADS
python3 - "$ref" <<'EOF'
import sys
M = 1 << 20
with open(sys.argv[1], 'r+b') as f:
    f.seek(48 * M); f.write(b'w' * 4096)
    f.seek(M); f.write(bytes(M + 65536))
EOF
ok "the qcow2 holds the changes (qemu-img compare)" qemu-img compare -f qcow2 -F raw "$img" "$ref"
ok "qemu-img check is clean" qemu-img check "$img"
nothing_left "closed" "$img"
finish
