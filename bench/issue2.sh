#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Block devices for one raw image, side by side in one run (issue 2):
#   raw file (the limit) | vdisk --via loop | plain losetup --direct-io=on |
#   vdisk --via fuse | qemu-storage-daemon FUSE export + losetup --direct-io=on
# fio (libaio, direct=1): 4k random read/write at QD32, 1 MiB sequential
# read/write at QD8. Prints IOPS / MiB/s and the ratios the issue asks for:
# fuse vs qemu-storage-daemon (target >= 1.2), loop vs losetup (>= 0.95).
# The same for a qcow2 image (FUSE vs qemu-storage-daemon): bench/fuse-qcow2.sh.
# Usage: bench/issue2.sh [SIZE_MIB] (default 1024); RUNTIME=seconds per job (10),
# ROUNDS=interleaved rounds (2; the best figure of each counts: the machine is shared).
# Root only. Leaves nothing behind.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VDISK=${VDISK:-$ROOT/build/tools/vdisk/vdisk}
SIZE_MIB=${1:-1024}
RUNTIME=${RUNTIME:-10}
B=$(mktemp -d /tmp/vdisk-bench.XXXXXX)
export VDISK_RUN_DIR=$B/run
IMG=$B/disk.img
QSD_PID= QSD_LOOP= PLAIN_LOOP=

cleanup() {
    set +e
    [ -n "$PLAIN_LOOP" ] && losetup -d "$PLAIN_LOOP"
    [ -n "$QSD_LOOP" ] && losetup -d "$QSD_LOOP"
    [ -n "$QSD_PID" ] && kill "$QSD_PID" && wait "$QSD_PID"
    "$VDISK" close "$IMG" 2>/dev/null
    rm -rf "$B"
}
trap cleanup EXIT

for t in fio qemu-storage-daemon losetup; do
    command -v $t >/dev/null || { echo "bench: $t is missing (scripts/install-deps test)" >&2; exit 1; }
done
[ -x "$VDISK" ] || { echo "bench: build vdisk first (ninja -C build)" >&2; exit 1; }

# The image is written in full so reads hit the disk, not holes.
"$VDISK" create "$IMG" "$SIZE_MIB"
fio --name=fill --filename="$IMG" --rw=write --bs=1M --direct=1 --ioengine=libaio \
    --iodepth=8 --size="${SIZE_MIB}M" --output=/dev/null

# job NAME RW BS QD: one fio job on $DEV; prints IOPS for 4k, MiB/s for 1M.
job() {
    local out
    out=$(fio --name="$1" --filename="$DEV" --rw="$2" --bs="$3" --iodepth="$4" \
        --ioengine=libaio --direct=1 --runtime="$RUNTIME" --time_based --ramp_time=1 \
        --randrepeat=0 --norandommap --output-format=terse --terse-version=3)
    # terse v3: field 7 read KiB/s, 8 read IOPS, 48 write KiB/s, 49 write IOPS
    case $2 in
    randread) echo "$out" | awk -F';' '{printf "%d", $8}' ;;
    randwrite) echo "$out" | awk -F';' '{printf "%d", $49}' ;;
    read) echo "$out" | awk -F';' '{printf "%d", $7 / 1024}' ;;
    write) echo "$out" | awk -F';' '{printf "%d", $48 / 1024}' ;;
    esac
}

declare -A R
JOBS=("rr:randread:4k:32" "rw:randwrite:4k:32" "sr:read:1M:8" "sw:write:1M:8")
# measure TARGET: every job on $DEV; keeps the best figure over the rounds
measure() {
    local j k rw bs qd v
    for j in "${JOBS[@]}"; do
        IFS=: read -r k rw bs qd <<<"$j"
        v=$(job "$1-$k" "$rw" "$bs" "$qd")
        [ "$v" -gt "${R[$1.$k]:-0}" ] && R[$1.$k]=$v
    done
    printf '%-10s %9s %9s %9s %9s   %s\n' "$1" "${R[$1.rr]}" "${R[$1.rw]}" "${R[$1.sr]}" \
        "${R[$1.sw]}" "$2"
}

. "$(dirname "$0")/qsd.bash"

ROUNDS=${ROUNDS:-2}
echo "image: $SIZE_MIB MiB raw on $(df --output=source "$B" | tail -1), ${RUNTIME}s per job," \
    "best of $ROUNDS interleaved rounds, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
    echo "-- round $round"
    printf '%-10s %9s %9s %9s %9s   %s\n' target "4k-rr" "4k-rw" "1M-sr" "1M-sw" \
        "(IOPS, IOPS, MiB/s, MiB/s; best so far)"
    DEV=$IMG
    measure raw "the file itself"

    DEV=$("$VDISK" open --via loop "$IMG")
    measure loop "vdisk --via loop ($DEV, dio=$(dio "$DEV"))"
    "$VDISK" close "$IMG"

    PLAIN_LOOP=$(losetup --find --show --direct-io=on "$IMG")
    DEV=$PLAIN_LOOP
    measure losetup "losetup --direct-io=on ($DEV, dio=$(dio "$DEV"))"
    losetup -d "$PLAIN_LOOP"
    PLAIN_LOOP=

    DEV=$("$VDISK" open --via fuse "$IMG")
    measure fuse "vdisk --via fuse ($DEV, dio=$(dio "$DEV"), threads ${VDISK_FUSE_THREADS:-default})"
    "$VDISK" close "$IMG"

    start_qsd raw
    measure qsd "qemu-storage-daemon fuse + losetup --direct-io=on ($DEV, dio=$(dio "$DEV"))"
    stop_qsd
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
echo
printf '%-22s %7s %7s %7s %7s   %s\n' ratio "4k-rr" "4k-rw" "1M-sr" "1M-sw" target
for pair in "fuse/qsd:1.2" "loop/losetup:0.95" "fuse/raw:-" "loop/raw:-" "qsd/raw:-"; do
    IFS=: read -r p want <<<"$pair"
    a=${p%/*} b=${p#*/}
    printf '%-22s %7s %7s %7s %7s   %s\n' "$p" "$(ratio "${R[$a.rr]}" "${R[$b.rr]}")" \
        "$(ratio "${R[$a.rw]}" "${R[$b.rw]}")" "$(ratio "${R[$a.sr]}" "${R[$b.sr]}")" \
        "$(ratio "${R[$a.sw]}" "${R[$b.sw]}")" "$([ "$want" = - ] || echo ">= $want")"
done
