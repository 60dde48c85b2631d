#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A VMDK disk's life as a user lives it: sparse, split and stream images
# through --via fuse (and a split one through --via nbd where the kernel has it), a monolithicFlat image through --via loop (its one flat
# extent is a linear range of a file): create, open, mkfs, mount, write,
# umount, close, qemu-img check, reopen, verify, fsck, close.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }

cycle() { # cycle NAME VIA SUBFORMAT
    local name=$1 via=$2 sub=$3 img=$T/$1/disk.vmdk dev before
    mkdir -p "$T/$name"
    rm -rf "${MNT:?}"/*
    ok "$name: create" "$VDISK" create -f vmdk -o subformat="$sub" "$img" 96M
    dev=$("$VDISK" open --via "$via" "$img") && pass "$name: open --via $via" ||
        { fail "$name: open --via $via: $dev"; return; }
    eq "$name: device has the virtual size" "$(blockdev --getsize64 "$dev")" $((96 << 20))
    "$VDISK" list | grep -q "$dev .*$via .*vmdk .*rw .*open" && pass "$name: list shows it" ||
        fail "$name: list: $("$VDISK" list)"
    ok "$name: mkfs.ext4" mkfs.ext4 -q "$dev"
    ok "$name: mount" mount "$dev" "$MNT"
    head -c 7000000 /dev/urandom >"$MNT/big" && head -c 4097 /dev/urandom >"$MNT/odd" &&
        mkdir "$MNT/d" && echo "hello $name" >"$MNT/d/small" && pass "$name: write files" ||
        fail "$name: write files"
    before=$(sums "$MNT")
    sync
    ok "$name: umount" umount "$MNT"
    ok "$name: close" "$VDISK" close "$img"
    nothing_left "$name: close" "$img"
    ok "$name: qemu-img check clean" qemu-img check -q "$img"
    qemu-img convert -f vmdk -O raw "$img" "$T/$name.raw"
    ok "$name: e2fsck -fn of what qemu-img reads" e2fsck -fn "$T/$name.raw"
    rm -f "$T/$name.raw"
    dev=$("$VDISK" open --via "$via" "$img") && pass "$name: reopen" || { fail "$name: reopen"; return; }
    ok "$name: mount again" mount "$dev" "$MNT"
    eq "$name: files read back with the same checksums" "$(sums "$MNT")" "$before"
    ok "$name: umount again" umount "$MNT"
    ok "$name: e2fsck -fn on the device" e2fsck -fn "$dev"
    ok "$name: close again" "$VDISK" close "$img"
    nothing_left "$name: closed" "$img"
}

cycle sparse fuse monolithicSparse
cycle split fuse twoGbMaxExtentSparse
cycle stream fuse streamOptimized
cycle flat loop monolithicFlat
if has_need kernel-nbd; then
    cycle nbd nbd twoGbMaxExtentSparse
else
    skip kernel-nbd "no kernel NBD client here: the --via nbd cycle of a VMDK cannot run"
fi

# the flat image's loop device is bound to the flat extent, not to the descriptor
img=$T/flat/disk.vmdk
dev=$("$VDISK" open --via loop "$img") && pass "flat: open --via loop again" || fail "flat: open"
if [ -b "$dev" ]; then
    eq "flat: loop's backing file is the flat extent" \
        "$(cat "/sys/block/${dev#/dev/}/loop/backing_file")" "$T/flat/disk-flat.vmdk"
    eq "flat: at offset 0" "$(cat "/sys/block/${dev#/dev/}/loop/offset")" 0
    ok "flat: close" "$VDISK" close "$img"
fi
fails_with "sparse: --via loop refused (not linear)" "--via loop serves images whose data lies as it is in one file" \
    "$VDISK" open --via loop "$T/sparse/disk.vmdk"
nothing_left "all closed" "$img"
finish
