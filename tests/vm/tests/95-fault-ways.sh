#!/bin/bash
# SPDX-License-Identifier: MIT
# Faults of the image file reach the block layer through the kernel ways:
# the server of a `vdisk open --via ublk|nbd` disk runs with VDISK_IO_FAULT
# (lib/io/record.c) armed by a file. A read error and a write error reach dd
# (O_DIRECT) as EIO and the kernel logs an I/O error; ENOSPC when the image
# must grow fails the write (ublk: ENOSPC; NBD's kernel client: EIO); the
# device keeps serving the other requests, a retry after the fault succeeds
# and reads back, close works, and the image passes vdisk check. The run
# fails on any WARNING or hung task in the log (tests/vm/run).
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
at_exit "$VDISK close --all"
ARM=$T/arm

# open_fault WAY IMAGE RULES: open IMAGE through WAY with RULES (disarmed); sets DEV
open_fault() {
    rm -f "$ARM"
    DEV=$(VDISK_IO_FAULT=$3 VDISK_IO_FAULT_ARM=$ARM $VDISK open --via "$1" "$2" 2>$T/err) ||
        { fail "$1: open: $(cat $T/err)"; return 1; }
}
rd() { dd if=$DEV of=$T/rd bs=65536 count=1 skip=$(($1 / 65536)) iflag=direct 2>$T/dd.err; }
wr() { dd if=$2 of=$DEV bs=65536 count=1 seek=$(($1 / 65536)) oflag=direct conv=notrunc 2>$T/dd.err; }
dd_says() { grep -Eq "$1" $T/dd.err && pass "$2" || fail "$2 (dd: $(tail -1 $T/dd.err))"; }

head -c 65536 /dev/urandom >p1
head -c 65536 /dev/urandom >p2
for way in ublk nbd; do
    case $way in
    ublk) [ -e /dev/ublk-control ] || { fail "ublk_drv not loaded"; continue; } ;;
    nbd) module_loaded nbd || { fail "nbd module not loaded"; continue; } ;;
    esac
    img=$way.qcow2
    ok "$way: create qcow2" $VDISK create -f qcow2 $img 64M

    # a read error, while armed; then the same read is served
    open_fault $way $img "read:EIO:1:0" || continue
    ok "$way: a write before the fault" wr 0 p1
    n=$(dmesg | wc -l)
    touch "$ARM"
    rd 0 && fail "$way: a read under the fault succeeded" || dd_says "Input/output error" \
        "$way: a read error reaches dd as EIO"
    dmesg | tail -n +$((n + 1)) | grep -q "I/O error, dev ${DEV#/dev/}" && pass "$way: the kernel logs the I/O error" ||
        fail "$way: no I/O error in the kernel log: $(dmesg | tail -3)"
    rm -f "$ARM"
    ok "$way: after the fault the read is served" sh -c "dd if=$DEV bs=65536 count=1 iflag=direct 2>/dev/null | cmp - p1"
    ok "$way: close" $VDISK close $DEV

    # a write error once, then ENOSPC whenever the image must grow
    open_fault $way $img "write:EIO:1:1,grow:ENOSPC:1:0" || continue
    touch "$ARM"
    wr 0 p2 && fail "$way: a write under the fault succeeded" || dd_says "Input/output error" \
        "$way: a write error reaches dd as EIO"
    ok "$way: the next write (in place) is served" wr 0 p2
    if wr $((32 << 20)) p2; then
        fail "$way: a write that grows the full image succeeded"
    else
        [ $way = ublk ] && want="No space left on device" || want="Input/output error"
        dd_says "$want" "$way: ENOSPC on growth fails the write ($want)"
    fi
    rm -f "$ARM" # space freed
    ok "$way: the retry after space is freed succeeds" wr $((32 << 20)) p2
    ok "$way: it reads back" sh -c "dd if=$DEV bs=65536 count=1 skip=512 iflag=direct 2>/dev/null | cmp - p2"
    ok "$way: and the first block too" sh -c "dd if=$DEV bs=65536 count=1 iflag=direct 2>/dev/null | cmp - p2"
    ok "$way: close" $VDISK close $DEV
    $VDISK check $img >$T/check 2>&1
    rc=$?
    [ $rc = 0 ] || [ $rc = 3 ] && pass "$way: vdisk check clean (exit $rc)" ||
        fail "$way: vdisk check exit $rc: $(head -3 $T/check)"
done
finish
