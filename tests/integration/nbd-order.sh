#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk serve reads requests while others are in flight: a fast request sent
# after a slow one is answered first. The image is a qcow2 overlay over a slow
# backing file (nbdkit's delay filter through nbdfuse: each read of it takes
# DELAY seconds), so a read of an unallocated cluster is slow and one of an
# allocated cluster fast. Page cache, --direct, and without io_uring. About 20 s.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
nbdsh() { /usr/bin/python3 -m nbd "$@"; }
DELAY=2

touch "$T/slow.raw"
nbdfuse "$T/slow.raw" [ nbdkit --filter=delay pattern size=64M delay-read=$DELAY ] \
    2>"$T/nbdfuse.log" &
FUSE_PID=$!
at_exit "kill $FUSE_PID; wait $FUSE_PID"
for _ in $(seq 100); do [ "$(stat -c %s "$T/slow.raw")" = 67108864 ] && break; sleep 0.05; done
eq "nbdfuse: the slow backing file is there" "$(stat -c %s "$T/slow.raw")" 67108864
ok "overlay over the slow file" qemu-img create -q -f qcow2 -b "$T/slow.raw" -F raw "$T/top.qcow2" 64M
ok "1 MiB allocated in the overlay" qemu-io -f qcow2 -c 'write -P 0xaa 0 1M' "$T/top.qcow2"

# The client: NSLOW slow 4k reads, then (once the server has had time to wait
# on them) a fast read and a fast write. The fast ones must come back first,
# quickly; every reply carries the right bytes.
ORDER_PY='
import os, struct, time
slow_off, delay = int(os.environ["SLOW_OFF"]), float(os.environ["DELAY"])
done = []
def note(name, t0):
    def cb(err):
        done.append((name, round(time.monotonic() - t0, 2), err.value))
        return 1
    return cb
def check(cond, msg):
    if not cond:
        raise SystemExit(msg)
nslow = int(os.environ["NSLOW"])
slow, fast = [nbd.Buffer(4096) for _ in range(nslow)], nbd.Buffer(4096)
for i in range(nslow):
    h.aio_pread(slow[i], slow_off + i * 65536, completion=note("slow read", time.monotonic()))
time.sleep(0.5)
t = time.monotonic()
h.aio_pread(fast, 4096, completion=note("fast read", t))
h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(b"\xbb" * 4096)), 65536, completion=note("fast write", t))
while h.aio_in_flight() > 0:
    h.poll(-1)
check(all(err == 0 for _, _, err in done), "a request failed: %s" % done)
check(sorted(n for n, _, _ in done[:2]) == ["fast read", "fast write"], "the fast requests waited: %s" % done)
check(all(dt < delay / 2 for n, dt, _ in done if n != "slow read"), "fast replies were slow: %s" % done)
check(fast.to_bytearray() == b"\xaa" * 4096, "fast read: wrong data")
for i in range(nslow):
    off = struct.unpack(">Q", bytes(slow[i].to_bytearray()[:8]))[0]
    check(off == slow_off + i * 65536, "slow read %d: wrong data" % i)
check(h.pread(4096, 65536) == b"\xbb" * 4096, "fast write did not land")
'

slow_off=$((32 << 20))
for mode in page direct nouring; do
    args=()
    [ "$mode" = direct ] && args=(--direct)
    if [ "$mode" = nouring ]; then export VDISK_NO_IO_URING=1; else unset VDISK_NO_IO_URING; fi
    "$VDISK" serve "${args[@]}" --socket "$T/$mode.sock" "$T/top.qcow2" >/dev/null 2>"$T/$mode.log" &
    SPID=$!
    at_exit "kill $SPID"
    URI="nbd+unix:///?socket=$T/$mode.sock"
    for _ in $(seq 100); do nbdinfo --size "$URI" >/dev/null 2>&1 && break; sleep 0.05; done
    # new offsets each time: nothing of the slow file is cached
    for nslow in 1 3; do
        NSLOW=$nslow SLOW_OFF=$slow_off DELAY=$DELAY \
            ok "$mode: fast requests answered while slow reads ($nslow) are in flight" \
            nbdsh -u "$URI" -c "$ORDER_PY"
        slow_off=$((slow_off + (1 << 20)))
    done
    kill -TERM "$SPID"; wait "$SPID"; eq "$mode: SIGTERM: exit 0" $? 0
done
finish
