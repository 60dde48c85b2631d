#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk resize on an open disk: a raw image open through loop grows live (the
# device follows, a mounted ext4 grows with resize2fs, data intact, e2fsck clean,
# the record and the image agree); a live shrink over data is refused; a qcow2 open
# through fuse grows the same way, resized by its server over its control socket
# (0600; a bad request is refused; the socket goes with the server). ~20 s.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"

img=$T/live.img
dev=$("$VDISK" open --via loop "$img" 64) && pass "loop: open a 64 MiB raw disk" || fail "loop: open"
ok "loop: mkfs.ext4" mkfs.ext4 -q "$dev"
ok "loop: mount" mount "$dev" "$MNT"
head -c 3000000 /dev/urandom >"$MNT/a" && echo hello >"$MNT/b" && pass "loop: write files" ||
    fail "loop: write files"
before=$(sums "$MNT")
ok "loop: resize the open image by +64M" "$VDISK" resize "$img" +64M
eq "loop: image grew" "$(stat -c %s "$img")" $((128 << 20))
eq "loop: device grew with it" "$(blockdev --getsize64 "$dev")" $((128 << 20))
eq "loop: vdisk list shows the new size" \
    "$("$VDISK" list --json | grep -o '"size": [0-9]*' | head -1)" "\"size\": $((128 << 20))"
if has_need cap-sys-resource; then
    ok "loop: resize2fs grows the mounted ext4" resize2fs "$dev"
else # ext4's online resize wants CAP_SYS_RESOURCE: grow it unmounted instead
    skip cap-sys-resource "online resize2fs of the mounted ext4 (the VM test does it); grown unmounted here"
    ok "loop: umount to grow the file system" umount "$MNT"
    ok "loop: e2fsck -f before an offline resize2fs" e2fsck -fy "$dev"
    ok "loop: resize2fs grows the unmounted ext4" resize2fs "$dev"
    ok "loop: mount again" mount "$dev" "$MNT"
fi
blocks=$(df -B1 --output=size "$MNT" | tail -1)
[ "$blocks" -gt $((100 << 20)) ] && pass "loop: the file system is larger ($blocks bytes)" ||
    fail "loop: file system size $blocks"
head -c 80000000 /dev/urandom >"$MNT/big" && pass "loop: 80 MB more fit in the grown file system" ||
    fail "loop: write into the grown space"
eq "loop: files intact" "$(sums "$MNT" | grep -v ' ./big$')" "$before"
ok "loop: resize by device name too" "$VDISK" resize "$dev" 160M
eq "loop: device at 160 MiB" "$(blockdev --getsize64 "$dev")" $((160 << 20))
fails_with "loop: live shrink refused" 'shrinking an open disk is refused' \
    "$VDISK" resize --shrink "$dev" 100M
eq "loop: refused shrink left the device" "$(blockdev --getsize64 "$dev")" $((160 << 20))
ok "loop: umount" umount "$MNT"
ok "loop: e2fsck -fn clean" e2fsck -fn "$dev"
ok "loop: close" "$VDISK" close "$img"
nothing_left "loop" "$img"
ok "loop: qemu-img check (raw: info) after close" qemu-img info -f raw "$img"

# a way whose server cannot be told yet: a clear refusal, nothing changed
# fuse: any format; the server resizes the image over its control socket (RUN_DIR/<id>.ctl)
q=$T/live.qcow2
qemu-img create -q -f qcow2 "$q" 64M
dev=$("$VDISK" open --via fuse "$q") && pass "fuse: open qcow2" || fail "fuse: open"
ctl=$(ls "$VDISK_RUN_DIR"/*.ctl 2>/dev/null | head -1)
eq "fuse: the server's control socket is private" "$(stat -c '%a %F' "$ctl" 2>&1)" "600 socket"
ok "fuse: mkfs.ext4" mkfs.ext4 -q "$dev"
ok "fuse: mount" mount "$dev" "$MNT"
head -c 3000000 /dev/urandom >"$MNT/a" && echo hello >"$MNT/b" || fail "fuse: write files"
before=$(sums "$MNT")
ok "fuse: resize the open qcow2 by +64M" "$VDISK" resize "$q" +64M
eq "fuse: device grew" "$(blockdev --getsize64 "$dev")" $((128 << 20))
eq "fuse: its FUSE file grew" "$(stat -c %s "$(ls "$VDISK_RUN_DIR"/*.fuse)")" $((128 << 20))
eq "fuse: vdisk list shows the new size" \
    "$("$VDISK" list --json | grep -o '"size": [0-9]*' | head -1)" "\"size\": $((128 << 20))"
if has_need cap-sys-resource; then
    ok "fuse: resize2fs grows the mounted ext4" resize2fs "$dev"
else
    skip cap-sys-resource "fuse: online resize2fs of the mounted ext4; grown unmounted here"
    ok "fuse: umount to grow the file system" umount "$MNT"
    ok "fuse: e2fsck -f before an offline resize2fs" e2fsck -fy "$dev"
    ok "fuse: resize2fs grows the unmounted ext4" resize2fs "$dev"
    ok "fuse: mount again" mount "$dev" "$MNT"
fi
head -c 80000000 /dev/urandom >"$MNT/big" && pass "fuse: 80 MB more fit in the grown file system" ||
    fail "fuse: write into the grown space"
eq "fuse: files intact" "$(sums "$MNT" | grep -v ' ./big$')" "$before"
eq "fuse: a bad control request is answered, not obeyed" \
    "$(python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"grow 1\n"); print(s.recv(99).decode().strip())' "$ctl")" \
    "error unknown request"
fails_with "fuse: live shrink refused" 'shrinking an open disk is refused' \
    "$VDISK" resize --shrink "$dev" 100M
ok "fuse: umount" umount "$MNT"
ok "fuse: e2fsck -fn clean" e2fsck -fn "$dev"
ok "fuse: close" "$VDISK" close "$q"
[ -e "$ctl" ] && fail "fuse: control socket left after close" || pass "fuse: control socket gone after close"
ok "fuse: qemu-img check clean" qemu-img check -q "$q"
eq "fuse: qemu-img info size" "$(qemu-img info --output=json "$q" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')" $((128 << 20))
finish
