#!/bin/bash
# SPDX-License-Identifier: MIT
# --via ublk: the user's cycle (open, mkfs.ext4, mount, write, fstrim, umount,
# close, reopen, verify, e2fsck -fn) for raw, qcow2 and every other format
# `vdisk create` makes (vhd, vhdx, vmdk, vdi once they are in); the device is
# root:disk 0660 and read-only for a read-only open; list and info show the
# way and the server; auto picks ublk for qcow2; 16 devices at once.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
[ -e /dev/ublk-control ] || { fail "ublk_drv not loaded (no /dev/ublk-control)"; finish; }
mkdir -p m
at_exit "umount $T/m 2>/dev/null; $VDISK close --all"

imgs=(disk.img disk.qcow2)
for f in vpc vhd vhdx vmdk vdi; do # formats this vdisk can make
    $VDISK create -f $f probe.$f 1M >/dev/null 2>&1 && imgs+=(disk.$f)
    rm -f probe.$f
done
echo "formats in the cycle: ${imgs[*]}"
for img in "${imgs[@]}"; do
    fmt=${img##*.}
    [ $fmt = img ] && fmt=raw
    ok "$img: create ($fmt, 100 MiB)" $VDISK create -f $fmt "$img" 100M
    size=$($VDISK info --json "$img" | sed -n 's/.*"virtual_size": \([0-9]*\).*/\1/p')
    dev=$($VDISK open --via ublk "$img" 2>$T/err) || fail "$img: open --via ublk: $(cat $T/err)"
    case $dev in /dev/ublkb[0-9]*) pass "$img: open prints $dev" ;; *) fail "$img: open printed '$dev'"; continue ;; esac
    eq "$img: device size is the image's" "$(blockdev --getsize64 $dev)" $((size / 512 * 512))
    eq "$img: device is root:disk 0660" "$(stat -c '%u:%g %a' $dev)" "0:6 660"
    ok "$img: list shows ublk" sh -c "$VDISK list | grep $dev | grep -q ublk"
    pid=$($VDISK info --json $dev | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
    [ -n "$pid" ] && [ "$(cat /proc/$pid/comm 2>/dev/null)" = vdisk-ublk ] &&
        pass "$img: info names the server process $pid" || fail "$img: no server pid ($pid)"
    fails "$img: second open refused" $VDISK open --via ublk "$img"
    eq "$img: not rotational" "$(cat /sys/block/${dev#/dev/}/queue/rotational)" 0
    eq "$img: write cache (flush reaches the image)" "$(cat /sys/block/${dev#/dev/}/queue/write_cache)" "write back"
    eq "$img: no I/O scheduler, as loop and nbd" "$(grep -o "\[[a-z-]*\]" /sys/block/${dev#/dev/}/queue/scheduler)" "[none]"

    ok "$img: mkfs.ext4" mkfs.ext4 -q -F $dev
    ok "$img: mount" mount $dev m
    dd if=/dev/urandom of=data bs=1M count=20 2>/dev/null
    ok "$img: write a file" cp data m/data
    sync
    ok "$img: fstrim (discard)" fstrim m
    fails_with "$img: close while mounted is refused" "in use|busy" $VDISK close $dev
    ok "$img: umount" umount m
    ok "$img: close" $VDISK close $dev
    [ -d /proc/$pid ] && fail "$img: server $pid still running after close" || pass "$img: server gone"
    [ -e $dev ] && fail "$img: $dev still there after close" || pass "$img: $dev deleted"

    dev=$($VDISK open "$img" 2>$T/err) || fail "$img: reopen (auto): $(cat $T/err)"
    case $img:$dev in
    disk.img:/dev/loop[0-9]* | disk.[!i]*:/dev/ublkb[0-9]*) pass "$img: auto picks $dev" ;;
    *) fail "$img: auto gave '$dev'" ;;
    esac
    ok "$img: mount again" mount $dev m
    ok "$img: data verified after reopen" cmp data m/data
    ok "$img: umount again" umount m
    ok "$img: e2fsck -fn clean" e2fsck -fn $dev
    ok "$img: close again" $VDISK close "$img"

    dev=$($VDISK open -r --via ublk "$img" 2>$T/err) || fail "$img: open -r: $(cat $T/err)"
    eq "$img: read-only open gives a read-only disk" "$(blockdev --getro $dev)" 1
    fails "$img: write to the read-only disk fails" dd if=/dev/zero of=$dev bs=4k count=1 oflag=direct
    ok "$img: read-only disk reads" dd if=$dev of=/dev/null bs=1M count=4 iflag=direct
    ok "$img: close read-only" $VDISK close $dev
