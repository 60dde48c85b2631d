#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qcow2 crash consistency: a libvdisk writer (random 4k writes, discards,
# zeroes, flushes) is killed with SIGKILL at a random moment, 60 times over
# several image layouts. Afterwards qemu-img check must find no corruption
# (leaks are allowed) and every write acknowledged before the last completed
# flush must read back. Runtime: about 30 s.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
RUNS=${QCOW2_CRASH_RUNS:-60}
configs=("cluster_size=65536" "lazy_refcounts=on" "cluster_size=4096"
         "cluster_size=512,refcount_bits=4" "extended_l2=on,cluster_size=32K" "compat=0.10")
qemu-img create -q -f qcow2 "$T/base.qcow2" 16M
qemu-io -c "write -P 0x5a 0 16M" "$T/base.qcow2" >/dev/null
bad_check=0 bad_data=0 bad_repair=0 bad_agree=0
for i in $(seq 1 "$RUNS"); do
    cfg=${configs[$((i % ${#configs[@]}))]}
    init=0
    [ $((i % 4)) -eq 0 ] && { cfg="$cfg,backing_file=$T/base.qcow2,backing_fmt=qcow2"; init=0x5a; }
    img=$T/c$i.qcow2
    rm -f "$img"
    "$IO" -o "$cfg" create "$img" 16M || { fail "run $i: create ($cfg)"; continue; }
    "$IO" crash "$img" "$i" 4096 "$T/log" 2>"$T/writer.err" &
    pid=$!
    sleep "0.$((RANDOM % 30 + 5))"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    if [ -s "$T/writer.err" ]; then fail "run $i: writer failed: $(head -c 300 "$T/writer.err")"; fi
    qemu-img check "$img" >"$T/check" 2>&1; rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
        bad_check=$((bad_check + 1))
        fail "run $i ($cfg): qemu-img check exit $rc: $(grep -m3 -i error "$T/check" | tr '\n' ' ')"
        cp "$img" "/tmp/qcow2-crash-fail-$i.qcow2" 2>/dev/null
    fi
    # libvdisk's check counts what qemu-img check counts
    leaks=$(sed -n 's/^\([0-9]*\) leaked clusters were found.*/\1/p' "$T/check")
    "$IO" check "$img" none >"$T/vcheck" 2>&1; vrc=$?
    if [ "$vrc" -ne "$rc" ] || ! grep -q "leaks=${leaks:-0} " "$T/vcheck"; then
        bad_agree=$((bad_agree + 1))
        fail "run $i: vdisk check ($vrc: $(cat "$T/vcheck")) disagrees with qemu-img ($rc, ${leaks:-0} leaks)"
    fi
    if ! "$IO" verify "$img" "$T/log" "$init" 2>"$T/verify.err"; then
        bad_data=$((bad_data + 1))
        fail "run $i ($cfg): flushed writes lost: $(head -c 300 "$T/verify.err")"
    fi
    # a read-write open repairs what the crash left (dirty bit, leaks stay harmless)
    if ! printf 'f\n' | "$IO" script "$img" 2>"$T/reopen.err"; then
        bad_repair=$((bad_repair + 1))
        fail "run $i ($cfg): read-write reopen failed: $(head -c 300 "$T/reopen.err")"
    fi
    qemu-img check "$img" >"$T/check" 2>&1; rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
        bad_repair=$((bad_repair + 1))
        fail "run $i ($cfg): qemu-img check after reopen exit $rc"
    fi
    rm -f "$img"
done
eq "crash runs: no corruption found by qemu-img check" "$bad_check" 0
eq "crash runs: every flushed write read back" "$bad_data" 0
eq "crash runs: clean after a read-write reopen" "$bad_repair" 0
eq "crash runs: vdisk check counts the leaks qemu-img check counts" "$bad_agree" 0
finish
