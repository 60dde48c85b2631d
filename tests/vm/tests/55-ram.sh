#!/bin/bash
# SPDX-License-Identifier: MIT
# RAM disks (vdisk open --ram) through the kernel ways the host lacks: kmod, ublk
# and nbd (loop and fuse: tests/integration/ram-disk.sh). First vdisk.ko's own
# page store (kmod/ram.c): picked by default, its sysfs ram_bytes exact through
# writes, discard (whole and partial pages), write-zeroes; contents checked with
# cmp against a file built with dd; fio verify at QD32; close gives MemFree back;
# the kernel's refusals. Then the user's cycle on each way (mkfs, mount, write,
# remount, umount, save to raw compared with cmp; for kmod also to qcow2,
# compared with qemu-img and mounted again); memory taken on write, given back
# by discard (fstrim) and all of it by close: the module's ram_bytes and
# MemFree for kmod (which must not touch Shmem), /proc/meminfo Shmem (the
# memfd; the guest is quiet) for the others.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
ok "load vdisk.ko" load_vdisk
mkdir -p m
at_exit "umount $T/m 2>/dev/null; $VDISK close --all"
shmem() { echo $(($(awk '$1 == "Shmem:" {print $2}' /proc/meminfo) * 1024)); }
# free memory: MemFree plus the pages on per-cpu free lists (freed, not yet in MemFree)
memfree() { echo $(($(awk '$1 == "MemFree:" {print $2}' /proc/meminfo) * 1024 + $(awk '$1 == "count:" {n += $2} END {print n + 0}' /proc/zoneinfo) * 4096)); }
ramb() { cat /sys/block/${1#/dev/}/vdisk/ram_bytes; } # DEV: its page store's bytes
MB=$((1 << 20))

# --- vdisk.ko's page store, through the device
dev=$($VDISK open --ram 48M 2>$T/err) || fail "open --ram 48M: $(cat $T/err)"
case $dev in
/dev/vdisk*) pass "--ram without --via picks vdisk.ko when it is loaded: $dev" ;;
*) fail "--ram picked $dev with vdisk.ko loaded" ;;
esac
[ -e /sys/block/${dev#/dev/}/vdisk/ram_bytes ] && [ ! -e /sys/block/${dev#/dev/}/vdisk/backing_file ] &&
    pass "served from the module's page store (ram_bytes, no backing file)" || fail "no page store behind $dev"
eq "a fresh RAM disk holds no memory" "$(ramb $dev)" 0
ok "a fresh RAM disk reads as zeroes" cmp -n $((48 * MB)) $dev /dev/zero
$VDISK info $dev | grep -q "^memory used: 0 " && pass "info shows the memory used" || fail "info: $($VDISK info $dev)"
dd if=/dev/urandom of=pat bs=1M count=24 status=none
free0=$(memfree)
ok "write 24 MiB (O_DIRECT)" dd if=pat of=$dev bs=1M oflag=direct status=none
eq "the page store holds what was written" "$(ramb $dev)" $((24 * MB))
took=$((free0 - $(memfree)))
[ $took -gt $((20 * MB)) ] && pass "MemFree fell by $((took / MB)) MiB" || fail "MemFree fell by $((took / MB)) MiB only"
ok "reads back what was written" cmp -n $((24 * MB)) pat $dev
ok "blkdiscard 8 MiB at 4 MiB" blkdiscard -o $((4 * MB)) -l $((8 * MB)) $dev
eq "discard frees its whole pages" "$(ramb $dev)" $((16 * MB))
ok "blkdiscard 1 KiB inside the first page" blkdiscard -o 512 -l 1024 $dev
eq "a partial-page discard keeps the page" "$(ramb $dev)" $((16 * MB))
ok "blkdiscard -z (write-zeroes) 1 MiB at 16 MiB" blkdiscard -z -o $((16 * MB)) -l $((1 * MB)) $dev
eq "write-zeroes frees pages too" "$(ramb $dev)" $((15 * MB))
cp pat want && dd if=/dev/zero of=want bs=1M seek=4 count=8 conv=notrunc status=none &&
    dd if=/dev/zero of=want bs=512 seek=1 count=2 conv=notrunc status=none &&
    dd if=/dev/zero of=want bs=1M seek=16 count=1 conv=notrunc status=none
ok "zeroes where discarded (inside a page too), the rest intact" cmp -n $((24 * MB)) want $dev
ok "fio 4k randwrite QD32 io_uring (nowait) with crc32c verify" fio --name=v --filename=$dev \
    --rw=randwrite --bs=4k --iodepth=32 --ioengine=io_uring --direct=1 --offset=$((24 * MB)) \
    --size=8M --verify=crc32c --verify_fatal=1 --output=$T/fio.out
ok "fio 3.5k randwrite QD32 libaio with md5 verify (blocks straddle pages)" fio --name=w \
    --filename=$dev --rw=randwrite --bs=3584 --iodepth=32 --ioengine=libaio --direct=1 \
    --offset=$((32 * MB + 512)) --size=4M --verify=md5 --verify_fatal=1 --output=$T/fio.out
ok "the first 24 MiB untouched by fio" cmp -n $((24 * MB)) want $dev
held=$(ramb $dev)
free1=$(memfree)
ok "close" $VDISK close $dev
back=$(($(memfree) - free1))
[ $back -gt $((held - 4 * MB)) ] && pass "close gives the store's $((held / MB)) MiB back (MemFree +$((back / MB)) MiB)" ||
    fail "close: the store held $((held / MB)) MiB, MemFree rose $((back / MB)) MiB"

# --- the module's refusals (vdisk-ctl: the bare ioctl)
fails_with "kernel: RAM disk of 0 bytes" "Invalid argument" /vm/bin/vdisk-ctl add -m -s 0 -
fails_with "kernel: size not a multiple of the block size" "Invalid argument" /vm/bin/vdisk-ctl add -m -b 4096 -s 6144 -
fails_with "kernel: read-only RAM disk" "Invalid argument" /vm/bin/vdisk-ctl add -m -r -s 1048576 -
fails_with "kernel: RAM disk with DIRECT" "Invalid argument" /vm/bin/vdisk-ctl add -m -d -s 1048576 -
fails_with "kernel: RAM disk with a backing fd" "Invalid argument" /vm/bin/vdisk-ctl add -m -s 1048576 pat
fails_with "kernel: RAM disk larger than RAM" "File too large" /vm/bin/vdisk-ctl add -m -s $((1 << 50)) -
fails_with "vdisk open --ram 1T: larger than memory" "--ram 1T: larger than this machine's memory" $VDISK open --ram 1T
n=$(/vm/bin/vdisk-ctl add -m -b 4096 -s $((8 * MB)) -i ram4k -) && pass "kernel: 4096-byte blocks: vdisk$n" || fail "4k RAM disk"
eq "4096-byte logical blocks" "$(blockdev --getss /dev/vdisk$n 2>&1)" 4096
ok "write through 4k blocks" dd if=pat of=/dev/vdisk$n bs=1M count=8 oflag=direct status=none
ok "read back" cmp -n $((8 * MB)) pat /dev/vdisk$n
ok "remove it" /vm/bin/vdisk-ctl remove $n
eq "no RAM disk left" "$(ls /sys/block | grep -c '^vdisk')" 0

for via in kmod ublk nbd; do # loop: tests/integration/ram-disk.sh
    base=$(shmem) shmem0=$(shmem)
    dev=$($VDISK open --ram 32M --via $via 2>$T/err) || { fail "$via: open --ram: $(cat $T/err)"; continue; }
    pass "$via: open --ram 32M: $dev"
    if [ $via = kmod ]; then
        base=0
        used() { ramb $dev; }
    else
        used() { shmem; }
    fi
    eq "$via: device size" "$(blockdev --getsize64 $dev)" $((32 * MB))
    $VDISK list | grep "$dev" | grep -q " ram " && pass "$via: list shows a RAM disk" || fail "$via: list: $($VDISK list)"
    ok "$via: mkfs.ext4" mkfs.ext4 -q -F -E nodiscard $dev
    ok "$via: mount" mount $dev m
    dd if=/dev/urandom of=m/big bs=1M count=12 2>/dev/null && sync
    full=$(used)
    [ $((full - base)) -gt $((9 * MB)) ] && pass "$via: writing takes memory (+$(((full - base) / MB)) MiB)" ||
        fail "$via: writing 12 MiB took $(((full - base) / MB)) MiB"
    rm m/big && sync
    ok "$via: fstrim" fstrim m
    trimmed=$(used)
    [ $((full - trimmed)) -gt $((9 * MB)) ] && pass "$via: discard gives it back (-$(((full - trimmed) / MB)) MiB)" ||
        fail "$via: discard gave back $(((full - trimmed) / MB)) MiB"
    dd if=/dev/urandom of=m/small bs=1M count=2 2>/dev/null
    sum=$(sha256sum <m/small)
    ok "$via: umount" umount m
    ok "$via: mount again" mount $dev m
    eq "$via: the file survives a remount" "$(sha256sum <m/small)" "$sum"
    ok "$via: umount" umount m
    ok "$via: save to raw" $VDISK save -O raw $dev saved-$via.raw
    ok "$via: the saved raw equals the device" cmp $dev saved-$via.raw
    if [ $via = kmod ]; then # the qcow2 round trip once (the host test does it through loop)
        ok "$via: save to qcow2" $VDISK save -O qcow2 $dev saved-$via.qcow2
        ok "$via: qemu-img compare: saved qcow2 equals the device" qemu-img compare -f raw -F qcow2 $dev saved-$via.qcow2
    fi
    held=$(used) free1=$(memfree)
    if [ $via = kmod ]; then
        [ $((shmem0 - $(shmem))) -lt $((MB)) ] && [ $(($(shmem) - shmem0)) -lt $((MB)) ] &&
            pass "kmod: no memfd behind it (Shmem unchanged)" || fail "kmod: Shmem moved: $shmem0 -> $(shmem)"
    fi
    ok "$via: close" $VDISK close $dev
    sleep 0.2
    if [ $via = kmod ]; then
        back=$(($(memfree) - free1))
        [ $back -gt $((held - 2 * MB)) ] && pass "kmod: close gives the store's $((held / MB)) MiB back (MemFree +$((back / MB)) MiB)" ||
            fail "kmod: the store held $held bytes, MemFree rose $back"
    else
        after=$(shmem)
        [ $((after - base)) -lt $((2 * MB)) ] && pass "$via: close gives all the memory back (base $((base / MB)) MiB, now $((after / MB)) MiB)" ||
            fail "$via: after close $(((after - base) / MB)) MiB still held"
    fi
    [ $via = kmod ] || continue
    dev=$($VDISK open saved-$via.qcow2) && mount $dev m &&
        eq "$via: the saved image holds the file" "$(sha256sum <m/small)" "$sum"
    umount m; $VDISK close saved-$via.qcow2
done

# --- unloading vdisk.ko with a RAM disk added (not open) frees it too
n=$(/vm/bin/vdisk-ctl add -m -s $((16 * MB)) -i unload -) && pass "a RAM disk to unload with: vdisk$n" || fail "add RAM disk"
ok "fill it" dd if=pat of=/dev/vdisk$n bs=1M count=16 oflag=direct status=none
free1=$(memfree)
ok "rmmod vdisk with the RAM disk in it" rmmod vdisk
back=$(($(memfree) - free1))
[ $back -gt $((14 * MB)) ] && pass "unload gives its 16 MiB back (+$((back / MB)) MiB)" || fail "unload gave back $((back / MB)) MiB"
finish
