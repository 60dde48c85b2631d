#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Hostile VHDX images (fields changed by vhdx-poke.py, CRCs made valid again
# so that the checks behind the CRC are reached): truncated files, BAT entries
# past the end or over the metadata, overlapping blocks, bad states, absurd
# block and sector sizes, a BAT far too large for its region, region tables
# that overlap or have too many entries, bad header CRCs. Each gives a clear
# error naming the file (vdisk: FILE: WHAT: WHY), never a crash, a hang or a
# huge allocation (every command runs under a 1 GiB address-space limit);
# vdisk check reports what it can and -r repairs what is safe. Runtime: ~10 s.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
POKE="python3 $ROOT/tests/integration/vhdx-poke.py"
export VDISK_RUN_DIR=$T/run
cd "$T" || exit 1

# capped CMD...: CMD with 1 GiB of address space at most (a huge allocation fails, not the host).
capped() { mem_capped 1024 "$@"; }

# vdisk's layout of a 64 MiB image with 1 MiB blocks: log at 1 MiB, metadata at 2 MiB
# (items from 2 MiB + 64 KiB), BAT at 3 MiB, blocks from 4 MiB.
"$IO" -f vhdx -o block_size=1M create good.vhdx 64M
printf 'w 0 3145728 1\n' | "$IO" -f vhdx script good.vhdx
META=$((2 << 20)) ITEMS=$(((2 << 20) + 65536)) BAT=$((3 << 20))

# hostile NAME REGEX POKE...: an image changed by POKE is refused with REGEX, without a crash.
hostile() {
    local name=$1 re=$2 rc
    shift 2
    cp good.vhdx h.vhdx
    $POKE h.vhdx "$@"
    capped "$VDISK" info h.vhdx >/dev/null 2>"$T/err"
    rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] && grep -q "^vdisk: h.vhdx: $re" "$T/err"; then
        pass "$name: refused ($(head -c 150 "$T/err"))"
    else
        fail "$name: exit $rc, stderr '$(head -c 300 "$T/err")', wanted /vdisk: h.vhdx: $re/"
    fi
}

hostile "block size 0" "VHDX block size 0 is not" "$ITEMS=<I:0"
hostile "block size 3 MiB" "VHDX block size 3145728 is not a power of two" "$ITEMS=<I:$((3 << 20))"
hostile "block size 512 MiB" "VHDX block size 536870912" "$ITEMS=<I:$((512 << 20))"
hostile "block size 2^31" "VHDX block size 2147483648" "$ITEMS=<I:$((1 << 31))"
hostile "virtual size 0" "VHDX virtual size 0 is invalid" "$((ITEMS + 8))=<Q:0"
hostile "virtual size 2^62" "VHDX virtual size .* is invalid" "$((ITEMS + 8))=<Q:$((1 << 62))"
hostile "64 TiB of 1 MiB blocks in a 1 MiB BAT" "VHDX BAT region of 1048576 bytes is too small" \
    "$((ITEMS + 8))=<Q:$((64 << 40))"
hostile "logical sector size 1000" "VHDX logical sector size 1000" "$((ITEMS + 32))=<I:1000"
hostile "physical sector size 0" "VHDX physical sector size 0" "$((ITEMS + 36))=<I:0"
hostile "metadata item outside its region" "VHDX metadata item .* outside" \
    "$((META + 32 + 16))=<I:$((2 << 20))"
hostile "unknown required metadata item" "unknown required VHDX metadata item" \
    "$((META + 32 + 32 * 4))=<Q:0x1234" "$((META + 32 + 32 * 4 + 24))=<I:4"
hostile "differencing without a parent locator" "differencing VHDX without a parent locator" \
    "$((ITEMS + 4))=<I:2"
hostile "region tables with 5000 entries" "both VHDX region tables are invalid .too many" \
    "$((0x30008))=<I:5000" "$((0x40008))=<I:5000"
hostile "BAT region over the metadata" "both VHDX region tables are invalid .regions overlap" \
    "$((0x30020))=<Q:$META" "$((0x40020))=<Q:$META"
hostile "BAT region past the end of the file" "both VHDX region tables are invalid .a region" \
    "$((0x30020))=<Q:$((1 << 40))" "$((0x40020))=<Q:$((1 << 40))"
hostile "region not MiB aligned" "both VHDX region tables are invalid" \
    "$((0x30020))=<Q:$((BAT + 4096))" "$((0x40020))=<Q:$((BAT + 4096))"
hostile "both headers with bad CRC" "both VHDX headers are invalid" \
    "$((0x10010))=B:0x55" "$((0x20010))=B:0x55" --keep-crc
hostile "log outside the file" "VHDX log of 1048576 bytes at .* lies outside the file" \
    "$((0x10048))=<Q:$((1 << 40))" "$((0x20048))=<Q:$((1 << 40))"
