#!/bin/bash
# SPDX-License-Identifier: MIT
# LUKS against the kernel's own dm-crypt (the oracle the host lacks): an image
# vdisk makes and writes (LUKS2, 4096- and 512-byte sectors, xts and
# cbc-essiv) shows the same plaintext through `cryptsetup open` (dm-crypt on a
# loop device), and what dm-crypt writes reads back the same through vdisk.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
command -v cryptsetup >/dev/null || { fail "no cryptsetup in the VM"; finish; }
at_exit "cryptsetup close vt; $VDISK close --all"
printf 'pass phrase' >k
dd if=/dev/urandom of=a.bin bs=1M count=4 status=none
dd if=/dev/urandom of=b.bin bs=1M count=4 status=none
eq "4 MiB of test data" "$(stat -c %s a.bin) $(stat -c %s b.bin)" "4194304 4194304"

for v in "aes-xts-plain64 4096" "aes-xts-plain64 512" "aes-cbc-essiv:sha256 4096"; do
    set -- $v
    d="$1/$2"
    rm -f v.luks
    ok "$d: vdisk create" $VDISK create -f luks --key-file k \
        -o cipher=$1,sector-size=$2,argon2-memory=8192,argon2-cpus=1 v.luks 16M
    ok "$d: vdisk bench --key-stdin writes" sh -c \
        "printf 'pass phrase' | $VDISK bench --key-stdin -w -c 1 -s 4096 v.luks >/dev/null"
    dev=$($VDISK open --via nbd --key-file k v.luks 2>$T/err) || fail "$d: open: $(cat $T/err)"
    if [ -b "$dev" ]; then
        ok "$d: write the first 4 MiB through vdisk's device" \
            dd if=a.bin of=$dev bs=1M oflag=direct status=none
        ok "$d: close" $VDISK close v.luks
    fi
    ok "$d: cryptsetup open (dm-crypt)" cryptsetup open --key-file k v.luks vt
    if [ -b /dev/mapper/vt ]; then
        eq "$d: dm-crypt shows what vdisk wrote" \
            "$(head -c 4194304 /dev/mapper/vt | sha256sum | cut -d' ' -f1)" \
            "$(sha256sum <a.bin | cut -d' ' -f1)"
        ok "$d: dm-crypt writes the next 4 MiB" \
            dd if=b.bin of=/dev/mapper/vt bs=1M seek=4 oflag=direct status=none
        ok "$d: cryptsetup close" cryptsetup close vt
    fi
    rm -f out.raw
    ok "$d: vdisk convert -O raw" $VDISK convert --key-file k -O raw v.luks out.raw
    eq "$d: vdisk reads what dm-crypt wrote" \
        "$(dd if=out.raw bs=1M skip=4 count=4 status=none | sha256sum | cut -d' ' -f1)" \
        "$(sha256sum <b.bin | cut -d' ' -f1)"
    eq "$d: and still what it wrote itself" \
        "$(head -c 4194304 out.raw | sha256sum | cut -d' ' -f1)" "$(sha256sum <a.bin | cut -d' ' -f1)"
done
finish
