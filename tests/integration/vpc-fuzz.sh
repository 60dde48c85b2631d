#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Run the open+read libFuzzer target (tests/fuzz/fuzz-open-read.c, built for vpc) briefly,
# with clang -fsanitize=fuzzer,address,undefined, from a seed corpus of small VHDs (dynamic
# with 4 KiB blocks, fixed, differencing). A fixed number of inputs from a fixed seed
# (VPC_FUZZ_RUNS, default 15000) keeps a run repeatable; VPC_FUZZ_SEED=random explores.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
SECS=${VPC_FUZZ_SECONDS:-300}
RUNS=${VPC_FUZZ_RUNS:-15000}
SEED=${VPC_FUZZ_SEED:-1}
IO=$BUILD/tests/tools/vdisk-test-io
[ "$SEED" = random ] && SEED=0 # libFuzzer picks one
command -v clang >/dev/null || skip_all clang "no clang to build the fuzz target (scripts/install-deps test installs it)"
build_fuzz "fuzz target builds" "$T/fuzz" "$ROOT/tests/fuzz/fuzz-open-read.c" -DFUZZ_FORMAT='"vpc"'
[ -x "$T/fuzz" ] || finish
mkdir -p "$T/corpus" "$T/seed"
"$IO" -f vpc -o block_size=4K create "$T/seed/dyn.vhd" 256K
printf 'w 0 5000 0x11\nw 65536 4096 0x22\nw 200000 700 0x33\n' | "$IO" script "$T/seed/dyn.vhd"
"$IO" -f vpc -o subformat=fixed create "$T/seed/fixed.vhd" 64K
printf 'w 512 4096 0x44\n' | "$IO" script "$T/seed/fixed.vhd"
"$IO" -f vpc -o "backing_file=$T/seed/dyn.vhd" create "$T/seed/diff.vhd" 0
printf 'w 100 1000 0x55\n' | "$IO" script "$T/seed/diff.vhd"
cp "$T"/seed/*.vhd "$T/corpus/"
mkdir -p "$ROOT/tests/out"
TMPDIR=$T "$T/fuzz" -artifact_prefix="$ROOT/tests/out/vpc-fuzz-" -seed="$SEED" -runs="$RUNS" -max_total_time="$SECS" -rss_limit_mb=1024 -timeout=10 -max_len=131072 \
    "$T/corpus" >"$T/fuzz.log" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then
    pass "fuzzing vpc open+read, seed $SEED: $(grep -o 'Done [0-9]* runs in [0-9]* second' "$T/fuzz.log")"
else
    fail "fuzzer found a problem (exit $rc): $(grep -m3 -E 'ERROR|SUMMARY|runtime error' "$T/fuzz.log")"
    cp "$T/fuzz.log" "$ROOT/tests/out/vpc-fuzz-failure.log"
    ls "$ROOT"/tests/out/vpc-fuzz-{crash,timeout,oom}-* 2>/dev/null | head -3
fi
finish
