#!/bin/bash
# SPDX-License-Identifier: MIT
# --via nbd: the kernel's NBD client on a vdisk server process. open, mkfs,
# mount, write, fstrim, umount, close, reopen, verify, e2fsck; read-only; a
# killed server is cleaned up by close. Raw and qcow2; for qcow2, auto picks
# ublk when vdisk has a ublk way that works here, else nbd.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
module_loaded nbd || { fail "nbd module not loaded"; finish; }
mkdir -p m
at_exit "umount $T/m; $VDISK close --all"

# auto_way IMAGE: set WAY to the way auto must pick for a non-raw IMAGE, from
# what --via ublk answers (an answer not known here fails the test).
auto_way() {
    if $VDISK open --via ublk "$1" >$T/ublk.out 2>$T/ublk.err; then
        $VDISK close "$1" || fail "$1: close after open --via ublk"
        WAY=ublk
    elif grep -Eqx 'vdisk: --via ublk: (/dev/ublk-control: .*|not available on this machine)( \(.*\))?' \
        $T/ublk.err; then
        WAY=nbd
    else
        fail "$1: open --via ublk answered something unknown: $(cat $T/ublk.err)"
        WAY=unknown
    fi
}

for img in disk.img disk.qcow2; do
    dev=$($VDISK open --via nbd "$img" 100 2>$T/err) || fail "$img: open --via nbd: $(cat $T/err)"
    case $dev in /dev/nbd[0-9]*) pass "$img: open prints $dev" ;; *) fail "$img: open printed '$dev'"; continue ;; esac
    eq "$img: device size" "$(blockdev --getsize64 $dev)" $((100 << 20))
    ok "$img: list shows nbd" sh -c "$VDISK list | grep $dev | grep -q nbd"
    pid=$($VDISK info --json $dev | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
    [ -n "$pid" ] && [ -d /proc/$pid ] && pass "$img: server process $pid runs" || fail "$img: no server pid ($pid)"
    sock=$(ls $VDISK_RUN_DIR/*.sock 2>/dev/null | head -1)
    eq "$img: private socket is 0600" "$(stat -c %a "$sock" 2>/dev/null)" 600
    fails "$img: second open refused" $VDISK open --via nbd "$img"

    ok "$img: mkfs.ext4" mkfs.ext4 -q -F $dev
    ok "$img: mount" mount $dev m
    dd if=/dev/urandom of=data bs=1M count=20 2>/dev/null
    ok "$img: write a file" cp data m/data
    sync
    ok "$img: fstrim (NBD_CMD_TRIM)" fstrim m
    fails_with "$img: close while mounted is refused" "in use|busy" $VDISK close $dev
    ok "$img: umount" umount m
    ok "$img: close" $VDISK close $dev
    [ -d /proc/$pid ] && fail "$img: server $pid still running after close" || pass "$img: server gone"
    [ -e /sys/block/${dev#/dev/}/pid ] && fail "$img: $dev still connected" || pass "$img: $dev disconnected"
    [ -e "$sock" ] && fail "$img: socket left behind" || pass "$img: socket removed"

    if [ "$img" = disk.qcow2 ]; then # a non-raw image: auto picks ublk if it works, else nbd
        auto_way "$img"
        dev=$($VDISK open "$img" 2>$T/err) || fail "$img: reopen (auto): $(cat $T/err)"
        case $WAY:$dev in
        nbd:/dev/nbd[0-9]* | ublk:/dev/ublkb[0-9]*) pass "$img: auto picks $WAY ($dev)" ;;
        *) fail "$img: auto gave '$dev', want $WAY" ;;
        esac
    else
        dev=$($VDISK open --via nbd "$img" 2>$T/err) || fail "$img: reopen: $(cat $T/err)"
    fi
    ok "$img: mount again" mount $dev m
    ok "$img: data verified after reopen" cmp data m/data
    ok "$img: umount again" umount m
    ok "$img: e2fsck -fn clean" e2fsck -fn $dev
    ok "$img: close again" $VDISK close "$img"

    dev=$($VDISK open -r --via nbd "$img" 2>$T/err) || fail "$img: open -r: $(cat $T/err)"
    eq "$img: read-only open gives a read-only disk" "$(blockdev --getro $dev)" 1
    fails "$img: write to the read-only disk fails" dd if=/dev/zero of=$dev bs=4k count=1 oflag=direct
    ok "$img: close read-only" $VDISK close $dev

    # a server that dies: alive() notices, close cleans up
    dev=$($VDISK open --via nbd "$img" 2>$T/err) || fail "$img: open for kill: $(cat $T/err)"
    pid=$($VDISK info --json $dev | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
    kill -9 "$pid"
    sleep 1
    fails_with "$img: open after the server died says so" "gone|close" $VDISK open --via nbd "$img"
    ok "$img: close after the server died" $VDISK close "$img"
    eq "$img: list empty" "$($VDISK list | grep -c nbd)" 0
done
left=$(for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = vdisk ] && echo ${p#/proc/}; done)
eq "no vdisk server process left" "$left" ""
finish
