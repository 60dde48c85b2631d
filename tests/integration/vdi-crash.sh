#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# VDI crash consistency: a libvdisk writer (random 4k writes, discards, zeroes,
# flushes) is killed with SIGKILL at a random moment, 60 times over dynamic,
# static and differencing images. Afterwards qemu-img check must find nothing
# (it cannot open differencing images: vdisk check must find no corruption
# there), vdisk check no corruption (blocks written past the last flush are
# leaks), and every write acknowledged before the last completed flush must
# read back. Runtime: about 30 s.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
RUNS=${VDI_CRASH_RUNS:-60}
"$IO" -f vdi create "$T/base.vdi" 16M
printf 'w 0 16777216 90\nf\n' | "$IO" script "$T/base.vdi" # 90 = 0x5a
bad_check=0 bad_data=0 bad_repair=0 bad_vcheck=0
for i in $(seq 1 "$RUNS"); do
    init=0 img=$T/c$i.vdi
    case $((i % 3)) in
    0) cfg="static=on" ;;
    1) cfg="static=off" ;;
    2) cfg="backing_file=$T/base.vdi" init=0x5a ;;
    esac
    rm -f "$img"
    "$IO" -f vdi -o "$cfg" create "$img" 16M || { fail "run $i: create ($cfg)"; continue; }
    "$IO" crash "$img" "$i" 4096 "$T/log" 2>"$T/writer.err" &
    pid=$!
    sleep "0.$((RANDOM % 30 + 5))"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    if [ -s "$T/writer.err" ]; then fail "run $i: writer failed: $(head -c 300 "$T/writer.err")"; fi
    if [ $((i % 3)) -ne 2 ]; then
        qemu-img check "$img" >"$T/check" 2>&1; rc=$?
        if [ "$rc" -ne 0 ]; then
            bad_check=$((bad_check + 1))
            fail "run $i ($cfg): qemu-img check exit $rc: $(grep -m3 -i error "$T/check" | tr '\n' ' ')"
            cp "$img" "/tmp/vdi-crash-fail-$i.vdi" 2>/dev/null
        fi
    fi
    "$VDISK" check "$img" >"$T/vcheck" 2>&1; vrc=$?
    if [ "$vrc" -ne 0 ] && [ "$vrc" -ne 3 ]; then
        bad_vcheck=$((bad_vcheck + 1))
        fail "run $i ($cfg): vdisk check exit $vrc: $(head -c 300 "$T/vcheck")"
    fi
    if ! "$IO" verify "$img" "$T/log" "$init" 2>"$T/verify.err"; then
        bad_data=$((bad_data + 1))
        fail "run $i ($cfg): flushed writes lost: $(head -c 300 "$T/verify.err")"
    fi
    # a read-write open and flush, then a leak repair, leave it clean for both checkers
    if ! printf 'f\n' | "$IO" script "$img" 2>"$T/reopen.err" ||
        ! "$VDISK" check -q -r leaks "$img" >/dev/null 2>&1 ||
        { [ $((i % 3)) -ne 2 ] && ! qemu-img check -q "$img" >/dev/null 2>&1; }; then
        bad_repair=$((bad_repair + 1))
        fail "run $i ($cfg): not clean after reopen and -r leaks: $(head -c 300 "$T/reopen.err")"
    fi
    rm -f "$img"
done
eq "crash runs: qemu-img check clean (dynamic, static)" "$bad_check" 0
eq "crash runs: vdisk check finds no corruption (all, differencing too)" "$bad_vcheck" 0
eq "crash runs: every flushed write read back" "$bad_data" 0
eq "crash runs: clean after a read-write reopen and -r leaks" "$bad_repair" 0
finish
