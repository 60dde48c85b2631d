#!/bin/bash
# SPDX-License-Identifier: MIT
# ublk servers that die, the scenarios of the kernel's ublk selftests: kill -9
# under fio, then `vdisk recover` (raw) or `vdisk open` (qcow2) takes the
# device over and no acknowledged write is lost; with recovery off, I/O fails
# within seconds and the device is deleted; with nobody recovering, the
# watchdog deletes it after its timeout; close of a dead server's device fails
# its waiting I/O; close while fio runs; close --force of a live server;
# open and close 50 times; recover refuses a file put in the image's place.
# No hang anywhere (every wait is bounded); the guest log is checked by the harness.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
[ -e /dev/ublk-control ] || { fail "ublk_drv not loaded"; finish; }
at_exit "$VDISK close --all"
export VDISK_UBLK_QUEUES=2

server_pid() { $VDISK info --json "$1" | sed -n 's/.*"pid": \([0-9]*\).*/\1/p'; }
# gone_within SECONDS PATH: true once PATH does not exist, waiting up to SECONDS.
gone_within() {
    local i
    for i in $(seq $(($1 * 10))); do [ -e "$2" ] || return 0; sleep 0.1; done
    return 1
}
# running PID: true while PID runs (not a zombie).
running() { [ -d /proc/$1 ] && ! grep -q '^State:.*Z' /proc/$1/status 2>/dev/null; }
# wait_gone SECONDS PID: wait up to SECONDS for PID to end.
wait_gone() {
    local i
    for i in $(seq $(($1 * 10))); do running $2 || return 0; sleep 0.1; done
    return 1
}

# --- A: kill -9 under fio (raw), recover, fio's verify passes -------------------
dev=$($VDISK open --via ublk r.img 64 2>$T/err) || fail "r.img: open: $(cat $T/err)"
pid=$(server_pid $dev)
fio --eta=never --name=k --filename=$dev --direct=1 --ioengine=io_uring --iodepth=32 --rw=randwrite --bs=4k \
    --size=16M --rate_iops=1500 --verify=crc32c --verify_fatal=1 --do_verify=1 \
    --output=$T/fioA.out &
fpid=$!
sleep 2
ok "A: kill -9 the server under fio" kill -9 $pid
sleep 2
running $fpid && pass "A: fio waits (device stays, I/O queued)" || fail "A: fio ended after the kill"
[ -e $dev ] && pass "A: $dev stays" || fail "A: $dev went away"
eq "A: list says the disk waits" "$($VDISK list | grep $dev | grep -c ' wait ')" 1
ok "A: info tells the device waits for a server" sh -c "$VDISK info r.img | grep -Eq 'ublk device: (quiesced|live), [0-9]+ queue'"
out=$($VDISK recover r.img 2>$T/err) || fail "A: recover: $(cat $T/err)"
eq "A: recover gives the same device" "$out" "$dev"
pid2=$(server_pid $dev)
[ -n "$pid2" ] && [ "$pid2" != "$pid" ] && pass "A: new server $pid2" || fail "A: server pid '$pid2'"
wait_gone 120 $fpid
wait $fpid && pass "A: fio completes and verifies every block (crc32c)" ||
    { fail "A: fio failed after recovery"; sed 's/^/    /' $T/fioA.out | grep -i "err\|verify" | head; }
fails "A: recover of a served disk is refused" $VDISK recover r.img
ok "A: info says live again" sh -c "$VDISK info r.img | grep -q 'ublk device: live'"
eq "A: list says open again" "$($VDISK list | grep $dev | grep -c ' open ')" 1
ok "A: close" $VDISK close r.img
gone_within 5 $dev && pass "A: device deleted" || fail "A: $dev still there"

