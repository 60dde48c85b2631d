#!/bin/bash
# SPDX-License-Identifier: MIT
# 100,000 hostile control calls: random ioctls on /dev/vdisk-control and on
# the /dev/vdiskN nodes of the disks random ADDs make (bad pointers, structs
# cut by an unmapped page, wrong sizes and versions, fds of every kind, huge
# sizes), and random ublk control commands (legacy and ioctl-encoded
# URING_CMD opcodes with junk ublksrv_ctrl_cmd payloads, and ioctl()). Every
# disk or ublk device the fuzz makes is removed again; nothing hangs, and the
# harness fails the run on any oops, WARNING or hung task in the guest log.
# VMT_FUZZ_SEED and VMT_FUZZ_N (default 1 and 100000) change the run.
. /vm/lib.sh
[ -e /dev/ublk-control ] || { fail "ublk_drv not loaded"; finish; }
ok "load vdisk.ko" load_vdisk
seed=${VMT_FUZZ_SEED:-1}
n=${VMT_FUZZ_N:-100000}
truncate -s 32M back.img
t0=$(date +%s)
ok "vdisk.ko: $((n * 3 / 5)) random control and device ioctls (seed $seed)" \
    timeout 120 /vm/bin/ioctl-fuzz vdisk "$seed" $((n * 3 / 5)) back.img
cat "$T/.out"
ok "ublk: $((n * 2 / 5)) random control commands (seed $seed)" \
    timeout 120 /vm/bin/ioctl-fuzz ublk "$seed" $((n * 2 / 5))
cat "$T/.out"
echo "fuzz took $(($(date +%s) - t0)) s"
eq "no vdisk disk left" "$(ls /sys/block | grep -c '^vdisk')" 0
eq "no ublk device left" "$(ls /sys/class/ublk-char 2>/dev/null | wc -l)" 0
ok "vdisk.ko unloads" rmmod vdisk
finish
