#!/bin/bash
# SPDX-License-Identifier: MIT
# ublk with images that fail mid-I/O: a qcow2 whose L1 entry points past the
# end of the file (open succeeds, every read through it fails in the
# driver), and a raw image on a full file system (writes fail with ENOSPC in
# the engine). The block layer gets an error, never a hang; the device still
# closes cleanly and nothing is left behind.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
[ -e /dev/ublk-control ] || { fail "ublk_drv not loaded"; finish; }
mkdir -p small
at_exit "$VDISK close --all; umount $T/small"

# --- corrupt qcow2: L1[0] -> 1 TiB (aligned, so open accepts it) -----------------
ok "create h.qcow2" $VDISK create -f qcow2 h.qcow2 16M
dev=$($VDISK open --via ublk h.qcow2 2>$T/err) || fail "h.qcow2: open: $(cat $T/err)"
ok "h.qcow2: write 1 MiB" dd if=/dev/urandom of=$dev bs=1M count=1 oflag=direct conv=fsync
ok "h.qcow2: close" $VDISK close h.qcow2
l1=$((0x$(od -An -tx1 -j40 -N8 h.qcow2 | tr -d ' \n')))
[ $l1 -gt 0 ] && pass "h.qcow2: L1 table at $l1" || fail "h.qcow2: no L1 offset"
printf '\x80\x00\x01\x00\x00\x00\x00\x00' | dd of=h.qcow2 bs=1 seek=$l1 conv=notrunc 2>/dev/null
dev=$($VDISK open --via ublk h.qcow2 2>$T/err) && pass "h.qcow2: corrupt image opens ($dev)" ||
    fail "h.qcow2: open: $(cat $T/err)"
t0=$(date +%s)
fails "h.qcow2: a read through the bad L1 entry fails" timeout 30 dd if=$dev of=/dev/null bs=4k count=1 iflag=direct
fails "h.qcow2: a write through it fails" timeout 30 dd if=/dev/zero of=$dev bs=4k count=1 oflag=direct
[ $(($(date +%s) - t0)) -lt 20 ] && pass "h.qcow2: errors come at once" || fail "h.qcow2: errors took $(($(date +%s) - t0)) s"
ok "h.qcow2: the server says why in its log" grep -q "corrupt" $VDISK_RUN_DIR/*.ublk.log
ok "h.qcow2: close cleanly" timeout 60 $VDISK close h.qcow2
[ -e $dev ] && fail "h.qcow2: $dev left" || pass "h.qcow2: device deleted"

# --- raw image on a full file system --------------------------------------------
ok "mount a 4 MiB tmpfs" mount -t tmpfs -o size=4m tmpfs small
dev=$($VDISK open --via ublk --no-direct small/full.img 64 2>$T/err) || fail "full.img: open: $(cat $T/err)"
fails "full.img: writing 8 MiB to a 4 MiB file system fails" \
    timeout 60 dd if=/dev/urandom of=$dev bs=1M count=8 oflag=direct conv=fsync
ok "full.img: reads still work" timeout 30 dd if=$dev of=/dev/null bs=1M count=8 iflag=direct
ok "full.img: close cleanly" timeout 60 $VDISK close small/full.img
[ -e $dev ] && fail "full.img: $dev left" || pass "full.img: device deleted"
sleep 1
left=$(for p in /proc/[0-9]*; do case "$(cat $p/comm 2>/dev/null)" in vdisk-ublk*) echo ${p#/proc/} ;; esac; done)
eq "no vdisk-ublk process left" "$left" ""
finish
