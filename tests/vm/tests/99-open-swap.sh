#!/bin/bash
# SPDX-License-Identifier: MIT
# No path race between check and use, through the kernel ways: `vdisk open`
# checks an image, then the way opens it again to serve it (open_image.c).
# The test hook VDISK_TEST_PAUSE_BEFORE_SERVE holds vdisk between the two
# while another file is renamed over the image: the open through vdisk.ko,
# ublk and the kernel NBD client is refused with a clear error, no device is
# left, and the swapped-in file is not written. Without a swap it is served.
# (tests/integration/open-swap.sh does loop and FUSE on the host.)
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
at_exit "$VDISK close --all"
load_vdisk || fail "insmod vdisk.ko"
PAUSE=$T/pause
for b in 252 273; do # what the first MiB of the checked image (252) and of the other (273) hold
    dd if=/dev/zero bs=1048576 count=1 2>/dev/null | tr '\0' "\\$b" >$T/$b
done

# image FMT NAME BYTE: a 16 MiB image whose first MiB is BYTE
image() {
    local dev r
    rm -f "$2"
    $VDISK create -f "$1" "$2" 16M >/dev/null || return 1
    dev=$($VDISK open --via loop -f "$1" "$2" 2>/dev/null) ||
        dev=$($VDISK open "$2") || return 1
    dd if=$T/$3 of="$dev" bs=1048576 oflag=direct 2>/dev/null
    cmp -n 1048576 "$dev" $T/$3
    r=$?
    $VDISK close "$2" && return $r
}

# paused WAY IMAGE: open IMAGE through WAY with the hook; its pid in PID
paused() {
    rm -f "$PAUSE"
    VDISK_TEST_PAUSE_BEFORE_SERVE=$PAUSE $VDISK open --via "$1" "$2" >$T/dev 2>$T/err &
    PID=$!
    for _ in $(seq 1500); do [ -e "$PAUSE" ] && return 0; sleep 0.02; done
    fail "$1: the hook never paused"
    return 1
}

for cell in kmod:raw ublk:qcow2 nbd:qcow2; do
    way=${cell%%:*} fmt=${cell#*:} img=$T/$way.$fmt other=$T/$way-other.$fmt
    case $way in
    ublk) [ -e /dev/ublk-control ] || { fail "ublk_drv not loaded"; continue; } ;;
    nbd) module_loaded nbd || { fail "nbd module not loaded"; continue; } ;;
    esac
    image "$fmt" "$img" 252 && image "$fmt" "$other" 273 || { fail "$way: make images"; continue; }
    sum=$(md5sum <"$other")

    # swapped: refused, nothing open, the other file untouched
    paused "$way" "$img" || continue
    cp "$other" "$T/new" && mv "$T/new" "$img"
    rm -f "$PAUSE"
    if wait $PID; then
        fail "$way: the open of a swapped path succeeded ($(cat $T/dev))"
        $VDISK close "$img" >/dev/null 2>&1
    else
        pass "$way: the open of a swapped path is refused"
    fi
    ok "$way: the error says the file was replaced" \
        grep -q "^vdisk: $img: the file was replaced after it was checked" $T/err
    eq "$way: nothing is left open" "$($VDISK list 2>/dev/null | grep -c "$img")" 0
    eq "$way: the swapped-in file is untouched" "$(md5sum <"$other")" "$sum"

    # not swapped: served, and reads what the checked file holds
    image "$fmt" "$img" 252 || { fail "$way: remake the image"; continue; }
    paused "$way" "$img" || continue
    rm -f "$PAUSE"
    if wait $PID; then
        dev=$(cat $T/dev)
        ok "$way: no swap: served as $dev, reading the checked image" \
            cmp -n 1048576 "$dev" $T/252
        ok "$way: close" $VDISK close "$img"
    else
        fail "$way: open without a swap: $(cat $T/err)"
    fi
done
finish
