#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Without vdisk.ko (the host here cannot load modules): --via kmod says so
# clearly and leaves nothing behind, and auto falls back to loop for raw.
# The driver itself is tested in the VM (tests/vm/tests/*kmod*).
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
at_exit "$VDISK" close --all
[ -e /dev/vdisk-control ] && skip_all no-vdisk-ko "vdisk.ko is loaded here: its absence cannot be checked"
fails_with "--via kmod without the module" "kmod: not available" "$VDISK" open --via kmod "$T/k.img" 4
[ -e "$T/k.img" ] && fail "failed open left $T/k.img" || pass "failed open leaves no image"
eq "nothing recorded" "$("$VDISK" list | grep -c "$T")" 0
dev=$("$VDISK" open "$T/a.img" 4) && pass "auto opens a raw image without kmod" || fail "auto open"
case $dev in /dev/loop*) pass "auto fell back to loop ($dev)" ;; *) fail "auto gave '$dev'" ;; esac
ok "close" "$VDISK" close "$T/a.img"
finish
