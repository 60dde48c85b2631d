#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# VHD, VHDX, VMDK and VDI data never lands on metadata. Each case points one
# table entry of an image holding data (made by qemu-img) into the format's
# own metadata or into another block, then writes through vdisk: the write
# fails with EIO, not one byte of metadata changes (sha256 of the ranges
# overlap-meta.py finds), and `vdisk check` reports the damage. These formats
# have no corrupt bit: writes stay refused for the session, shown through
# the NBD server (a later write elsewhere fails too, reads still work).
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
META="python3 $ROOT/tests/integration/overlap-meta.py"
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
command -v nbdinfo >/dev/null || { fail "nbdinfo missing: install libnbd-bin"; finish; }
cd "$T" || exit 1
MB=1048576

pack() { python3 -c "import struct,sys; sys.stdout.buffer.write(struct.pack('$1', $2))"; }
poke() { dd of="$1" bs=1 seek=$(($2)) conv=notrunc status=none; } # poke FILE OFF < bytes
field() { python3 -c "import struct; print(struct.unpack_from('$2', open('$1','rb').read(), $3)[0])"; }

qemu-img create -q -f vpc good.vpc 64M
qemu-img create -q -f vhdx -o block_size=1M,log_size=1M good.vhdx 64M
qemu-img create -q -f vmdk good.vmdk 64M
qemu-img create -q -f vdi good.vdi 64M
for f in vpc vhdx vmdk vdi; do
    qemu-io -f $f -c "write -P 0x11 0 $((8 * MB))" good.$f >/dev/null
done

# case NAME FMT WRITE_OFF DAMAGE: DAMAGE (shell, on $img), a write at WRITE_OFF fails with EIO,
# metadata unchanged, vdisk check reports it
case_() {
    local name=$1 fmt=$2 woff=$3 img=$1.$2 before
    shift 3
    cp "good.$fmt" "$img" && eval "$*"
    $META ranges "$fmt" "$img" >"$name.ranges"
    before=$($META hash "$img" "$name.ranges")
    fails_with "$name: the write fails with EIO" "Input/output error" \
        sh -c "printf 'w $woff 65536 170\n' | '$IO' -f $fmt script '$img'"
    eq "$name: no metadata byte changed" "$($META hash "$img" "$name.ranges")" "$before"
    fails "$name: vdisk check reports it" "$VDISK" check -f "$fmt" "$img"
}

# VHD: BAT at 1536, 2 MiB blocks; BAT[1] into the dynamic header, into the BAT, into block 0
case_ vpc-bat-into-header vpc $((2 * MB)) 'pack ">I" 1 | poke $img $((1536 + 4))'
case_ vpc-bat-into-bat vpc $((2 * MB)) 'pack ">I" 3 | poke $img $((1536 + 4))'
case_ vpc-block-into-block vpc 0 'pack ">I" 8 | poke $img $((1536 + 4))'
# VHDX: 1 MiB blocks, BAT region at 2 MiB, metadata region at 3 MiB; block 1 into each
bat=$((2 * MB))
case_ vhdx-block-into-meta vhdx $MB 'pack "<Q" "(3 << 20) | 6" | poke $img $((bat + 8))'
case_ vhdx-block-into-bat vhdx $MB 'pack "<Q" "(2 << 20) | 6" | poke $img $((bat + 8))'
case_ vhdx-block-into-header vhdx $MB 'pack "<Q" "(0 << 20) | 6" | poke $img $((bat + 8))'
blk0=$(($(field good.vhdx "<Q" $bat) >> 20)) # block 1 onto block 0: a write to 1 is refused
case_ vhdx-block-into-block vhdx $MB "pack '<Q' '($blk0 << 20) | 6' | poke \$img $((bat + 8))"
# VMDK: grain 1 (guest 64 KiB) into the grain directory, a grain table, the descriptor
gt0=$(($(field good.vmdk "<I" $(($(field good.vmdk "<Q" 56) * 512))) * 512))
gd=$(field good.vmdk "<Q" 56)
case_ vmdk-grain-into-gd vmdk 65536 "pack '<I' $gd | poke \$img $((gt0 + 4))"
case_ vmdk-grain-into-gt vmdk 65536 "pack '<I' $((gt0 / 512)) | poke \$img $((gt0 + 4))"
case_ vmdk-grain-into-descriptor vmdk 65536 "pack '<I' 1 | poke \$img $((gt0 + 4))"
case_ vmdk-gt-into-gd vmdk $((40 * MB)) "pack '<I' $gd | poke \$img $((gd * 512 + 4))"
# VDI: block map entries are slot numbers past the map: out of range, or shared
case_ vdi-slot-out-of-range vdi $MB 'pack "<I" 1000 | poke $img $((512 + 4))'
case_ vdi-slot-shared vdi $MB 'pack "<I" 0 | poke $img $((512 + 4))'

# A session through the NBD server: after the first refused write, every write fails.
serve_case() {
    local name=$1 fmt=$2 bad=$3 good=$4 img=$1.$2 uri spid before
    shift 4
    cp "good.$fmt" "$img" && eval "$*"
    $META ranges "$fmt" "$img" >"$name.ranges"
    before=$($META hash "$img" "$name.ranges")
    "$VDISK" serve -f "$fmt" --socket "$T/$name.sock" "$img" >"$name.uri" 2>"$name.log" &
    spid=$!
    at_exit "kill $spid"
    uri="nbd+unix:///?socket=$T/$name.sock"
    for _ in $(seq 100); do nbdinfo --size "$uri" >/dev/null 2>&1 && break; sleep 0.05; done
    fails_with "$name: a write over the damage fails over NBD" "Input/output error" \
        sh -c "qemu-io -f raw -c 'write -P 0xaa $bad 4096' '$uri' >&2"
    fails_with "$name: then a write elsewhere fails too" "Input/output error" \
        sh -c "qemu-io -f raw -c 'write -P 0xaa $good 4096' '$uri' >&2"
    ok "$name: reads still work" qemu-io -f raw -c "read -P 0x11 0 4096" "$uri"
    kill -TERM $spid && wait $spid
    eq "$name: no metadata byte changed" "$($META hash "$img" "$name.ranges")" "$before"
}
serve_case nbd-vmdk vmdk 65536 $((20 * MB)) "pack '<I' $gd | poke \$img $((gt0 + 4))"
serve_case nbd-vhdx vhdx $MB $((20 * MB)) 'pack "<Q" "(3 << 20) | 6" | poke $img $((bat + 8))'
serve_case nbd-vpc vpc $((2 * MB)) $((20 * MB)) 'pack ">I" 3 | poke $img $((1536 + 4))'
finish
