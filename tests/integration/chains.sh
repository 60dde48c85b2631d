#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Backing chains, the image layer's job for every format: a qcow2 overlay over a
# raw, over a qcow2 and over a read-only ISO 9660 parent (and a three-deep chain).
# Reads equal qemu-img convert of the same chain (qemu-img reads the ISO as raw);
# writes through a disk land in the top only (the parent's md5 stays), the top
# passes qemu-img check and compares equal to what was written. Backing files are
# followed only in a stated format: never probed. About 20 s.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
command -v genisoimage >/dev/null || { fail "genisoimage missing (scripts/install-deps test)"; finish; }

md5() { md5sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# Parents, 8 MiB of content each, with data, holes and zeroes.
truncate -s 8M "$T/base.raw"
dd if=/dev/urandom of="$T/base.raw" bs=64k seek=3 count=20 conv=notrunc status=none
dd if=/dev/urandom of="$T/base.raw" bs=1k seek=5000 count=7 conv=notrunc status=none
qemu-img convert -f raw -O qcow2 -o cluster_size=4096 "$T/base.raw" "$T/base.qcow2"
mkdir -p "$T/isodir/docs"
head -c 1500000 /dev/urandom >"$T/isodir/big.bin"
echo "a file on a read-only disc" >"$T/isodir/docs/readme.txt"
genisoimage -quiet -R -o "$T/base.iso" "$T/isodir" 2>/dev/null
eq "the ISO probes as iso" "$("$VDISK" info "$T/base.iso" | sed -n 's/^format: //p')" iso

for parent in raw qcow2 iso; do
    base=$T/base.$parent top=$T/top-$parent.qcow2 before=$(md5 "$T/base.$parent")
    ok "$parent: vdisk create an overlay (size from the parent)" \
        "$VDISK" create -f qcow2 -o "backing_file=base.$parent,backing_fmt=$parent" "$top" 0
    # the header says what QEMU calls the format: an ISO is raw to qemu-img
    eq "$parent: qemu-img sees the backing format" "$(qemu-img info -U --output=json "$top" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["backing-filename-format"])')" \
        "${parent/iso/raw}"
    "$VDISK" info "$top" >"$T/info"
    ok "$parent: info names the backing file and its format" \
        grep -qx "backing file: base.$parent (${parent/iso/raw})" "$T/info"
    ok "$parent: info lists the files it reads" \
        sh -c "grep -qx 'reads file: $top' '$T/info' && grep -qx 'reads file: $T/base.$parent' '$T/info'"
    eq "$parent: overlay size is the parent's" "$("$VDISK" info --json "$top" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual_size"])')" \
        "$(qemu-img info -U --output=json -f "${parent/iso/raw}" "$base" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')"

    # reads: vdisk convert and a read-only disk show what qemu-img shows
    qemu-img convert -O raw "$top" "$T/ref.raw"
    rm -f "$T/got.raw"
    ok "$parent: vdisk convert reads the chain" "$VDISK" convert -O raw "$top" "$T/got.raw"
    eq "$parent: vdisk convert = qemu-img convert" "$(md5 "$T/got.raw")" "$(md5 "$T/ref.raw")"
    dev=$("$VDISK" open -r --via fuse "$top") || fail "$parent: open -r --via fuse"
    eq "$parent: the read-only disk reads the chain" \
        "$(head -c "$(size "$T/ref.raw")" "$dev" | md5sum | cut -d' ' -f1)" "$(md5 "$T/ref.raw")"
    ok "$parent: close the read-only disk" "$VDISK" close "$top"

    # writes through a disk: partial clusters, across the parent's data and holes
    dev=$("$VDISK" open --via fuse "$top") || fail "$parent: open --via fuse"
    cp "$T/ref.raw" "$T/want.raw"
    n=$(size "$T/ref.raw")
    for at in 0 196608 200000 $((n / 3 + 17)) $((n / 2)) $((n - 3000)); do
        head -c 3000 /dev/urandom >"$T/chunk"
        dd if="$T/chunk" of="$dev" bs=1 seek="$at" conv=notrunc status=none
        dd if="$T/chunk" of="$T/want.raw" bs=1 seek="$at" conv=notrunc status=none
    done
    ok "$parent: sync the disk" blockdev --flushbufs "$dev"
    eq "$parent: the disk reads what was written over the parent" \
        "$(head -c "$(size "$T/want.raw")" "$dev" | md5sum | cut -d' ' -f1)" "$(md5 "$T/want.raw")"
    ok "$parent: close" "$VDISK" close "$top"
    eq "$parent: the parent is unchanged" "$(md5 "$base")" "$before"
    ok "$parent: qemu-img check of the top is clean" qemu-img check -q "$top"
    ok "$parent: qemu-img compare top = what was written" \
        qemu-img compare -q -f qcow2 -F raw "$top" "$T/want.raw"
    nothing_left "$parent: close" "$top"
