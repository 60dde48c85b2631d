#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# VMDK crash consistency: a libvdisk writer (random 4k writes, zeroes, flushes)
# is killed with SIGKILL at a random moment, 50 times over the sparse and flat
# subformats (and a child of a parent). Afterwards qemu-img check must be clean
# and every write acknowledged before the last completed flush must read back.
# (streamOptimized is not crash safe by design: its tail is rewritten.)
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
RUNS=${VMDK_CRASH_RUNS:-50}
configs=("subformat=monolithicSparse" "subformat=monolithicSparse,zeroed_grain=on"
         "subformat=twoGbMaxExtentSparse" "subformat=monolithicFlat")
mkdir -p "$T/b"
"$IO" -f vmdk create "$T/b/base.vmdk" 16M
qemu-io -f vmdk -c "write -P 0x5a 0 16M" "$T/b/base.vmdk" >/dev/null
bad_check=0 bad_data=0
for i in $(seq 1 "$RUNS"); do
    cfg=${configs[$((i % ${#configs[@]}))]}
    init=0
    [ $((i % 5)) -eq 0 ] && { cfg="subformat=monolithicSparse,backing_file=base.vmdk"; init=0x5a; }
    img=$T/b/c$i.vmdk
    "$IO" -f vmdk -o "$cfg" create "$img" 16M || { fail "run $i: create ($cfg)"; continue; }
    "$IO" crash "$img" "$i" 4096 "$T/log" 2>"$T/writer.err" &
    pid=$!
    sleep "0.$((RANDOM % 30 + 5))"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    if [ -s "$T/writer.err" ]; then fail "run $i: writer failed: $(head -c 300 "$T/writer.err")"; fi
    if ! qemu-img check "$img" >"$T/check" 2>&1; then
        bad_check=$((bad_check + 1))
        fail "run $i ($cfg): qemu-img check: $(grep -m3 -i error "$T/check" | tr '\n' ' ')"
        cp "$img" "/tmp/vmdk-crash-fail-$i.vmdk" 2>/dev/null
    fi
    if ! "$IO" verify "$img" "$T/log" "$init" 2>"$T/verify.err"; then
        bad_data=$((bad_data + 1))
        fail "run $i ($cfg): flushed writes lost: $(head -c 300 "$T/verify.err")"
    fi
    rm -f "$T"/b/c"$i"*
done
eq "crash runs: qemu-img check clean after every kill" "$bad_check" 0
eq "crash runs: every flushed write read back" "$bad_data" 0
finish
