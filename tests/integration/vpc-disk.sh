#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A VHD's life as a user lives it: a dynamic VHD through --via fuse and a fixed VHD through
# --via loop (one linear extent: the kernel does the I/O): open, mkfs, mount, write, umount,
# close, reopen, verify, fsck; then qemu-img reads the same files back (e2fsck on its raw copy,
# qemu-img compare). `vdisk open new.vhd SIZE` makes a dynamic VHD. About 20 s.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }

vhd_cycle() { # vhd_cycle NAME VIA IMG
    local name=$1 via=$2 img=$3 dev before
    rm -rf "${MNT:?}"/*
    dev=$("$VDISK" open --via "$via" "$img") && pass "$name: open --via $via" || { fail "$name: open: $dev"; return; }
    "$VDISK" list | grep -q "$dev .*$via .*vpc .*rw .*open .*$img" && pass "$name: list shows a vpc disk" ||
        fail "$name: list: $("$VDISK" list)"
    eq "$name: the device has the virtual size" "$(blockdev --getsize64 "$dev")" \
        "$(qemu-img info -U -f vpc --output=json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')"
    ok "$name: mkfs.ext4" mkfs.ext4 -q "$dev"
    ok "$name: mount" mount "$dev" "$MNT"
    head -c 9000000 /dev/urandom >"$MNT/big" && head -c 4097 /dev/urandom >"$MNT/odd" &&
        mkdir "$MNT/d" && echo "hello $name" >"$MNT/d/small" && pass "$name: write files" ||
        fail "$name: write files"
    before=$(sums "$MNT")
    ok "$name: umount" umount "$MNT"
    ok "$name: close" "$VDISK" close "$img"
    nothing_left "$name: closed" "$img"
    ok "$name: vdisk check is clean" "$VDISK" check "$img"

    dev=$("$VDISK" open --via "$via" "$img") && pass "$name: reopen" || { fail "$name: reopen"; return; }
    ok "$name: mount again" mount "$dev" "$MNT"
    eq "$name: files read back with the same checksums" "$(sums "$MNT")" "$before"
    ok "$name: umount again" umount "$MNT"
    ok "$name: e2fsck -fn on the device is clean" e2fsck -fn "$dev"
    ok "$name: close again" "$VDISK" close "$img"
    nothing_left "$name: closed again" "$img"

    # qemu-img, which nobody here wrote, reads the same file system
    rm -f "$T/q.raw"
    ok "$name: qemu-img converts the VHD" qemu-img convert -f vpc -O raw "$img" "$T/q.raw"
    ok "$name: e2fsck -fn on qemu-img's copy is clean" e2fsck -fn "$T/q.raw"
    ok "$name: qemu-img compare: the VHD equals qemu-img's copy" qemu-img compare -q -f vpc -F raw "$img" "$T/q.raw"
    ok "$name: debugfs on qemu-img's copy finds the file written" bash -c \
        "debugfs -R 'cat /d/small' '$T/q.raw' 2>/dev/null | grep -qx 'hello $name'"
}

# A dynamic VHD made by `vdisk open` from its name, served by FUSE.
dev=$("$VDISK" open --via fuse "$T/new.vhd" 64) && pass "open new.vhd 64 creates the image" || fail "open new.vhd: $dev"
eq "new.vhd is a dynamic VHD" "$("$VDISK" info "$T/new.vhd" 2>/dev/null | sed -n 's/^disk type: //p')" \
    "dynamic"
ok "close new.vhd" "$VDISK" close "$T/new.vhd"
vhd_cycle dynamic fuse "$T/new.vhd"

# A fixed VHD made by qemu-img, served by loop: the kernel reads and writes the file itself.
qemu-img create -q -f vpc -o subformat=fixed "$T/fixed.vhd" 64M
footer=$(tail -c 512 "$T/fixed.vhd" | md5sum)
dev=$("$VDISK" open "$T/fixed.vhd") && pass "fixed: open --via auto" || fail "fixed: open: $dev"
"$VDISK" list | grep -q " loop .*vpc .*$T/fixed.vhd" && pass "fixed: auto picks loop for a fixed VHD" ||
    fail "fixed: list: $("$VDISK" list)"
eq "fixed: loop covers the data, not the footer" "$(blockdev --getsize64 "$dev")" $(($(stat -c %s "$T/fixed.vhd") - 512))
ok "fixed: close" "$VDISK" close "$T/fixed.vhd"
vhd_cycle fixed loop "$T/fixed.vhd"
eq "fixed: the footer is untouched after the cycle" "$(tail -c 512 "$T/fixed.vhd" | md5sum)" "$footer"
# The NBD server serves a VHD too: qemu-io, as an NBD client, writes through it; qemu-img reads
# the file afterwards.
"$VDISK" create -f vpc "$T/nbd.vhd" 32M >/dev/null
"$VDISK" serve --socket "$T/s.sock" "$T/nbd.vhd" >/dev/null 2>"$T/serve.log" &
pid=$!
uri="nbd+unix:///?socket=$T/s.sock"
for _ in $(seq 100); do qemu-img info "$uri" >/dev/null 2>&1 && break; sleep 0.05; done
ok "nbd: qemu-io writes 5 MiB at 1 MiB - 512 through vdisk serve" \
    qemu-io -f raw -c "write -P 0x77 1048064 5M" -c "write -z 3M 4096" -c flush "$uri"
kill -TERM "$pid"
wait "$pid"
ok "nbd: qemu-io reads the pattern from the VHD file" \
    qemu-io -f vpc -c "read -P 0x77 1048064 2096640" -c "read -P 0 3M 4096" \
    -c "read -P 0x77 $(((3 << 20) + 4096)) 3141120" -c "read -P 0 0 1048064" "$T/nbd.vhd"
finish
