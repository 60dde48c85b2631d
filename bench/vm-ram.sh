#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Benchmark a RAM disk through vdisk.ko (vdisk open --ram --via kmod) against the
# kernel's brd in the VM: fio 4k random read and write at QD32. Reuses the VM
# harness with bench/vm/ram-vs-brd.sh. BENCH_RUNTIME=1 for a smoke run.
# Prints "BENCH: JOB vdisk=X brd=Y IOPS ratio=R" lines (target: ratio >= 1.0).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
VM_TESTS_DIR=$ROOT/bench/vm VM_WORK=${VM_WORK:-$BUILD/vm-bench} exec "$ROOT/tests/vm/run" ram-vs-brd.sh
