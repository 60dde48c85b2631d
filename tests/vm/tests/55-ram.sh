#!/bin/bash
# SPDX-License-Identifier: MIT
# RAM disks (vdisk open --ram) through the kernel ways the host lacks: kmod, ublk
# and nbd (loop and fuse: tests/integration/ram-disk.sh). The user's cycle (mkfs,
# mount, write, umount, save to raw compared with cmp; for kmod also to qcow2,
# compared with qemu-img and mounted again); memory (/proc/meminfo Shmem: the
# guest is quiet) taken on write, given back by discard (fstrim) and all of it by
# close.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
ok "load vdisk.ko" load_vdisk
mkdir -p m
at_exit "umount $T/m 2>/dev/null; $VDISK close --all"
shmem() { echo $(($(awk '$1 == "Shmem:" {print $2}' /proc/meminfo) * 1024)); }
MB=$((1 << 20))

for via in kmod ublk nbd; do # loop: tests/integration/ram-disk.sh
    base=$(shmem)
    dev=$($VDISK open --ram 32M --via $via 2>$T/err) || { fail "$via: open --ram: $(cat $T/err)"; continue; }
    pass "$via: open --ram 32M: $dev"
    eq "$via: device size" "$(blockdev --getsize64 $dev)" $((32 * MB))
    $VDISK list | grep "$dev" | grep -q " ram " && pass "$via: list shows a RAM disk" || fail "$via: list: $($VDISK list)"
    ok "$via: mkfs.ext4" mkfs.ext4 -q -F -E nodiscard $dev
    ok "$via: mount" mount $dev m
    dd if=/dev/urandom of=m/big bs=1M count=12 2>/dev/null && sync
    full=$(shmem)
    [ $((full - base)) -gt $((9 * MB)) ] && pass "$via: writing takes memory (+$(((full - base) / MB)) MiB)" ||
        fail "$via: writing 12 MiB took $(((full - base) / MB)) MiB"
    rm m/big && sync
    ok "$via: fstrim" fstrim m
    trimmed=$(shmem)
    [ $((full - trimmed)) -gt $((9 * MB)) ] && pass "$via: discard gives it back (-$(((full - trimmed) / MB)) MiB)" ||
        fail "$via: discard gave back $(((full - trimmed) / MB)) MiB"
    dd if=/dev/urandom of=m/small bs=1M count=2 2>/dev/null
    sum=$(sha256sum <m/small)
    ok "$via: umount" umount m
    ok "$via: save to raw" $VDISK save -O raw $dev saved-$via.raw
    ok "$via: the saved raw equals the device" cmp $dev saved-$via.raw
    if [ $via = kmod ]; then # the qcow2 round trip once (the host test does it through loop)
        ok "$via: save to qcow2" $VDISK save -O qcow2 $dev saved-$via.qcow2
        ok "$via: qemu-img compare: saved qcow2 equals the device" qemu-img compare -f raw -F qcow2 $dev saved-$via.qcow2
    fi
    ok "$via: close" $VDISK close $dev
    sleep 0.2
    after=$(shmem)
    [ $((after - base)) -lt $((2 * MB)) ] && pass "$via: close gives all the memory back (base $((base / MB)) MiB, now $((after / MB)) MiB)" ||
        fail "$via: after close $(((after - base) / MB)) MiB still held"
    [ $via = kmod ] || continue
    dev=$($VDISK open saved-$via.qcow2) && mount $dev m &&
        eq "$via: the saved image holds the file" "$(sha256sum <m/small)" "$sum"
    umount m; $VDISK close saved-$via.qcow2
done
finish
