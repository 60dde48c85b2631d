#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `vdisk check -r all` repairs VHD, VHDX and VMDK images whose table entries
# point into metadata, past the end of the file, or two onto one block, as
# `qemu-img check -r all` does: the bad entry is dropped (the output says the
# data is lost), afterwards qemu-img check and vdisk check find nothing, and
# every other byte reads as before (qemu-img convert of the image against a
# copy converted before the damage, the dropped block zeroed). -r leaks leaves
# corruption alone (exit 2). The damage is made by hand on images qemu-img
# wrote; a write over it is refused first (the image is not made worse).
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
cd "$T" || exit 1
MB=1048576

pack() { python3 -c "import struct,sys; sys.stdout.buffer.write(struct.pack('$1', $2))"; }
poke() { dd of="$1" bs=1 seek=$(($2)) conv=notrunc status=none; } # poke FILE OFF < bytes
field() { python3 -c "import struct; print(struct.unpack_from('$2', open('$1','rb').read(), $3)[0])"; }

qemu-img create -q -f vpc good.vpc 16M
qemu-img create -q -f vhdx -o block_size=1M,log_size=1M good.vhdx 16M
qemu-img create -q -f vmdk good.vmdk 16M
for f in vpc vhdx vmdk; do # a different byte in every MiB: mixed-up blocks show
    cmds=()
    for i in $(seq 0 7); do cmds+=(-c "write -P $((i + 0x11)) $((i * MB)) $MB"); done
    qemu-io -f $f "${cmds[@]}" good.$f >/dev/null
    qemu-img convert -f $f -O raw good.$f good-$f.raw
done

# case NAME FMT DROP_OFF DROP_LEN DAMAGE: DAMAGE (shell, on $img); -r all drops guest
# bytes [DROP_OFF, +DROP_LEN) and nothing else
case_() {
    local name=$1 fmt=$2 doff=$3 dlen=$4 img=$1.$2 rc
    shift 4
    cp "good.$fmt" "$img" && eval "$*"
    rc=0
    "$VDISK" check -f "$fmt" "$img" >/dev/null 2>"$name.c0" || rc=$?
    eq "$name: vdisk check finds corruption (exit 2)" "$rc" 2
    rc=0
    "$VDISK" check -f "$fmt" -r leaks "$img" >/dev/null 2>&1 || rc=$?
    eq "$name: -r leaks leaves it (exit 2)" "$rc" 2
    rc=0
    "$VDISK" check -f "$fmt" -r all "$img" >"$name.out" 2>"$name.err" || rc=$?
    eq "$name: -r all repairs it (exit 0)" "$rc" 0
    ok "$name: the output says data was lost" grep -q "Repairing.*lost" "$name.err"
    ok "$name: and that it repaired" grep -q "found and repaired" "$name.out"
    ok "$name: vdisk check is clean after" "$VDISK" check -f "$fmt" "$img"
    if [ "$fmt" != vpc ]; then # qemu-img cannot check VHD (exit 63)
        ok "$name: qemu-img check is clean after" qemu-img check -q -f "$fmt" "$img"
    fi
    cp "good-$fmt.raw" "$name.want"
    dd if=/dev/zero of="$name.want" bs=65536 seek=$((doff / 65536)) count=$((dlen / 65536)) \
        conv=notrunc status=none
    ok "$name: every other byte as before (qemu-img compare)" \
        qemu-img compare -q -f "$fmt" -F raw "$img" "$name.want"
    ok "$name: writable again: write, read back" \
        qemu-io -f "$fmt" -c "write -P 0x77 $doff 65536" -c "read -P 0x77 $doff 65536" "$img"
}

# VHD: BAT at 1536, 2 MiB blocks, block 0 at sector bat0
bat0=$(field good.vpc ">I" 1536)
case_ vpc-into-bat vpc $((2 * MB)) $((2 * MB)) 'pack ">I" 3 | poke $img $((1536 + 4))'
case_ vpc-shared vpc $((2 * MB)) $((2 * MB)) "pack '>I' $bat0 | poke \$img $((1536 + 4))"
case_ vpc-past-eof vpc $((2 * MB)) $((2 * MB)) 'pack ">I" 999999 | poke $img $((1536 + 4))'
# VHDX: 1 MiB blocks, BAT region at 2 MiB, metadata region at 3 MiB
bat=$((2 * MB))
blk0=$(($(field good.vhdx "<Q" $bat) >> 20))
case_ vhdx-into-meta vhdx $MB $MB 'pack "<Q" "(3 << 20) | 6" | poke $img $((bat + 8))'
case_ vhdx-into-header vhdx $MB $MB 'pack "<Q" "(0 << 20) | 6" | poke $img $((bat + 8))'
case_ vhdx-shared vhdx $MB $MB "pack '<Q' '($blk0 << 20) | 6' | poke \$img $((bat + 8))"
case_ vhdx-past-eof vhdx $MB $MB 'pack "<Q" "(900 << 20) | 6" | poke $img $((bat + 8))'
# VMDK: 64 KiB grains; grain 1 (guest 64 KiB) into the directory, onto grain 0, past the end
gd=$(field good.vmdk "<Q" 56)
gt0=$(($(field good.vmdk "<I" $((gd * 512))) * 512))
g0=$(field good.vmdk "<I" $gt0)
case_ vmdk-into-gd vmdk 65536 65536 "pack '<I' $gd | poke \$img $((gt0 + 4))"
case_ vmdk-shared vmdk 65536 65536 "pack '<I' $g0 | poke \$img $((gt0 + 4))"
case_ vmdk-past-eof vmdk 65536 65536 "pack '<I' 9999999 | poke \$img $((gt0 + 4))"
# grain table 0 onto the grain directory: the table goes (all 16 MiB), the directory is intact
case_ vmdk-gt-into-gd vmdk 0 $((16 * MB)) "pack '<I' $gd | poke \$img $((gd * 512))"

# VHDX: a block not yet written whose entry names another block's place: writing it would
# overwrite that block; refused (EIO), the other block's data intact
cp good.vhdx reuse.vhdx
pack '<Q' "($blk0 << 20) | 0" | poke reuse.vhdx $((bat + 8 * 10))
fails_with "vhdx: a write that would reuse another block's place fails with EIO" \
    "Input/output error" sh -c "printf 'w $((10 * MB)) 65536 170\n' | '$IO' -f vhdx script reuse.vhdx"
ok "vhdx: block 0 still holds its data" qemu-io -f vhdx -r -c "read -P 0x11 0 $MB" reuse.vhdx
finish
