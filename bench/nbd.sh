#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# NBD servers side by side, one run: vdisk serve, nbdkit's file plugin and
# qemu-nbd (--cache=none --aio=io_uring) on the same raw image, and vdisk vs
# qemu-nbd on the same qcow2 image, in the page cache and with O_DIRECT. The client is
# fio's nbd engine (libnbd) over a Unix socket: 4k random read and write at
# QD32, 1 MiB sequential read and write at QD8.
# Usage: bench/nbd.sh [SECONDS per job, default 10]   Env: BENCH_DIR, SIZE_MB.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VDISK=${VDISK:-$ROOT/build/tools/vdisk/vdisk}
SECS=${1:-10}
SIZE_MB=${SIZE_MB:-1024}
D=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vdisk-bench-nbd.XXXXXX")
PID=
cleanup() { [ -z "$PID" ] || kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$D"; }
trap cleanup EXIT
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "bench/nbd.sh: fio has no nbd engine" >&2; exit 1; }

JOBS=("randread 4k 32" "randwrite 4k 32" "read 1M 8" "write 1M 8")

# start NAME CMD...: run a server in the background on $D/NAME.sock, wait for it.
start() {
    local name=$1; shift
    rm -f "$D/$name.sock"
    "$@" >"$D/$name.log" 2>&1 &
    PID=$!
    URI="nbd+unix:///?socket=$D/$name.sock"
    for _ in $(seq 100); do nbdinfo --size "$URI" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "bench/nbd.sh: $name did not start: $(cat "$D/$name.log")" >&2; exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
# fresh SRC: every server gets its own identical copy ($D/run.img), written and
# synced the same way, so none inherits the page-cache state another left behind
fresh() { rm -f "$D/run.img"; cp --sparse=never "$1" "$D/run.img"; sync "$D/run.img"; }

# measure KEY: every job against $URI; results in R[KEY/job] (IOPS, or MiB/s for 1M)
# and C[KEY/job], the server's CPU time per request in microseconds (user+sys):
# on a shared machine that figure is steadier than the throughput.
declare -A R C
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
measure() {
    local key=$1 j rw bs qd out t0
    # warm-up, not counted: the first writes after a server starts pay for
    # dirtying clean pages and metadata, which would favour whoever runs second
    fio --name=w --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k --iodepth=32 \
        --size="${SIZE_MB}M" --runtime=3 --time_based >/dev/null 2>&1
    for j in "${JOBS[@]}"; do
        read -r rw bs qd <<<"$j"
        t0=$(cpu_ticks)
        out=$(fio --name=b --ioengine=nbd --uri="$URI" --rw="$rw" --bs="$bs" --iodepth="$qd" \
            --size="${SIZE_MB}M" --runtime="$SECS" --time_based --output-format=json 2>/dev/null)
        out=${out#*$'\n{'}; [ "${out:0:1}" = "{" ] || out="{$out"
        R[$key/$j]=$(python3 -c '
import json, sys
j = json.loads(sys.stdin.read())["jobs"][0]
big = sys.argv[1] == "1M"
v = j["read"] if j["read"]["io_bytes"] else j["write"]
print(round(v["bw_bytes"] / 2**20) if big else round(v["iops"]))' "$bs" <<<"$out")
        C[$key/$j]=$(python3 -c '
import json, os, sys
j = json.loads(sys.stdin.read())["jobs"][0]
ios = j["read"]["total_ios"] + j["write"]["total_ios"]
ticks = int(sys.argv[2]) - int(sys.argv[1])
print("%.1f" % (ticks * 1e6 / os.sysconf("SC_CLK_TCK") / max(1, ios)))' "$t0" "$(cpu_ticks)" <<<"$out")
    done
}

report() { # report TITLE KEY PEER...: a table and vdisk's ratio to the faster peer
    local title=$1 key=$2 j p best best_name; shift 2
    echo "== $title"
    printf '%-18s %12s' job "$key"
    for p in "$@"; do printf ' %12s' "$p"; done
    printf ' %s\n' "ratio (vdisk / faster peer)"
    for j in "${JOBS[@]}"; do
        best=0 best_name=
        printf '%-18s %12s' "$j" "${R[$key/$j]}"
        for p in "$@"; do
            printf ' %12s' "${R[$p/$j]}"
            if [ "${R[$p/$j]}" -gt "$best" ]; then best=${R[$p/$j]}; best_name=$p; fi
        done
        python3 -c 'import sys; print(" %.2fx vs %s" % (int(sys.argv[1]) / max(1, int(sys.argv[2])), sys.argv[3]))' \
            "${R[$key/$j]}" "$best" "$best_name"
    done
    printf '%-18s' "server CPU us/req"
    for p in "$key" "$@"; do printf ' %12s' "${C[$p/${JOBS[0]}]}/${C[$p/${JOBS[1]}]}"; done
    printf ' %s\n' "(randread/randwrite 4k)"
    echo "(4k jobs: IOPS; 1M jobs: MiB/s; fio nbd engine, QD as shown, ${SECS}s each)"
}

echo "bench/nbd.sh: ${SIZE_MB} MiB images in $D, $(nproc) cores" >&2
qemu-img create -q -f raw "$D/disk.raw" "${SIZE_MB}M"
dd if=/dev/urandom of="$D/disk.raw" bs=1M count="$SIZE_MB" conv=notrunc,fsync status=none

fresh "$D/disk.raw"
start vdisk "$VDISK" serve --quiet --socket "$D/vdisk.sock" "$D/run.img"
measure vdisk; stop
fresh "$D/disk.raw"
start vdisk-direct "$VDISK" serve --quiet --direct --socket "$D/vdisk-direct.sock" "$D/run.img"
measure vdisk-direct; stop
fresh "$D/disk.raw"
start nbdkit nbdkit -f -U "$D/nbdkit.sock" file "$D/run.img"
measure nbdkit; stop
fresh "$D/disk.raw"
start qemu-nbd qemu-nbd -t -e 8 -f raw --cache=none --aio=io_uring -k "$D/qemu-nbd.sock" "$D/run.img"
measure qemu-nbd; stop
report "raw image, page cache" vdisk nbdkit qemu-nbd
# like for like: the peer that also bypasses the page cache
report "raw image, O_DIRECT (vdisk --direct vs qemu-nbd --cache=none)" vdisk-direct qemu-nbd

if "$VDISK" create -f qcow2 "$D/probe.qcow2" 1M >/dev/null 2>&1; then
    qemu-img convert -f raw -O qcow2 "$D/disk.raw" "$D/disk.qcow2"
    fresh "$D/disk.qcow2"
    start vdisk-qpc "$VDISK" serve --quiet --socket "$D/vdisk-qpc.sock" "$D/run.img"
    measure vdisk-qpc; stop
    fresh "$D/disk.qcow2"
    start qemu-nbd-qpc qemu-nbd -t -e 8 -f qcow2 --cache=writeback --aio=threads \
        -k "$D/qemu-nbd-qpc.sock" "$D/run.img"
    measure qemu-nbd-qpc; stop
    fresh "$D/disk.qcow2"
    start vdisk-q "$VDISK" serve --quiet --direct --socket "$D/vdisk-q.sock" "$D/run.img"
    measure vdisk-q; stop
    fresh "$D/disk.qcow2"
    start qemu-nbd-q qemu-nbd -t -e 8 -f qcow2 --cache=none --aio=io_uring -k "$D/qemu-nbd-q.sock" \
        "$D/run.img"
    measure qemu-nbd-q; stop
    report "qcow2 image, page cache (vdisk default; qemu-nbd --cache=writeback)" vdisk-qpc \
        qemu-nbd-qpc qemu-nbd-q
    report "qcow2 image, O_DIRECT (vdisk --direct vs qemu-nbd --cache=none)" vdisk-q qemu-nbd-q
else
    echo "== qcow2: skipped (this libvdisk has no qcow2)"
fi
