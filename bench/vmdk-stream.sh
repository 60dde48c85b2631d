#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk convert against qemu-img convert making a streamOptimized VMDK (zlib
# grains: the cost is compression; vdisk compresses on its copy threads),
# same cache mode, the two tools alternating; median and best printed.
# Data: SIZE (default 1 GiB) of half random, half base64 text (compressible).
# Target: vdisk's time <= TARGET (default 0.3) of qemu-img's.
# Usage: [RUNS=5] [SIZE=1G] [TARGET=0.3] bench/vmdk-stream.sh [DIR]   (needs ~3x SIZE)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VDISK=${VDISK:-$ROOT/build/tools/vdisk/vdisk}
RUNS=${RUNS:-5}
SIZE=${SIZE:-1G}
TARGET=${TARGET:-0.3}
DIR=$(mktemp -d "${1:-/var/tmp}/vdisk-bench.XXXXXX")
. "$ROOT/bench/host-memory.bash" # HOLD_PAGES, WARM: see there
trap 'rm -rf "$DIR"; restore_free_pages' EXIT
hold_free_pages

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
best() { sort -g | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
secs() {
    local t0 t1
    sync
    warm_memory
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

bytes=$(numfmt --from=iec "$SIZE")
echo "== source: $SIZE raw, half random, half base64 text"
{ head -c $((bytes / 2)) /dev/urandom; base64 -w0 /dev/urandom | head -c $((bytes - bytes / 2)); } >"$DIR/src.raw"

for mode in unsafe writeback; do
    v=() q=()
    for i in $(seq "$RUNS"); do
        order=(v q)
        [ $((i % 2)) -eq 0 ] && order=(q v)
        for tool in "${order[@]}"; do
            rm -f "$DIR/out.vmdk"
            if [ "$tool" = v ]; then
                v+=("$(secs "$VDISK" convert -t $mode -O vmdk -o subformat=streamOptimized "$DIR/src.raw" "$DIR/out.vmdk")")
            else
                q+=("$(secs qemu-img convert -t $mode -O vmdk -o subformat=streamOptimized "$DIR/src.raw" "$DIR/out.vmdk")")
            fi
        done
    done
    vm=$(printf '%s\n' "${v[@]}" | median)
    qm=$(printf '%s\n' "${q[@]}" | median)
    printf '  raw -> streamOptimized -t %-9s median: vdisk %6ss  qemu-img %6ss  ratio %s (target <= %s)  best: %ss vs %ss\n' \
        "$mode" "$vm" "$qm" "$(ratio "$vm" "$qm")" "$TARGET" "$(printf '%s\n' "${v[@]}" | best)" \
        "$(printf '%s\n' "${q[@]}" | best)"
    echo "        [runs: vdisk ${v[*]}; qemu-img ${q[*]}]"
done
rm -f "$DIR/out.vmdk"
"$VDISK" convert -O vmdk -o subformat=streamOptimized "$DIR/src.raw" "$DIR/out.vmdk"
qemu-img compare -q -f vmdk -F raw "$DIR/out.vmdk" "$DIR/src.raw" && echo "  vdisk's stream: qemu-img compare equal" ||
    echo "  vdisk's stream: qemu-img compare DIFFERS"
echo "  sizes: vdisk $(stat -c %s "$DIR/out.vmdk") bytes; qemu-img $(qemu-img convert -O vmdk -o subformat=streamOptimized "$DIR/src.raw" "$DIR/q.vmdk" && stat -c %s "$DIR/q.vmdk") bytes"
