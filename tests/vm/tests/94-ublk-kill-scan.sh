#!/bin/bash
# SPDX-License-Identifier: MIT
# A ublk server killed while the kernel scans the new disk's partitions (in
# START_DEV; each request made slow with VDISK_TEST_UBLK_DELAY_MS): `vdisk
# open` fails, the watchdog (told the device number before START_DEV)
# deletes the device, nothing hangs; then the same image opens again.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
[ -e /dev/ublk-control ] || { fail "ublk_drv not loaded"; finish; }
at_exit "$VDISK close --all"

# server: the pid of the one vdisk-ublk server process, or nothing.
server() { for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = vdisk-ublk ] && echo ${p#/proc/}; done; }

for recovery in 0 1; do
    ok "recovery=$recovery: create p.img" $VDISK create p$recovery.img 16M
    VDISK_UBLK_RECOVERY=$recovery VDISK_UBLK_RECOVER_TIMEOUT=5 VDISK_TEST_UBLK_DELAY_MS=400 \
        $VDISK open --via ublk p$recovery.img >$T/out 2>$T/err &
    opid=$!
    for i in $(seq 50); do [ -n "$(server)" ] && [ -e /dev/ublkb0 -o -e /dev/ublkc0 ] && break; sleep 0.1; done
    sleep 1
    spid=$(server)
    [ -n "$spid" ] && pass "recovery=$recovery: server $spid is starting" || fail "recovery=$recovery: no server"
    ok "recovery=$recovery: kill -9 it during the partition scan" kill -9 $spid
    for i in $(seq 600); do [ -d /proc/$opid ] || break; sleep 0.1; done
    [ -d /proc/$opid ] && fail "recovery=$recovery: vdisk open still waiting after 60 s" ||
        pass "recovery=$recovery: vdisk open returned"
    wait $opid && fail "recovery=$recovery: open succeeded" || pass "recovery=$recovery: open failed: $(head -c 200 $T/err)"
    for i in $(seq 600); do ls /dev/ublkb* /dev/ublkc* >/dev/null 2>&1 || break; sleep 0.1; done
    eq "recovery=$recovery: device deleted" "$(ls /dev/ublkb* /dev/ublkc* 2>/dev/null | wc -l)" 0
    dev=$($VDISK open --via ublk p$recovery.img 2>$T/err) && pass "recovery=$recovery: opens again ($dev)" ||
        fail "recovery=$recovery: open again: $(cat $T/err)"
    ok "recovery=$recovery: close" $VDISK close p$recovery.img
done
finish
