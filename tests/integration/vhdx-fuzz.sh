#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Run the libFuzzer target (tests/fuzz/fuzz-open-read.c built with -DFUZZ_FORMAT='"vhdx"')
# briefly on VHDX, built with clang -fsanitize=fuzzer,address,undefined, from a
# seed corpus of small images made by qemu-img and vdisk (a dirty log among
# them). A fixed number of inputs from a fixed seed (VHDX_FUZZ_RUNS, default 2000,
# about 50 s) keeps a run repeatable; VHDX_FUZZ_SEED=random explores by hand.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
MKLOG="python3 $ROOT/tests/integration/vhdx-mklog.py"
export VDISK_RUN_DIR=$T/run
SECS=${VHDX_FUZZ_SECONDS:-300}
RUNS=${VHDX_FUZZ_RUNS:-2000}
SEED=${VHDX_FUZZ_SEED:-1}
[ "$SEED" = random ] && SEED=0
command -v clang >/dev/null || skip_all clang "no clang to build the fuzz target (scripts/install-deps test installs it)"
build_fuzz "fuzz target builds" "$T/fuzz" "$ROOT/tests/fuzz/fuzz-open-read.c" -DFUZZ_FORMAT='"vhdx"'
[ -x "$T/fuzz" ] || finish
mkdir -p "$T/corpus"
# VHDX regions are MiB aligned: the smallest image is 4 MiB (headers, log, metadata, BAT)
"$IO" -f vhdx -o block_size=1M create "$T/s1.vhdx" 2M
printf 'w 0 4096 1\nw 1048576 512 2\n' | "$IO" -f vhdx script "$T/s1.vhdx"
"$IO" -f vhdx -o block_size=1M create "$T/s2.vhdx" 1M
"$IO" -f vhdx -o backing_file=s2.vhdx,logical_sector_size=4096 create "$T/s3.vhdx" 1M
printf 'w 4096 4096 3\n' | "$IO" -f vhdx script "$T/s3.vhdx"
cp "$T/s1.vhdx" "$T/s4.vhdx"
$MKLOG "$T/s4.vhdx" "0:1:0:d@$((3 << 20))=0x06+z@$((4 << 20))=4096"
if command -v qemu-img >/dev/null; then
    qemu-img create -q -f vhdx -o block_size=1M "$T/s5.vhdx" 3M
    qemu-io -f vhdx -c "write -P 7 0 8k" "$T/s5.vhdx" >/dev/null 2>&1
fi
for f in "$T"/s*.vhdx; do [ "$(stat -c %s "$f")" -le 6291456 ] && cp "$f" "$T/corpus/"; done
mkdir -p "$ROOT/tests/out"
TMPDIR=$T "$T/fuzz" -artifact_prefix="$ROOT/tests/out/vhdx-fuzz-" \
    -seed="$SEED" -runs="$RUNS" -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 \
    -max_len=6291456 -len_control=0 "$T/corpus" >"$T/fuzz.log" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then
    pass "fuzzing vhdx open+read, seed $SEED: $(grep -o 'Done [0-9]* runs in [0-9]* second' "$T/fuzz.log")"
else
    fail "fuzzer found a problem (exit $rc): $(grep -m3 -E 'ERROR|SUMMARY|runtime error' "$T/fuzz.log")"
    cp "$T/fuzz.log" "$ROOT/tests/out/vhdx-fuzz-failure.log"
    ls "$ROOT"/tests/out/vhdx-fuzz-{crash,timeout,oom}-* 2>/dev/null | head -3
fi
finish
