#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qcow2 throughput, libvdisk vs qemu-img bench, side by side in one run:
# 4k requests at consecutive offsets, depth 32 (and 1), direct I/O, on a fully
# allocated 1 GiB qcow2 (reads, in-place writes) and on an empty one
# (allocating writes). Prints requests/s and the ratio vdisk / qemu-img.
# Usage: bench/qcow2.sh [DIR]   (DIR defaults to /var/tmp; needs ~2.2 GiB)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILD:-$ROOT/build}/bench/qcow2-bench
D=$(mktemp -d "${1:-/var/tmp}/qcow2-bench.XXXXXX")
trap 'rm -rf "$D"' EXIT
N=${N:-200000}
qemu-img create -q -f qcow2 "$D/full.qcow2" 1G
qemu-io -c "write -P 1 0 1G" "$D/full.qcow2" >/dev/null

rate_qemu() { # ARGS...: requests/s of qemu-img bench
    local t
    t=$(qemu-img bench "$@" 2>&1 | sed -n 's/Run completed in \([0-9.]*\) seconds./\1/p')
    awk -v n="$N" -v t="$t" 'BEGIN { printf "%.0f", n / t }'
}
rate_vdisk() { "$B" "$@" | sed -n 's/.*: \([0-9]*\) requests\/s.*/\1/p'; }

row() { # NAME QEMU VDISK
    printf '%-34s %10s %10s %7s\n' "$1" "$2" "$3" \
        "$(awk -v a="$3" -v b="$2" 'BEGIN { printf "%.2fx", a / b }')"
}
printf '%-34s %10s %10s %7s\n' "qcow2 64k clusters, 4k, O_DIRECT" "qemu-img" "vdisk" "ratio"
for d in 32 1; do
    q=$(rate_qemu -c "$N" -d "$d" -s 4096 -t none -f qcow2 "$D/full.qcow2")
    v=$(rate_vdisk "$D/full.qcow2" "$N" "$d" 4096)
    row "read, depth $d" "$q" "$v"
done
q=$(rate_qemu -c "$N" -d 32 -s 4096 -t none -i io_uring -f qcow2 "$D/full.qcow2")
v=$(rate_vdisk "$D/full.qcow2" "$N" 32 4096)
row "read, depth 32 (qemu io_uring)" "$q" "$v"
q=$(rate_qemu -w -c "$N" -d 32 -s 4096 -t none -f qcow2 "$D/full.qcow2")
v=$(rate_vdisk -w "$D/full.qcow2" "$N" 32 4096)
row "write in place, depth 32" "$q" "$v"
qemu-img create -q -f qcow2 "$D/e1.qcow2" 1G
qemu-img create -q -f qcow2 "$D/e2.qcow2" 1G
q=$(rate_qemu -w -c "$N" -d 32 -s 4096 -t none -f qcow2 "$D/e1.qcow2")
v=$(rate_vdisk -w "$D/e2.qcow2" "$N" 32 4096)
row "allocating write, depth 32" "$q" "$v"
qemu-img check -q "$D/e2.qcow2" && echo "vdisk-written image: qemu-img check clean"
