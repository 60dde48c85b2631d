#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk resize of VHDX (qemu-img resize refuses it): grow within the BAT region's room
# (one log entry: free BAT entries, then the virtual size), shrink with --shrink over
# free blocks only, growth past the BAT region refused clearly. Checked with qemu-img
# (info, check, compare with a raw reference resized the same way), 7-Zip as a third
# reader, and writes across the old end; on images of qemu-img, vdisk and Hyper-V
# (QEMU's iotest image). ~5 s.
. "$(dirname "$0")/../lib.sh"

qsize() { qemu-img info -f vhdx --output=json "$1" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p'; }

# cycle NAME IMG STEP...: grow by each STEP, check and compare; write across the old end; shrink.
cycle() {
    local name=$1 a=$2 ref=$T/ref.raw old step
    shift 2
    old=$(qsize "$a")
    qemu-io -f vhdx -c 'write -P 0xab 1M 1M' -c "write -P 0xcd $((old - 65536)) 64k" "$a" >/dev/null
    qemu-img convert -f vhdx -O raw "$a" "$ref"
    for step in "$@"; do
        ok "$name: resize $step" "$VDISK" resize "$a" $step
        qemu-img resize -q -f raw "$ref" $step
        eq "$name: qemu-img info size after $step" "$(qsize "$a")" "$(stat -c %s "$ref")"
        ok "$name: qemu-img check clean after $step" qemu-img check -q -f vhdx "$a"
        ok "$name: qemu-img compare with the raw reference after $step" \
            qemu-img compare -f vhdx -F raw "$a" "$ref"
    done
    ok "$name: qemu-io writes across the old end" \
        qemu-io -f vhdx -c "write -P 0xee $((old - 1048576)) 2M" "$a"
    qemu-io -f raw -c "write -P 0xee $((old - 1048576)) 2M" "$ref" >/dev/null
    ok "$name: and it agrees after that" qemu-img compare -f vhdx -F raw "$a" "$ref"
    7zz x -so -tvhdx "$a" 2>/dev/null | cmp -s - "$ref" && pass "$name: 7-Zip reads the same disk" || fail "$name: 7-Zip reads other bytes"
    fails_with "$name: shrink over data refused" 'data lies at offset' \
        "$VDISK" resize --shrink "$a" $((old / 2))
    ok "$name: shrink over free blocks" "$VDISK" resize --shrink "$a" $((old + 2 * 1048576))
    qemu-img resize -q -f raw --shrink "$ref" $((old + 2 * 1048576))
    ok "$name: qemu-img check clean after shrinking" qemu-img check -q -f vhdx "$a"
    ok "$name: qemu-img compare after shrinking" qemu-img compare -f vhdx -F raw "$a" "$ref"
    rm -f "$ref"
}

qemu-img create -q -f vhdx "$T/q.vhdx" 10M
cycle "vhdx (qemu-img)" "$T/q.vhdx" +100M 300M
fails_with "vhdx: growth past the BAT region refused clearly" \
    'q.vhdx: its BAT region holds [0-9]* entries; .* moving the BAT region is not supported yet' \
    "$VDISK" resize "$T/q.vhdx" 60T
eq "vhdx: refused growth left the size" "$(qsize "$T/q.vhdx")" $((12 << 20))
fails_with "vhdx: odd size refused, naming the sector size" 'not a multiple of the logical sector size 512' \
    "$VDISK" resize "$T/q.vhdx" 20000001

"$VDISK" create -f vhdx "$T/v.vhdx" 10M >/dev/null
cycle "vhdx (vdisk)" "$T/v.vhdx" +100M 300M

DATA=$(testdata_dir)
if [ -f "$DATA/iotest-dynamic-1G.vhdx.bz2" ]; then
    bzip2 -dc "$DATA/iotest-dynamic-1G.vhdx.bz2" >"$T/h.vhdx"
    cycle "vhdx (Hyper-V)" "$T/h.vhdx" +64M
else
    skip testdata "$DATA/iotest-dynamic-1G.vhdx.bz2 is absent: the Hyper-V image is not resized"
fi
finish
