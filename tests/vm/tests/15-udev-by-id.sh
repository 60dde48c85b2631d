#!/bin/bash
# SPDX-License-Identifier: MIT
# The udev rule vdisk installs (kmod/99-vdisk.rules), run by udevadm test on a
# vdisk.ko disk that `vdisk open` made: /dev/disk/by-id/vdisk-<instance id>,
# group disk, mode 0660; the control device root-only.
. /vm/lib.sh
ok "load vdisk.ko" load_vdisk
[ -x /bin/vdisk ] || { fail "no /bin/vdisk in the guest"; finish; }
dev=$(vdisk open --via kmod -f raw disk.img 16) && pass "vdisk open --via kmod -> $dev" || { fail "open"; finish; }
id=$(vdisk info --json disk.img | sed -n 's/.*"id": "\([0-9a-f]*\)".*/\1/p')
eq "sysfs serial is the instance id" "$(cat /sys/block/${dev#/dev/}/vdisk/serial)" "$id"
grep -qs '^disk:' /etc/group || echo 'disk:x:6:' >>/etc/group # as on Debian
udevadm test "/sys/block/${dev#/dev/}" >udev.out 2>&1
grep -q "^DEVLINKS=.*/dev/disk/by-id/vdisk-$id" udev.out && pass "udev rule: /dev/disk/by-id/vdisk-$id" ||
    fail "no by-id link from udevadm test: $(grep -E 'DEVLINKS|rules|99-vdisk' udev.out | head -10)"
grep -q "99-vdisk.rules:[0-9]* GROUP 6$" udev.out && grep -q "99-vdisk.rules:[0-9]* MODE 0660$" udev.out &&
    pass "udev rule: the disk is group disk, mode 0660" || fail "disk group/mode: $(grep -E 'GROUP|MODE' udev.out)"
udevadm test /sys/class/misc/vdisk-control >ctl.out 2>&1
grep -q "99-vdisk.rules:[0-9]* MODE 0600$" ctl.out && grep -q "99-vdisk.rules:[0-9]* OWNER 0$" ctl.out &&
    pass "udev rule: vdisk-control root-only 0600" || fail "control mode: $(grep -E 'OWNER|MODE' ctl.out)"
ok "vdisk close" vdisk close disk.img
finish
