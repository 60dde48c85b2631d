#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# QEMU's image locks, both ways, for --via loop and --via fuse: while qemu-nbd holds
# an image read-write, vdisk open fails with a clear message and leaves nothing; while
# vdisk has it open, qemu-nbd, qemu-io and qemu-img convert refuse it. Read-only opens share.
# About 10 s.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
NBD_PID=
stop_nbd() {
    [ -n "$NBD_PID" ] || return 0
    kill "$NBD_PID" 2>/dev/null
    wait "$NBD_PID" 2>/dev/null
    NBD_PID=
}
at_exit stop_nbd

# start_nbd IMAGE [ARGS]: qemu-nbd serving IMAGE on a socket of this test, in the background.
start_nbd() {
    local img=$1
    shift
    rm -f "$T/nbd.sock"
    qemu-nbd -f raw -t -k "$T/nbd.sock" "$@" "$img" 2>"$T/nbd.err" &
    NBD_PID=$!
    # qemu-nbd binds its socket before it opens the image: ready means it answers
    for _ in $(seq 100); do
        nbdinfo --size "nbd+unix:///?socket=$T/nbd.sock" >/dev/null 2>&1 && return 0
        proc_gone "$NBD_PID" && break
        sleep 0.05
    done
    wait "$NBD_PID" 2>/dev/null
    NBD_PID=
    return 1
}

for via in ${VIAS:-loop fuse}; do
    img=$T/$via.img
    "$VDISK" create "$img" 16 || fail "$via: create"

    # QEMU first
    start_nbd "$img" && pass "$via: qemu-nbd holds the image read-write" || fail "$via: qemu-nbd start"
    fails_with "$via: open while qemu-nbd has it" "in use by another process" \
        "$VDISK" open --via "$via" "$img"
    nothing_left "$via: refused open" "$T/none"
    fails_with "$via: read-only open while qemu-nbd writes it" "in use by another process" \
        "$VDISK" open -r --via "$via" "$img"
    nothing_left "$via: refused read-only open" "$T/none"
    stop_nbd
    dev=$("$VDISK" open --via "$via" "$img") && pass "$via: open once qemu-nbd is gone" ||
        fail "$via: open after qemu-nbd"

    # vdisk first
    if start_nbd "$img"; then
        fail "$via: qemu-nbd started on an image vdisk has open"
        stop_nbd
    else
        grep -q 'Failed to get .*lock' "$T/nbd.err" && pass "$via: qemu-nbd refuses it (lock)" ||
            fail "$via: qemu-nbd: $(cat "$T/nbd.err")"
    fi
    fails_with "$via: qemu-io refuses it" "Failed to get .*lock" qemu-io -f raw -c "read 0 512" "$img"
    fails_with "$via: qemu-img convert refuses it" "Failed to get .*lock" \
        qemu-img convert -f raw -O raw "$img" "$T/copy.img"
    ok "$via: qemu-img info -U (no lock) still reads it" qemu-img info -U "$img"
    echo "vdisk wrote this" | dd of="$dev" bs=4k conv=sync oflag=direct status=none
    eq "$via: the disk still serves" "$(head -c 16 "$img")" "vdisk wrote this"
    ok "$via: close" "$VDISK" close "$img"

    # read-only on both sides share; a writer still can't join
    dev=$("$VDISK" open -r --via "$via" "$img") && pass "$via: open -r" || fail "$via: open -r"
    start_nbd "$img" -r && pass "$via: qemu-nbd -r shares a read-only disk" ||
        fail "$via: qemu-nbd -r: $(cat "$T/nbd.err")"
    stop_nbd
    if start_nbd "$img"; then
        fail "$via: qemu-nbd read-write started beside a vdisk reader"
        stop_nbd
    else
        grep -q 'Failed to get .*lock' "$T/nbd.err" && pass "$via: qemu-nbd read-write refused beside a vdisk reader" ||
            fail "$via: qemu-nbd read-write beside a reader: $(cat "$T/nbd.err")"
    fi
    ok "$via: close -r" "$VDISK" close "$img"
    nothing_left "$via: all closed" "$img"
done
finish
