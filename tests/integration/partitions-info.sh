#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk info lists the partition table read through libvdisk: MBR made by sfdisk (primary,
# extended and logical partitions, bootable flag) and GPT made by sgdisk (names, unicode,
# a gap in the numbers), in raw images and in qcow2, vhdx and vmdk copies, compared field by
# field with `sfdisk -J` (JSON) and `sfdisk -d` (text); a GPT whose primary header is broken
# is read from its backup; broken GPTs, boot sectors and garbage are no crash. About 5 s.
. "$(dirname "$0")/../lib.sh"
cmp_py=$(dirname "$0")/partitions-compare.py

truncate -s 200M "$T/mbr.img"
printf 'label: dos\nlabel-id: 0x1234abcd\n,20M,83,*\n,30M,83\n,,5\n,10M,83\n,20M,82\n,5M,7\n' |
    sfdisk -q "$T/mbr.img" || fail "sfdisk"
truncate -s 200M "$T/gpt.img"
sgdisk -U 11111111-2222-3333-4444-555555555555 -n 1:2048:+20M -t 1:8300 -c 1:root \
    -n 3:0:+30M -t 3:ef00 -c "3:EFI sÿstem ✓" -n 7:0:+1M -t 7:ef02 "$T/gpt.img" >/dev/null ||
    fail "sgdisk"

# same_table NAME IMAGE [FORMAT]: vdisk info --json against sfdisk -J of the raw RAWIMAGE.
same_table() {
    local name=$1 img=$2 raw=$3
    sfdisk -J "$raw" >"$T/sf.json" 2>/dev/null || { fail "$name: sfdisk -J"; return; }
    "$VDISK" info --json "$img" >"$T/vd.json" || { fail "$name: vdisk info --json"; return; }
    out=$(python3 "$cmp_py" "$T/sf.json" "$T/vd.json") && pass "$name: vdisk info --json = sfdisk -J" ||
        fail "$name: $out"
    # the text lines carry the same numbers as sfdisk -d
    diff <(sfdisk -d "$raw" | sed -n 's/^.*[^0-9]\([0-9]\+\) : start= *\([0-9]*\), size= *\([0-9]*\), type=\([^,]*\).*/\1 \2 \3 \4/p') \
        <("$VDISK" info "$img" | sed -n 's/^partition \([0-9]*\): start \([0-9]*\), sectors \([0-9]*\), type \([^,]*\).*/\1 \2 \3 \4/p') \
        >"$T/diff" && pass "$name: vdisk info text = sfdisk -d" || fail "$name: $(cat "$T/diff")"
}

for t in mbr gpt; do
    same_table "$t raw" "$T/$t.img" "$T/$t.img"
    for fmt in qcow2 vhdx vmdk; do
        qemu-img convert -f raw -O "$fmt" "$T/$t.img" "$T/$t.$fmt" || fail "convert to $fmt"
        same_table "$t $fmt" "$T/$t.$fmt" "$T/$t.img"
    done
done
"$VDISK" info "$T/mbr.img" | grep -qx "partition 1: start 2048, sectors 40960, type 83, bootable" &&
    pass "mbr: bootable partition 1 as text" || fail "mbr text: $("$VDISK" info "$T/mbr.img" | grep ^partition)"
"$VDISK" info "$T/mbr.img" | grep -qx "partition table: dos, id 0x1234abcd, sector size 512" &&
    pass "mbr: table line" || fail "mbr table line"
"$VDISK" info "$T/gpt.img" | grep -q "^partition 3: .*, name EFI sÿstem ✓$" &&
    pass "gpt: a unicode name" || fail "gpt: $("$VDISK" info "$T/gpt.img" | grep ^partition)"

