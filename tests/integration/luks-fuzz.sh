#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Run the LUKS libFuzzer target (tests/fuzz/fuzz-luks.c: LUKS1/LUKS2 headers,
# the LUKS2 JSON, and a cheap-KDF unlock and read) briefly, built with clang
# -fsanitize=fuzzer,address,undefined, from seeds cryptsetup and qemu-img make.
# A fixed number of inputs from a fixed seed (LUKS_FUZZ_RUNS, default 4000,
# about 30 s here) keeps a run repeatable; LUKS_FUZZ_SEED=random explores.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
SECS=${LUKS_FUZZ_SECONDS:-300}
RUNS=${LUKS_FUZZ_RUNS:-4000}
SEED=${LUKS_FUZZ_SEED:-1}
[ "$SEED" = random ] && SEED=0
command -v clang >/dev/null || skip_all clang "no clang to build the fuzz target (scripts/install-deps test installs it)"
command -v cryptsetup >/dev/null || { fail "cryptsetup missing: run scripts/install-deps"; finish; }
build_fuzz "fuzz target builds" "$T/fuzz" "$ROOT/tests/fuzz/fuzz-luks.c"
[ -x "$T/fuzz" ] || finish
mkdir -p "$T/corpus"
cd "$T" || exit 1
printf pw >k
# a LUKS2 image small enough to unlock in every run: 16 KiB headers, one 128 KiB keyslot area
truncate -s 172032 s2
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    --cipher aes-cbc-essiv:sha256 --key-size 256 --luks2-metadata-size 16k \
    --luks2-keyslots-size 128k --offset 320 --key-file k s2 2>/dev/null &&
    cp s2 corpus/luks2-cbc || fail "cryptsetup made no seed"
truncate -s 172032 s3
cryptsetup luksFormat -q --type luks2 --pbkdf argon2id --pbkdf-memory 64 --pbkdf-force-iterations 4 \
    --cipher aes-xts-plain64 --key-size 256 --luks2-metadata-size 16k --luks2-keyslots-size 128k \
    --offset 320 --sector-size 4096 --key-file k s3 2>/dev/null && cp s3 corpus/luks2-xts-argon
# headers only: LUKS1 from QEMU, and the JSON alone
for _ in 1 2 3 4 5; do # qemu-img times its KDF on a busy clock: retry
    qemu-img create -q -f luks --object secret,id=s0,data=pw -o key-secret=s0,iter-time=10 q1 1M \
        2>/dev/null && break
done
[ -f q1 ] && head -c 65536 q1 >corpus/luks1-head
dd if=s2 bs=4096 skip=1 count=3 status=none | tr -d '\0' >corpus/json
mkdir -p "$ROOT/tests/out"
TMPDIR=$T "$T/fuzz" -artifact_prefix="$ROOT/tests/out/luks-fuzz-" -seed="$SEED" -runs="$RUNS" \
    -max_total_time="$SECS" -rss_limit_mb=1024 -timeout=20 -max_len=180000 \
    "$T/corpus" >"$T/fuzz.log" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then
    pass "fuzzing LUKS headers, seed $SEED: $(grep -o 'Done [0-9]* runs in [0-9]* second' "$T/fuzz.log")"
else
    fail "fuzzer found a problem (exit $rc): $(grep -m3 -E 'ERROR|SUMMARY|runtime error' "$T/fuzz.log")"
    cp "$T/fuzz.log" "$ROOT/tests/out/luks-fuzz-failure.log"
fi
finish