done

# 16 devices at once, each with its own bytes
devs=()
for i in $(seq 1 16); do
    d=$($VDISK open --via ublk "many$i.qcow2" 8 2>$T/err) || { fail "many$i: open: $(cat $T/err)"; break; }
    devs+=("$d")
    printf 'disk %02d\n' $i | dd of=$d bs=512 conv=sync,fsync 2>/dev/null || fail "many$i: write"
done
eq "16 ublk devices open" "${#devs[@]}" 16
eq "16 ublk devices listed" "$($VDISK list | grep -c ublkb)" 16
bad=0
for i in $(seq 1 ${#devs[@]}); do
    [ "$(dd if=${devs[i-1]} bs=512 count=1 iflag=direct 2>/dev/null | head -c 7)" = "$(printf 'disk %02d' $i)" ] || bad=$((bad + 1))
done
eq "each of 16 devices reads back its own bytes" "$bad" 0
ok "close all 16" $VDISK close --all
eq "no ublk device left" "$(ls /dev/ublkb* 2>/dev/null | wc -l)" 0
d=$($VDISK open --via ublk many9.qcow2 2>$T/err) || fail "many9: reopen: $(cat $T/err)"
eq "many9.qcow2 kept its bytes across close and reopen" "$(dd if=$d bs=512 count=1 iflag=direct 2>/dev/null | head -c 7)" "disk 09"
ok "close many9" $VDISK close many9.qcow2
# the legacy opcodes (kernels before 6.4; 6.12 keeps them): a device works with them too
d=$(VDISK_TEST_UBLK_LEGACY=1 $VDISK open --via ublk legacy.qcow2 8 2>$T/err) || fail "legacy: open: $(cat $T/err)"
printf 'legacy\n' | dd of=$d bs=512 conv=sync,fsync 2>/dev/null || fail "legacy: write"
eq "legacy opcodes: data reads back" "$(dd if=$d bs=512 count=1 iflag=direct 2>/dev/null | head -c 6)" legacy
ok "legacy opcodes: close" $VDISK close legacy.qcow2
# partitions are scanned: an MBR with one 16 MiB partition at 1 MiB
ok "create part.img" $VDISK create part.img 32M
printf '\x00\x00\x02\x00\x83\x00\x00\x00\x00\x08\x00\x00\x00\x80\x00\x00' |
    dd of=part.img bs=1 seek=446 conv=notrunc 2>/dev/null
printf '\x55\xaa' | dd of=part.img bs=1 seek=510 conv=notrunc 2>/dev/null
d=$($VDISK open --via ublk part.img 2>$T/err) || fail "part.img: open: $(cat $T/err)"
[ -b ${d}p1 ] && pass "partition ${d}p1 scanned" || fail "no ${d}p1"
eq "${d}p1 is 16 MiB" "$(blockdev --getsize64 ${d}p1 2>/dev/null)" $((16 << 20))
ok "close part.img" $VDISK close part.img
sleep 1
left=$(for p in /proc/[0-9]*; do case "$(cat $p/comm 2>/dev/null)" in vdisk-ublk*) echo ${p#/proc/} ;; esac; done)
eq "no vdisk-ublk process left" "$left" ""
finish
