#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Differencing VDI chains (no open-source tool but VirtualBox writes them; the
# oracle is a raw model given the same writes): three deep, made with
# `vdisk create -f vdi -o backing_file=`, parents named relative to the child,
# writes only in the top, copy-on-write of partial blocks, discard hiding the
# parent; a parent with another UUID, or changed after the child was made, is
# refused naming both files; a parent the header does not name comes from
# -o backing_file=; header names that are absolute, or loop, are refused.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
[ -x "$IO" ] || { fail "$IO not built"; finish; }
cd "$T" || exit 1
MB=1048576
mkdir -p sub/deeper

# ops SEED SIZE: random writes, zeroes and discards near block boundaries
ops() {
    awk -v seed="$1" -v size="$2" -v bs=$MB 'BEGIN {
        srand(seed)
        for (i = 0; i < 60; i++) {
            base = rand() < 0.5 ? int(rand() * size / bs) * bs : int(rand() * size)
            off = base + int(rand() * 131072) - 65536; off -= off % 512; if (off < 0) off = 0
            len = (int(rand() * (rand() < 0.3 ? 4096 : 256)) + 1) * 512
            if (off + len > size) len = size - off
            if (len <= 0) continue
            k = rand()
            if (k < 0.7) printf "w %d %d %d\n", off, len, 1 + int(rand() * 250)
            else if (k < 0.85) printf "z %d %d\n", off, len
            else { a = int((off + bs - 1) / bs) * bs; b = int((off + len) / bs) * bs
                   if (b > a) printf "d %d %d\n", a, b - a }
        }
        print "f"
    }'
}

# step NAME IMG: the same random ops on IMG and on the model
step() {
    ops "$RANDOM" $((40 * MB)) >ops.txt
    "$IO" script "$2" <ops.txt 2>.err || fail "$1: script on $2: $(cat .err)"
    "$IO" -f raw script model.raw <ops.txt || fail "$1: script on the model"
}

"$IO" -f raw create model.raw 40M
ok "create base (dynamic)" "$VDISK" create -f vdi base.vdi 40M
step base base.vdi
ok "create mid: backing_file=../base.vdi, size from the parent" \
    "$VDISK" create -f vdi -o backing_file=../base.vdi sub/mid.vdi
eq "mid: as large as its parent" "$("$IO" info sub/mid.vdi | sed -n 's/^virtual_size=//p')" $((40 * MB))
eq "mid: image type 4 (differencing)" "$(od -An -tu4 -j76 -N4 sub/mid.vdi | tr -d ' ')" 4
eq "mid: link UUID = the parent's image UUID" "$(od -An -tx1 -j424 -N16 sub/mid.vdi)" \
    "$(od -An -tx1 -j392 -N16 base.vdi)"
eq "mid: parent modification UUID = the parent's modification UUID" \
    "$(od -An -tx1 -j440 -N16 sub/mid.vdi)" "$(od -An -tx1 -j408 -N16 base.vdi)"
step mid sub/mid.vdi
ok "create top in a deeper directory: backing_file=../mid.vdi" \
    "$VDISK" create -f vdi -o backing_file=../mid.vdi sub/deeper/top.vdi
sums_before=$(md5sum base.vdi sub/mid.vdi)
for i in 1 2 3; do step "top $i" sub/deeper/top.vdi; done
"$IO" dump sub/deeper/top.vdi got.raw 2>.err || fail "dump top: $(cat .err)"
cmp -s got.raw model.raw && pass "3-deep chain reads equal the model (COW, zeroes, discards)" ||
    fail "chain differs from the model: $(cmp got.raw model.raw 2>&1)"
eq "writes went only to the top: base and mid unchanged" "$(md5sum base.vdi sub/mid.vdi)" "$sums_before"
"$VDISK" info --json sub/deeper/top.vdi >info.json
grep -q '"image_type": "differencing"' info.json && pass "info: differencing" || fail "info: $(cat info.json)"
grep -q '"backing_file": "../mid.vdi"' info.json && pass "info: the parent's name" ||
    fail "info backing: $(grep backing info.json)"
