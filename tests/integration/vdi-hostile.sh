#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Hostile and damaged VDI images: bad header fields (truncated files, block
# maps past the end, absurd block sizes and counts, unknown versions and
# types) are refused with `vdisk: FILE: WHAT: WHY`, never a crash or a huge
# allocation; damaged block maps (shared and out-of-range entries, a wrong
# allocated count, data past the end of the file) are found by vdisk check as
# qemu-img check finds them (exit 2), refused for writing, and repaired by
# `vdisk check -r all` without changing what any block reads.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
cd "$T" || exit 1
MB=1048576

qemu-img create -q -f vdi good.vdi 16M
qemu-io -f vdi -c "write -P 0x5a 0 $((3 * MB))" -c "write -P 0x6b $((9 * MB)) 4096" good.vdi >/dev/null

le32() { printf "\\x$(printf %02x $(($1 & 255)))\\x$(printf %02x $(($1 >> 8 & 255)))\\x$(printf %02x $(($1 >> 16 & 255)))\\x$(printf %02x $(($1 >> 24 & 255)))"; }
# patch FILE OFFSET VALUE: a little-endian u32 into FILE
patch() { le32 "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
# bad NAME OFFSET VALUE REGEX: good.vdi with one field changed is refused by open, info and check
bad() {
    cp good.vdi "h-$1.vdi" && patch "h-$1.vdi" "$2" "$3"
    fails_with "$1: refused" "^vdisk: h-$1.vdi: $4" "$VDISK" info "h-$1.vdi"
    fails_with "$1: check refuses it too" "$4" "$VDISK" check "h-$1.vdi"
}
bad version-0.2 68 2 "VDI image type 384 is unknown"
bad version-2.1 68 $((0x20001)) "VDI version 2.1 is not supported"
bad header-size 72 16 "VDI header size 16 is invalid"
bad type-undo 76 3 "VDI undo images are not supported"
bad type-9 76 9 "VDI image type 9 is unknown"
bad type-diff-no-parent 76 4 "VDI differencing image without a parent UUID"
bad bmap-in-header 340 128 "VDI block map offset 128 is invalid"
bad bmap-unaligned 340 1000 "VDI block map offset 1000 is invalid"
bad bmap-past-eof 340 $((1 << 30)) "VDI block map .* lies past the end of the file"
bad data-in-bmap 344 512 "VDI data offset 512 is invalid"
bad sector-4k 360 4096 "VDI sector size 4096 is not supported"
bad block-3m 376 $((3 * MB)) "VDI block size 3145728 is not a power of two"
bad block-128m 376 $((128 << 20)) "VDI block size 134217728 is not a power of two from 512 to 64M"
bad block-0 376 0 "VDI block size 0 is not a power of two"
bad extra-odd 380 100 "VDI extra block data of 100 bytes is invalid"
bad blocks-huge 384 $((0xffffffff)) "VDI block count 4294967295 is too large"
bad blocks-big 384 $((0x3fffffff)) "VDI block count 1073741823 is too large"
bad blocks-few 384 2 "VDI header says 4 blocks allocated of 2"
bad allocated-over 388 17 "VDI header says 17 blocks allocated of 16"
cp good.vdi h-size.vdi && patch h-size.vdi 368 $((1 << 30))
fails_with "disk size larger than the blocks: refused" "VDI disk size 1073741824 does not match" \
    "$VDISK" info h-size.vdi
cp good.vdi h-link.vdi && printf 'XXXXXXXXXXXXXXXX' | dd of=h-link.vdi bs=1 seek=424 conv=notrunc status=none
fails_with "a plain image with a parent UUID: refused" "VDI image of type 1 has a parent UUID" \
    "$VDISK" info h-link.vdi
head -c 300 good.vdi >h-short.vdi
fails_with "a file shorter than the header: refused" "^vdisk: h-short.vdi: .*too small for a VDI" \
    "$VDISK" info h-short.vdi
fails_with "a file shorter than the header, -f vdi: refused" "too small for a VDI" \
    "$IO" -f vdi dump h-short.vdi out.raw
head -c 540 good.vdi >h-trunc.vdi
fails_with "a file cut inside its block map: refused" "lies past the end of the file" \
    "$VDISK" info h-trunc.vdi

# Damaged block maps: vdisk check agrees with qemu-img check, repair keeps every block's bytes.
damaged() { # damaged NAME REFUSED SETUP...: good.vdi damaged by SETUP (REFUSED: writes refused)
    local name=$1 refused=$2 img=m-$1.vdi rc
    shift 2
    cp good.vdi "$img" && "$@" "$img"
    qemu-img check -q "$img" >/dev/null 2>&1; rc=$?
    eq "$name: qemu-img check finds corruption" "$rc" 2
    "$VDISK" check "$img" >check.out 2>&1; rc=$?
    eq "$name: vdisk check finds corruption (exit 2, as qemu-img)" "$rc" 2
    qemu-img convert -U -f vdi -O raw "$img" want.raw
    "$IO" dump "$img" before.raw 2>.err && cmp -s want.raw before.raw &&
        pass "$name: reads as qemu-img reads it" || fail "$name: read: $(cat .err)"
    [ "$refused" = yes ] && fails_with "$name: writes refused until repaired" "writes are refused until .vdisk check -r all" \
        sh -c "echo 'w $((5 * MB)) 512 1' | '$IO' script '$img'"
    ok "$name: vdisk check -r all repairs" "$VDISK" check -r all "$img"
    ok "$name: qemu-img check clean after repair" qemu-img check -q "$img"
    ok "$name: vdisk check clean after repair" "$VDISK" check -q "$img"
    "$IO" dump "$img" after.raw && cmp -s before.raw after.raw &&
        pass "$name: repair changed no block's bytes" || fail "$name: repair changed data"
    ok "$name: writable after repair" sh -c "echo 'w $((5 * MB)) 512 1' | '$IO' script '$img'"
}
dup() { patch "$1" $((512 + 4 * 9)) 1; }             # block 9 shares block 1's slot
range() { patch "$1" $((512 + 4 * 9)) 40; }          # block 9's slot past the data area
count() { patch "$1" 388 2; }                        # header says 2 allocated, the map 4
damaged duplicate-slot yes dup
damaged slot-out-of-range yes range
damaged count-mismatch no count
# data past the end of the file: reads as zeroes (as qemu-img); repair makes it a ZERO block
cp good.vdi m-eof.vdi && truncate -s $(($(stat -c %s good.vdi) - MB)) m-eof.vdi
qemu-img convert -U -f vdi -O raw m-eof.vdi want.raw
"$IO" dump m-eof.vdi got.raw && cmp -s want.raw got.raw && pass "data past the end of the file reads as qemu-img reads it" ||
    fail "past-EOF read differs"
"$VDISK" check m-eof.vdi >/dev/null 2>&1
eq "data past the end of the file: vdisk check exit 2" $? 2
ok "data past the end: repaired" "$VDISK" check -r all m-eof.vdi
"$IO" dump m-eof.vdi got2.raw && cmp -s want.raw got2.raw && pass "repair kept the bytes (zeroes)" ||
    fail "past-EOF repair changed data"
ok "data past the end: qemu-img check clean after repair" qemu-img check -q m-eof.vdi

# Leaks: a slot nobody uses inside the data area, and a block past the last used slot
# (what a writer killed before its flush leaves).
cp good.vdi m-leak.vdi && patch m-leak.vdi $((512 + 4 * 1)) $((0xffffffff)) && patch m-leak.vdi 388 3
truncate -s +$MB m-leak.vdi
qemu-img convert -U -f vdi -O raw m-leak.vdi want.raw
"$VDISK" check m-leak.vdi >/dev/null 2>&1
eq "a hole in the data area: leaked (exit 3)" $? 3
ok "leak repaired by -r leaks" "$VDISK" check -r leaks m-leak.vdi
ok "after -r leaks: vdisk check clean" "$VDISK" check -q m-leak.vdi
ok "after -r leaks: qemu-img check clean" qemu-img check -q m-leak.vdi
"$IO" dump m-leak.vdi got.raw && cmp -s want.raw got.raw && pass "leak repair kept the data" || fail "leak repair changed data"
eq "leak repair: the file lost the unused blocks" $(($(stat -c %s good.vdi) - $(stat -c %s m-leak.vdi))) $MB
finish
