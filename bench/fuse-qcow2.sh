#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# FUSE on qcow2 (issue 9): block devices for one fully written qcow2 image, side by side:
#   raw file (the same data as raw: the limit) |
#   vdisk --via fuse (its loop device has direct I/O) |
#   qemu-storage-daemon --blockdev qcow2 FUSE export + losetup --direct-io=on
# fio (libaio, direct=1): 4k random read/write at QD32, 1 MiB sequential read/write
# at QD8. Rounds interleave the targets; the median of each figure over the rounds
# is printed, with fuse/qsd (target >= 1.3 for 4k random reads and writes) and each
# against the raw file.
# Usage: bench/fuse-qcow2.sh [SIZE_MIB] (default 1024); RUNTIME=seconds per job (10),
# ROUNDS=interleaved rounds (3), VDISK=the vdisk binary, VDISK_OLD=another one (an
# A/B run: adds the target "old", its --via fuse, and the ratio fuse/old),
# ONLY="raw old fuse qsd" (the targets to run). Root only. Leaves nothing behind.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VDISK=${VDISK:-$ROOT/build/tools/vdisk/vdisk}
SIZE_MIB=${1:-1024}
RUNTIME=${RUNTIME:-10}
ROUNDS=${ROUNDS:-3}
VDISK_OLD=${VDISK_OLD:-}
ONLY=${ONLY:-raw old fuse qsd}
[ -n "$VDISK_OLD" ] || ONLY=${ONLY/old/}
B=$(mktemp -d /var/tmp/vdisk-bench.XXXXXX)
export VDISK_RUN_DIR=$B/run
RAW=$B/disk.raw
IMG=$B/disk.qcow2
QSD_PID= QSD_LOOP=

cleanup() {
    set +e
    [ -n "$QSD_LOOP" ] && losetup -d "$QSD_LOOP"
    [ -n "$QSD_PID" ] && kill "$QSD_PID" && wait "$QSD_PID"
    "$VDISK" close "$IMG" 2>/dev/null
    [ -z "$VDISK_OLD" ] || "$VDISK_OLD" close "$IMG" 2>/dev/null
    rm -rf "$B"
}
trap cleanup EXIT

for t in fio qemu-storage-daemon qemu-img losetup; do
    command -v $t >/dev/null || { echo "bench: $t is missing (scripts/install-deps test)" >&2; exit 1; }
done
[ -x "$VDISK" ] || { echo "bench: build vdisk first (ninja -C build)" >&2; exit 1; }

# Written in full, so that every read hits data: fio's random buffers, then a qcow2
# copy (64 KiB clusters, every one allocated; reads and writes stay in place).
fio --name=fill --filename="$RAW" --rw=write --bs=1M --direct=1 --ioengine=libaio \
    --iodepth=8 --size="${SIZE_MIB}M" --output=/dev/null
qemu-img convert -f raw -O qcow2 "$RAW" "$IMG"

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

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

declare -A R # R[target.job] = the figures of every round, space separated
JOBS=("rr:randread:4k:32" "rw:randwrite:4k:32" "sr:read:1M:8" "sw:write:1M:8")
# measure TARGET DESCRIPTION: every job on $DEV; prints this round's figures
measure() {
    local j k rw bs qd v line=""
    for j in "${JOBS[@]}"; do
        IFS=: read -r k rw bs qd <<<"$j"
        v=$(job "$1-$k" "$rw" "$bs" "$qd")
        R[$1.$k]="${R[$1.$k]:-} $v"
        line="$line $(printf '%9s' "$v")"
    done
    printf '%-6s%s   %s\n' "$1" "$line" "$2"
}

. "$(dirname "$0")/qsd.bash"

wants() { [[ " $ONLY " == *" $1 "* ]]; }

echo "image: $SIZE_MIB MiB qcow2 (all clusters written) on $(df --output=source "$B" | tail -1)," \
    "${RUNTIME}s per job, median of $ROUNDS interleaved rounds, $(nproc) CPUs," \
    "load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
    echo "-- round $round"
    printf '%-6s %9s %9s %9s %9s   %s\n' target "4k-rr" "4k-rw" "1M-sr" "1M-sw" \
        "(IOPS, IOPS, MiB/s, MiB/s)"
    if wants raw; then
        DEV=$RAW
        measure raw "the same data as a raw file (the limit)"
    fi
    if wants old; then
        DEV=$("$VDISK_OLD" open --via fuse "$IMG")
        measure old "$VDISK_OLD --via fuse ($DEV, dio=$(dio "$DEV"))"
        "$VDISK_OLD" close "$IMG"
    fi
    if wants fuse; then
        DEV=$("$VDISK" open --via fuse "$IMG")
        measure fuse "vdisk --via fuse ($DEV, dio=$(dio "$DEV"), threads ${VDISK_FUSE_THREADS:-default})"
        "$VDISK" close "$IMG"
    fi
    if wants qsd; then
        start_qsd qcow2
        measure qsd "qemu-storage-daemon qcow2 fuse + losetup --direct-io=on ($DEV, dio=$(dio "$DEV"))"
        stop_qsd
    fi
done

med() { [ -n "${R[$1]:-}" ] && tr ' ' '\n' <<<"${R[$1]}" | grep . | median || echo 0; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
echo
echo "medians over $ROUNDS rounds"
printf '%-6s %9s %9s %9s %9s\n' target "4k-rr" "4k-rw" "1M-sr" "1M-sw"
for t in raw old fuse qsd; do
    wants $t || continue
    printf '%-6s %9s %9s %9s %9s\n' $t "$(med $t.rr)" "$(med $t.rw)" "$(med $t.sr)" "$(med $t.sw)"
done
echo
printf '%-10s %7s %7s %7s %7s   %s\n' ratio "4k-rr" "4k-rw" "1M-sr" "1M-sw" target
for pair in "fuse/qsd:>= 1.3 (4k)" "fuse/old:-" "old/qsd:-" "fuse/raw:-" "qsd/raw:-"; do
    IFS=: read -r p want <<<"$pair"
    a=${p%/*} b=${p#*/}
    wants "$a" && wants "$b" || continue
    printf '%-10s %7s %7s %7s %7s   %s\n' "$p" "$(ratio "$(med $a.rr)" "$(med $b.rr)")" \
        "$(ratio "$(med $a.rw)" "$(med $b.rw)")" "$(ratio "$(med $a.sr)" "$(med $b.sr)")" \
        "$(ratio "$(med $a.sw)" "$(med $b.sw)")" "$([ "$want" = - ] || echo "$want")"
done
