#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk serve against real NBD clients: nbdinfo, nbdcopy, qemu-img, qemu-io,
# nbdsh; for raw and qcow2, each through the page cache and with --direct
# (both on the request engine, vdisk_queue). About 60 s.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
nbdsh() { /usr/bin/python3 -m nbd "$@"; } # Debian's python3-libnbd, whatever python3 PATH finds

# serve NAME IMAGE [ARGS...]: start vdisk serve on $T/NAME.sock; sets URI, SPID.
serve() {
    local name=$1 img=$2; shift 2
    "$VDISK" serve "$@" --socket "$T/$name.sock" "$img" >"$T/$name.uri" 2>"$T/$name.log" &
    SPID=$!
    at_exit "kill $SPID"
    URI="nbd+unix:///?socket=$T/$name.sock"
    for _ in $(seq 100); do nbdinfo --size "$URI" >/dev/null 2>&1 && return 0; sleep 0.05; done
    fail "$name: server did not start: $(cat "$T/$name.log")"
}
# stop_server: SIGTERM, and the exit status must be 0.
stop_server() { kill -TERM "$SPID"; wait "$SPID"; }

md5() { md5sum "$1" | cut -d' ' -f1; }

# A source with data, holes and zeroes: 8 MiB random at 1 MiB, a hole, 4 MiB of zeroes.
truncate -s 64M "$T/src.raw"
dd if=/dev/urandom of="$T/src.raw" bs=1M seek=1 count=8 conv=notrunc status=none
dd if=/dev/urandom of="$T/src.raw" bs=4k seek=6000 count=3 conv=notrunc status=none
dd if=/dev/zero of="$T/src.raw" bs=1M seek=40 count=4 conv=notrunc status=none

# raw-nouring: the server and its engine without io_uring (as under Docker's
# seccomp profile): it polls the socket, the engine's workers do the I/O
for cfg in raw qcow2 raw-direct qcow2-direct raw-nouring; do
    fmt=${cfg%-*} img=$T/disk.$cfg args=()
    [ "$cfg" = "${cfg%-direct}" ] || args=(--direct)
    if [ "$cfg" = raw-nouring ]; then export VDISK_NO_IO_URING=1; else unset VDISK_NO_IO_URING; fi
    if [ "$fmt" = raw ]; then
        cp --sparse=always "$T/src.raw" "$img"
    else
        qemu-img convert -f raw -O qcow2 "$T/src.raw" "$img"
    fi
    serve "$cfg" "$img" "${args[@]}"

    # the socket is private
    eq "$cfg: socket mode 0600" "$(stat -c %a "$T/$cfg.sock")" 600
    eq "$cfg: printed URI" "$(cat "$T/$cfg.uri")" "nbd+unix:///?socket=$T/$cfg.sock"

    # nbdinfo: size, flags, contexts, map
    nbdinfo --json "$URI" >"$T/info.json" 2>&1
    eq "$cfg: nbdinfo size" "$(nbdinfo --size "$URI")" 67108864
    for flag in can_flush can_fua can_trim can_zero can_fast_zero can_multi_conn can_cache can_df; do
        eq "$cfg: nbdinfo $flag" \
            "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["exports"][0][sys.argv[2]])' \
                "$T/info.json" "$flag")" True
    done
    ok "$cfg: nbdinfo lists base:allocation" grep -q base:allocation "$T/info.json"
    ok "$cfg: nbdinfo --list" nbdinfo --list "$URI"
    # the map: 1..9 MiB must be data, 10..23 MiB must read as zero
    nbdinfo --map "$URI" >"$T/map" 2>&1
    python3 - "$T/map" "$fmt" >"$T/map.check" 2>&1 <<'PY'
import sys
ext = []
for line in open(sys.argv[1]):
    off, length, typ = line.split()[:3]
    ext.append((int(off), int(length), int(typ)))
def at(o):
    return next(t for (s, l, t) in ext if s <= o < s + l)
