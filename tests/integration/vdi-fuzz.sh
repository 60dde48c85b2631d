#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Run the libFuzzer target (tests/fuzz/fuzz-open-read.c) built for VDI briefly,
# with clang -fsanitize=fuzzer,address, from seeds of qemu-img and vdisk images
# (dynamic, static, differencing, 512-byte blocks, a version 0 header; cut to
# 64 KiB: past the end reads as zeroes). A fixed number of inputs from a fixed seed (VDI_FUZZ_RUNS,
# default 20000) so that a run is repeatable; VDI_FUZZ_SEED=random explores.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
SECS=${VDI_FUZZ_SECONDS:-300}
RUNS=${VDI_FUZZ_RUNS:-20000}
SEED=${VDI_FUZZ_SEED:-1}
[ "$SEED" = random ] && SEED=0
command -v clang >/dev/null || skip_all clang "no clang to build the fuzz target (scripts/install-deps test installs it)"
build_fuzz "fuzz target builds (vdi)" "$T/fuzz" "$ROOT/tests/fuzz/fuzz-open-read.c" -DFUZZ_FORMAT='"vdi"'
[ -x "$T/fuzz" ] || finish
mkdir -p "$T/corpus"
seed() { head -c 65536 "$1" >"$T/corpus/$2"; }
if command -v qemu-img >/dev/null; then
    qemu-img create -q -f vdi "$T/d.vdi" 4M
    qemu-io -f vdi -c "write -P 1 0 8k" -c "write -z 2M 1M" "$T/d.vdi" >/dev/null 2>&1
    seed "$T/d.vdi" qemu-dynamic
    qemu-img create -q -f vdi -o static=on "$T/s.vdi" 3M
    seed "$T/s.vdi" qemu-static
fi
VDISK_RUN_DIR=$T/run "$BUILD/tools/vdisk/vdisk" create -f vdi "$T/base.vdi" 5M >/dev/null 2>&1 &&
    "$BUILD/tools/vdisk/vdisk" create -f vdi -o backing_file=base.vdi "$T/child.vdi" >/dev/null 2>&1 &&
    seed "$T/child.vdi" vdisk-diff
# 512-byte blocks, 16 of them: data, free, zero and shared entries, a slot out of range
python3 - "$T/corpus/small-blocks" <<'PY'
import struct, sys
h = bytearray(1024 + 16 * 512)
h[0:40] = b"<<< Oracle VM VirtualBox Disk Image >>>\n"
struct.pack_into("<IIIII", h, 64, 0xbeda107f, 0x00010001, 0x190, 1, 0)
struct.pack_into("<II", h, 340, 512, 1024)
struct.pack_into("<I", h, 360, 512)
struct.pack_into("<QIIII", h, 368, 8192, 512, 0, 16, 6)
h[392:408] = bytes(range(1, 17)); h[408:424] = bytes(range(17, 33))
m = [0, 1, 0xffffffff, 0xfffffffe, 2, 3, 4, 0xffffffff, 5, 1, 40, 0xfffffffe, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff]
for i, e in enumerate(m): struct.pack_into("<I", h, 512 + 4 * i, e)
for i in range(16): h[1024 + 512 * i:1024 + 512 * (i + 1)] = bytes([i + 1]) * 512
open(sys.argv[1], "wb").write(h)
PY
# a header of major version 0: 4 KiB blocks, the map right after the header
python3 - "$T/corpus/v0" <<'PY'
import struct, sys
h = bytearray(72 + 348)
struct.pack_into("<III", h, 64, 0xbeda107f, 0x00000001, 4)
struct.pack_into("<I", h, 348, 512)
struct.pack_into("<QIII", h, 352, 16384, 4096, 4, 2)
h[372:420] = bytes(range(48))
m = b"".join(struct.pack("<I", e) for e in [1, 0xffffffff, 0, 0xfffffffe])
open(sys.argv[1], "wb").write(h + m + b"\x11" * 4096 + b"\x22" * 4096)
PY
mkdir -p "$ROOT/tests/out"
TMPDIR=$T "$T/fuzz" -artifact_prefix="$ROOT/tests/out/vdi-fuzz-" -seed="$SEED" -runs="$RUNS" -max_total_time="$SECS" -rss_limit_mb=1024 -timeout=10 -max_len=131072 \
    "$T/corpus" >"$T/fuzz.log" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then
    pass "fuzzing vdi open+read+check, seed $SEED: $(grep -o 'Done [0-9]* runs in [0-9]* second' "$T/fuzz.log")"
else
    fail "fuzzer found a problem (exit $rc): $(grep -m3 -E 'ERROR|SUMMARY|runtime error' "$T/fuzz.log")"
    cp "$T/fuzz.log" "$ROOT/tests/out/vdi-fuzz-failure.log"
    ls "$ROOT"/tests/out/vdi-fuzz-{crash,timeout,oom}-* 2>/dev/null | head -3
fi
finish
