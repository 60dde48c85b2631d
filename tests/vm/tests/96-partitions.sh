#!/bin/bash
# SPDX-License-Identifier: MIT
# Every way scans partitions: an MBR image (sfdisk) opened through kmod, loop, nbd, ublk
# and fuse gets its partition devices (DEVp1, DEVp2, logical DEVp5) with the sizes of
# the table and the bytes of the image at the partitions' places; a GPT qcow2 image
# through ublk and nbd too. --partition 2 through ublk and nbd is a disk of partition
# 2's size that mkfs.ext4 and e2fsck accept. About 40 s under TCG.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
command -v sfdisk >/dev/null || { fail "no sfdisk in the VM (tests/vm/run add_bin)"; finish; }
ok "load vdisk.ko" load_vdisk
at_exit "$VDISK close --all"

truncate -s 64M mbr.img
printf 'label: dos\n,8M,83\n,12M,83\n,,5\n,6M,83\n' | sfdisk -q mbr.img || fail "sfdisk"
dd if=/dev/urandom of=p2.bytes bs=1M count=1 status=none
dd if=p2.bytes of=mbr.img bs=1M seek=$((1 + 8)) conv=notrunc status=none # partition 2's first MiB
truncate -s 64M gpt.raw
printf 'label: gpt\n,8M\n,12M\n' | sfdisk -q gpt.raw && qemu-img convert -f raw -O qcow2 gpt.raw gpt.qcow2 ||
    fail "gpt image"

# part_dev DEV N: the node of partition N of DEV (loop0p1, nbd0p1, ublkb0p1, vdisk0p1).
part_dev() { echo "${1}p$2"; }

# partitions_appear NAME IMAGE DEV SIZES...: DEVp1.. appear with SIZES (N:BYTES).
partitions_appear() {
    local name=$1 img=$2 dev=$3 n size p
    shift 3
    for ns in "$@"; do
        n=${ns%%:*} size=${ns#*:} p=$(part_dev "$dev" "$n")
        for _ in $(seq 50); do [ -b "$p" ] && break; sleep 0.1; done
        [ -b "$p" ] && eq "$name: $p has partition $n's size" "$(blockdev --getsize64 "$p")" "$size" ||
            fail "$name: no $p ($(ls /sys/block/"${dev#/dev/}"/ | grep "${dev#/dev/}" | tr '\n' ' '))"
    done
}

for way in kmod loop nbd ublk fuse; do
    dev=$($VDISK open --via $way -f raw mbr.img 2>err) || { fail "$way: open: $(cat err)"; continue; }
    [ -s err ] && echo "$way: open said: $(cat err)"
    partitions_appear "$way" mbr.img "$dev" 1:$((8 << 20)) 2:$((12 << 20)) 5:$((6 << 20))
    p=$(part_dev "$dev" 2)
    [ -b "$p" ] && cmp -n $((1 << 20)) "$p" p2.bytes &&
        pass "$way: $p reads the image's bytes at partition 2" || fail "$way: $p content"
    ok "$way: close" $VDISK close mbr.img
    [ -b "$p" ] && fail "$way: $p left after close" || pass "$way: partition devices gone after close"
done
for way in ublk nbd; do
    dev=$($VDISK open --via $way gpt.qcow2 2>err) || { fail "gpt $way: open: $(cat err)"; continue; }
    partitions_appear "gpt qcow2 $way" gpt.qcow2 "$dev" 1:$((8 << 20)) 2:$((12 << 20))
    $VDISK close gpt.qcow2
    dev=$($VDISK open --via $way --partition 2 -f raw mbr.img 2>err) ||
        { fail "--partition 2 $way: open: $(cat err)"; continue; }
    eq "--partition 2 $way: the disk is partition 2" "$(blockdev --getsize64 "$dev")" $((12 << 20))
    ok "--partition 2 $way: mkfs.ext4" mkfs.ext4 -q -F "$dev"
    ok "--partition 2 $way: e2fsck" e2fsck -fn "$dev"
    $VDISK close mbr.img
done
finish
