#!/bin/bash
# SPDX-License-Identifier: MIT
# QEMU's CVE-2008-2004 through vdisk.ko: the guest of a raw disk writes the header
# of a qcow2 whose backing file is a secret file. The driver writes what it is
# given (the kernel cannot be asked), but vdisk remembered the image as raw: every
# later probe refuses it, -f raw still opens it as raw, the secret never shows.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
ok "load vdisk.ko" load_vdisk
at_exit "$VDISK close --all"

echo "secret-$RANDOM$RANDOM-do-not-show" >secret
chmod 600 secret
ok "make the attacker's qcow2 (backing file: the secret)" \
    $VDISK create -f qcow2 -o backing_file=$T/secret,backing_fmt=raw evil.qcow2 16M
dd if=evil.qcow2 of=payload bs=64k count=1 2>/dev/null

for how in created plain; do
    if [ $how = created ]; then $VDISK create disk-$how.img 16M >/dev/null; else truncate -s 16M disk-$how.img; fi
    img=disk-$how.img
    dev=$($VDISK open --via kmod $img 2>$T/err) || { fail "$how: open --via kmod: $(cat $T/err)"; continue; }
    case $dev in /dev/vdisk[0-9]*) pass "$how: open gives $dev" ;; *) fail "$how: open gave '$dev'" ;; esac
    ok "$how: vdisk.ko takes the guest's write" dd if=payload of=$dev bs=64k oflag=direct conv=notrunc
    ok "$how: close" $VDISK close $img
    fails_with "$how: info refuses the changed image" "served this file as raw" $VDISK info $img
    fails_with "$how: open refuses it" "served this file as raw" $VDISK open -r --via kmod $img
    fails_with "$how: convert refuses it" "served this file as raw" $VDISK convert -O raw $img out.raw
    [ -e out.raw ] && grep -aq do-not-show out.raw && fail "$how: the secret came out" ||
        pass "$how: the secret never comes out"
    dev=$($VDISK open -f raw --via kmod $img 2>$T/err) && pass "$how: -f raw still opens it" ||
        fail "$how: -f raw: $(cat $T/err)"
    eq "$how: ... as raw: the guest's bytes" "$(dd if=$dev bs=64k count=1 2>/dev/null | sha256sum)" \
        "$(sha256sum <payload)"
    ok "$how: close" $VDISK close $img
    rm -f out.raw
done
finish
