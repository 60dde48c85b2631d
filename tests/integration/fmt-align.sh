#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Images vdisk makes keep guest data 4 KiB-aligned in the file (QEMU's VHD and
# VDI put it at odd sectors: every 4 KiB guest read then touches two 4 KiB
# host blocks): vdisk convert to vpc, vdi, vhdx, and a vpc written in place;
# qemu-img map tells where every data extent lies, and qemu-img compare that
# the bytes are right. Runtime: ~3 s.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
cd "$T" || exit 1

# misaligned IMG FMT: data extents (qemu-img map) whose file offset is not a multiple of 4096
misaligned() {
    qemu-img map -f "$2" --output=json "$1" |
        python3 -c 'import json,sys
print(sum(1 for e in json.load(sys.stdin) if e.get("data") and e.get("offset", 0) % 4096))'
}

head -c 24M /dev/urandom >src.raw
dd if=/dev/zero of=src.raw bs=1M seek=5 count=3 conv=notrunc status=none # a zero run: sparse
for fmt in vpc vdi vhdx; do
    "$VDISK" convert -f raw -O "$fmt" src.raw "c.$fmt"
    eq "vdisk convert -O $fmt: data extents off 4 KiB boundaries" "$(misaligned "c.$fmt" "$fmt")" 0
    ok "vdisk convert -O $fmt: qemu-img compare equal" qemu-img compare -q -f raw -F "$fmt" src.raw "c.$fmt"
done
# QEMU's own layout, for contrast: the check above can fail
qemu-img convert -f raw -O vpc src.raw q.vpc
ok "qemu-img's VHD has odd-sector data (the check can tell)" test "$(misaligned q.vpc vpc)" -gt 0

# a dynamic VHD filled by scattered small writes, blocks allocated as they come
writes() { printf 'w %d 4096 0x%x\n' $((9 << 20)) 0x11 $((1 << 20)) 0x22 $((3 << 20 | 512)) 0x33 \
    $((15 << 20)) 0x44; }
"$IO" -f vpc create w.vpc 16M
writes | "$IO" -f vpc script w.vpc
"$IO" -f raw create w.raw 16M
writes | "$IO" -f raw script w.raw
eq "vpc allocated by writes: data extents off 4 KiB boundaries" "$(misaligned w.vpc vpc)" 0
ok "vpc allocated by writes: qemu-img compare equal to raw with the same writes" \
    qemu-img compare -q -f raw -F vpc w.raw w.vpc
finish