eq "info: every file of the chain is read" "$("$VDISK" info sub/deeper/top.vdi | grep -c '^reads file:')" 3
ok "vdisk check of the top: clean" "$VDISK" check -q sub/deeper/top.vdi
ok "vdisk convert flattens the chain" "$VDISK" convert -O raw sub/deeper/top.vdi flat.raw
cmp -s flat.raw model.raw && pass "the flattened chain equals the model" || fail "flat differs"
# a discarded block of the top hides the parent (ZERO), a partial discard keeps the data
printf 'd %d %d\nd 100 4096\nf\n' $MB $MB | tee ops.txt | "$IO" script sub/deeper/top.vdi
printf 'z %d %d\n' $MB $MB | "$IO" -f raw script model.raw
"$IO" dump sub/deeper/top.vdi got.raw && cmp -s got.raw model.raw &&
    pass "discard in the top reads zeroes over the parent's data" || fail "discard in top: differs"

# Threads racing on a differencing image (copy-on-write from an allocated, zeroed parent).
"$VDISK" create -f vdi zbase.vdi 8M && printf 'w 0 8388608 0\nf\n' | "$IO" script zbase.vdi &&
    "$VDISK" create -f vdi -o backing_file=zbase.vdi zchild.vdi
ok "4 threads on a differencing image: every block verified" "$IO" mt zchild.vdi 4 1500
ok "... vdisk check clean" "$VDISK" check -q zchild.vdi

# A parent with another UUID (the same name, made again) is refused, naming both files.
cp base.vdi base.keep
"$VDISK" create -f vdi other.vdi 40M && mv other.vdi base.vdi
fails_with "a parent with another UUID is refused, naming both files" \
    "mid.vdi: parent .*base.vdi is not this image's parent: the child links to UUID" \
    "$IO" dump sub/deeper/top.vdi got.raw
mv base.keep base.vdi
ok "the right parent back: the chain opens" "$IO" dump sub/deeper/top.vdi got.raw
# Writing the parent gives it a new modification UUID: its children refuse it.
cp base.vdi base.keep
echo "w 0 512 9" | "$IO" script base.vdi
fails_with "a parent changed after the child was made is refused, naming both" \
    "mid.vdi: parent .*base.vdi was changed after this image was made from it" \
    "$IO" dump sub/deeper/top.vdi got.raw
mv base.keep base.vdi

# Differencing images whose headers do not name their parents (as VirtualBox makes them),
# laid out as VirtualBox does: the base in the machine's directory, snapshots in Snapshots/.
mkdir -p vm/Snapshots
cp base.vdi vm/vm.vdi
"$VDISK" create -f vdi -o backing_file=../vm.vdi vm/Snapshots/s1.vdi
echo "w 3000000 70000 33" | "$IO" script vm/Snapshots/s1.vdi
"$VDISK" create -f vdi -o backing_file=s1.vdi vm/Snapshots/s2.vdi
echo "w 5000000 9000 44" | "$IO" script vm/Snapshots/s2.vdi
"$IO" dump vm/Snapshots/s2.vdi vbox-want.raw
cp base.vdi vm/Snapshots/decoy.vdi # same image UUID, other modification UUID: not chosen
echo "w 0 512 1" | "$IO" script vm/Snapshots/decoy.vdi
for f in vm/Snapshots/s1.vdi vm/Snapshots/s2.vdi; do
    dd if=/dev/zero of=$f bs=1 seek=84 count=256 conv=notrunc status=none
done
"$IO" dump vm/Snapshots/s2.vdi got.raw 2>.err && cmp -s got.raw vbox-want.raw &&
    pass "no parent names: each parent found by its UUID (beside, then one directory up)" ||
    fail "VirtualBox layout: $(cat .err)"
