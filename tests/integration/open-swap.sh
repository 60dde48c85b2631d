#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# No path race between check and use: `vdisk open` checks an image, then the
# way opens it again to serve it. A test hook (VDISK_TEST_PAUSE_BEFORE_SERVE)
# holds vdisk between the two while this script renames another file over the
# image, or puts a symlink to another file in its place: the open is refused
# with a clear error and the swapped-in file is neither served nor written.
# Without a swap the checked file is served. Ways on this host: loop (raw) and
# FUSE (raw, qcow2); ublk, nbd and kmod share the same open path (open_image.c).
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
[ -w /dev/loop-control ] || skip_all kmod-load "no loop devices here"
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
cd "$T" || exit 1

# make FMT NAME BYTE: a 16 MiB image whose first MiB is BYTE
make() {
    qemu-img create -q -f "$1" "$2" 16M
    qemu-io -f "$1" -c "write -P $3 0 1M" "$2" >/dev/null
}

# swap NAME WAY FMT HOW: open IMAGE through WAY, swap it by HOW (rename|symlink) at the pause
swap() {
    local name=$1 way=$2 fmt=$3 how=$4 img=$T/$1.$3 other=$T/$1-other.$3 pid rc sum
    make "$fmt" "$img" 0xaa
    make "$fmt" "$other" 0xbb
    sum=$(md5sum <"$other")
    rm -f pause
    VDISK_TEST_PAUSE_BEFORE_SERVE=$T/pause "$VDISK" open --via "$way" "$img" >"$name.dev" \
        2>"$name.err" &
    pid=$!
    for _ in $(seq 500); do [ -e pause ] && break; sleep 0.02; done
    [ -e pause ] || fail "$name: the hook never paused"
    if [ "$how" = rename ]; then
        cp "$other" "$name.new" && mv "$name.new" "$img"
    else
        ln -s "$other" "$name.lnk" && mv -T "$name.lnk" "$img"
    fi
    rm -f pause
    rc=0
    wait $pid || rc=$?
    if [ "$rc" = 0 ]; then
        fail "$name: the open of a swapped path succeeded ($(cat "$name.dev"))"
        "$VDISK" close "$img" >/dev/null 2>&1
    else
        pass "$name: the open is refused (exit $rc)"
    fi
    ok "$name: the error says the file was replaced" \
        grep -q "^vdisk: $img: the file was replaced after it was checked" "$name.err"
    eq "$name: nothing is left open" "$("$VDISK" list 2>/dev/null | grep -c "$img")" 0
    eq "$name: the other file is untouched" "$(md5sum <"$other")" "$sum"
}

# served WAY FMT: without a swap the checked image is served, and reads as written
served() {
    local way=$1 fmt=$2 img=$T/plain-$1.$2 dev
    make "$fmt" "$img" 0xaa
    rm -f pause
    (for _ in $(seq 500); do [ -e pause ] && rm -f pause && break; sleep 0.02; done) &
    if dev=$(VDISK_TEST_PAUSE_BEFORE_SERVE=$T/pause "$VDISK" open --via "$way" "$img" \
        2>"$T/err"); then
        ok "$way/$fmt: no swap: the checked image is served" \
            cmp -n 1048576 "$dev" <(head -c 1M /dev/zero | tr '\0' '\252')
        ok "$way/$fmt: close" "$VDISK" close "$img"
    else
        fail "$way/$fmt: open without a swap: $(cat "$T/err")"
    fi
}

served loop raw
swap loop-rename loop raw rename
swap loop-symlink loop raw symlink
served fuse qcow2
swap fuse-rename fuse qcow2 rename
swap fuse-symlink fuse raw symlink
finish
