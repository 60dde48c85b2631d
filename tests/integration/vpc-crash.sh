#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# VHD crash consistency: a libvdisk writer (random 4k writes, discards, zeroes, flushes) is
# killed with SIGKILL at a random moment, 60 times over dynamic (2 MiB and 512 KiB blocks),
# fixed and differencing VHDs. Afterwards vdisk check finds no corruption (a torn footer copy
# is a leak), every write acknowledged before the last completed flush reads back, vdisk and
# qemu-img read the same bytes (qemu-img cannot read differencing VHDs), and a read-write
# reopen leaves a clean image. (qemu-img check cannot check vpc.) About 40 s.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
RUNS=${VPC_CRASH_RUNS:-60}
configs=("subformat=dynamic" "subformat=dynamic,block_size=512K" "subformat=fixed"
         "subformat=dynamic,force_size=on" "backing_file=$T/base.vhd")
"$IO" -f vpc -o subformat=dynamic create "$T/base.vhd" 16M
bsize=$("$IO" info "$T/base.vhd" | sed -n 's/^virtual_size=//p') # CHS-rounded
printf 'w 0 %s 0x5a\n' "$bsize" | "$IO" script "$T/base.vhd"
base_sum=$(md5sum <"$T/base.vhd")
bad_check=0 bad_data=0 bad_agree=0 bad_repair=0
for i in $(seq 1 "$RUNS"); do
    cfg=${configs[$((i % ${#configs[@]}))]}
    init=0
    case $cfg in backing_file=*) init=0x5a ;; esac
    img=$T/c$i.vhd
    rm -f "$img"
    "$IO" -f vpc -o "$cfg" create "$img" 16M || { fail "run $i: create ($cfg)"; continue; }
    "$IO" crash "$img" "$i" 4096 "$T/log" 2>"$T/writer.err" &
    pid=$!
    sleep "0.$((RANDOM % 30 + 5))"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    if [ -s "$T/writer.err" ]; then fail "run $i: writer failed: $(head -c 300 "$T/writer.err")"; fi
    "$VDISK" check "$img" >"$T/check" 2>&1; rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
        bad_check=$((bad_check + 1))
        fail "run $i ($cfg): vdisk check exit $rc: $(head -c 300 "$T/check")"
        cp "$img" "/tmp/vpc-crash-fail-$i.vhd" 2>/dev/null
    fi
    if ! "$IO" verify "$img" "$T/log" "$init" 2>"$T/verify.err"; then
        bad_data=$((bad_data + 1))
        fail "run $i ($cfg): flushed writes lost: $(head -c 300 "$T/verify.err")"
    fi
    if [ "$init" = 0 ]; then
        rm -f "$T/q.raw" "$T/v.raw"
        if ! qemu-img convert -U -f vpc -O raw "$img" "$T/q.raw" 2>"$T/.err" ||
            ! "$IO" dump "$img" "$T/v.raw" || ! cmp -s "$T/q.raw" "$T/v.raw"; then
            bad_agree=$((bad_agree + 1))
            fail "run $i ($cfg): qemu-img and vdisk read different bytes $(head -c 200 "$T/.err")"
        fi
    fi
    # a read-write open mends a torn footer copy; then check is clean
    if ! printf 'f\n' | "$IO" script "$img" 2>"$T/reopen.err" || ! "$VDISK" check "$img" >/dev/null 2>&1; then
        bad_repair=$((bad_repair + 1))
        fail "run $i ($cfg): not clean after a read-write reopen: $(head -c 300 "$T/reopen.err")"
    fi
    rm -f "$img"
done
eq "crash runs: vdisk check finds no corruption" "$bad_check" 0
eq "crash runs: every flushed write read back" "$bad_data" 0
eq "crash runs: vdisk reads what qemu-img reads" "$bad_agree" 0
eq "crash runs: clean after a read-write reopen" "$bad_repair" 0
eq "crash runs: the parent of the differencing runs is unchanged" "$(md5sum <"$T/base.vhd")" "$base_sum"
finish
