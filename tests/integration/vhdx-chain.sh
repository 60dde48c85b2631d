#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Differencing VHDX, three deep (qemu-img cannot write these; vdisk can):
# reads equal a model (a raw file given the same writes, layer by layer),
# writes land only in the top (the parents' md5 unchanged), unaligned writes
# take the rest of their sector from the parent, a parent whose DataWriteGuid
# no longer matches the child's linkage is refused with a message naming
# both files, a moved chain is found through the absolute path, and the
# chain flattened by vdisk convert passes qemu-img. Runtime: ~20 s.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
cd "$T" || exit 1

# gen_ops SEED SIZE COUNT: writes (unaligned too) and zeroes; no discards (they show the parent).
gen_ops() {
    awk -v seed="$1" -v size="$2" -v n="$3" 'BEGIN {
        srand(seed)
        for (i = 0; i < n; i++) {
            off = int(rand() * size)
            if (rand() < 0.5) off -= off % 512
            len = int(rand() * 300000) + 1
            if (off + len > size) len = size - off
            if (len <= 0) continue
            if (rand() < 0.8) printf "w %d %d %d\n", off, len, 1 + int(rand() * 250)
            else printf "z %d %d\n", off, len
            if (rand() < 0.1) print "f"
        }
    }'
}

# chain LSS: base (qemu-img made for 512-byte sectors), mid, top in sub/ with relative names.
chain() {
    local lss=$1 size=$((48 << 20)) d=$T/c$1
    mkdir -p "$d/sub"
    cd "$d" || return
    if [ "$lss" = 512 ]; then
        qemu-img create -q -f vhdx -o block_size=1M base.vhdx $size
        qemu-io -f vhdx -c "write -P 0x31 0 5M" -c "write -P 0x32 20M 3M" base.vhdx >/dev/null
        qemu-img convert -f vhdx -O raw base.vhdx model.raw
    else
        "$IO" -f vhdx -o block_size=2M,logical_sector_size=4096 create base.vhdx $size
        "$IO" -f raw create model.raw $size
        printf 'w 0 5242880 49\nw 20971520 3145728 50\n' | tee -a base.ops |
            "$IO" -f vhdx script base.vhdx
        "$IO" -f raw script model.raw <base.ops
    fi
    local base_md5
    base_md5=$(md5sum <base.vhdx)
    ok "lss $lss: create mid (backing_file=base.vhdx)" \
        "$VDISK" create -f vhdx -o backing_file=../base.vhdx,block_size=1M sub/mid.vhdx 48M
    gen_ops $((RANDOM + lss)) $size 60 >mid.ops
    "$IO" -f raw script model.raw <mid.ops
    ok "lss $lss: writes to mid" "$IO" -f vhdx script sub/mid.vhdx <mid.ops
    cp model.raw model-mid.raw
    local mid_md5
    mid_md5=$(md5sum <sub/mid.vhdx)
    # the top links to mid's DataWriteGuid as it is now (a later write to mid breaks the link)
    ok "lss $lss: create top (backing_file=mid.vhdx)" \
        "$VDISK" create -f vhdx -o backing_file=mid.vhdx sub/top.vhdx 48M
    "$VDISK" info sub/top.vhdx >info 2>&1
    eq "lss $lss: info names the parent" "$(sed -n 's/^backing file: //p' info)" "mid.vhdx (vhdx)"
    eq "lss $lss: info: every file of the chain" "$(grep -c '^reads file:' info)" 3
    gen_ops $((RANDOM + 2 * lss)) $size 60 >top.ops
    "$IO" -f raw script model.raw <top.ops
    ok "lss $lss: writes to top" "$IO" -f vhdx script sub/top.vhdx <top.ops
    "$IO" dump sub/top.vhdx top.got && ok "lss $lss: top reads equal the model" cmp -s top.got model.raw
    "$IO" dump sub/mid.vhdx mid.got && ok "lss $lss: mid reads equal its model" cmp -s mid.got model-mid.raw
    eq "lss $lss: base unchanged by writes above it" "$(md5sum <base.vhdx)" "$base_md5"
    eq "lss $lss: mid unchanged by writes to top" "$(md5sum <sub/mid.vhdx)" "$mid_md5"
    ok "lss $lss: vdisk check top clean" "$IO" check sub/top.vhdx none
    ok "lss $lss: vdisk check mid clean" "$IO" check sub/mid.vhdx none
    # a whole-block discard in the top (8 MiB blocks) shows the parent again
    echo "d 8388608 8388608" | "$IO" -f vhdx script sub/top.vhdx
    "$IO" dump sub/top.vhdx top.got
    ok "lss $lss: discarded top block reads mid's bytes" \
        cmp -s <(tail -c +8388609 top.got | head -c 8388608) \
        <(tail -c +8388609 model-mid.raw | head -c 8388608)
    dd if=model-mid.raw of=model.raw bs=1M skip=8 seek=8 count=8 conv=notrunc status=none
    # flattened: a standalone image qemu-img reads (512-byte sectors only: QEMU's limit)
    ok "lss $lss: vdisk convert flattens the chain" \
        "$VDISK" convert -O vhdx -o logical_sector_size=$lss sub/top.vhdx flat.vhdx
    if [ "$lss" = 512 ]; then
        ok "lss $lss: flattened: qemu-img check clean" qemu-img check -q flat.vhdx
        ok "lss $lss: flattened: qemu-img compare with the model" \
            qemu-img compare -q -F raw flat.vhdx model.raw
    else
        "$IO" dump flat.vhdx flat.got && ok "lss $lss: flattened reads the model" cmp -s flat.got model.raw
    fi
    # the chain moved elsewhere: the relative name fails, the absolute one is tried
    mkdir -p "$d/moved"
    cp sub/top.vhdx "$d/moved/top.vhdx"
    "$IO" dump "$d/moved/top.vhdx" moved.got 2>moved.err &&
        ok "lss $lss: moved child finds its parent by absolute path" cmp -s moved.got model.raw ||
        fail "lss $lss: moved child: $(cat moved.err)"
    # the parent changed behind the child's back: its DataWriteGuid no longer links
    echo "w 0 512 9" | "$IO" -f vhdx script base.vhdx
    fails_with "lss $lss: a parent changed since is refused, naming both files" \
        "sub/mid.vhdx: parent .*base.vhdx does not match" "$IO" dump sub/top.vhdx /dev/null
    mv base.vhdx base.gone
    fails_with "lss $lss: a missing parent is a clear error" "base.vhdx.*No such file" \
        "$IO" dump sub/mid.vhdx /dev/null
    cd "$T" || exit 1
}
chain 512
chain 4096

# without a size, a child takes its parent's
"$IO" -f vhdx create "$T/p.vhdx" 40M
ok "create a child without a size" "$VDISK" create -f vhdx -o backing_file=p.vhdx "$T/kid.vhdx"
eq "the child has the parent's size" "$("$VDISK" info "$T/kid.vhdx" | sed -n 's/^virtual size: //p')" \
    $((40 << 20))

# a differencing image whose parent is not VHDX is refused at create
"$IO" -f raw create "$T/raw.img" 16M
fails_with "create refuses a parent that is not VHDX" "raw.img" \
    "$VDISK" create -f vhdx -o backing_file=raw.img "$T/bad.vhdx" 16M
finish
