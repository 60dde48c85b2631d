#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Run the qcow2 libFuzzer target (tests/fuzz/fuzz-open-read.c) briefly, built with
# clang -fsanitize=fuzzer,address, from a seed corpus of qemu-img images.
# CI runs a fixed number of inputs from a fixed seed (QCOW2_FUZZ_RUNS, default
# 15000, about 40 s here) so that a run is repeatable; QCOW2_FUZZ_SEED=random
# and a larger QCOW2_FUZZ_RUNS explore further by hand. QCOW2_FUZZ_SECONDS caps it.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
SECS=${QCOW2_FUZZ_SECONDS:-300}
RUNS=${QCOW2_FUZZ_RUNS:-15000}
SEED=${QCOW2_FUZZ_SEED:-1}
[ "$SEED" = random ] && SEED=0 # libFuzzer picks one
command -v clang >/dev/null || skip_all clang "no clang to build the fuzz target (scripts/install-deps test installs it)"
build_fuzz "fuzz target builds" "$T/fuzz" "$ROOT/tests/fuzz/fuzz-open-read.c"
[ -x "$T/fuzz" ] || finish
mkdir -p "$T/corpus"
if command -v qemu-img >/dev/null; then
    i=0
    for o in cluster_size=512 cluster_size=4096,refcount_bits=1 compat=0.10,cluster_size=1024 \
        extended_l2=on,cluster_size=16384 compression_type=zstd,cluster_size=4096 \
        lazy_refcounts=on,refcount_bits=64,cluster_size=2048; do
        i=$((i + 1))
        qemu-img create -q -f qcow2 -o "$o" "$T/s.qcow2" 1M
        qemu-io -c "write -P 1 0 8k" -c "write -c -P 2 64k 64k" -c "write -z 200k 8k" \
            "$T/s.qcow2" >/dev/null 2>&1
        cp "$T/s.qcow2" "$T/corpus/seed$i"
        rm -f "$T/s.qcow2"
    done
fi
mkdir -p "$ROOT/tests/out"
TMPDIR=$T "$T/fuzz" -artifact_prefix="$ROOT/tests/out/qcow2-fuzz-" -seed="$SEED" -runs="$RUNS" -max_total_time="$SECS" -rss_limit_mb=1024 -timeout=10 -max_len=131072 \
    "$T/corpus" >"$T/fuzz.log" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then
    pass "fuzzing open+read, seed $SEED: $(grep -o 'Done [0-9]* runs in [0-9]* second' "$T/fuzz.log")"
else
    fail "fuzzer found a problem (exit $rc): $(grep -m3 -E 'ERROR|SUMMARY|runtime error' "$T/fuzz.log")"
    cp "$T/fuzz.log" "$ROOT/tests/out/qcow2-fuzz-failure.log"
    ls "$ROOT"/tests/out/qcow2-fuzz-{crash,timeout,oom}-* 2>/dev/null | head -3
fi
finish
