#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# An encrypted disk's life as a user lives it, through each user way this
# machine has (fuse; nbd where the kernel has it): vdisk create -f luks, open
# --key-file, mkfs, mount, write, umount, close, reopen (--key-stdin), verify,
# fsck; then QEMU's LUKS1 image the same way, and qemu-img reading what the
# file system wrote. The files' plaintext is never in the image file. ~30 s.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
cd "$T" || exit 1
printf 'pass phrase' >k

# cycle VIA IMG: the user's cycle on the encrypted IMG
cycle() {
    local via=$1 img=$2 d="$1 $(basename "$2")" dev before
    rm -rf "${MNT:?}"/*
    dev=$("$VDISK" open --via "$via" --key-file k "$img") && pass "$d: open --key-file" ||
        fail "$d: open: $dev"
    [ -b "$dev" ] || { fail "$d: no block device"; return; }
    "$VDISK" list | grep -q "$dev .*$via .*luks .*rw .*open .*$img" && pass "$d: list shows it" ||
        fail "$d: list: $("$VDISK" list)"
    ok "$d: mkfs.ext4" mkfs.ext4 -q "$dev"
    ok "$d: mount" mount "$dev" "$MNT"
    head -c 3000000 /dev/urandom >"$MNT/big" && head -c 4097 /dev/urandom >"$MNT/odd" &&
        yes 'PLAINTEXT-IN-A-FILE-42' | head -c 1000000 >"$MNT/text" &&
        pass "$d: write files" || fail "$d: write files"
    before=$(sums "$MNT")
    ok "$d: umount" umount "$MNT"
    ok "$d: close" "$VDISK" close "$img"
    nothing_left "$d: close" "$img"
    grep -q 'PLAINTEXT-IN-A-FILE-42' "$img" && fail "$d: the plaintext is in the image" ||
        pass "$d: the plaintext is not in the image"
    dev=$(printf 'pass phrase\n' | "$VDISK" open --via "$via" --key-stdin "$img") &&
        pass "$d: reopen with --key-stdin" || fail "$d: reopen: $dev"
    ok "$d: mount again" mount "$dev" "$MNT"
    eq "$d: files read back with the same checksums" "$(sums "$MNT")" "$before"
    ok "$d: umount again" umount "$MNT"
    ok "$d: e2fsck -fn on the device is clean" e2fsck -fn "$dev"
    ok "$d: close again" "$VDISK" close "$dev"
    nothing_left "$d: close again" "$img"
}

vias=(fuse)
if has_need kernel-nbd; then vias+=(nbd); else skip kernel-nbd "the cycle --via nbd"; fi
for via in "${vias[@]}"; do
    rm -f "$T/v.luks" "$T/q.luks"
    ok "vdisk create -f luks" "$VDISK" create -f luks --key-file k -o argon2-memory=8192 \
        "$T/v.luks" 64M
    cycle "$via" "$T/v.luks"
    qemu_create_kdf -f luks --object secret,id=s0,file=k -o key-secret=s0,iter-time=10 \
        "$T/q.luks" 64M || { fail "qemu-img create -f luks: $(head -c 300 "$T/.qerr")"; continue; }
    cycle "$via" "$T/q.luks"
    rm -f "$T/q.raw"
    qemu-img convert --object secret,id=s0,file=k \
        --image-opts "driver=luks,key-secret=s0,file.filename=$T/q.luks" -O raw "$T/q.raw"
    ok "$via q.luks: e2fsck -fn of QEMU's plaintext is clean" e2fsck -fn "$T/q.raw"
done
fails_with "open with a wrong key: refused" "wrong key" \
    "$VDISK" open --via fuse --key-file /etc/hostname "$T/v.luks"
nothing_left "wrong key" "$T/v.luks"
finish