# the primary GPT header broken: the backup at the end of the disk still tells
cp "$T/gpt.img" "$T/gpt-bad1.img"
printf 'XXXX' | dd of="$T/gpt-bad1.img" bs=1 seek=$((512 + 40)) conv=notrunc status=none
sfdisk -J "$T/gpt.img" >"$T/sf.json"
"$VDISK" info --json "$T/gpt-bad1.img" >"$T/vd.json" &&
    out=$(python3 "$cmp_py" "$T/sf.json" "$T/vd.json") && pass "gpt, primary header broken: read from the backup" ||
    fail "gpt backup: $out"
# a broken entry array (its CRC fails in both copies): a clear line, info still works
cp "$T/gpt.img" "$T/gpt-bad2.img"
printf 'X' | dd of="$T/gpt-bad2.img" bs=1 seek=$((1024 + 64)) conv=notrunc status=none
printf 'X' | dd of="$T/gpt-bad2.img" bs=1 seek=$((200 * 1048576 - 33 * 512 + 64)) conv=notrunc status=none
out=$("$VDISK" info "$T/gpt-bad2.img" 2>&1) && grep -q "^partition table: unreadable: .*neither GPT header" <<<"$out" &&
    pass "gpt with both copies broken: info says the table is unreadable" || fail "gpt bad2: $out"
"$VDISK" info --json "$T/gpt-bad2.img" | python3 -c 'import json,sys; assert "partition_error" in json.load(sys.stdin)' &&
    pass "gpt with both copies broken: JSON has partition_error" || fail "gpt bad2 json"

# no table, a FAT boot sector, garbage with the MBR signature, an EBR chain that loops
truncate -s 8M "$T/none.img"
out=$("$VDISK" info "$T/none.img") && ! grep -q "^partition" <<<"$out" && pass "no table: no partition lines" ||
    fail "no table: $out"
"$VDISK" info --json "$T/none.img" | python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["partition_table"] == "" and j["partitions"] == []' &&
    pass "no table: JSON says so" || fail "no table JSON"
truncate -s 8M "$T/fat.img" && mkfs.vfat -q "$T/fat.img" 2>/dev/null || /sbin/mkfs.vfat "$T/fat.img" >/dev/null 2>&1
[ "$(sfdisk -d "$T/fat.img" 2>/dev/null | grep -c start=)" = 0 ] &&
    out=$("$VDISK" info "$T/fat.img") && ! grep -q "^partition" <<<"$out" &&
    pass "FAT boot sector: no partitions (as sfdisk)" || fail "fat: $out"
for i in 1 2 3 4 5 6 7 8; do
    head -c 1M /dev/urandom >"$T/junk.img"
    printf '\x55\xaa' | dd of="$T/junk.img" bs=1 seek=510 conv=notrunc status=none
    [ $i -gt 4 ] && printf '\xee' | dd of="$T/junk.img" bs=1 seek=450 conv=notrunc status=none
    timeout 10 "$VDISK" info "$T/junk.img" >/dev/null 2>"$T/junk.err"
    [ $? -lt 2 ] || { fail "garbage $i: exit $? $(cat "$T/junk.err")"; continue; }
done
pass "garbage with an MBR signature: no crash, no hang"
cp "$T/mbr.img" "$T/loop.img"
# the EBR of partition 6 links to itself: the walk stops
ext=$(sfdisk -d "$T/mbr.img" | sed -n 's/.*mbr.img3 : start= *\([0-9]*\).*/\1/p')
ebr=$(($(sfdisk -d "$T/mbr.img" | sed -n 's/.*mbr.img6 : start= *\([0-9]*\).*/\1/p') - 2048))
python3 -c "import struct,sys; sys.stdout.buffer.write(struct.pack('<I', $ebr - $ext))" |
    dd of="$T/loop.img" bs=1 seek=$((ebr * 512 + 446 + 16 + 8)) conv=notrunc status=none
out=$(timeout 10 "$VDISK" info "$T/loop.img") && pass "EBR chain pointing back: info ends" || fail "EBR loop: $out"
finish