hostile "log version 7" "VHDX log version 7 is not supported" "$((0x10040))=<H:7" "$((0x20040))=<H:7"
# invalid states: reads of the block fail clearly, check reports them, -r all drops them
for st in 4 5 7; do
    cp good.vhdx st.vhdx && $POKE st.vhdx "$((BAT + 16))=<Q:$(((5 << 20) | st))"
    fails_with "state $st: a read of the block fails clearly" \
        "st.vhdx: VHDX block 2 has invalid state $st" "$IO" dump st.vhdx /dev/null
    fails_with "state $st: a write to the block fails clearly" "st.vhdx: VHDX block 2 has invalid" \
        sh -c "echo 'w 2097152 4096 7' | '$IO' -f vhdx script st.vhdx"
    fails_with "state $st: check reports it" "BAT entry 2 has invalid state $st" "$VDISK" check st.vhdx
    ok "state $st: check -r all drops it" "$VDISK" check -r all st.vhdx
    ok "state $st: clean afterwards" "$VDISK" check st.vhdx
    ok "state $st: qemu-img check clean" qemu-img check -q st.vhdx
done

# tiny and truncated files
printf 'vhdxfile' >tiny.vhdx
fails_with "8-byte file: clear error" "vdisk: tiny.vhdx: both VHDX headers are invalid" \
    capped "$VDISK" info tiny.vhdx
cp good.vhdx trunc.vhdx && truncate -s $((2 << 20)) trunc.vhdx
fails_with "truncated into the metadata: clear error" "vdisk: trunc.vhdx: .*outside the file" \
    capped "$VDISK" info trunc.vhdx

# blocks past the end of the file: reads fail clearly; check finds them; -r all drops them
cp good.vhdx cut.vhdx && truncate -s $(((4 + 1) << 20)) cut.vhdx
fails_with "truncated data: a read of a lost block fails clearly" \
    "cut.vhdx: VHDX block 1 lies past the end of the file" "$IO" dump cut.vhdx /dev/null
fails_with "truncated data: vdisk check reports it" "BAT entry 1 points past the end" \
    "$VDISK" check cut.vhdx
ok "truncated data: vdisk check -r all repairs" "$VDISK" check -r all cut.vhdx
ok "truncated data: clean afterwards" "$VDISK" check cut.vhdx
ok "truncated data: qemu-img check clean afterwards" qemu-img check -q cut.vhdx
ok "truncated data: readable afterwards" "$IO" dump cut.vhdx /dev/null

# a block over the metadata: reads and writes refused, check tells
cp good.vhdx over.vhdx && $POKE over.vhdx "$((BAT + 16))=<Q:$((META | 6))"
fails_with "block over the metadata: read refused" "over.vhdx: VHDX block 2 lies past the end of the file or over its metadata" \
    "$IO" dump over.vhdx /dev/null
fails_with "block over the metadata: write refused" "over.vhdx: VHDX block 2" \
    sh -c "echo 'w 2097152 4096 7' | '$IO' -f vhdx script over.vhdx"
fails_with "block over the metadata: check tells" "BAT entry 2 points into the image's metadata" \
    "$VDISK" check over.vhdx

# two blocks sharing file space
cp good.vhdx dup.vhdx
python3 - <<EOF
import struct
f = open("dup.vhdx", "r+b"); f.seek($BAT); e0 = f.read(8); f.seek($BAT + 8); f.write(e0)
EOF
$POKE dup.vhdx
fails_with "overlapping blocks: check tells" "BAT entries 0 and 1 overlap" "$VDISK" check dup.vhdx

# one bad header copy: opens from the other; check reports it, -r all rewrites it
cp good.vhdx hdr.vhdx && $POKE hdr.vhdx "$((0x10010))=B:0x55" --keep-crc
ok "one bad header: still opens" "$IO" dump hdr.vhdx /dev/null
fails_with "one bad header: check reports the CRC error" "header .* invalid" "$VDISK" check hdr.vhdx
ok "one bad header: check -r all rewrites it" "$VDISK" check -r all hdr.vhdx
ok "one bad header: clean afterwards" "$VDISK" check hdr.vhdx
ok "one bad header: qemu-img check clean" qemu-img check -q hdr.vhdx

# leaked space between blocks: reported, -r leaks gives it back (a hole is no leak)
cp good.vhdx gap.vhdx && truncate -s $((12 << 20)) gap.vhdx
head -c 1M /dev/urandom | dd of=gap.vhdx bs=1M seek=8 conv=notrunc status=none
$POKE gap.vhdx "$((BAT + 16))=<Q:$(((11 << 20) | 6))"
"$VDISK" check gap.vhdx >"$T/out" 2>&1
eq "gap between blocks: exit 3 (leaks)" "$?" 3
ok "gap between blocks: -r leaks" "$VDISK" check -r leaks gap.vhdx
ok "gap between blocks: clean afterwards" "$VDISK" check gap.vhdx

# leaked space at the end: reported, -r leaks cuts it off
cp good.vhdx leak.vhdx && truncate -s $((64 << 20)) leak.vhdx
"$VDISK" check leak.vhdx >"$T/out" 2>&1
eq "leaked space: exit 3 (leaks only)" "$?" 3
ok "leaked space: -r leaks" "$VDISK" check -r leaks leak.vhdx
ok "leaked space: clean afterwards" "$VDISK" check leak.vhdx
eq "leaked space: file cut back" "$(stat -c %s leak.vhdx)" "$(stat -c %s good.vhdx)"
finish
