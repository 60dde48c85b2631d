#!/bin/bash
# SPDX-License-Identifier: MIT
# The user's cycle with the utility on vdisk.ko: open (creating), mkfs.ext4,
# mount, write, sync, umount, close, reopen, verify, e2fsck clean; list and
# info; auto picks kmod for raw images; the image lock holds while open.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
ok "load vdisk.ko" load_vdisk
mkdir -p m

dev=$($VDISK open --via kmod disk.img 100 2>$T/err) || fail "open --via kmod (creating): $(cat $T/err)"
case $dev in /dev/vdisk[0-9]*) pass "open prints $dev" ;; *) fail "open printed '$dev'" ;; esac
eq "image created at 100 MiB" "$(stat -c %s disk.img)" $((100 << 20))
eq "device size 100 MiB" "$(blockdev --getsize64 $dev)" $((100 << 20))
id=$($VDISK list | awk -v d=$dev '$0 ~ d {print}' | grep -o '[0-9a-f]\{16\}' | head -1)
[ -n "$id" ] && pass "list shows $dev (id $id)" || fail "list does not show $dev: $($VDISK list 2>&1)"
eq "sysfs serial is the instance id" "$(cat /sys/block/${dev#/dev/}/vdisk/serial)" "$id"
ok "info names kmod" sh -c "$VDISK info $dev | grep -q kmod"
fails "second open of the same image is refused" $VDISK open --via kmod disk.img
ln disk.img alias.img # another name, so only the image lock can refuse it
fails_with "the image lock (held through the driver) refuses another writer" "lock|in use|busy" \
    $VDISK open --via loop alias.img

ok "mkfs.ext4" mkfs.ext4 -q -F $dev
ok "mount" mount $dev m
dd if=/dev/urandom of=data bs=1M count=20 2>/dev/null
ok "write a file" cp data m/data
sync
fails_with "close while mounted is refused" "in use|busy" $VDISK close $dev
ok "umount" umount m
ok "close" $VDISK close $dev
[ -e $dev ] && fail "$dev still there after close" || pass "$dev gone after close"
eq "list empty after close" "$($VDISK list | grep -c vdisk)" 0
# the driver let go of the file: its lock is gone, another way can take it
d2=$($VDISK open --via loop alias.img 2>$T/err) && pass "image lock released on close ($d2)" ||
    fail "image still locked after close: $(cat $T/err)"
ok "close the loop disk" $VDISK close alias.img

dev=$($VDISK open disk.img 2>$T/err) || fail "reopen (auto): $(cat $T/err)"
case $dev in /dev/vdisk[0-9]*) pass "auto picks kmod for a raw image ($dev)" ;; *) fail "auto gave '$dev'" ;; esac
ok "mount again" mount $dev m
ok "data verified after reopen" cmp data m/data
ok "umount again" umount m
ok "e2fsck -fn clean" e2fsck -fn $dev
ok "close again" $VDISK close disk.img

dev=$($VDISK open -r --via kmod disk.img) || fail "open read-only"
eq "read-only open gives a read-only disk" "$(blockdev --getro $dev)" 1
ok "close read-only" $VDISK close $dev
finish
