#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Without ublk (this host's kernel has none): --via ublk says so clearly and
# leaves nothing behind, `recover` of a disk that is not open fails clearly,
# and auto still serves a qcow2 image by another way (nbd or fuse); close
# --force kills a server and cleans up after it.
# The ublk frontend itself is tested in the VM (tests/vm/tests/9*-ublk-*).
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
at_exit "$VDISK" close --all
[ -e /dev/ublk-control ] && skip_all no-ublk "this kernel has ublk: its absence cannot be checked"
fails_with "--via ublk without the driver" "ublk-control: No such file or directory .this kernel has no ublk driver" \
    "$VDISK" open --via ublk "$T/u.qcow2" 4
[ -e "$T/u.qcow2" ] && fail "failed open left $T/u.qcow2" || pass "failed open leaves no image"
eq "nothing recorded" "$("$VDISK" list | grep -c "$T")" 0
fails_with "recover of a disk that is not open" "not open" "$VDISK" recover "$T/u.qcow2"
ok "create a qcow2 image" qemu-img create -q -f qcow2 "$T/q.qcow2" 16M
dev=$("$VDISK" open "$T/q.qcow2") && pass "auto opens qcow2 without ublk" || fail "auto open"
eq "auto chose a way other than ublk" "$("$VDISK" list --json | grep -o '"via": "[a-z]*"' | grep -c ublk)" 0
case $dev in /dev/nbd* | /dev/loop*) pass "auto fell back to nbd or fuse ($dev)" ;; *) fail "auto gave '$dev'" ;; esac
ok "close" "$VDISK" close "$T/q.qcow2"
fails_with "recover of a disk served by another way" "only ublk devices" \
    bash -c "dev=\$('$VDISK' open '$T/q.qcow2') && '$VDISK' recover '$T/q.qcow2'; r=\$?; '$VDISK' close '$T/q.qcow2'; exit \$r"
# close --force (made for a hung ublk server) works for every way: the server is killed, then cleaned up
dev=$("$VDISK" open --via fuse "$T/q.qcow2") && pass "open --via fuse for close --force" || fail "open --via fuse"
pid=$("$VDISK" info --json "$T/q.qcow2" | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
ok "close --force" "$VDISK" close --force "$T/q.qcow2"
[ -n "$pid" ] && { [ ! -d /proc/$pid ] || grep -q '^State:.*Z' /proc/$pid/status; } && pass "close --force killed server $pid" || fail "server '$pid' still there"
eq "nothing recorded after close --force" "$("$VDISK" list | grep -c "$T")" 0
ok "image still sound after a forced close" qemu-img check -q "$T/q.qcow2"
finish
