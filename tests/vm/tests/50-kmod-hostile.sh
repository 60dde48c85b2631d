#!/bin/bash
# SPDX-License-Identifier: MIT
# Hostile control calls: each is refused with an error, never an oops (the
# harness checks the guest log), then random ioctls with random bytes.
. /vm/lib.sh
ok "load vdisk.ko" load_vdisk
truncate -s 16M img
mkdir d
vdisk-ctl hostile img d
[ $? -eq 0 ] || FAILS=$((FAILS + 1))
vdisk-ctl fuzz 1 20000 || fail "fuzz"
eq "no disk left behind" "$(vdisk-ctl list)" ""
ok "unload" rmmod vdisk
finish
