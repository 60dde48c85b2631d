#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The fio verify soak through every way x format, in the VM (by hand, not in
# CI): bench/vm-soak/NN-FORMAT.sh, one guest test per format (raw, qcow2, vpc,
# vhdx, vmdk, vdi, luks), each running every way that serves the format at
# once (kmod and loop for raw and a fixed VHD; ublk, nbd and fuse for all) for
# BENCH_SOAK_SECONDS (default 200: 7 formats make about 30 minutes with boot
# and checks) with crc32c verify, trims and fsyncs at QD32; then every device
# is closed and every image checked. Prints "BENCH: soak FORMAT/WAY reads=N
# writes=N trims=N verify_errors=N" per cell, PASS/FAIL lines, and whether the
# guest log is clean (no oops, WARNING, hung task).
# Usage: bench/vm-soak.sh [NN-FORMAT.sh...]   (e.g. BENCH_SOAK_SECONDS=20 bench/vm-soak.sh 10-raw.sh)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
SECS=${BENCH_SOAK_SECONDS:-200}
if [ $# -gt 0 ]; then n=$#; else n=$(ls "$ROOT"/bench/vm-soak/*.sh | wc -l); fi
[ "$SECS" -le 250 ] || { echo "BENCH_SOAK_SECONDS=$SECS: the guest gives each test 300 s" >&2; exit 2; }
export BENCH_SOAK_SECONDS=$SECS
VM_TESTS_DIR=$ROOT/bench/vm-soak VM_WORK=${VM_WORK:-$BUILD/vm-soak} \
    VM_TIMEOUT=${VM_TIMEOUT:-$((n * (SECS + 90) + 300))} exec "$ROOT/tests/vm/run" "$@"
