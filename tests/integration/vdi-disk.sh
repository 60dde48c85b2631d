#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A VDI disk's life as a user lives it: a dynamic VDI through --via fuse (open
# creating it, mkfs, mount, write, fstrim shrinking the file, close, reopen,
# verify, fsck), a static VDI through --via loop (the kernel serves its data
# region; the header stays as it was), and a differencing VDI on top of it
# through fuse, the parent left unchanged. qemu-img check after each.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }

# life VIA IMG NAME: mkfs, write, close, reopen, verify, fsck; sets BEFORE
life() {
    local via=$1 img=$2 name=$3 dev
    rm -rf "${MNT:?}"/*
    dev=$("$VDISK" open --via "$via" "$img" 64) && pass "$name: open" || { fail "$name: open: $dev"; return; }
    eq "$name: device has the virtual size" "$(blockdev --getsize64 "$dev")" $((64 << 20))
    ok "$name: mkfs.ext4" mkfs.ext4 -q "$dev"
    ok "$name: mount" mount "$dev" "$MNT"
    head -c 5000000 /dev/urandom >"$MNT/big" && head -c 4097 /dev/urandom >"$MNT/odd" &&
        echo "hello $name" >"$MNT/small" && pass "$name: write files" || fail "$name: write files"
    BEFORE=$(sums "$MNT")
    ok "$name: umount" umount "$MNT"
    ok "$name: close" "$VDISK" close "$img"
    nothing_left "$name: close" "$img"
    ok "$name: qemu-img check clean" qemu-img check -q "$img"
    dev=$("$VDISK" open --via "$via" "$img") && pass "$name: reopen" || fail "$name: reopen"
    ok "$name: mount again" mount "$dev" "$MNT"
    eq "$name: files read back" "$(sums "$MNT")" "$BEFORE"
    ok "$name: umount again" umount "$MNT"
    ok "$name: e2fsck -fn on the device" e2fsck -fn "$dev"
    ok "$name: close again" "$VDISK" close "$img"
}

# A dynamic VDI through FUSE, made by open from its name; fstrim gives blocks back.
img=$T/dyn.vdi
life fuse "$img" "fuse dynamic"
qemu-img info "$img" | grep -q '^file format: vdi' && pass "open made a VDI image from the name" ||
    fail "not a vdi: $(qemu-img info "$img" | head -3)"
dev=$("$VDISK" open --via fuse "$img") && mount "$dev" "$MNT" &&
    head -c 20000000 /dev/urandom >"$MNT/trimme" && sync
full=$(stat -c %s "$img")
rm -f "$MNT/trimme" && sync
ok "fuse dynamic: fstrim" fstrim "$MNT"
eq "fuse dynamic: files intact after fstrim" "$(sums "$MNT")" "$BEFORE"
umount "$MNT"
"$VDISK" close "$img"
[ $(($(stat -c %s "$img") + 15000000)) -le "$full" ] &&
    pass "fstrim freed whole blocks: the file shrank ($full -> $(stat -c %s "$img"))" ||
    fail "fstrim: $full -> $(stat -c %s "$img")"
ok "after fstrim: qemu-img check clean" qemu-img check -q "$img"
qemu-img convert -O raw "$img" "$T/dyn.raw" && e2fsck -fn "$T/dyn.raw" >/dev/null 2>&1 &&
    pass "qemu-img reads a clean file system out of it" || fail "e2fsck on qemu-img's copy"

# A static VDI through loop: linear, the data region at the header's offset.
img=$T/static.vdi
ok "create a static VDI" "$VDISK" create -f vdi -o static=on "$img" 64M
hdrsum() { { head -c 408 "$1"; tail -c +425 "$1" | head -c 600; } | md5sum; } # all but the modification UUID
hdr=$(hdrsum "$img")
life loop "$img" "loop static"
eq "loop static: the header is as it was (but the modification UUID)" "$(hdrsum "$img")" "$hdr"
qemu-img convert -O raw "$img" "$T/static.raw" && e2fsck -fn "$T/static.raw" >/dev/null 2>&1 &&
    pass "loop static: qemu-img reads the file system loop wrote" || fail "loop static: e2fsck on qemu-img's copy"
7zz x -so -tvdi "$img" 2>/dev/null | cmp -s - "$T/static.raw" &&
    pass "loop static: 7-Zip reads what qemu-img reads" || fail "loop static: 7-Zip differs"

dev=$("$VDISK" open "$img") && pass "static: open picks a way by itself" || fail "static: open auto: $dev"
"$VDISK" list | grep -q "$dev .*loop .*vdi .*rw" && pass "static: auto serves it with loop (linear, data after the header)" ||
    fail "static auto: $("$VDISK" list)"
ok "static: close the auto-opened disk" "$VDISK" close "$img"
dev=$("$VDISK" open "$T/dyn.vdi") && "$VDISK" list | grep -q "$dev .*\(nbd\|fuse\|ublk\) .*vdi" &&
    pass "dynamic: auto serves it from user space" || fail "dynamic auto: $("$VDISK" list)"
"$VDISK" close "$T/dyn.vdi"

# A differencing VDI on the static one, through FUSE: the parent stays as it was.
ok "create a differencing VDI" "$VDISK" create -f vdi -o backing_file=static.vdi "$T/child.vdi"
psum=$(md5sum <"$img")
dev=$("$VDISK" open --via fuse "$T/child.vdi") && pass "child: open" || fail "child: open: $dev"
ok "child: mount the parent's file system" mount "$dev" "$MNT"
eq "child: the parent's files" "$(sums "$MNT")" "$BEFORE"
echo child >"$MNT/child-file" && rm "$MNT/big" && sync
after=$(sums "$MNT")
ok "child: umount" umount "$MNT"
ok "child: e2fsck -fn" e2fsck -fn "$dev"
ok "child: close" "$VDISK" close "$T/child.vdi"
eq "child: the parent was not written" "$(md5sum <"$img")" "$psum"
dev=$("$VDISK" open -r --via fuse "$T/child.vdi") && mount -o ro,noload "$dev" "$MNT" &&
    eq "child: the changes read back" "$(sums "$MNT")" "$after"
umount "$MNT"
"$VDISK" close "$T/child.vdi"
nothing_left "child: closed" "$T/child.vdi"

# A differencing VDI whose header names no parent, the parent far away: -o backing_file= at open.
mkdir -p "$T/far" "$T/vm"
mv "$img" "$T/far/static.vdi"
mv "$T/child.vdi" "$T/vm/child.vdi"
dd if=/dev/zero of="$T/vm/child.vdi" bs=1 seek=84 count=256 conv=notrunc status=none
fails_with "no parent name, none found: open refused" "give it with -o backing_file=" \
    "$VDISK" open -r --via fuse "$T/vm/child.vdi"
dev=$("$VDISK" open -r --via fuse -o backing_file=../far/static.vdi "$T/vm/child.vdi") &&
    mount -o ro,noload "$dev" "$MNT" && eq "open -o backing_file=: the child's files" "$(sums "$MNT")" "$after" ||
    fail "open -o backing_file=: $dev"
umount "$MNT"
ok "close it" "$VDISK" close "$T/vm/child.vdi"
finish
