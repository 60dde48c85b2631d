#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What --snapshot costs: 4k random writes at QD32 (fio, libaio, O_DIRECT on the block
# device) on a raw base opened read-write, against the same base opened with --snapshot
# (writes to a sparse unlinked overlay file with an in-memory 4 KiB bitmap), both through
# the same way. The snapshot is measured twice: fresh (every write is a first write of its
# block: no copy, a bit set) and again over blocks already in the overlay. The overlay file
# is buffered (nothing of it needs to be durable) while the base and the way stay direct;
# the base is also measured with --no-direct, a second reference only: with fuse that makes
# the loop device buffered too (two page caches), so it is not like-for-like either.
# Target (issue 15): the snapshot within 10% of the read-write base.
# Usage: bench/snapshot.sh [SECONDS per job, default 20]
# Env: WAY (ublk, nbd or fuse; default the first this machine has), SIZE_MB (1024),
#      BENCH_DIR (/var/tmp: where the base and the snapshot's overlay live).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VDISK=${VDISK:-$ROOT/build/tools/vdisk/vdisk}
SECS=${1:-20}
SIZE_MB=${SIZE_MB:-1024}
D=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vdisk-bench-snapshot.XXXXXX")
export VDISK_RUN_DIR=$D/run
cleanup() { "$VDISK" close --all >/dev/null 2>&1 || true; rm -rf "$D"; }
trap cleanup EXIT
if [ -z "${WAY:-}" ]; then
    if [ -e /dev/ublk-control ]; then WAY=ublk
    elif [ -e /sys/module/nbd ]; then WAY=nbd
    else WAY=fuse; fi
fi

# iops DEV: 4k random write IOPS on DEV over the first SIZE_MB.
iops() {
    fio --name=s --filename="$1" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
        --iodepth=32 --size="${SIZE_MB}M" --runtime="$SECS" --time_based \
        --randrepeat=1 --output-format=json 2>/dev/null |
        python3 -c 'import json, sys; print(round(json.load(sys.stdin)["jobs"][0]["write"]["iops"]))'
}

"$VDISK" create "$D/base.img" "${SIZE_MB}M" >/dev/null
# a base full of data, as an evidence image would be: the copy-on-write reads it
fio --name=fill --filename="$D/base.img" --rw=write --bs=1M --size="${SIZE_MB}M" \
    --ioengine=psync --direct=1 >/dev/null 2>&1
sync

dev=$("$VDISK" open --via "$WAY" -f raw "$D/base.img")
rw=$(iops "$dev")
"$VDISK" close "$D/base.img"
# a second reference: the base buffered (with fuse, the loop device too)
dev=$("$VDISK" open --via "$WAY" -f raw --no-direct "$D/base.img")
rwpc=$(iops "$dev")
"$VDISK" close "$D/base.img"

dev=$("$VDISK" open --via "$WAY" -f raw --snapshot --snapshot-dir "$D" "$D/base.img")
fresh=$(iops "$dev")
again=$(iops "$dev")
"$VDISK" close "$D/base.img"

pct() { python3 -c "print(f'{($2 - $1) * 100 / $2:+.1f}%')" "$1" "$2"; }
echo "bench/snapshot.sh: way $WAY, ${SIZE_MB} MiB, ${SECS}s per job, 4k randwrite QD32 (IOPS)"
printf '%-34s %10s %10s %10s\n' "disk" "IOPS" "overhead" "vs --no-direct"
printf '%-34s %10s %10s\n' "base opened read-write" "$rw" "-"
printf '%-34s %10s %10s\n' "base read-write, --no-direct" "$rwpc" "-"
printf '%-34s %10s %10s %10s\n' "--snapshot, fresh overlay" "$fresh" "$(pct "$fresh" "$rw")" \
    "$(pct "$fresh" "$rwpc")"
printf '%-34s %10s %10s %10s\n' "--snapshot, blocks in the overlay" "$again" "$(pct "$again" "$rw")" \
    "$(pct "$again" "$rwpc")"
