# SPDX-License-Identifier: MIT
# Shared by the shell tests: the assertions of tests/assert.sh, a scratch
# directory T, and cleanup on exit.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
VDISK=${VDISK:-$BUILD/tools/vdisk/vdisk}
T=$(mktemp -d /tmp/vdisk-test.XXXXXX)
. "$ROOT/tests/assert.sh"
trap '_run_cleanups; rm -rf "$T"' EXIT

# mem_capped MIB CMD...: CMD with MIB MiB of memory at most (a huge allocation fails, not
# the host): address space by ulimit -v; under AddressSanitizer, which reserves terabytes
# of address space, its own limits on one allocation and on the resident set.
mem_capped() {
    local mb=$1
    shift
    if [ -n "${ASAN_OPTIONS:-}" ]; then
        ASAN_OPTIONS="$ASAN_OPTIONS:allocator_may_return_null=1:max_allocation_size_mb=$mb:hard_rss_limit_mb=$((mb + 256))" "$@"
    else
        (ulimit -v $((mb * 1024)) && exec "$@")
    fi
}

# qemu_create_kdf ARGS...: `qemu-img create -q ARGS` for an encrypted image,
# retried with a growing wait: qemu-img times its KDF by the thread's CPU clock
# and gives up ("Unable to get accurate CPU usage") when that clock did not
# move, which on a busy machine lasted five quick tries in a row. Its stderr is
# in $T/.qerr.
qemu_create_kdf() {
    local i
    for i in 1 2 3 4 5 6 7 8; do
        qemu-img create -q "$@" 2>"$T/.qerr" && return 0
        sleep "$i"
    done
    return 1
}
