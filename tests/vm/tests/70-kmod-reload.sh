#!/bin/bash
# SPDX-License-Identifier: MIT
# Load and unload vdisk.ko 20 times, with disks added, used and removed in
# between (and one left for the unload to clean up).
. /vm/lib.sh
truncate -s 8M a.img b.img
module_loaded vdisk && { rmmod vdisk || fail "unload before the rounds"; }
bad=0
for i in $(seq 1 20); do
    insmod /lib/modules/vdisk.ko || { fail "round $i: insmod"; bad=$((bad + 1)); break; }
    a=$(vdisk-ctl add -d -i a$i a.img) && b=$(vdisk-ctl add -i b$i b.img) || { bad=$((bad + 1)); break; }
    dd if=/dev/urandom of=/dev/vdisk$a bs=64k count=16 oflag=direct 2>/dev/null || bad=$((bad + 1))
    dd if=/dev/vdisk$b of=/dev/null bs=64k count=16 2>/dev/null || bad=$((bad + 1))
    vdisk-ctl remove $a || bad=$((bad + 1))
    rmmod vdisk || { fail "round $i: rmmod"; bad=$((bad + 1)); break; }
    [ -e /dev/vdisk$b ] && bad=$((bad + 1))
done
eq "20 load/add/use/remove/unload rounds" "$bad" 0
module_loaded vdisk && fail "vdisk still loaded" || pass "vdisk unloaded at the end"
finish