assert sum(l for _, l, _ in ext) == 64 << 20, "map does not cover the disk"
assert all(at(o) & 2 == 0 for o in range(1 << 20, 9 << 20, 1 << 16)), "data reported as zero"
assert all(at(o) & 2 for o in range(10 << 20, 23 << 20, 1 << 16)), "hole reported as data"
print("ok")
PY
    eq "$cfg: nbdinfo --map matches the layout" "$(cat "$T/map.check")" ok

    # nbdcopy both ways
    rm -f "$T/out.raw"
    ok "$cfg: nbdcopy export -> file" nbdcopy "$URI" "$T/out.raw"
    eq "$cfg: nbdcopy out md5" "$(md5 "$T/out.raw")" "$(md5 "$T/src.raw")"
    dd if=/dev/urandom of="$T/new.raw" bs=1M count=64 status=none
    ok "$cfg: nbdcopy file -> export" nbdcopy "$T/new.raw" "$URI"
    rm -f "$T/back.raw"
    ok "$cfg: nbdcopy back" nbdcopy "$URI" "$T/back.raw"
    eq "$cfg: nbdcopy round trip md5" "$(md5 "$T/back.raw")" "$(md5 "$T/new.raw")"

    # qemu-img convert / compare over NBD
    ok "$cfg: qemu-img convert src -> nbd" qemu-img convert -n -f raw -O raw "$T/src.raw" "$URI"
    ok "$cfg: qemu-img compare nbd vs src" qemu-img compare -f raw -F raw "$URI" "$T/src.raw"
    rm -f "$T/conv.qcow2"
    ok "$cfg: qemu-img convert nbd -> qcow2" qemu-img convert -O qcow2 "$URI" "$T/conv.qcow2"
    ok "$cfg: qemu-img compare qcow2 vs src" qemu-img compare "$T/conv.qcow2" "$T/src.raw"
    # sparse reads: the all-zero hole must read back as zero through structured replies
    ok "$cfg: hole reads back as zeroes" qemu-io -f raw -c 'read -P 0 10M 13M' "$URI"

    # qemu-io writes, discards, zeroes; then read patterns back over a new connection
    ok "$cfg: qemu-io write" qemu-io -f raw -c 'write -P 0xab 2M 1M' -c 'write -P 0xcd -f 5M 64k' "$URI"
    ok "$cfg: qemu-io write-zeroes" qemu-io -f raw -c 'write -z 3M 512k' -c 'write -z -u 4M 1M' "$URI"
    ok "$cfg: qemu-io discard" qemu-io -f raw -c 'discard 10M 1M' "$URI"
    ok "$cfg: qemu-io read back" qemu-io -f raw -c 'read -P 0xab 2M 1M' -c 'read -P 0 3M 512k' \
        -c 'read -P 0 4M 1M' -c 'read -P 0xcd 5M 64k' -c 'flush' "$URI"

    # several connections at once: parallel writers, then one check
    for i in 0 1 2 3; do
        qemu-io -f raw -c "write -P $((0x10 + i)) $((20 + i))M 1M" "$URI" >/dev/null 2>&1 &
    done
    wait_ok=0
    for j in $(jobs -p); do [ "$j" = "$SPID" ] && continue; wait "$j" || wait_ok=1; done
    eq "$cfg: 4 concurrent clients wrote" "$wait_ok" 0
    ok "$cfg: concurrent writes landed" qemu-io -f raw -c 'read -P 0x10 20M 1M' -c 'read -P 0x11 21M 1M' \
        -c 'read -P 0x12 22M 1M' -c 'read -P 0x13 23M 1M' "$URI"

    # nbdsh: out-of-order replies with many requests in flight
    ok "$cfg: nbdsh 64 reads in flight" nbdsh -u "$URI" -c '
import random
bufs = []
for i in range(64):
    b = nbd.Buffer(65536)
    h.aio_pread(b, random.randrange(0, 1023) * 65536)
    bufs.append(b)
while h.aio_in_flight() > 0:
    h.poll(-1)
'
    ok "$cfg: nbdsh: trim and write zeroes with FUA (FAST_ZERO may be refused)" nbdsh -u "$URI" -c '
import errno
h.trim(65536, 30 << 20, nbd.CMD_FLAG_FUA)
h.zero(65536, 31 << 20, nbd.CMD_FLAG_FUA)
assert h.pread(65536, 31 << 20) == bytes(65536)
try:
    h.zero(65536, 31 << 20, nbd.CMD_FLAG_FAST_ZERO)
except nbd.Error as e:
    assert e.errnum == errno.ENOTSUP, e
'
    ok "$cfg: nbdsh block status with REQ_ONE" nbdsh --base-allocation -u "$URI" -c '
seen = []
def f(meta, off, ents, err):
    seen.extend(ents)
h.block_status(65536, 0, f, nbd.CMD_FLAG_REQ_ONE)
assert len(seen) == 2 and seen[0] <= 65536, seen
'

    # SIGTERM: exit 0, image unlocked (qemu-img can take the write lock), data flushed
    ok "$cfg: SIGTERM stops the server cleanly" stop_server
    ok "$cfg: image unlocked after SIGTERM" qemu-io -f "$fmt" -c 'read -P 0xab 2M 1M' "$img"
    [ "$fmt" = qcow2 ] && ok "$cfg: qemu-img check after serving" qemu-img check "$img"
    [ -e "$T/$cfg.sock" ] && fail "$cfg: socket left behind" || pass "$cfg: socket removed"

    # read-only export
    serve "$cfg-ro" "$img" -r "${args[@]}"
    eq "$cfg: read-only flag" "$(nbdinfo --json "$URI" | python3 -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["is_read_only"])')" True
    fails_with "$cfg: write to read-only export refused" 'Operation not permitted|EPERM|read-only|Permission' \
        nbdsh -u "$URI" -c 'h.pwrite(b"x" * 512, 0)'
    ok "$cfg: read-only export reads" qemu-io -r -f raw -c 'read -P 0xab 2M 1M' "$URI"
    stop_server

    # the engine serves it: 8 reads, a block status, a cache and a flush on one
    # connection; --verbose logs its counters as it ends. Raw reads all go to
    # io_uring (page cache too); qcow2's first may load an L2 table on a worker.
    serve "$cfg-engine" "$img" --verbose "${args[@]}"
    ok "$cfg: nbdsh: 11 requests" nbdsh --base-allocation -u "$URI" -c '
