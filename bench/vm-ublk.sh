#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Benchmark vdisk's ublk way in the VM, same boot, fio 4k random read/write at
# QD32 and 1 MiB sequential: ublk on raw vs the kernel's loop (direct I/O) on
# the same file; ublk on qcow2 vs qemu-nbd + the kernel's NBD client, and vs
# vdisk's own NBD way, on the same image. Only the ratios mean anything (TCG).
# Prints "BENCH: JOB ublk=X peer=Y UNIT ratio=R" lines.
# Usage: bench/vm-ublk.sh   (env: BENCH_RUNTIME seconds per fio run, default 8;
#        BENCH_ROUNDS, default 2; BENCH_SMP vCPUs, default 1: with 2, ublk gets
#        2 queues and fio 2 jobs for every contender; BENCH_CONTENDERS, a
#        subset of "ublk-raw loop ublk-qcow2 qemu-nbd vdisk-nbd ublk-null
#        ublk-nofix", default all but ublk-nofix)
# Two vCPUs want both host cores: run it on a quiet host only.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
echo "BENCH: host load average at start: $(cut -d" " -f1-3 /proc/loadavg) ($(nproc) CPUs)"
export VMT_TEST_TIMEOUT=${VMT_TEST_TIMEOUT:-1700} # the bench is one guest script
export VM_SMP=${BENCH_SMP:-${VM_SMP:-1}}
VM_TESTS_DIR=$ROOT/bench/vm-ublk VM_WORK=${VM_WORK:-$BUILD/vm-bench-ublk} \
    VM_TIMEOUT=${VM_TIMEOUT:-1800} exec "$ROOT/tests/vm/run" "$@"