# --- B: qcow2, flushed data survives; open takes the device over -------------
dev=$($VDISK open --via ublk q.qcow2 64 2>$T/err) || fail "q.qcow2: open: $(cat $T/err)"
dd if=/dev/urandom of=pat bs=1M count=8 2>/dev/null
ok "B: write 8 MiB and fsync" dd if=pat of=$dev bs=1M oflag=direct conv=fsync
ok "B: kill -9 the server" kill -9 $(server_pid $dev)
sleep 1
dd if=$dev of=$T/waited bs=1M count=8 iflag=direct 2>/dev/null &
dpid=$!
sleep 3
running $dpid && pass "B: a read waits for a new server" || fail "B: the read did not wait"
out=$($VDISK open q.qcow2 2>$T/err) || fail "B: open of the same image: $(cat $T/err)"
eq "B: open takes the same device over" "$out" "$dev"
wait_gone 60 $dpid
wait $dpid && pass "B: the waiting read completes" || fail "B: the waiting read failed"
ok "B: it read the flushed data" cmp pat $T/waited
ok "B: close" $VDISK close q.qcow2
ok "B: qemu-img check clean after kill and recovery" qemu-img check -q q.qcow2
qemu-img convert -O raw q.qcow2 $T/q.raw
ok "B: qemu-img reads the flushed data" cmp -n $((8 << 20)) pat $T/q.raw

# --- C: no recovery: I/O fails within seconds, device deleted -------------------
dev=$(VDISK_UBLK_RECOVERY=0 $VDISK open --via ublk c.img 16 2>$T/err) || fail "C: open: $(cat $T/err)"
ok "C: kill -9 the server" kill -9 $(server_pid $dev)
t0=$(date +%s)
timeout 20 dd if=$dev of=/dev/null bs=4k count=1 skip=7 iflag=direct 2>/dev/null
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && pass "C: I/O fails (dd exit $rc)" || fail "C: I/O after the kill: dd exit $rc"
[ $(($(date +%s) - t0)) -le 10 ] && pass "C: ... within seconds" || fail "C: took $(($(date +%s) - t0)) s"
gone_within 10 $dev && pass "C: device deleted" || fail "C: $dev still there"
ok "C: close cleans the record" $VDISK close c.img

# --- D: recovery on, nobody recovers: the watchdog deletes after its timeout ---
dev=$(VDISK_UBLK_RECOVER_TIMEOUT=4 $VDISK open --via ublk d.img 16 2>$T/err) || fail "D: open: $(cat $T/err)"
ok "D: kill -9 the server" kill -9 $(server_pid $dev)
dd if=$dev of=/dev/null bs=4k count=1 skip=9 iflag=direct 2>/dev/null &
dpid=$!
sleep 2
running $dpid && pass "D: I/O waits at first" || fail "D: I/O did not wait"
gone_within 30 $dev && pass "D: device deleted after the timeout" || fail "D: $dev still there"
wait_gone 20 $dpid
wait $dpid && fail "D: the waiting read succeeded" || pass "D: the waiting read failed"
ok "D: close cleans the record" $VDISK close d.img

# --- E: close of a dead server's device fails its waiting I/O --------------------
dev=$($VDISK open --via ublk e.img 16 2>$T/err) || fail "E: open: $(cat $T/err)"
ok "E: kill -9 the server" kill -9 $(server_pid $dev)
sleep 1
dd if=$dev of=/dev/null bs=4k count=1 skip=11 iflag=direct 2>/dev/null &
dpid=$!
sleep 1
ok "E: close" timeout 30 $VDISK close e.img
gone_within 5 $dev && pass "E: device deleted" || fail "E: $dev still there"
wait_gone 20 $dpid
wait $dpid && fail "E: the waiting read succeeded" || pass "E: the waiting read failed"

# --- F: close while fio runs ------------------------------------------------------
dev=$($VDISK open --via ublk f.qcow2 32 2>$T/err) || fail "F: open: $(cat $T/err)"
fio --eta=never --name=f --filename=$dev --direct=1 --ioengine=io_uring --iodepth=32 --rw=randrw --bs=4k \
    --time_based --runtime=60 --output=$T/fioF.out &
