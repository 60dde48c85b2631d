#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# VMDK parent chains, three deep: made by vdisk (backing_file) and by qemu-img;
# reads equal a raw model and qemu-img's reading; writes land only in the top;
# a parentCID that does not match its parent's CID is refused, naming both.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
cd "$T" || exit 1
mkdir -p c && cd c || exit 1

same() {
    if cmp -s "$2" "$3"; then pass "$1"; else fail "$1 ($(cmp "$2" "$3" 2>&1 | head -1))"; fi
}

# apply IMG OPS...: the same writes to IMG and to the model.
apply() {
    local img=$1
    shift
    printf '%s\n' "$@" >"$T/ops"
    "$IO" script "$img" <"$T/ops" || fail "writes to $img: $(cat "$T/ops")"
    "$IO" -f raw script model.raw <"$T/ops"
}

"$IO" -f raw create model.raw 32M
"$IO" -f vmdk create base.vmdk 32M
apply base.vmdk "w 0 1048576 161" "w 20971520 1048576 162" "w 5000 3000 163"
ok "mid: create with backing_file" "$VDISK" create -f vmdk -o backing_file=base.vmdk mid.vmdk 0
apply mid.vmdk "w 1048576 3145728 177" "w 60000 10000 178" "z 6291456 65536"
ok "top: create with backing_file (a stream-free sparse child of mid)" \
    "$VDISK" create -f vmdk -o subformat=twoGbMaxExtentSparse,backing_file=mid.vmdk top.vmdk 32M
sum_base=$(md5sum <base.vmdk) sum_mid=$(md5sum <mid.vmdk)
apply top.vmdk "w 2097152 4096 193" "w 7340032 102400 194" "w 1000 1000 195" "w 33000000 500000 196"
"$IO" dump top.vmdk got.raw
same "3 deep: vdisk reads the model" model.raw got.raw
qemu-img convert -f vmdk -O raw top.vmdk q.raw
same "3 deep: qemu-img reads the same" model.raw q.raw
eq "writes only in the top: base unchanged" "$(md5sum <base.vmdk)" "$sum_base"
eq "writes only in the top: mid unchanged" "$(md5sum <mid.vmdk)" "$sum_mid"
ok "3 deep: qemu-img check top clean" qemu-img check -q top.vmdk
grep -q '^parentFileNameHint="mid.vmdk"$' top.vmdk && pass "top names its parent" ||
    fail "top's parentFileNameHint: $(grep parentFileNameHint top.vmdk)"
"$VDISK" info top.vmdk >info 2>&1
eq "info: backing file" "$(grep '^backing file:' info)" "backing file: mid.vmdk (vmdk)"
eq "info: the files of the chain" "$(grep -c '^reads file:' info)" 4

fails_with "a flat image cannot have a parent" "cannot have a backing file" \
    "$VDISK" create -f vmdk -o subformat=monolithicFlat,backing_file=base.vmdk flat.vmdk 32M
eq "nothing made for it" "$(ls flat* 2>/dev/null)" ""

# qemu-img makes a chain; vdisk reads it
mkdir q && cd q || exit 1
qemu-img create -q -f vmdk b.vmdk 16M
qemu-io -f vmdk -c "write -P 0x31 0 2M" -c "write -P 0x32 9M 1M" b.vmdk >/dev/null
qemu-img create -q -f vmdk -b b.vmdk -F vmdk m.vmdk
qemu-io -f vmdk -c "write -P 0x41 1M 2M" -c "write -P 0x42 9437184 4096" m.vmdk >/dev/null
qemu-img create -q -f vmdk -o zeroed_grain=on -b m.vmdk -F vmdk t.vmdk
qemu-io -f vmdk -c "write -P 0x51 1536k 64k" -c "write -z 9M 64k" t.vmdk >/dev/null
qemu-img convert -f vmdk -O raw t.vmdk want.raw
"$IO" dump t.vmdk got.raw
same "qemu-img's 3-deep chain: vdisk reads it as qemu-img" want.raw got.raw
cd ..

# a CID mismatch: base written after mid was made
echo "w 0 512 9" | "$IO" script base.vmdk
fails_with "CID mismatch refused, naming both files" \
    "mid.vmdk: parentCID .* does not match the CID .* of its parent .*base.vmdk" \
    "$IO" dump mid.vmdk /dev/null
fails_with "CID mismatch below the top refused too" "mid.vmdk: parentCID .* of its parent .*base.vmdk" \
    "$VDISK" info top.vmdk

finish
