#!/bin/bash
# SPDX-License-Identifier: MIT
# 16 disks at once, each with its own data written and read back in
# parallel; then all closed.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
ok "load vdisk.ko" load_vdisk
devs=()
for i in $(seq 0 15); do
    d=$($VDISK open --via kmod d$i.img 8M 2>$T/err) || fail "open d$i.img: $(cat $T/err)"
    devs+=("$d")
done
eq "16 disks listed" "$($VDISK list | grep -c /dev/vdisk)" 16
eq "16 distinct devices" "$(printf '%s\n' "${devs[@]}" | sort -u | wc -l)" 16
head -c $((4 << 20)) /dev/urandom >base
for i in $(seq 0 15); do
    ({ echo "disk $i"; cat base; } | head -c $((4 << 20)) >p$i && dd if=p$i of=${devs[$i]} bs=64k oflag=direct 2>/dev/null &&
        cmp p$i ${devs[$i]} && cmp p$i d$i.img) >$T/r$i 2>&1 &
done
wait
bad=0
for i in $(seq 0 15); do cmp -s p$i d$i.img || bad=$((bad + 1)); done
eq "each of 16 disks holds its own data, in its own file" "$bad" 0
for i in $(seq 0 15); do $VDISK close d$i.img || fail "close d$i.img"; done
eq "all closed" "$($VDISK list | grep -c /dev/vdisk)" 0
eq "no vdisk block devices left" "$(ls /sys/block | grep -c vdisk)" 0
finish
