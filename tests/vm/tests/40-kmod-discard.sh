#!/bin/bash
# SPDX-License-Identifier: MIT
# Discard and write-zeroes reach the backing file: fstrim on a mounted
# vdisk shrinks the file's allocated blocks; blkdiscard -z reads back zeros.
. /vm/lib.sh
ok "load vdisk.ko" load_vdisk
truncate -s 256M img
n=$(vdisk-ctl add -d img) || fail "add"
dev=/dev/vdisk$n
[ "$(cat /sys/block/vdisk$n/queue/discard_max_bytes)" -gt 0 ] && pass "discard advertised" ||
    fail "discard not advertised"
ok "mkfs.ext4 (no discard)" mkfs.ext4 -q -F -E nodiscard $dev
mkdir m && mount $dev m
dd if=/dev/urandom of=m/big bs=1M count=100 2>/dev/null
sync
before=$(du -k img | cut -f1)
rm m/big && sync
ok "fstrim" fstrim m
after=$(du -k img | cut -f1)
[ $((before - after)) -gt $((90 * 1024)) ] && pass "fstrim freed the file's blocks ($before -> $after KiB)" ||
    fail "fstrim did not free blocks ($before -> $after KiB)"
umount m
ok "e2fsck -fn clean after trim" e2fsck -fn $dev

# write-zeroes (blkdiscard -z) on a range with data
dd if=/dev/urandom of=$dev bs=1M count=4 seek=200 oflag=direct 2>/dev/null
ok "blkdiscard -z (write zeroes)" blkdiscard -z -o $((200 << 20)) -l $((4 << 20)) $dev
ok "zeroed range reads zeros on the disk" cmp -n $((4 << 20)) $dev /dev/zero $((200 << 20)) 0
ok "zeroed range reads zeros in the file" cmp -n $((4 << 20)) img /dev/zero $((200 << 20)) 0
dd if=/dev/urandom of=$dev bs=1M count=4 seek=200 oflag=direct 2>/dev/null
b=$(du -k img | cut -f1)
ok "blkdiscard" blkdiscard -o $((200 << 20)) -l $((4 << 20)) $dev
a=$(du -k img | cut -f1)
[ $((b - a)) -ge 4000 ] && pass "blkdiscard punched a hole ($b -> $a KiB)" || fail "no hole punched ($b -> $a KiB)"
ok "remove" vdisk-ctl remove $n
finish
