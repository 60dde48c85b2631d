#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Run the VMDK libFuzzer target (tests/fuzz/fuzz-vmdk.c: the descriptor parser,
# sparse, stream and flat extents) briefly, built with clang
# -fsanitize=fuzzer,address,undefined, from a seed corpus of qemu-img images and
# descriptors. A fixed number of inputs from a fixed seed (VMDK_FUZZ_RUNS,
# default 15000) keeps a run repeatable; VMDK_FUZZ_SEED=random explores by hand.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
SECS=${VMDK_FUZZ_SECONDS:-300}
RUNS=${VMDK_FUZZ_RUNS:-15000}
SEED=${VMDK_FUZZ_SEED:-1}
[ "$SEED" = random ] && SEED=0
command -v clang >/dev/null || skip_all clang "no clang to build the fuzz target (scripts/install-deps test installs it)"
build_fuzz "fuzz target builds" "$T/fuzz" "$ROOT/tests/fuzz/fuzz-vmdk.c"
[ -x "$T/fuzz" ] || finish
mkdir -p "$T/corpus"
if command -v qemu-img >/dev/null; then
    i=0
    for o in subformat=monolithicSparse subformat=monolithicSparse,zeroed_grain=on \
        subformat=streamOptimized; do
        i=$((i + 1))
        qemu-img create -q -f vmdk -o "$o" "$T/s.vmdk" 1M
        qemu-io -f vmdk -c "write -P 1 0 64k" -c "write -P 2 512k 64k" "$T/s.vmdk" >/dev/null 2>&1
        cp "$T/s.vmdk" "$T/corpus/seed$i"
        rm -f "$T/s.vmdk"
    done
fi
python3 - "$T/corpus/sesparse" <<'PY'
import struct, sys
h = struct.pack('<QQQQQQ', 0xcafebabe, 0x200000001, 8192, 8, 64, 0) + bytes(32)
h += struct.pack('<16Q', 1, 1, 2, 1, 3, 1, 4, 1, 8, 64, 72, 1, 73, 1, 100, 64)
f = bytearray(h.ljust(512, b'\0')) + struct.pack('<QQQQ', 0xcafecafe, 1, 1, 0).ljust(512, b'\0')
f += bytes(100 * 512 - len(f))
struct.pack_into('<QQ', f, 4 * 512, 0x1000000000000000, 0)
struct.pack_into('<QQQ', f, 8 * 512, 0x3000000000000000, 0x2000000000000000, 0x3001000000000000)
open(sys.argv[1], 'wb').write(f + bytes([7]) * 8192)
PY
printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\nRW 2048 ZERO\nRDONLY 16 FLAT "x" 0\nNOACCESS 8 ZERO\nddb.adapterType = "ide"\n' >"$T/corpus/desc1"
printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=2\nparentFileNameHint="p.vmdk"\ncreateType="twoGbMaxExtentSparse"\nRW 4 SPARSE "s.vmdk"\n' >"$T/corpus/desc2"
mkdir -p "$ROOT/tests/out"
TMPDIR=$T "$T/fuzz" -artifact_prefix="$ROOT/tests/out/vmdk-fuzz-" -seed="$SEED" -runs="$RUNS" -max_total_time="$SECS" -rss_limit_mb=1024 -timeout=10 -max_len=131072 \
    "$T/corpus" >"$T/fuzz.log" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then
    pass "fuzzing VMDK open+read, seed $SEED: $(grep -o 'Done [0-9]* runs in [0-9]* second' "$T/fuzz.log")"
else
    fail "fuzzer found a problem (exit $rc): $(grep -m3 -E 'ERROR|SUMMARY|runtime error' "$T/fuzz.log")"
    cp "$T/fuzz.log" "$ROOT/tests/out/vmdk-fuzz-failure.log"
    ls "$ROOT"/tests/out/vmdk-fuzz-{crash,timeout,oom}-* 2>/dev/null | head -3
fi
finish
