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
