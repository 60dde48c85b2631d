#!/bin/bash
# SPDX-License-Identifier: MIT
# A ublk server killed while the kernel scans the new disk's partitions (each
# request made slow with VDISK_TEST_UBLK_DELAY_MS). START_DEV, which scans,
# runs in `vdisk open`, not in the server: a server killed mid-scan exits
# (its I/O fails), the watchdog (told the device number before START_DEV)
# deletes the device, nothing hangs, and the image opens again.
# With recovery on, a kill inside START_DEV's scan deadlocks 6.12 itself
# (the scan's reads are requeued for a new server while START_DEV holds the
# device mutex that recovery needs): that case is killed just after open.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
[ -e /dev/ublk-control ] || { fail "ublk_drv not loaded"; finish; }
at_exit "$VDISK close --all"

# server: the pid of the one vdisk-ublk server process, or nothing.
server() { for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = vdisk-ublk ] && echo ${p#/proc/}; done; }

for recovery in 0 1; do
    ok "recovery=$recovery: create p.img" $VDISK create p$recovery.img 16M
    VDISK_UBLK_RECOVERY=$recovery VDISK_UBLK_RECOVER_TIMEOUT=5 VDISK_TEST_UBLK_DELAY_MS=1000 \
        $VDISK open --via ublk p$recovery.img >$T/out 2>$T/err &
    opid=$!
    if [ $recovery = 0 ]; then # /dev/ublkb0 appears in add_disk, just before the scan's slow reads
        for i in $(seq 400); do [ -e /dev/ublkb0 ] && break; sleep 0.05; done
    else
        for i in $(seq 400); do [ -s $T/out ] && break; sleep 0.05; done
    fi
    spid=$(server)
    [ -n "$spid" ] && pass "recovery=$recovery: server $spid is up" || fail "recovery=$recovery: no server"
    ok "recovery=$recovery: kill -9 it" kill -9 $spid
    for i in $(seq 600); do [ -d /proc/$opid ] || break; sleep 0.1; done
    [ -d /proc/$opid ] && fail "recovery=$recovery: vdisk open still waiting after 60 s" ||
        pass "recovery=$recovery: vdisk open returned"
    wait $opid && echo "recovery=$recovery: open had succeeded: $(cat $T/out)" ||
        echo "recovery=$recovery: open failed: $(head -c 200 $T/err)"
    for i in $(seq 600); do ls /dev/ublkb* /dev/ublkc* >/dev/null 2>&1 || break; sleep 0.1; done
    eq "recovery=$recovery: device deleted" "$(ls /dev/ublkb* /dev/ublkc* 2>/dev/null | wc -l)" 0
    $VDISK close p$recovery.img 2>/dev/null # the record, when open had succeeded
    dev=$($VDISK open --via ublk p$recovery.img 2>$T/err) && pass "recovery=$recovery: opens again ($dev)" ||
        fail "recovery=$recovery: open again: $(cat $T/err)"
    ok "recovery=$recovery: close" $VDISK close p$recovery.img
done
finish
