# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# The sanitizer and fuzz stages of tests/run (sourced by it; uses its
# run_unit, run_scripts and count):
#   asan  build-asan/ (-Db_sanitize=address,undefined): the unit tests (or
#         SAN_UNITS) and the integration tests of the library and the utility
#         (SAN_INTEGRATION)
#   tsan  build-tsan/ (-Db_sanitize=thread): the multi-threaded engine, the
#         unit tests test-queue and test-node, concurrent I/O over NBD and FUSE
#   fuzz  build-fuzz/ (clang, -Dfuzz=true): every libFuzzer target, a fixed
#         seed and number of runs each (tests/fuzz/ci)
# Any sanitizer report fails the test it came from: the process aborts (or,
# for a leak, exits non-zero).

# The integration tests under ASan: formats, convert, check, serve, hostile
# inputs, real images, chains, LUKS, the persist table. Left out, for the time
# CI has (each costs 1.5-4 min under ASan on a busy machine, most of it in
# qemu-img or cryptsetup, for library code the kept tests run too):
# luks-qcow2, luks-interop, vhdx-interop, nbd-clients (which runs under TSan);
# and packaging (admin-*), the kill -9 loops (*-crash), the disk tests of the
# kernel ways beyond three, the absent-module tests (no library code).
SAN_INTEGRATION=${SAN_INTEGRATION:-"cli-basics cli-hostile-paths cli-messages cli-persist
    convert-check-bench chains foreign-formats format-guard disk-errors disk-fuse-engine
    disk-fuse-file luks-hostile nbd-hostile nbd-order nbd-fuzz-replay
    qcow2-interop qcow2-real-images vdi-chain vdi-hostile vdi-interop vdi-nbd
    vhdx-chain vhdx-hostile vhdx-log vhdx-real-images
    vmdk-chain vmdk-hostile vmdk-interop vmdk-real-images vpc-chain vpc-interop vpc-real-images
    repair-formats"}
# under TSan: many requests in flight at once on the NBD server (nbdcopy,
# fio's QD32 on the FUSE file from two threads), the engine's counters
SAN_TSAN_INTEGRATION=${SAN_TSAN_INTEGRATION:-"nbd-order nbd-clients disk-fuse-file disk-fuse-engine"}
SAN_ENV=(ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS STAGE UNIT_ONLY UNIT_TIMEOUT)

# san_build DIR [MESON_ARGS...]: configure DIR once, then build $SAN_TARGETS (default all).
san_build() {
    local dir=$1 log
    log=$LOG/build-$(basename "$1").log
    shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" -Dman=disabled -Db_lundef=false "$@" >"$log" 2>&1 || {
            echo "FAIL: meson setup $dir (see $log)"
            failed=$((failed + 1))
            return 1
        }
    fi
    # shellcheck disable=SC2086 # a list of targets
    ninja -C "$dir" ${SAN_TARGETS:-} >>"$log" 2>&1 || {
        echo "FAIL: ninja -C $dir (see $log)"
        failed=$((failed + 1))
        return 1
    }
}

# san_run BUILDDIR UNITS SCRIPTS: the unit tests UNITS ("" for all) and the
# integration tests SCRIPTS against BUILDDIR, with the sanitizer options set.
# Reports go to files, $LOG/STAGE-report.PID: the servers the tests start run
# detached, and a report of theirs (a leak at exit) would reach no test.
san_run() {
    local saved=$BUILD stage=$STAGE rep=$LOG/$STAGE-report f
    rm -f "$rep".*
    export BUILD=$1 UNIT_ONLY=$2
    for f in ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS; do
        [ -z "${!f:-}" ] || export "$f=${!f}:log_path=$rep"
    done
    # shellcheck disable=SC2086 # a list of names
    { run_unit; run_scripts "$ROOT/tests/integration" $3; }
    export BUILD=$saved
    unset "${SAN_ENV[@]}"
    for f in "$rep".*; do
        [ -e "$f" ] || continue
        echo "FAIL: $stage: a sanitizer report, $f: $(grep -m1 -E 'ERROR|WARNING|runtime error' "$f")"
        failed=$((failed + 1))
    done
}

run_asan() {
    san_build "$ROOT/build-asan" -Db_sanitize=address,undefined || return
    export STAGE=asan ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    san_run "$ROOT/build-asan" "${SAN_UNITS:-}" "$SAN_INTEGRATION"
}

run_tsan() {
    SAN_TARGETS="tests/unit/test-queue tests/unit/test-node tests/unit/test-snapshot-overlay tools/vdisk/vdisk tests/tools/vdisk-test-io" \
        san_build "$ROOT/build-tsan" -Db_sanitize=thread || return
    # test-queue takes a minute under TSan on a quiet machine: more on a busy one
    export STAGE=tsan UNIT_TIMEOUT=900
    export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$ROOT/tests/tsan.supp
    san_run "$ROOT/build-tsan" "test-queue test-node test-snapshot-overlay" "$SAN_TSAN_INTEGRATION"
}

run_fuzz() {
    local t targets=""
    if ! has_need clang; then
        echo "SKIP: [need:clang] no clang to build the fuzz targets" >"$LOG/fuzz.log"
        count fuzz "$LOG/fuzz.log" 77 1
        return
    fi
    for t in qcow2 vpc vhdx vmdk vdi iso luks vmdk-desc nbd size options persist; do
        targets+=" tests/fuzz/fuzz-$t"
    done
    SAN_TARGETS=$targets CC=clang san_build "$ROOT/build-fuzz" -Db_sanitize=address,undefined \
        -Dfuzz=true || return
    FUZZ_BUILD=$ROOT/build-fuzz "$ROOT/tests/fuzz/ci" >"$LOG/fuzz.log" 2>&1
    count fuzz "$LOG/fuzz.log" $? 1
}
