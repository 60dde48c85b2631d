#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk against qemu-img on the same images, side by side, ratios printed.
#  1. bench: 4k reads and writes at depth 32 with direct I/O (-n / -t none) on a
#     fully allocated 1 GiB qcow2 image (target: vdisk >= 1.2x qemu-img's requests/s).
#  2. convert: 1 GiB raw (random data) -> qcow2 and back
#     (target: vdisk's time <= 0.8x qemu-img's).
# Each measurement is the best of RUNS (default 3), the two tools alternating.
# Without qcow2 in vdisk the same runs are made on raw, and the qcow2 parts say so.
# Usage: bench/qcow2-bench.sh [DIR]   (scratch space, default a temp dir; needs ~4 GiB)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VDISK=${VDISK:-$ROOT/build/tools/vdisk/vdisk}
RUNS=${RUNS:-3}
COUNT=${COUNT:-200000}
DIR=$(mktemp -d "${1:-/var/tmp}/vdisk-bench.XXXXXX")
trap 'rm -rf "$DIR"' EXIT

if "$VDISK" create -f qcow2 "$DIR/probe" 1M >/dev/null 2>&1; then
    FMT=qcow2
else
    FMT=raw
    echo "NOTE: vdisk does not know qcow2 yet: skipping the qcow2 runs, measuring raw instead"
fi
rm -f "$DIR/probe"

best() { sort -g | head -1; }    # smallest of the numbers on stdin
bestmax() { sort -g | tail -1; } # largest
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "== images: 1 GiB of random data as raw and as $FMT"
head -c 1G /dev/urandom >"$DIR/src.raw"
qemu-img convert -f raw -O "$FMT" "$DIR/src.raw" "$DIR/img.$FMT"
qemu-img info "$DIR/img.$FMT" | sed -n 's/^\(file format\|disk size\).*/  &/p'

# rate TOOL RW: requests/s of one run (qemu-img prints only the time)
rate() {
    local out secs w=""
    [ "$2" = write ] && w=-w
    if [ "$1" = vdisk ]; then
        out=$("$VDISK" bench -f "$FMT" -c "$COUNT" -d 32 -s 4k -n -t none $w "$DIR/img.$FMT")
    else
        out=$(qemu-img bench -f "$FMT" -c "$COUNT" -d 32 -s 4k -n -t none $w "$DIR/img.$FMT")
    fi
    secs=$(echo "$out" | sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p')
    awk -v c="$COUNT" -v s="$secs" 'BEGIN { printf "%.0f\n", c / s }'
}

echo "== bench: $COUNT x 4k, depth 32, O_DIRECT, $FMT, best of $RUNS"
for rw in read write; do
    v=() q=()
    for _ in $(seq "$RUNS"); do
        v+=("$(rate vdisk $rw)")
        q+=("$(rate qemu $rw)")
    done
    vb=$(printf '%s\n' "${v[@]}" | bestmax)
    qb=$(printf '%s\n' "${q[@]}" | bestmax)
    printf '  %-5s vdisk %8s req/s  qemu-img %8s req/s  ratio %s (target >= 1.2)   [runs: vdisk %s; qemu %s]\n' \
        "$rw" "$vb" "$qb" "$(ratio "$vb" "$qb")" "${v[*]}" "${q[*]}"
done

# secs CMD...: wall time of one run, after writing back earlier dirty data
secs() {
    local t0 t1
    sync
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

# convert_pair FROM TO SRC: best times of vdisk and qemu-img converting SRC
convert_pair() {
    local from=$1 to=$2 src=$3 v=() q=() qs=() vb qb qsb
    for _ in $(seq "$RUNS"); do
        rm -f "$DIR/out"
        v+=("$(secs "$VDISK" convert -f "$from" -O "$to" "$src" "$DIR/out")")
        rm -f "$DIR/out"
        q+=("$(secs qemu-img convert -f "$from" -O "$to" "$src" "$DIR/out")")
        rm -f "$DIR/out"
        # qemu-img's default target cache is "unsafe" (no fsync at the end);
        # vdisk makes DST durable, as qemu-img -t writeback does
        qs+=("$(secs qemu-img convert -t writeback -f "$from" -O "$to" "$src" "$DIR/out")")
    done
    rm -f "$DIR/out"
    vb=$(printf '%s\n' "${v[@]}" | best)
    qb=$(printf '%s\n' "${q[@]}" | best)
    qsb=$(printf '%s\n' "${qs[@]}" | best)
    printf '  %-5s -> %-5s vdisk %6ss  qemu-img %6ss  ratio %s (target <= 0.8)   qemu-img -t writeback %6ss  ratio %s\n' \
        "$from" "$to" "$vb" "$qb" "$(ratio "$vb" "$qb")" "$qsb" "$(ratio "$vb" "$qsb")"
    echo "        [runs: vdisk ${v[*]}; qemu ${q[*]}; qemu -t writeback ${qs[*]}]"
}

echo "== convert: 1 GiB random data, best of $RUNS (wall seconds, including the final flush)"
convert_pair raw "$FMT" "$DIR/src.raw"
convert_pair "$FMT" raw "$DIR/img.$FMT"