"$VDISK" info vm/Snapshots/s2.vdi | grep -q "^parent: s1.vdi (found by its UUID)" &&
    pass "info says the parent was found by its UUID" || fail "info: $("$VDISK" info vm/Snapshots/s2.vdi | grep parent)"
"$VDISK" info vm/Snapshots/s1.vdi | grep -q "^parent: ../vm.vdi (found by its UUID)" &&
    pass "... one directory up, the one whose modification UUID matches" ||
    fail "info s1: $("$VDISK" info vm/Snapshots/s1.vdi | grep parent)"
mv vm/vm.vdi vm.away && rm vm/Snapshots/decoy.vdi && mkfifo vm/fifo.vdi vm/Snapshots/fifo.vdi
fails_with "no parent name and no file with the UUID (FIFOs named .vdi left alone): refused" \
    "no .vdi file beside it or one directory up has its parent's UUID: give it with -o backing_file=" \
    "$IO" dump vm/Snapshots/s1.vdi got.raw
VDISK_TEST_OPEN_OPTS=backing_file=../../vm.away "$IO" dump vm/Snapshots/s1.vdi got.raw 2>.err &&
    pass "-o backing_file= names a parent anywhere" || fail "-o backing_file: $(cat .err)"
"$VDISK" create -f vdi -o backing_file=base.vdi vbox.vdi
dd if=/dev/zero of=vbox.vdi bs=1 seek=84 count=256 conv=notrunc status=none
VDISK_TEST_OPEN_OPTS=backing_file=base.vdi "$IO" dump vbox.vdi got.raw 2>.err &&
    "$IO" dump base.vdi base.raw && cmp -s got.raw base.raw &&
    pass "-o backing_file= names the parent" || fail "-o backing_file: $(cat .err)"
VDISK_TEST_OPEN_OPTS=backing_file=sub/mid.vdi fails_with "-o backing_file= with the wrong parent: refused" \
    "is not this image's parent" "$IO" dump vbox.vdi got.raw
fails_with "backing_file= on a plain image refused" "only a differencing VDI image has a parent" \
    env VDISK_TEST_OPEN_OPTS=backing_file=base.vdi "$IO" dump base.vdi got.raw
# A header naming an absolute path is refused before the file is opened.
printf 'vdisk-parent:/etc/shadow\0' | dd of=vbox.vdi bs=1 seek=84 conv=notrunc status=none
fails_with "a header naming an absolute path is refused" "is not a relative path" "$IO" dump vbox.vdi got.raw
# A header naming itself: a loop.
printf 'vdisk-parent:vbox.vdi\0' | dd of=vbox.vdi bs=1 seek=84 conv=notrunc status=none
fails_with "a chain that loops is refused" "cycle" "$IO" dump vbox.vdi got.raw
ok "an absolute backing_file" "$VDISK" create -f vdi -o backing_file="$T/base.vdi" sub/deeper/abs.vdi
eq "... is stored relative to the child (the header names no absolute path)" \
    "$(dd if=sub/deeper/abs.vdi bs=1 skip=84 count=40 status=none | tr -d '\0')" "vdisk-parent:../../base.vdi"
ok "... and opens" "$IO" dump sub/deeper/abs.vdi got.raw
fails_with "a static differencing image cannot be made" "cannot be static" \
    "$VDISK" create -f vdi -o backing_file=base.vdi,static=on x.vdi
fails_with "a parent of another format is refused" "is a VDI image, not qcow2" \
    "$VDISK" create -f vdi -o backing_file=base.vdi,backing_fmt=qcow2 x.vdi
fails_with "a missing parent is refused" "backing file .*nothere.vdi" \
    "$VDISK" create -f vdi -o backing_file=nothere.vdi x.vdi
[ ! -e x.vdi ] && pass "refused creates leave no file" || fail "x.vdi left behind"
finish
