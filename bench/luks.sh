#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Encrypted images: vdisk against qemu-img on the same LUKS image, and vdisk on
# the same data unencrypted (the cost of encryption), side by side.
#  1. 4k sequential reads and writes at depth 32: vdisk serve against qemu-nbd
#     (--image-opts driver=luks, O_DIRECT, aio=native) on one LUKS1 image (QEMU
#     reads no LUKS2), the same client for both: qemu-img bench over NBD on a
#     unix socket (qemu-img bench itself takes no --object for the key; target:
#     vdisk >= 1.5x qemu-nbd's requests/s).
#  2. 1 MiB sequential reads and writes, depth 8: the same pair (target >= 1.5x).
#  3. 4k random reads and writes (vdisk bench --random; qemu-img bench has no
#     random mode): vdisk on the LUKS1 image, on vdisk's own LUKS2 image
#     (4096-byte sectors) and on the raw file with the same data.
#  4. The cost: vdisk on LUKS against vdisk on raw, 4k and 1 MiB (target: 1 MiB
#     I/O within 20% of raw with AES-NI).
# Each measurement runs RUNS times (default 5), the tools alternating; the
# median and the best are printed. SIZE (default 1G) of random data.
# Usage: [RUNS=5] [SIZE=1G] [COUNT=100000] bench/luks.sh [DIR]   (needs ~3x SIZE)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VDISK=${VDISK:-$ROOT/build/tools/vdisk/vdisk}
RUNS=${RUNS:-5}
SIZE=${SIZE:-1G}
COUNT=${COUNT:-100000}
BIGCOUNT=${BIGCOUNT:-$((COUNT / 50))}
DIR=$(mktemp -d "${1:-/var/tmp}/vdisk-bench-luks.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
K=$DIR/key
printf 'bench pass phrase' >"$K"
SEC=(--object "secret,id=s0,file=$K")
QIMG="driver=luks,key-secret=s0,file.filename=$DIR/img.luks,file.aio=native,file.cache.direct=on"
SOCK=$DIR/nbd.sock

bestmax() { sort -g | tail -1; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
persec() { # persec COUNT OUTPUT: requests/s from "Run completed in S seconds."
    awk -v c="$1" -v s="$(echo "$2" | sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p')" \
        'BEGIN { printf "%.0f\n", c / s }'
}

echo "== images: $SIZE of random data as raw, as QEMU's LUKS1 and as vdisk's LUKS2"
head -c "$SIZE" /dev/urandom >"$DIR/src.raw"
# KDF costs kept low: every run opens the image, and the KDF is not what is measured
qemu-img convert "${SEC[@]}" -f raw -O luks -o key-secret=s0,iter-time=100 "$DIR/src.raw" \
    "$DIR/img.luks"
"$VDISK" convert --key-file "$K" -O luks -o argon2-memory=65536 "$DIR/src.raw" "$DIR/img2.luks"
"$VDISK" info --key-file "$K" "$DIR/img.luks" | sed -n 's/^\(cipher\|sector size\|luks version\).*/  luks1: &/p'
"$VDISK" info --key-file "$K" "$DIR/img2.luks" | sed -n 's/^\(cipher\|sector size\|luks version\).*/  luks2: &/p'

# run TOOL IMG BS DEPTH COUNT RW [--random]: requests/s of one run
run() {
    local tool=$1 img=$2 bs=$3 depth=$4 count=$5 w="" out
    [ "$6" = write ] && w=-w
    case $tool in
    vdisk) out=$("$VDISK" bench --key-file "$K" ${7:-} -c "$count" -d "$depth" -s "$bs" -n -t none $w "$img") ;;
    raw) out=$("$VDISK" bench -f raw ${7:-} -c "$count" -d "$depth" -s "$bs" -n -t none $w "$img") ;;
    vserve | qnbd) # a server on the image, qemu-img bench its client
        rm -f "$SOCK"
        if [ "$tool" = vserve ]; then
            "$VDISK" serve --key-file "$K" --socket "$SOCK" "$img" >/dev/null 2>&1 &
        else
            qemu-nbd "${SEC[@]}" --image-opts "$QIMG" -k "$SOCK" -t --cache=none --aio=native \
                >/dev/null 2>&1 &
        fi
        local pid=$!
        for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
        out=$(qemu-img bench -f raw -c "$count" -d "$depth" -s "$bs" $w "nbd+unix:///?socket=$SOCK")
        kill "$pid" && wait "$pid" 2>/dev/null || true
        ;;
    esac
    persec "$count" "$out"
}

# pair DESC A-TOOL A-IMG B-TOOL B-IMG BS DEPTH COUNT TARGET [--random]: A against B, both RWs
pair() {
    local desc=$1 at=$2 ai=$3 bt=$4 bi=$5 bs=$6 depth=$7 count=$8 target=$9 rnd=${10:-}
    echo "== $desc: $count x $bs, depth $depth, O_DIRECT, $RUNS runs each"
    for rw in read write; do
        local a=() b=()
        for _ in $(seq "$RUNS"); do
            a+=("$(run "$at" "$ai" "$bs" "$depth" "$count" $rw $rnd)")
            b+=("$(run "$bt" "$bi" "$bs" "$depth" "$count" $rw $rnd)")
        done
        local am bm
        am=$(printf '%s\n' "${a[@]}" | median)
        bm=$(printf '%s\n' "${b[@]}" | median)
        printf '  %-5s median: %-6s %8s req/s  %-6s %8s req/s  ratio %s (target %s)\n' \
            "$rw" "$at" "$am" "$bt" "$bm" "$(ratio "$am" "$bm")" "$target"
        printf '        best:   %-6s %8s req/s  %-6s %8s req/s\n' "$at" \
            "$(printf '%s\n' "${a[@]}" | bestmax)" "$bt" "$(printf '%s\n' "${b[@]}" | bestmax)"
        echo "        [runs: $at ${a[*]}; $bt ${b[*]}]"
    done
}

pair "4k sequential over NBD, LUKS1: vdisk serve vs qemu-nbd" vserve "$DIR/img.luks" qnbd - 4k 32 \
    "$COUNT" ">= 1.5"
pair "1M sequential over NBD, LUKS1: vdisk serve vs qemu-nbd" vserve "$DIR/img.luks" qnbd - 1M 8 \
    "$BIGCOUNT" ">= 1.5"
pair "4k random: vdisk LUKS1 vs vdisk raw (cost)" vdisk "$DIR/img.luks" raw "$DIR/src.raw" 4k 32 \
    "$COUNT" "report" --random
pair "4k random: vdisk LUKS2 (4k sectors) vs vdisk raw (cost)" vdisk "$DIR/img2.luks" raw \
    "$DIR/src.raw" 4k 32 "$COUNT" "report" --random
pair "1M sequential: vdisk LUKS2 vs vdisk raw (cost)" vdisk "$DIR/img2.luks" raw "$DIR/src.raw" \
    1M 8 "$BIGCOUNT" ">= 0.8"
