#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Boot and shutdown time of persistent disks: N raw images (loop) and N qcow2
# images (the user-space way auto picks) in a table, `vdisk open --all-persistent`
# then `vdisk close --all-persistent`, timed, ROUNDS times; also the cost of
# `vdisk open` + `close` of one raw disk alone (the per-open checks: FIFO-safe
# open, pseudo file system, O_EXCL, read-only file, record escaping).
# Usage: bench/persist-boot.sh [N, default 8] [ROUNDS, default 5]   Env: BENCH_DIR.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VDISK=${VDISK:-$ROOT/build/tools/vdisk/vdisk}
N=${1:-8}
ROUNDS=${2:-5}
D=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vdisk-bench-persist.XXXXXX")
export VDISK_RUN_DIR=$D/run VDISK_CONF_DIR=$D/etc
cleanup() { "$VDISK" close --all >/dev/null 2>&1 || true; rm -rf "$D"; }
trap cleanup EXIT

"$VDISK" open --help | grep -q -- --all-persistent || { echo "bench/persist-boot.sh: $VDISK has no --all-persistent" >&2; exit 1; }
for i in $(seq "$N"); do
    "$VDISK" create "$D/r$i.img" 64M
    "$VDISK" create -f qcow2 "$D/q$i.qcow2" 64M
    "$VDISK" persist add -f raw "$D/r$i.img"
    "$VDISK" persist add "$D/q$i.qcow2"
done
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
echo "persist-boot: $N raw + $N qcow2 disks, $ROUNDS rounds; load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
    t=$(date +%s%N); "$VDISK" open --all-persistent >/dev/null; open_ms=$(ms "$t")
    t=$(date +%s%N); "$VDISK" close --all-persistent; close_ms=$(ms "$t")
    t=$(date +%s%N)
    for _ in $(seq 20); do "$VDISK" open -f raw "$D/r1.img" >/dev/null; "$VDISK" close "$D/r1.img"; done
    one_ms=$(ms "$t")
    echo "round $r: open --all-persistent ${open_ms} ms, close --all-persistent ${close_ms} ms, one raw open+close $((one_ms / 20)) ms"
done
