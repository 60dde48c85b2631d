#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qcow2 throughput, vdisk bench vs qemu-img bench, side by side in one run:
# 4k requests at consecutive offsets, depth 32 (and 1), direct I/O, on a fully
# allocated 1 GiB qcow2 (reads, in-place writes) and on an empty one
# (allocating writes, one request per cluster and sixteen per cluster).
# Prints requests/s and the ratio vdisk / qemu-img.
# Usage: bench/qcow2.sh [DIR]   (DIR defaults to /var/tmp; needs ~2.2 GiB)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VDISK=${VDISK:-$ROOT/build/tools/vdisk/vdisk}
D=$(mktemp -d "${1:-/var/tmp}/qcow2-bench.XXXXXX")
trap 'rm -rf "$D"' EXIT
N=${N:-200000}
qemu-img create -q -f qcow2 "$D/full.qcow2" 1G
qemu-io -c "write -P 1 0 1G" "$D/full.qcow2" >/dev/null

rate() { # TOOL ARGS...: requests/s of qemu-img bench or vdisk bench (same options)
    local tool=$1 t
    shift
    [ "$tool" = vdisk ] && tool=$VDISK
    t=$("$tool" bench "$@" 2>&1 | sed -n 's/Run completed in \([0-9.]*\) seconds./\1/p')
    awk -v n="$N" -v t="$t" 'BEGIN { printf "%.0f", n / t }'
}

row() { # NAME QEMU VDISK
    printf '%-34s %10s %10s %7s\n' "$1" "$2" "$3" \
        "$(awk -v a="$3" -v b="$2" 'BEGIN { printf "%.2fx", a / b }')"
}
printf '%-34s %10s %10s %7s\n' "qcow2 64k clusters, 4k, O_DIRECT" "qemu-img" "vdisk" "ratio"
declare -A r
for d in 32 1; do
    args=(-c "$N" -d "$d" -s 4096 -t none -f qcow2 "$D/full.qcow2")
    row "read, depth $d" "$(rate qemu-img "${args[@]}")" "$(rate vdisk "${args[@]}")"
done
args=(-c "$N" -d 32 -s 4096 -t none -i io_uring -f qcow2 "$D/full.qcow2")
row "read, depth 32 (qemu io_uring)" "$(rate qemu-img "${args[@]}")" "$(rate vdisk "${args[@]}")"
args=(-w -c "$N" -d 32 -s 4096 -t none -f qcow2 "$D/full.qcow2")
row "write in place, depth 32" "$(rate qemu-img "${args[@]}")" "$(rate vdisk "${args[@]}")"
for step in 4096 65536; do
    n=$N
    [ "$step" = 65536 ] && N=16000 # one write per cluster: 1 GiB holds 16384
    for t in qemu-img vdisk; do
        rm -f "$D/e.qcow2"
        qemu-img create -q -f qcow2 "$D/e.qcow2" 1G
        r[$t]=$(rate $t -w -c "$N" -d 32 -s 4096 -S $step -t none -f qcow2 "$D/e.qcow2")
    done
    qemu-img check -q "$D/e.qcow2" || echo "vdisk-written image: qemu-img check FAILED"
    row "allocating write, step $step" "${r[qemu-img]}" "${r[vdisk]}"
    N=$n
done