for i in range(8):
    h.pread(4096, (20 << 20) + i * 65536)
h.block_status(65536, 0, lambda *a: 0)
h.cache(65536, 0)
h.flush()
'
    ok "$cfg: SIGTERM after the engine's requests" stop_server
    engine=$(sed -n 's/.*engine: \(11 requests: .*\)/\1/p' "$T/$cfg-engine.log")
    ring=$(sed -n 's/^11 requests: \([0-9]*\) on io_uring.*/\1/p' <<<"$engine")
    if [ "$cfg" = raw-nouring ]; then
        eq "$cfg: the engine ran the requests, all on its workers" "$engine" \
            "11 requests: 0 on io_uring (0 file I/Os), 11 on its worker threads"
    elif [ "$fmt" = raw ]; then
        eq "$cfg: the engine ran the requests, reads on io_uring" "$engine" \
            "11 requests: 8 on io_uring (8 file I/Os), 3 on its worker threads"
    elif [ -n "$ring" ] && [ "$ring" -ge 7 ]; then
        pass "$cfg: the engine ran the requests, reads on io_uring ($engine)"
    else
        fail "$cfg: the engine ran the requests, reads on io_uring (log: $(cat "$T/$cfg-engine.log"))"
    fi
done
unset VDISK_NO_IO_URING

# TCP: a bare port listens on the loopback address only, an explicit address works
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# serve_tcp LISTEN PORT: vdisk serve --listen LISTEN, ready on 127.0.0.1:PORT; sets SPID.
serve_tcp() {
    "$VDISK" serve --listen "$1" "$T/disk.raw" >"$T/tcp.uri" 2>"$T/tcp.log" &
    SPID=$!
    at_exit "kill $SPID"
    for _ in $(seq 100); do nbdinfo --size "nbd://127.0.0.1:$2" >/dev/null 2>&1 && return 0; sleep 0.05; done
    fail "tcp: server on $1 did not start: $(cat "$T/tcp.log")"
}
port=$(free_port)
serve_tcp "$port" "$port"
eq "tcp: --listen PORT serves on 127.0.0.1" "$(nbdinfo --size "nbd://127.0.0.1:$port")" 67108864
eq "tcp: --listen PORT listens on 127.0.0.1:PORT and nothing else" \
    "$(ss -Hltn "sport = :$port" | awk '{print $4}')" "127.0.0.1:$port"
# 127.0.0.2 is this machine too, but not the address bound: a wildcard bind would answer
fails "tcp: --listen PORT does not answer on 127.0.0.2" nbdinfo --size "nbd://127.0.0.2:$port"
other=$(ip -o -4 addr show scope global | awk '{sub(/\/.*/, "", $4); print $4; exit}')
[ -z "$other" ] || fails "tcp: --listen PORT does not answer on $other" nbdinfo --size "nbd://$other:$port"
ok "tcp: SIGTERM" stop_server
port=$(free_port)
serve_tcp "127.0.0.1:$port" "$port"
eq "tcp: --listen 127.0.0.1:PORT prints its URI" "$(cat "$T/tcp.uri")" "nbd://127.0.0.1:$port/"
eq "tcp: nbdinfo size" "$(nbdinfo --size "nbd://127.0.0.1:$port")" 67108864
ok "tcp: SIGTERM" stop_server
fails_with "serve: missing image" 'No such file|does not exist' "$VDISK" serve --socket "$T/x.sock" "$T/none.img"
fails_with "serve: bad port" 'bad port' "$VDISK" serve --listen 127.0.0.1:99999 "$T/disk.raw"
if has_need kernel-nbd; then
    skip no-kernel-nbd "this machine has kernel NBD: open --via nbd without it cannot be checked"
else
    fails_with "open --via nbd without kernel NBD says so" 'not available' \
        "$VDISK" open --via nbd "$T/disk.raw"
fi
touch "$T/notsock"
fails_with "serve: refuses to replace a non-socket" 'not a socket' "$VDISK" serve --socket "$T/notsock" "$T/disk.raw"
finish
