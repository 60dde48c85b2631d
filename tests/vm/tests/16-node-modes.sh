#!/bin/bash
# SPDX-License-Identifier: MIT
# Node modes of every kernel way, with no udev to fix them: the disk's block
# device is root:disk 0660 (vdisk.ko, ublk, NBD, loop), the control nodes
# root 0600 (/dev/vdisk-control, a ublk server's /dev/ublkcN); the run
# directory 0700, its records 0600. About 20 s.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
module_loaded vdisk || at_exit "rmmod vdisk" # as found: later tests' auto picks the way it gives
ok "load vdisk.ko" load_vdisk
at_exit "$VDISK close --all"
eq "/dev/vdisk-control: root 0600" "$(stat -c '%u:%g %a' /dev/vdisk-control)" "0:0 600"
for via in kmod ublk nbd loop; do
    truncate -s 16M $via.img
    dev=$($VDISK open --via $via $via.img 2>$T/err) || { fail "$via: open: $(cat $T/err)"; continue; }
    eq "$via: $dev is root:disk 0660" "$(stat -c '%u:%g %a %F' $dev)" "0:6 660 block special file"
    if [ $via = ublk ]; then
        c=${dev/ublkb/ublkc}
        eq "$via: $c (the server's control node) is root 0600" "$(stat -c '%u:%g %a' $c)" "0:0 600"
    fi
    eq "$via: run dir 0700" "$(stat -c %a "$VDISK_RUN_DIR")" 700
    eq "$via: records 0600" "$(stat -c %a "$VDISK_RUN_DIR"/*.rec | sort -u)" 600
    ok "$via: close" $VDISK close $via.img
done
finish
