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

# build_fuzz DESC OUT TARGET.c [CFLAGS...]: a libFuzzer binary of TARGET over
# all of libvdisk's sources, with the sanitizers and every library lib/ links.
build_fuzz() {
    local desc=$1 out=$2 target=$3
    shift 3
    ok "$desc" clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 "$@" -I"$ROOT/include" -I"$ROOT/lib" \
        -o "$out" "$target" "$ROOT"/lib/*.c "$ROOT"/lib/io/*.c "$ROOT"/lib/format/*.c \
        -lz -lzstd -luring -lpthread -lcrypto -ljson-c -largon2
}

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
