#!/bin/bash
# SPDX-License-Identifier: MIT
# --snapshot and --overlay through the kernel's user-way clients (ublk, nbd): an ext4 base
# is mounted and written through a snapshot, its sha256 never changes, the snapshot dir
# stays empty; an --overlay over a vdi base holds the writes (qemu-img compare) and the
# base is refused for writing meanwhile. About 20 s under TCG.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
mkdir -p m snap
at_exit "umount $T/m 2>/dev/null; $VDISK close --all"

truncate -s 32M base.img && mkfs.ext4 -q -F base.img || fail "mkfs"
sum=$(sha256sum <base.img)
for way in ublk nbd; do
    dev=$($VDISK open --via $way --snapshot --snapshot-dir snap base.img 2>err) ||
        { fail "$way: open --snapshot: $(cat err)"; continue; }
    ok "$way: mount the snapshot" mount "$dev" m
    dd if=/dev/urandom of=m/f bs=1M count=4 status=none && sync && pass "$way: write 4 MiB" ||
        fail "$way: write"
    eq "$way: nothing visible in the snapshot dir" "$(ls -A snap)" ""
    umount m
    ok "$way: e2fsck of the snapshot disk" e2fsck -fn "$dev"
    ok "$way: close" $VDISK close base.img
    eq "$way: base sha256 unchanged" "$(sha256sum <base.img)" "$sum"
    eq "$way: snapshot dir empty after close" "$(ls -A snap)" ""
done

qemu-img create -q -f vdi base.vdi 16M && qemu-img convert -f vdi -O raw base.vdi exp.raw || fail "vdi base"
dev=$($VDISK open --via ublk --overlay ov.qcow2 base.vdi 2>err) || fail "ublk --overlay: $(cat err)"
dd if=/dev/urandom of=chunk bs=64k count=3 status=none
dd if=chunk of="$dev" bs=64k seek=7 oflag=direct conv=notrunc status=none &&
    dd if=chunk of=exp.raw bs=64k seek=7 conv=notrunc status=none || fail "write through --overlay"
fails "the base cannot be opened read-write meanwhile" $VDISK open --via nbd base.vdi
ok "close the overlay" $VDISK close ov.qcow2
ok "qemu-img compare: overlay = base + writes" qemu-img compare -q -F raw ov.qcow2 exp.raw
finish