fpid=$!
sleep 2
ok "F: close while fio runs" timeout 60 $VDISK close f.qcow2
wait_gone 30 $fpid
running $fpid && { fail "F: fio still running after close"; kill -9 $fpid; } || pass "F: fio ended"
wait $fpid
gone_within 5 $dev && pass "F: device deleted" || fail "F: $dev still there"
ok "F: image clean after close under load" qemu-img check -q f.qcow2

# --- H: close --force of a live server: killed, device deleted, I/O fails ----
dev=$($VDISK open --via ublk h.img 16 2>$T/err) || fail "H: open: $(cat $T/err)"
pid=$(server_pid $dev)
fio --eta=never --name=h --filename=$dev --direct=1 --ioengine=io_uring --iodepth=32 --rw=randread --bs=4k \
    --time_based --runtime=60 --output=$T/fioH.out &
fpid=$!
sleep 2
ok "H: close --force" timeout 30 $VDISK close --force h.img
running $pid && fail "H: server $pid still running" || pass "H: server killed"
gone_within 10 $dev && pass "H: device deleted" || fail "H: $dev still there"
wait_gone 30 $fpid && pass "H: fio ended" || { fail "H: fio still running"; kill -9 $fpid; }
wait $fpid && fail "H: fio saw no error" || pass "H: fio saw its I/O fail"

# --- I: close while another process holds the disk open (DEL_DEV would wait for it) ---
dev=$($VDISK open --via ublk i.img 16 2>$T/err) || fail "I: open: $(cat $T/err)"
(exec 9<$dev; sleep 60) &
hpid=$!
sleep 1
ok "I: close returns while the disk is held open" timeout 30 $VDISK close i.img
gone_within 5 $dev && pass "I: $dev removed" || fail "I: $dev still there"
kill $hpid; wait $hpid 2>/dev/null
d=$($VDISK open --via ublk i.img 2>$T/err) && pass "I: opens again after the holder left ($d)" ||
    fail "I: reopen: $(cat $T/err)"
ok "I: close" $VDISK close i.img

# --- J: recover serves the file open checked, never one put in its place ----------
dev=$($VDISK open --via ublk j.img 16 2>$T/err) || fail "J: open: $(cat $T/err)"
dd if=/dev/urandom of=$T/jpat bs=1M count=4 2>/dev/null
ok "J: write 4 MiB and fsync" dd if=$T/jpat of=$dev bs=1M oflag=direct conv=fsync
ok "J: kill -9 the server" kill -9 $(server_pid $dev)
mv j.img j.orig && truncate -s 16M j.img
fails_with "J: recover of a replaced image is refused" "j.img: the file was replaced" \
    $VDISK recover j.img
fails_with "J: open of it does not take the device over" "j.img: the file was replaced" \
    $VDISK open j.img
[ -e $dev ] && pass "J: $dev stays, waiting" || fail "J: $dev went away"
mv j.orig j.img
out=$($VDISK recover j.img 2>$T/err) || fail "J: recover with the original back: $(cat $T/err)"
eq "J: recover gives the same device" "$out" "$dev"
ok "J: the device reads what was written" cmp -n $((4 << 20)) $T/jpat $dev
ok "J: close" $VDISK close j.img
ok "J: the image holds it" cmp -n $((4 << 20)) $T/jpat j.img

# --- G: remove and re-add 50 times ---------------------------------------------------
bad=0
for i in $(seq 50); do
    d=$($VDISK open --via ublk g.qcow2 8 2>$T/err) || { bad=$((bad + 1)); continue; }
    $VDISK close g.qcow2 2>>$T/err || bad=$((bad + 1))
done
eq "G: open and close 50 times" "$bad" 0
eq "G: no ublk device left" "$(ls /dev/ublkb* 2>/dev/null | wc -l)" 0
sleep 1
left=$(for p in /proc/[0-9]*; do case "$(cat $p/comm 2>/dev/null)" in vdisk-ublk*) echo ${p#/proc/} ;; esac; done)
eq "no vdisk-ublk process left" "$left" ""
finish
