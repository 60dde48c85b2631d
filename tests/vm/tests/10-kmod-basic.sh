#!/bin/bash
# SPDX-License-Identifier: MIT
# vdisk.ko through its control device: add, the Linux answers to the seed's
# IOCTLs (size, geometry, read-only, removable, major:minor, serial,
# backing_file), node modes, O_DIRECT|O_SYNC writes reaching the file, and
# remove refused while open or mounted.
. /vm/lib.sh
ok "load vdisk.ko" load_vdisk
eq "/dev/vdisk-control is root-only 0600" "$(stat -c %a:%u /dev/vdisk-control)" "600:0"

truncate -s 64M img
n=$(vdisk-ctl add -i abc123 img) || fail "add img"
dev=/dev/vdisk$n
eq "first disk is vdisk0" "$n" 0
[ -b "$dev" ] && pass "$dev is a block device" || fail "$dev missing"
eq "node mode 0660" "$(stat -c %a $dev)" 660
eq "capacity (BLKGETSIZE64)" "$(blockdev --getsize64 $dev)" $((64 << 20))
eq "logical block size 512" "$(blockdev --getss $dev)" 512
eq "read-only flag clear" "$(blockdev --getro $dev)" 0
eq "not removable" "$(cat /sys/block/vdisk$n/removable)" 0
eq "geometry (HDIO_GETGEO)" "$(vdisk-ctl geo $dev)" "64 32 64"
eq "sysfs serial is the instance id" "$(cat /sys/block/vdisk$n/vdisk/serial)" abc123
eq "sysfs backing_file" "$(cat /sys/block/vdisk$n/vdisk/backing_file)" "$T/img"
mm=$(printf '%d:%d' 0x$(stat -c %t $dev) 0x$(stat -c %T $dev))
eq "major:minor of the node matches sysfs" "$mm" "$(cat /sys/block/vdisk$n/dev)"
eq "query reports major:minor" "$(vdisk-ctl query $n | sed -n 's/^dev=//p')" "$mm"
eq "query reports the id" "$(vdisk-ctl query $n | sed -n 's/^id=//p')" abc123
eq "list shows it" "$(vdisk-ctl list)" "$n"

# Buffered write through the disk, then flush: the file has it.
dd if=/dev/urandom of=pat bs=1M count=4 2>/dev/null
ok "write 4 MiB at 1 MiB" dd if=pat of=$dev bs=1M seek=1 conv=fsync
ok "file holds what was written" cmp -n $((4 << 20)) pat img 0 $((1 << 20))
ok "disk reads it back" cmp -n $((4 << 20)) pat $dev 0 $((1 << 20))
# O_DIRECT|O_SYNC to the disk, read from the file with O_DIRECT (another path).
dd if=/dev/urandom of=pat2 bs=4k count=64 2>/dev/null
ok "O_DIRECT|O_SYNC write to the disk" dd if=pat2 of=$dev bs=4k seek=4096 oflag=direct,sync
ok "read back from the file with O_DIRECT" dd if=img of=got bs=4k skip=4096 count=64 iflag=direct
ok "the file has the O_DIRECT|O_SYNC data" cmp pat2 got

# FUA/flush reach the medium: with a buffered disk, an O_DIRECT|O_SYNC write
# must be on the scratch disk itself (read raw from /dev/vda at the file's
# physical block, bypassing every cache) right after dd returns.
ok "remove" vdisk-ctl remove $n
dd if=/dev/zero of=fua.img bs=1M count=8 conv=fsync 2>/dev/null
n=$(vdisk-ctl add -i fua fua.img) || fail "add fua.img (buffered)"
dd if=/dev/urandom of=pat3 bs=4k count=1 2>/dev/null
phys=$(filefrag -v -b4096 fua.img | awk '$1 == "0:" { sub(/\.\..*/, "", $4); print $4 }')
[ -n "$phys" ] && pass "fua.img starts at physical block $phys" || fail "filefrag gave nothing"
# control: without O_SYNC the data sits in the page cache, not yet on the medium
dd if=pat3 of=/dev/vdisk$n bs=4k seek=200 count=1 oflag=direct 2>/dev/null
dd if=/dev/vda of=raw2 bs=4k skip=$((phys + 200)) count=1 iflag=direct 2>/dev/null
cmp -s pat3 raw2 && fail "control: data on the medium without O_SYNC (test cannot tell)" ||
    pass "control: without O_SYNC the medium does not have it yet"
ok "O_DIRECT|O_SYNC 4k write at block 100 (buffered disk)" \
    dd if=pat3 of=/dev/vdisk$n bs=4k seek=100 count=1 oflag=direct,sync
ok "raw read of /dev/vda at the file's block" \
    dd if=/dev/vda of=raw3 bs=4k skip=$((phys + 100)) count=1 iflag=direct
ok "the O_DIRECT|O_SYNC data is on the medium" cmp pat3 raw3
ok "remove fua disk" vdisk-ctl remove $n
n=$(vdisk-ctl add -i abc123 img) || fail "re-add img"

# Remove refused while open, then while mounted.
exec 3<$dev
fails_with "remove while open fails (EBUSY)" "busy" vdisk-ctl remove $n
eq "query counts the opener" "$(vdisk-ctl query $n | sed -n 's/^openers=//p')" 1
exec 3<&-
mkfs.ext4 -q -F $dev && mkdir -p m && mount $dev m
fails_with "remove while mounted fails (EBUSY)" "busy" vdisk-ctl remove $n
umount m
ok "remove when closed" vdisk-ctl remove $n
[ -e $dev ] && fail "$dev still exists after remove" || pass "$dev gone after remove"
fails_with "remove twice fails (ENXIO)" "No such device" vdisk-ctl remove $n

# Read-only, removable, 4096-byte blocks, direct I/O.
n=$(vdisk-ctl add -r -R -b 4096 -d -i ro img) || fail "add read-only"
dev=/dev/vdisk$n
eq "read-only flag set (BLKROGET)" "$(blockdev --getro $dev)" 1
eq "removable" "$(cat /sys/block/vdisk$n/removable)" 1
eq "logical block size 4096" "$(blockdev --getss $dev)" 4096
fails "write to a read-only disk fails" dd if=pat of=$dev bs=4k count=1 oflag=direct
ok "read-only disk reads what the file holds" cmp img $dev
ok "remove read-only disk" vdisk-ctl remove $n

# A block device as the backing store (here a loop device over a file).
truncate -s 32M bdev.img
lo=$(losetup -f --show bdev.img) || fail "losetup"
n=$(vdisk-ctl add -d -i onloop $lo) || fail "add on a block device"
eq "disk on a block device has its size" "$(blockdev --getsize64 /dev/vdisk$n)" $((32 << 20))
ok "write through vdisk on a block device" dd if=pat of=/dev/vdisk$n bs=1M oflag=direct
ok "the loop device's file has it" cmp pat bdev.img 0 0 -n $((4 << 20))
eq "backing_file names the block device" "$(cat /sys/block/vdisk$n/vdisk/backing_file)" "$lo"
ok "remove disk on a block device" vdisk-ctl remove $n
losetup -d $lo

# Unload with a disk present cleans it up; unload while open is refused.
n=$(vdisk-ctl add img) || fail "add img before rmmod"
dev=/dev/vdisk$n
exec 3<$dev
fails "rmmod while a disk is open is refused" rmmod vdisk
exec 3<&-
ok "rmmod with a disk present" rmmod vdisk
[ -e /dev/vdisk$n ] && fail "disk survived rmmod" || pass "rmmod removed the disk"
finish
