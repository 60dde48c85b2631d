#!/bin/bash
# SPDX-License-Identifier: MIT
# A backing file on a file system that cannot punch holes (vfat): the first
# discard fails with EOPNOTSUPP and the disk stops advertising discard; a failed
# write-zeroes stops write-zeroes (the block layer then writes zero pages). The
# data stays intact throughout, for buffered and direct disks. On ext2 (ext4
# without extents) only zeroing a range fails: discard stays and still punches.
. /vm/lib.sh
ok "load vdisk.ko" load_vdisk
for m in fat vfat nls_cp437 nls_ascii; do
    module_loaded $m || fail "module $m not loaded"
done
mkdir -p f e
at_exit "umount $T/f; umount $T/e; losetup -D"
truncate -s 64M fat.img
ok "mkdosfs" mkdosfs fat.img
lo=$(losetup -f --show fat.img) || fail "losetup fat.img"
ok "mount vfat" mount -t vfat "$lo" f
# the premise: this file system refuses to punch holes and to zero ranges
truncate -s 1M f/probe
fails_with "vfat: fallocate --punch-hole is EOPNOTSUPP" "unsupported|not supported" \
    fallocate -p -o 0 -l 4096 f/probe
fails_with "vfat: fallocate --zero-range is EOPNOTSUPP" "unsupported|not supported" \
    fallocate -z -o 0 -l 4096 f/probe

for mode in buffered direct; do
    flag=; [ $mode = direct ] && flag=-d
    dd if=/dev/urandom of=pat bs=1M count=8 2>/dev/null
    cp pat f/$mode.img
    n=$(vdisk-ctl add $flag f/$mode.img) || { fail "$mode: add"; continue; }
    q=/sys/block/vdisk$n/queue
    [ "$(cat $q/discard_max_bytes)" -gt 0 ] && pass "$mode: discard advertised at first" ||
        fail "$mode: discard not advertised at first"
    [ "$(cat $q/write_zeroes_max_bytes)" -gt 0 ] && pass "$mode: write-zeroes advertised at first" ||
        fail "$mode: write-zeroes not advertised at first"

    # the kernel reports a discard the device refused as done, so only the limit tells
    blkdiscard -o $((1 << 20)) -l $((1 << 20)) /dev/vdisk$n
    eq "$mode: discard no longer advertised" "$(cat $q/discard_max_bytes)" 0
    fails_with "$mode: the next blkdiscard is refused up front" "not supported" \
        blkdiscard -o $((2 << 20)) -l $((1 << 20)) /dev/vdisk$n
    ok "$mode: data intact in the file after the failed discards" cmp pat f/$mode.img
    ok "$mode: data intact on the disk" cmp pat /dev/vdisk$n

    # write-zeroes: ZERO_RANGE fails, the limit goes, the kernel falls back to zero pages
    ok "$mode: blkdiscard -z (zero-out) succeeds" blkdiscard -z -o $((4 << 20)) -l $((1 << 20)) /dev/vdisk$n
    eq "$mode: write-zeroes no longer advertised" "$(cat $q/write_zeroes_max_bytes)" 0
    ok "$mode: zeroed range reads zeros on the disk" cmp -n $((1 << 20)) /dev/vdisk$n /dev/zero $((4 << 20)) 0
    ok "$mode: zeroed range reads zeros in the file" cmp -n $((1 << 20)) f/$mode.img /dev/zero $((4 << 20)) 0
    ok "$mode: the rest is intact (before)" cmp -n $((4 << 20)) pat f/$mode.img
    ok "$mode: the rest is intact (after)" cmp pat f/$mode.img $((5 << 20)) $((5 << 20))
    ok "$mode: remove" vdisk-ctl remove $n
done

truncate -s 64M ext2.img
ok "mkfs ext2" mkfs.ext4 -q -F -t ext2 ext2.img
lo2=$(losetup -f --show ext2.img) || fail "losetup ext2.img"
ok "mount ext2 (the ext4 driver, no extents)" mount -t ext2 "$lo2" e
truncate -s 1M e/probe
ok "ext2: fallocate --punch-hole works" fallocate -p -o 0 -l 4096 e/probe
fails_with "ext2: fallocate --zero-range is EOPNOTSUPP" "unsupported|not supported" \
    fallocate -z -o 0 -l 4096 e/probe
cp pat e/d.img
n=$(vdisk-ctl add e/d.img) || fail "ext2: add"
q=/sys/block/vdisk$n/queue
ok "ext2: blkdiscard -z (zero-out) succeeds" blkdiscard -z -o $((4 << 20)) -l $((1 << 20)) /dev/vdisk$n
eq "ext2: write-zeroes no longer advertised" "$(cat $q/write_zeroes_max_bytes)" 0
[ "$(cat $q/discard_max_bytes)" -gt 0 ] && pass "ext2: discard still advertised" ||
    fail "ext2: discard no longer advertised"
ok "ext2: zeroed range reads zeros in the file" cmp -n $((1 << 20)) e/d.img /dev/zero $((4 << 20)) 0
sync
b=$(du -k e/d.img | cut -f1)
ok "ext2: blkdiscard" blkdiscard -o $((1 << 20)) -l $((2 << 20)) /dev/vdisk$n
a=$(du -k e/d.img | cut -f1)
[ $((b - a)) -ge 2000 ] && pass "ext2: blkdiscard punched a hole ($b -> $a KiB)" ||
    fail "ext2: no hole punched ($b -> $a KiB)"
ok "ext2: data before the hole intact" cmp -n $((1 << 20)) pat e/d.img
ok "ext2: data after the zeroes intact" cmp pat e/d.img $((5 << 20)) $((5 << 20))
ok "ext2: remove" vdisk-ctl remove $n
finish