done

# three deep: raw <- qcow2 <- qcow2, each level written in its own places
"$VDISK" create -f qcow2 -o backing_file=base.raw,backing_fmt=raw "$T/mid.qcow2" 0
qemu-io -f qcow2 -c "write -P 0x4d 65536 4096" "$T/mid.qcow2" >/dev/null
"$VDISK" create -f qcow2 -o backing_file=mid.qcow2,backing_fmt=qcow2 "$T/top3.qcow2" 0
qemu-io -f qcow2 -c "write -P 0x54 1048576 4096" "$T/top3.qcow2" >/dev/null
ok "three deep: vdisk convert" "$VDISK" convert -O raw "$T/top3.qcow2" "$T/got3.raw"
qemu-img convert -O raw "$T/top3.qcow2" "$T/ref3.raw"
eq "three deep: vdisk convert = qemu-img convert" "$(md5 "$T/got3.raw")" "$(md5 "$T/ref3.raw")"
eq "three deep: info lists three files" "$("$VDISK" info "$T/top3.qcow2" | grep -c '^reads file: ')" 3

# backing files are never probed: a header naming one without a format is refused
cp "$T/top-raw.qcow2" "$T/noformat.qcow2"
python3 - "$T/noformat.qcow2" <<'PY'
import struct, sys
p = sys.argv[1]
with open(p, "r+b") as f:
    h = f.read(4096)
    i = h.index(struct.pack(">I", 0xE2792ACA))  # the backing format extension
    f.seek(i)
    f.write(struct.pack(">II", 0, 0))  # end of extensions: no format stated
PY
fails_with "a backing file with no stated format is refused" "no stated format" \
    "$VDISK" open -r --via fuse "$T/noformat.qcow2"
fails_with "... by convert too" "no stated format" "$VDISK" convert -O raw "$T/noformat.qcow2" "$T/x.raw"
ok "stated by the user (-o backing_fmt=raw), it opens" \
    "$VDISK" open -r -o backing_fmt=raw --via fuse "$T/noformat.qcow2"
ok "close it" "$VDISK" close "$T/noformat.qcow2"
fails_with "vdisk create needs backing_fmt with backing_file" "backing_fmt" \
    "$VDISK" create -f qcow2 -o backing_file=base.raw "$T/nofmt2.qcow2" 0
[ -e "$T/nofmt2.qcow2" ] && fail "a refused create left its file" || pass "a refused create leaves no file"

# a header that names a secret file with no format: its bytes never show
echo "secret-$RANDOM-$RANDOM" >"$T/secret"
chmod 600 "$T/secret"
qemu-img create -q -f qcow2 -b "$T/secret" -F raw "$T/evil.qcow2" 1M 2>/dev/null ||
    fail "qemu-img create evil.qcow2"
python3 - "$T/evil.qcow2" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    h = f.read(4096)
    i = h.index(struct.pack(">I", 0xE2792ACA))
    f.seek(i)
    f.write(struct.pack(">II", 0, 0))
PY
fails_with "a qcow2 naming a secret with no format: open -r refused" "no stated format" \
    "$VDISK" open -r "$T/evil.qcow2"
"$VDISK" convert -O raw "$T/evil.qcow2" "$T/evil.raw" 2>/dev/null
if [ -e "$T/evil.raw" ] && grep -q secret- "$T/evil.raw"; then fail "the secret's bytes came out"; else
    pass "the secret's bytes never come out"; fi
finish
