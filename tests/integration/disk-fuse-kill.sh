#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A --via fuse server that dies: kill -9 (idle, and under a mounted file system) and
# an outside SIGTERM. list shows the disk dead, open refuses it, close cleans up (loop
# device unbound and free, FUSE mount gone, image lock released), and the image is
# whole. About 10 s.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
img=$T/k.img

# wait_gone PID: up to 5 s for PID to exit.
wait_gone() {
    for _ in $(seq 100); do proc_gone "$1" && return 0; sleep 0.05; done
    return 1
}

# dead_and_cleaned HOW DEV: the checks after the server died, then close.
dead_and_cleaned() {
    local how=$1 dev=$2 mp
    mp=$(rec_field "$img" mountpoint)
    "$VDISK" list | grep -q "$dev .*fuse .*dead .*$img" && pass "$how: list shows the disk dead" ||
        fail "$how: list: $("$VDISK" list)"
    "$VDISK" list --json | grep -q '"state": "dead"' && pass "$how: list --json says dead" ||
        fail "$how: list --json: $("$VDISK" list --json)"
    fails_with "$how: open of the dead disk's image says so" "server is gone; run 'vdisk close" \
        "$VDISK" open --via fuse "$img"
    if timeout 20 dd if="$dev" of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null; then
        fail "$how: reading the dead disk succeeded"
    else pass "$how: reading the dead disk fails (no hang)"; fi
    ok "$how: close cleans up" timeout 60 "$VDISK" close "$img"
    loop_free "$dev" && pass "$how: $dev is free again" || fail "$how: $dev still bound"
    [ ! -e "$mp" ] && ! grep -q " $mp " /proc/mounts && pass "$how: FUSE mount and file gone" ||
        fail "$how: $mp left"
    nothing_left "$how" "$img"
    ok "$how: qemu-io can write-lock the image" qemu-io -f raw -c "read 0 512" "$img"
    [ $# -lt 3 ] ||
        eq "$how: data written before the kill is in the image" "$(head -c 12 "$img")" "before kill"
}

"$VDISK" create "$img" 32 || fail "create"

# kill -9 of an idle server
dev=$("$VDISK" open --via fuse "$img") && pass "open" || fail "open"
echo "before kill" | dd of="$dev" bs=4k conv=sync oflag=direct status=none
pid=$(rec_field "$img" pid)
[ -n "$pid" ] && [ "$(cat "/proc/$pid/comm")" = vdisk-fuse ] && pass "record names the server ($pid)" ||
    fail "server pid '$pid'"
kill -9 "$pid"
wait_gone "$pid" && pass "kill -9: server gone" || fail "kill -9: server $pid survived"
dead_and_cleaned "kill -9" "$dev" check-data

# kill -9 under a mounted file system: close refuses until it is unmounted
dev=$("$VDISK" open --via fuse "$img") && pass "reopen after kill" || fail "reopen after kill"
mkfs.ext4 -q "$dev" && mount "$dev" "$MNT" && echo x >"$MNT/f" && sync && pass "mounted ext4" ||
    fail "mkfs/mount"
pid=$(rec_field "$img" pid)
kill -9 "$pid"
wait_gone "$pid" && pass "kill -9 mounted: server gone" || fail "kill -9 mounted: server survived"
fails_with "close refuses while the dead disk is mounted" "in use \(mounted\?\)" \
    timeout 60 "$VDISK" close "$img"
timeout 30 umount "$MNT" 2>/dev/null || timeout 30 umount -l "$MNT"
! grep -q " $MNT " /proc/mounts && pass "the dead disk unmounts" || fail "umount of the dead disk"
dead_and_cleaned "kill -9 mounted" "$dev"
dev=$("$VDISK" open --via fuse "$img") && mount "$dev" "$MNT" && pass "mount again after the kill" ||
    fail "mount after kill"
eq "the file synced before the kill is there" "$(cat "$MNT/f" 2>&1)" x
umount "$MNT"
ok "close" "$VDISK" close "$img"

# SIGTERM from outside: the server lets go of the image; close tidies up
dev=$("$VDISK" open --via fuse "$img") && pass "reopen for SIGTERM" || fail "reopen for SIGTERM"
pid=$(rec_field "$img" pid)
kill -TERM "$pid"
wait_gone "$pid" && pass "SIGTERM: server exits even with the loop device on it" ||
    fail "SIGTERM: server $pid still running"
dead_and_cleaned "SIGTERM" "$dev"
finish
