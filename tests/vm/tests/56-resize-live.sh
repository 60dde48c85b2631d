#!/bin/bash
# SPDX-License-Identifier: MIT
# vdisk resize on an open disk: a raw image open through loop grows live and its
# mounted ext4 grows online with resize2fs (data intact, e2fsck clean); the same
# through vdisk.ko (VDISK_CTL_RESIZE); a qcow2 through nbd (the server resizes
# it over its control socket, NBD_SET_SIZE); ublk (UPDATE_SIZE is 6.16, this
# kernel is 6.12) refuses clearly, changing nothing.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
ok "load vdisk.ko" load_vdisk
mkdir -p m
at_exit "umount $T/m 2>/dev/null; $VDISK close --all"
MB=$((1 << 20))

dev=$($VDISK open --via loop live.img 48) && pass "loop: open 48 MiB raw: $dev" || fail "loop: open"
ok "loop: mkfs.ext4" mkfs.ext4 -q -F $dev
ok "loop: mount" mount $dev m
dd if=/dev/urandom of=m/a bs=1M count=8 2>/dev/null
sum=$(sha256sum <m/a)
ok "loop: resize +48M while mounted" $VDISK resize live.img +48M
eq "loop: device follows" "$(blockdev --getsize64 $dev)" $((96 * MB))
ok "loop: resize2fs grows the mounted ext4 online" resize2fs $dev
size=$(df -k m | awk 'NR == 2 {print $2}')
[ "$size" -gt 80000 ] && pass "loop: file system is $size KiB" || fail "loop: file system $size KiB"
ok "loop: 60 MiB fit now" dd if=/dev/zero of=m/b bs=1M count=60
eq "loop: data intact" "$(sha256sum <m/a)" "$sum"
ok "loop: umount" umount m
ok "loop: e2fsck -fn clean" e2fsck -fn $dev
ok "loop: close" $VDISK close live.img
eq "loop: image is 96 MiB" "$(stat -c %s live.img)" $((96 * MB))

dev=$($VDISK open --via kmod k.img 48) && pass "kmod: open 48 MiB raw: $dev" || fail "kmod: open"
ok "kmod: mkfs.ext4" mkfs.ext4 -q -F $dev
ok "kmod: mount" mount $dev m
dd if=/dev/urandom of=m/a bs=1M count=8 2>/dev/null
sum=$(sha256sum <m/a)
ok "kmod: resize +48M while mounted" $VDISK resize $dev +48M
eq "kmod: device follows" "$(blockdev --getsize64 $dev)" $((96 * MB))
ok "kmod: resize2fs grows the mounted ext4 online" resize2fs $dev
ok "kmod: 60 MiB fit now" dd if=/dev/zero of=m/b bs=1M count=60
eq "kmod: data intact" "$(sha256sum <m/a)" "$sum"
ok "kmod: umount" umount m
ok "kmod: e2fsck -fn clean" e2fsck -fn $dev
ok "kmod: close" $VDISK close $dev
eq "kmod: image is 96 MiB" "$(stat -c %s k.img)" $((96 * MB))

# nbd: a qcow2; the server resizes it over its control socket and sets the device's size
$VDISK create -f qcow2 n.qcow2 48M >/dev/null
dev=$($VDISK open --via nbd n.qcow2) && pass "nbd: open 48 MiB qcow2: $dev" || fail "nbd: open"
ok "nbd: mkfs.ext4" mkfs.ext4 -q -F $dev
ok "nbd: mount" mount $dev m
dd if=/dev/urandom of=m/a bs=1M count=8 2>/dev/null
sum=$(sha256sum <m/a)
ok "nbd: resize +48M while mounted" $VDISK resize n.qcow2 +48M
eq "nbd: device follows" "$(blockdev --getsize64 $dev)" $((96 * MB))
ok "nbd: resize2fs grows the mounted ext4 online" resize2fs $dev
ok "nbd: 60 MiB fit now" dd if=/dev/zero of=m/b bs=1M count=60 conv=fsync
eq "nbd: data intact" "$(sha256sum <m/a)" "$sum"
ok "nbd: umount" umount m
ok "nbd: e2fsck -fn clean" e2fsck -fn $dev
ok "nbd: close" $VDISK close n.qcow2
eq "nbd: vdisk info: 96 MiB" "$($VDISK info n.qcow2 | sed -n 's/^virtual size: //p')" $((96 * MB))
ok "nbd: vdisk check clean" $VDISK check -q n.qcow2

for via in ublk; do
    $VDISK create -f raw $via.img 32M >/dev/null
    dev=$($VDISK open --via $via $via.img) || { fail "$via: open"; continue; }
    fails_with "$via: live resize refused clearly" "open on .* --via ublk, which cannot follow a new size yet \\(ublk.s UPDATE_SIZE needs Linux 6.16\\)" \
        $VDISK resize $via.img +32M
    eq "$via: device unchanged" "$(blockdev --getsize64 $dev)" $((32 * MB))
    eq "$via: image unchanged" "$(stat -c %s $via.img)" $((32 * MB))
    ok "$via: close" $VDISK close $via.img
done
finish
