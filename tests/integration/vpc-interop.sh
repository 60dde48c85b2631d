#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# VHD (vpc) against QEMU and 7-Zip: images qemu-img/qemu-io make (fixed and dynamic, with and
# without force_size) read back through libvdisk as `qemu-img convert -O raw` reads them; images
# libvdisk writes (random writes, zeroes and discards across 2 MiB block boundaries) are
# `qemu-img compare` equal to a raw image given the same writes, and 7-Zip extracts the same
# bytes; sizes follow QEMU's CHS / force_size rules; convert both ways. About 30 s.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
[ -x "$IO" ] || { fail "$IO not built"; finish; }
cd "$T" || exit 1
B=2097152 # the default block size

same() { # same DESC A B: byte-identical files
    if cmp -s "$2" "$3"; then pass "$1"; else fail "$1 ($(cmp "$2" "$3" 2>&1 | head -1))"; fi
}
vsize() { qemu-img info -U -f vpc --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }

# readback DESC IMG: libvdisk reads IMG as qemu-img does.
readback() {
    rm -f rb.want rb.got
    if qemu-img convert -U -f vpc -O raw "$2" rb.want 2>"$T/.err" && "$IO" dump "$2" rb.got 2>"$T/.err"; then
        same "$1" rb.want rb.got
    else
        fail "$1 (convert or dump failed: $(head -c 300 "$T/.err"))"
    fi
}

# Read: images qemu-img makes, written by qemu-io across block boundaries.
while read -r name opts size; do
    img=r-$name.vhd
    qemu-img create -q -f vpc -o "$opts" "$img" "$size" || { fail "qemu-img create $name"; continue; }
    qemu-io -f vpc "$img" \
        -c "write -P 0x11 0 $((B * 3 + 512))" \
        -c "write -P 0x22 $((B * 5 - 1024)) 4096" \
        -c "write -P 0x33 $((B * 7 - 100)) 300" \
        -c "write -z $((B * 2)) $((B * 2))" \
        -c "write -P 0x44 $((B * 8 + 1536)) 1024" \
        -c "discard $((B * 9)) $B" \
        -c "write -P 0x55 $((B * 12 - 4096)) $((B + 8192))" \
        -c "write -z $((B * 12)) 4096" >/dev/null 2>"$T/.err" || { fail "qemu-io $name: $(head -c 200 "$T/.err")"; continue; }
    readback "read qemu-img vpc $name ($opts)" "$img"
    eq "$name: vdisk and qemu-img agree on the virtual size" \
        "$("$IO" info "$img" | sed -n 's/^virtual_size=//p')" "$(vsize "$img")"
    rm -f "$img"
done <<'EOF'
dynamic subformat=dynamic 64M
dynamic-force subformat=dynamic,force_size=on 64M
fixed subformat=fixed 64M
fixed-force subformat=fixed,force_size=on 64M
dynamic-odd subformat=dynamic 30000128
EOF
qemu-img create -q -f vpc -o subformat=fixed fx.vhd 16M
"$VDISK" info fx.vhd >info.txt 2>&1
grep -q '^capabilities:.* linear' info.txt && grep -q '^data offset: 0' info.txt &&
    pass "a fixed VHD is linear at offset 0 (loop and vdisk.ko can serve it)" || fail "fixed VHD info: $(cat info.txt)"
grep -q '^disk type: fixed' info.txt && grep -q '^creator app: qemu' info.txt && grep -q '^geometry: ' info.txt &&
    pass "vdisk info: disk type, creator, geometry" || fail "info details: $(cat info.txt)"

