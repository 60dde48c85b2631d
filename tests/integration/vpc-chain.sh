#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Differencing VHDs three deep: a qemu-img base, two vdisk children. Reads equal a model (a raw
# file given the same writes, in order); writes land only in the top (the parents' md5 do not
# change); partial sectors and blocks copy what the parent shows; 7-Zip reads the chain too; the
# relative locator follows a moved chain, the absolute one a moved child; a parent whose UUID
# does not match is refused naming both files. (QEMU cannot read differencing VHDs.) About 10 s.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
cd "$T" || exit 1
B=2097152

same() { # same DESC A B: byte-identical files
    if cmp -s "$2" "$3"; then pass "$1"; else fail "$1 ($(cmp "$2" "$3" 2>&1 | head -1))"; fi
}
both() { # both OPS: apply the vdisk-test-io script OPS to the image $img and the model
    ok "$1: writes to $img" "$IO" -f vpc script "$img" <<<"$2"
    ok "$1: the same writes to the model" "$IO" -f raw script model.raw <<<"$2"
}
readback() { # readback DESC IMG: IMG reads as the model
    rm -f got.raw
    "$IO" dump "$2" got.raw 2>"$T/.err" && same "$1" got.raw "$T/c/model.raw" || fail "$1: $(head -c 300 "$T/.err")"
}

mkdir -p c && cd c || exit 1
qemu-img create -q -f vpc base.vhd 48M
qemu-io -f vpc -c "write -P 0xa1 0 $((B * 2 + 4096))" -c "write -P 0xa2 $((B * 6 - 512)) 1024" \
    -c "write -P 0xa3 $((B * 10)) $B" base.vhd >/dev/null
qemu-img convert -f vpc -O raw base.vhd model.raw

img=mid.vhd
ok "create a differencing child" "$VDISK" create -f vpc -o backing_file=base.vhd mid.vhd 0
eq "the child has its parent's size" "$("$IO" info mid.vhd | sed -n 's/^virtual_size=//p')" "$(stat -c %s model.raw)"
"$VDISK" info mid.vhd >info.txt
grep -q '^backing file: base.vhd (vpc)' info.txt && grep -q '^disk type: differencing' info.txt &&
    grep -q "^parent uuid: " info.txt && pass "vdisk info: parent, disk type, parent uuid" || fail "info: $(cat info.txt)"
readback "an empty child reads as its parent" mid.vhd
sum_base=$(md5sum <base.vhd)
both mid "w 1000 5000 0xb1
w $((B - 300)) 600 0xb2
w $((B * 6 - 100)) 33 0xb3
w $((B * 7)) $((B + 512)) 0xb4
z $((B * 10 + 4096)) 8192
w $((B * 10 + 4100)) 10 0xb5"
readback "the child reads as the model (partial sectors, zeroes over the parent)" mid.vhd
eq "writes to the child leave the base unchanged" "$(md5sum <base.vhd)" "$sum_base"

img=top.vhd
ok "create a grandchild (the vhd alias)" "$VDISK" create -f vhd -o backing_file=mid.vhd top.vhd 0
sum_mid=$(md5sum <mid.vhd)
RANDOM=7
ops=$(for i in $(seq 1 40); do
    off=$(((RANDOM * 32768 + RANDOM) % (B * 22)))
    case $((RANDOM % 5)) in
    0) echo "z $off $((RANDOM % 70000 + 1))" ;;
    1) echo "f" ;;
    *) echo "w $off $((RANDOM % 200000 + 1)) 0x$(printf %02x $((RANDOM % 255 + 1)))" ;;
    esac
done)
both top "$ops"
readback "three deep: the top reads as the model" top.vhd
eq "writes to the top leave the middle unchanged" "$(md5sum <mid.vhd)" "$sum_mid"
eq "writes to the top leave the base unchanged" "$(md5sum <base.vhd)" "$sum_base"
ok "vdisk check: the top is clean" "$VDISK" check top.vhd
ok "vdisk check: the middle is clean" "$VDISK" check mid.vhd
ok "convert the chain to raw" "$VDISK" convert -O raw top.vhd flat.raw
same "the converted chain equals the model" flat.raw model.raw
if command -v 7zz >/dev/null; then
    rm -f 7.raw
    7zz e -so -tvhd top.vhd >7.raw 2>"$T/.err" && same "7-Zip reads the chain as vdisk does" 7.raw model.raw ||
        fail "7zz: $(head -c 300 "$T/.err")"
else
    fail "7zz missing: install 7zip"
fi
ok "convert the chain to a dynamic vpc" "$VDISK" convert -O vpc top.vhd flat.vhd
ok "qemu-img compare: the flattened vpc equals the model" qemu-img compare -q -f vpc -F raw flat.vhd model.raw

# The relative locator follows the chain to another directory; the absolute one a moved child.
cd "$T" && cp -r c moved
readback "a moved chain reads through its relative locators" moved/top.vhd
mkdir -p away && cp c/top.vhd away/
readback "a child moved alone finds its parent by the absolute locator" away/top.vhd
mkdir -p c/sub && "$VDISK" create -f vpc -o backing_file=../top.vhd c/sub/four.vhd 0 >/dev/null
readback "a child in a subdirectory (parent ../top.vhd)" c/sub/four.vhd

# A parent that is not the one the child was made against is refused, naming both files.
cd c || exit 1
mv mid.vhd mid.orig && "$VDISK" create -f vpc -o backing_file=base.vhd mid.vhd 0 >/dev/null
fails_with "a parent with another UUID is refused, naming both files" "top.vhd: parent .*mid.vhd has UUID .*top.vhd was made against" \
    "$IO" dump top.vhd /dev/null
rm mid.vhd
fails_with "a missing parent is refused, naming the locators" "top.vhd: VHD parent not found .*mid.vhd" \
    "$VDISK" info top.vhd
mv mid.orig mid.vhd
readback "the right parent back: reads as before" top.vhd
fails_with "a VHD cannot have a qcow2 parent" "parent of a VHD is a VHD" \
    "$VDISK" create -f vpc -o backing_file=flat.raw,backing_fmt=raw x.vhd 0
fails_with "a differencing VHD takes its parent's size" "parent's size" \
    "$VDISK" create -f vpc -o backing_file=base.vhd x.vhd 1G
eq "no file left by the refused creates" "$(ls x.vhd 2>/dev/null)" ""

# Threads race on a differencing child (sector bitmaps set while others write the block).
"$VDISK" create -f vpc empty.vhd 32M >/dev/null
"$VDISK" create -f vpc -o backing_file=empty.vhd race.vhd 0 >/dev/null
ok "8 threads of writes, zeroes, discards on a differencing VHD" "$IO" mt race.vhd 8 3000

# A fixed parent: its footer UUID, linear reads below a differencing child.
qemu-img create -q -f vpc -o subformat=fixed fixed.vhd 8M
qemu-io -f vpc -c "write -P 0xe1 0 8M" fixed.vhd >/dev/null
qemu-img convert -f vpc -O raw fixed.vhd model.raw
img=fchild.vhd
"$VDISK" create -f vpc -o backing_file=fixed.vhd fchild.vhd 0 >/dev/null
both "fixed parent" "w 4097 1000 0xe2
z $((B * 2 + 512)) 1024"
readback "a child of a fixed VHD reads as the model" fchild.vhd
finish