# Write: vdisk writes, and a raw file gets the same writes; qemu-img and 7-Zip read the VHD.
ops() { # ops SEED: a script for vdisk-test-io: writes, zeroes, discards across block boundaries
    local i off len
    RANDOM=$1
    echo "w $((B - 700)) 1400 0x5a"    # across a boundary, unaligned
    echo "w $((B * 4)) $((B * 2)) 0x6b" # two whole blocks
    echo "w $((B * 5 - 512)) 1024 0x7c" # across two allocated blocks
    for i in $(seq 1 40); do
        off=$(((RANDOM * 32768 + RANDOM) % (B * 28)))
        len=$((RANDOM % 300000 + 1))
        case $((RANDOM % 6)) in
        0) echo "z $off $len" ;;
        1) echo "d $((off & ~511)) $(((len + 511) & ~511))" ;;
        2) echo "f" ;;
        *) echo "w $off $len 0x$(printf %02x $((RANDOM % 255 + 1)))" ;;
        esac
    done
    echo "z $((B * 4 + 4096)) $((B + 8192))"
}
while read -r name opts; do
    img=w-$name.vhd
    rm -f "$img" w.raw
    "$VDISK" create -f vpc -o "$opts" "$img" 60M >/dev/null 2>"$T/.err" || { fail "vdisk create $name: $(cat "$T/.err")"; continue; }
    size=$(vsize "$img")
    eq "$name: qemu-img reads the size vdisk gives" "$("$IO" info "$img" | sed -n 's/^virtual_size=//p')" "$size"
    truncate -s "$size" w.raw
    ops $((${#name} * 7919)) >ops.txt
    ok "$name: vdisk writes" "$IO" -f vpc script "$img" <ops.txt
    ok "$name: raw gets the same writes" "$IO" -f raw script w.raw <ops.txt
    ok "$name: qemu-img compare equals the raw image" qemu-img compare -q -f vpc -F raw "$img" w.raw
    readback "$name: vdisk reads what qemu-img reads" "$img"
    if command -v 7zz >/dev/null; then
        rm -f 7.raw
        7zz e -so -tvhd "$img" >7.raw 2>"$T/.err" && same "$name: 7-Zip extracts the same bytes" 7.raw w.raw ||
            fail "$name: 7zz: $(head -c 200 "$T/.err")"
    else
        fail "7zz missing: install 7zip"
    fi
    ok "$name: vdisk check is clean" "$VDISK" check "$img"
    # and the other way: qemu-io writes into vdisk's image, vdisk reads it as qemu-img
    ok "$name: qemu-io writes into vdisk's image" qemu-io -f vpc -c "write -P 0x99 $((B * 20 - 512)) 8192" "$img"
    readback "$name: vdisk reads qemu-io's writes to its image" "$img"
done <<'EOF'
dynamic subformat=dynamic
dynamic-force subformat=dynamic,force_size=on
fixed subformat=fixed
fixed-force subformat=fixed,force_size=on
dynamic-512k subformat=dynamic,block_size=512K
EOF

# Threads race on interleaved 4k blocks (block allocation, bitmaps): each reads back its own.
for o in subformat=dynamic block_size=64K subformat=fixed; do
    rm -f mt.vhd
    "$VDISK" create -f vpc -o "$o" mt.vhd 48M >/dev/null
    ok "8 threads of writes, zeroes, discards on a vpc ($o)" "$IO" mt mt.vhd 8 3000
    readback "after the race qemu-img reads what vdisk reads ($o)" mt.vhd
done

# A crash after a block's data but before its BAT entry leaves a tail the next block reuses:
# what the new block does not write must read as zeroes, not as the torn block's bytes.
rm -f torn.vhd torn.raw
"$VDISK" create -f vpc torn.vhd 16M >/dev/null
printf 'w 0 4096 0x21\n' | "$IO" script torn.vhd
python3 - torn.vhd <<'PY'
import sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(-512, 2); footer = f.read(512); f.seek(-512, 2)
    f.write(b'\xff' * 512 + b'\xee' * (2 << 20) + footer)  # a whole block, no BAT entry
PY
printf 'w 2097152 4096 0x22\n' | "$IO" script torn.vhd
truncate -s "$(vsize torn.vhd)" torn.raw
printf 'w 0 4096 0x21\nw 2097152 4096 0x22\n' | "$IO" -f raw script torn.raw
ok "a new block over a torn one reads zeroes where not written (qemu-img compare)" \
    qemu-img compare -q -f vpc -F raw torn.vhd torn.raw
ok "and vdisk check is clean" "$VDISK" check torn.vhd

# Sizes: QEMU's rules. Without force_size the size rounds up to a CHS geometry; with it the
# size is exact (whole MiB for Azure) and the CHS at its maximum.
ok "create a fixed Azure-style VHD" "$VDISK" create -f vpc -o subformat=fixed,force_size=on azure.vhd 30G
eq "force_size: qemu-img reads exactly 30 GiB" "$(vsize azure.vhd)" $((30 << 30))
eq "force_size: file is the data and a 512-byte footer" "$(stat -c %s azure.vhd)" $(((30 << 30) + 512))
qemu-img create -q -f vpc ref.vhd 1G
ok "create 1G without force_size" "$VDISK" create -f vhd chs.vhd 1G
eq "the vhd alias makes a vpc image; CHS-rounded as qemu-img rounds" "$(vsize chs.vhd)" "$(vsize ref.vhd)"
qemu-img create -q -f vpc ref200.vhd 200G
"$VDISK" create -f vpc big.vhd 200G >/dev/null
eq "200G: CHS at its maximum, the exact size" "$(vsize big.vhd)" "$(vsize ref200.vhd)"
# Many sizes: vdisk rounds (or not, with force_size) exactly as qemu-img does.
bad_sizes=""
for sz in 1M 3M 10M 100M 140M 200M 240M 511M 1000M 1G 4G 31G 32G 127G 128G 130G 500G 2040G; do
    for fs in off on; do
        rm -f q.vhd v.vhd
        qemu-img create -q -f vpc -o force_size=$fs q.vhd $sz
        "$VDISK" create -f vpc -o force_size=$fs v.vhd $sz >/dev/null
        [ "$(vsize q.vhd)" = "$(vsize v.vhd)" ] || bad_sizes="$bad_sizes $sz/$fs:$(vsize q.vhd)!=$(vsize v.vhd)"
    done
done
eq "36 sizes from 1M to 2040G: qemu-img reads vdisk's VHD as large as its own" "$bad_sizes" ""
rm -f q.vhd v.vhd
fails_with "a VHD over 2040 GiB is refused" "2040 GiB" "$VDISK" create -f vpc huge.vhd 3000G
fails_with "a bad subformat is refused" "subformat must be" "$VDISK" create -f vpc -o subformat=sparse bad.vhd 1G
fails_with "an absurd block size is refused" "block_size" "$VDISK" create -f vpc -o block_size=1G bad.vhd 1G
fails_with "blocks too small for the size are refused" "too many; use a larger block_size" \
    "$VDISK" create -f vpc -o block_size=4K bad.vhd 2000G
eq "no file left by the refused creates" "$(ls huge.vhd bad.vhd 2>/dev/null)" ""
rm -f azure.vhd big.vhd ref200.vhd

# Convert both ways, and from qcow2.
head -c $((9 << 20)) /dev/urandom >src.raw
truncate -s 24M src.raw
ok "convert raw -> vpc" "$VDISK" convert -O vpc src.raw c.vhd
ok "qemu-img compare: converted vpc equals the raw source" qemu-img compare -q -f vpc -F raw c.vhd src.raw
ok "convert raw -> vpc fixed" "$VDISK" convert -O vpc -o subformat=fixed src.raw cf.vhd
ok "qemu-img compare: converted fixed vpc equals the raw source" qemu-img compare -q -f vpc -F raw cf.vhd src.raw
ok "convert vpc -> raw" "$VDISK" convert -O raw c.vhd back.raw
qemu-img convert -f vpc -O raw c.vhd qback.raw
same "vpc -> raw: the bytes qemu-img converts" back.raw qback.raw
qemu-img convert -f raw -O qcow2 src.raw s.qcow2
ok "convert qcow2 -> vpc" "$VDISK" convert -O vpc s.qcow2 q.vhd
ok "qemu-img compare: qcow2 -> vpc" qemu-img compare -q -f vpc -F qcow2 q.vhd s.qcow2
ok "convert vpc -> qcow2" "$VDISK" convert -O qcow2 q.vhd back.qcow2
ok "qemu-img compare: vpc -> qcow2" qemu-img compare -q -f qcow2 -F vpc back.qcow2 q.vhd
ok "qemu-img check of the qcow2 made from a vpc" qemu-img check -q back.qcow2
finish
