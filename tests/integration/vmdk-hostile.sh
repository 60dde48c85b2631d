#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Hostile VMDK input: truncated files, descriptors with junk, extents outside
# their files or at paths the user did not ask for (the path rule of
# docs/vmdk.md: relative, inside the descriptor's directory, symlinks
# resolved; -o extent-paths=any opts out), absurd grain sizes, loops in parent
# chains. Each is a clear "vdisk: FILE: WHAT: WHY" error, never a crash or hang.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
cd "$T" || exit 1
mkdir -p d && cd d || exit 1

# refused DESC REGEX FILE [ARGS]: vdisk info and a read both fail with REGEX, cleanly.
refused() {
    local desc=$1 re=$2 img=$3
    shift 3
    fails_with "$desc: info" "^vdisk: .*$re" timeout 20 "$VDISK" info "$img"
    fails_with "$desc: read" "$re" timeout 20 "$IO" "$@" dump "$img" /dev/null
}

# patch FILE OFFSET FORMAT VALUE: write a little-endian field (python struct format).
patch() {
    python3 -c 'import struct,sys; f=open(sys.argv[1],"r+b"); f.seek(int(sys.argv[2])); f.write(struct.pack("<"+sys.argv[3], int(sys.argv[4], 0)))' "$@"
}

# descriptor NAME EXTENT-LINE...: a text descriptor.
descriptor() {
    local f=$1
    shift
    { printf '# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\n'
      printf '%s\n' "$@"; } >"$f"
}

truncate -s 1M data.raw

# --- the path rule ---
descriptor shadow.vmdk 'RW 2048 FLAT "/etc/shadow" 0'
refused "absolute extent path" "shadow.vmdk: extent file /etc/shadow: an absolute path.*extent-paths=any" shadow.vmdk
mkdir -p sub
descriptor sub/up.vmdk 'RW 2048 FLAT "../data.raw" 0'
refused ".. escape" "up.vmdk: extent file ../data.raw resolves to .*/d/data.raw, outside the descriptor's directory" sub/up.vmdk
ln -s ../data.raw sub/link.raw
descriptor sub/link.vmdk 'RW 2048 FLAT "link.raw" 0'
refused "symlink escape" "extent file link.raw resolves to .*/d/data.raw, outside" sub/link.vmdk
descriptor abs.vmdk "RW 2048 FLAT \"$T/d/data.raw\" 0"
refused "absolute path to a harmless file, not asked for" "an absolute path" abs.vmdk
ok "the same with -o extent-paths=any: opened" "$IO" -o extent-paths=any dump abs.vmdk /dev/null
descriptor inside.vmdk 'RW 2048 FLAT "sub/../data.raw" 0'
ok "an extent that stays inside through sub/..: allowed" "$IO" dump inside.vmdk /dev/null
descriptor missing.vmdk 'RW 2048 FLAT "gone-flat.vmdk" 0'
refused "missing extent" "missing.vmdk: extent file .*gone-flat.vmdk: No such file or directory" missing.vmdk
descriptor badopt.vmdk 'RW 2048 FLAT "data.raw" 0'
fails_with "extent-paths takes inside or any" "extent-paths must be inside or any" \
    "$IO" -o extent-paths=sometimes dump badopt.vmdk /dev/null
ok "a relative extent inside the directory opens" "$IO" dump badopt.vmdk /dev/null

descriptor selfish.vmdk 'RW 2048 FLAT "selfish.vmdk" 0'
refused "an extent that is the descriptor itself" "selfish.vmdk: extent file selfish.vmdk is the descriptor itself" selfish.vmdk

# --- extents outside their file ---
descriptor past.vmdk 'RW 4096 FLAT "data.raw" 0'
refused "flat extent larger than its file" "past.vmdk: extent data.raw: 2097152 bytes at offset 0 do not fit in the file" past.vmdk
descriptor off.vmdk 'RW 2048 FLAT "data.raw" 9999999'
refused "flat extent offset past the file" "do not fit in the file" off.vmdk

# --- junk in descriptors ---
descriptor junk.vmdk 'RW 2048 FLAT "data.raw" 0' 'this is not a descriptor line'
refused "junk line" "junk.vmdk: descriptor line 8 is neither key=value nor an extent" junk.vmdk
descriptor junk2.vmdk 'RW 2048 FLAT "data.raw" 0 extra words'
refused "junk after an extent" "descriptor line 7: junk after the extent" junk2.vmdk
descriptor junk3.vmdk 'RW many FLAT "data.raw" 0'
refused "extent size not a number" "descriptor line 7: an extent line wants" junk3.vmdk
descriptor junk4.vmdk 'RW 2048 FLAT "data.raw'
refused "unterminated file name" "descriptor line 7: unterminated file name" junk4.vmdk
descriptor junk5.vmdk 'RW 2048 VMFSRDM "data.raw"'
refused "unsupported extent type" "extent type 'VMFSRDM' is not supported" junk5.vmdk
descriptor junk6.vmdk 'RW 99999999999999999999 FLAT "data.raw" 0'
refused "extent size overflow" "descriptor line 7" junk6.vmdk
descriptor noext.vmdk
refused "no extent" "noext.vmdk: descriptor lists no extent" noext.vmdk
{ printf '# Disk DescriptorFile\nversion=1\nCID=zz\ncreateType="monolithicFlat"\n'; } >badcid.vmdk
refused "bad CID" "bad CID 'zz'" badcid.vmdk
{ printf '# Disk DescriptorFile\n'; head -c 2M /dev/zero | tr '\0' '#'; } >huge.vmdk
refused "a 2 MiB descriptor" "huge.vmdk: a descriptor of .* bytes is too large" huge.vmdk

# --- sparse headers ---
qemu-img create -q -f vmdk s.vmdk 64M
qemu-io -f vmdk -c "write -P 1 0 1M" s.vmdk >/dev/null
cp s.vmdk t1.vmdk && truncate -s 300 t1.vmdk
refused "truncated to 300 bytes" "t1.vmdk: sparse extent is truncated" t1.vmdk
cp s.vmdk t2.vmdk && truncate -s 8192 t2.vmdk
refused "truncated inside the tables" "t2.vmdk: grain directory .* does not fit in the file" t2.vmdk
for g in 0 3 0x40000000; do
    cp s.vmdk g.vmdk && patch g.vmdk 20 Q "$g"
    refused "grain size $g" "g.vmdk: grain size of $((g)) sectors is invalid" g.vmdk
done
cp s.vmdk gt.vmdk && patch gt.vmdk 44 I 0x100000
refused "absurd grain table size" "gt.vmdk: 1048576 entries per grain table is invalid" gt.vmdk
cp s.vmdk cap.vmdk && patch cap.vmdk 12 Q 0x7fffffffffffff
refused "absurd capacity" "cap.vmdk: capacity of .* sectors is invalid|grain directory of .* does not fit" cap.vmdk
cp s.vmdk gd.vmdk && patch gd.vmdk 56 Q 0x7fffffff
refused "directory past the end" "gd.vmdk: grain directory of .* does not fit in the file" gd.vmdk
cp s.vmdk ver.vmdk && patch ver.vmdk 4 I 9
refused "unknown version" "ver.vmdk: sparse extent version 9 is not supported" ver.vmdk
# a grain table entry pointing past the end of the file: reads fail, check says corrupt
cp s.vmdk gte.vmdk
gt=$(python3 -c 'import struct; f=open("gte.vmdk","rb").read(); gd=struct.unpack_from("<Q",f,56)[0]; print(struct.unpack_from("<I",f,gd*512)[0]*512)')
patch gte.vmdk "$gt" I 0x7fffff00
fails_with "grain past the end: read fails" "gte.vmdk: .*grain 0 points outside the file" "$IO" dump gte.vmdk /dev/null
"$VDISK" check gte.vmdk >/dev/null 2>&1
eq "grain past the end: vdisk check exits 2 (corrupt), as qemu-img check" "$?" 2
qemu-img check -q gte.vmdk >/dev/null 2>&1
[ $? != 0 ] && pass "qemu-img check fails on it too" || fail "qemu-img check says gte.vmdk is clean"
# a stream whose directory is "at the end" without a footer
cp s.vmdk nof.vmdk && patch nof.vmdk 56 Q -1 2>/dev/null || patch nof.vmdk 56 q -1
refused "directory at the end, no footer" "nof.vmdk: stream's grain directory is in its footer, but there is no footer" nof.vmdk
# a compressed grain that is not zlib
qemu-img create -q -f vmdk -o subformat=streamOptimized z.vmdk 4M
qemu-io -f vmdk -c "write -P 7 0 64k" z.vmdk >/dev/null
python3 - z.vmdk <<'PY'
import struct, sys
f = open(sys.argv[1], 'r+b'); b = f.read()
gd = struct.unpack_from('<Q', b, 56)[0]
gte = struct.unpack_from('<I', b, struct.unpack_from('<I', b, gd * 512)[0] * 512)[0]
f.seek(gte * 512 + 12); f.write(b'garbage!' * 4)
PY
fails_with "bad zlib grain: read fails" "z.vmdk: extent .*grain 0 does not decompress" "$IO" dump z.vmdk /dev/null

# --- parents ---
"$IO" -f vmdk create a.vmdk 4M
"$VDISK" create -f vmdk -o backing_file=a.vmdk b.vmdk 4M
sed -i 's/^parentFileNameHint=.*/parentFileNameHint="b.vmdk"/' b.vmdk 2>/dev/null || true
python3 - <<'PY'
# b's own descriptor is embedded: point it at itself (a loop of one)
b = bytearray(open('b.vmdk', 'rb').read())
i = b.find(b'parentFileNameHint="a.vmdk"')
b[i:i + 27] = b'parentFileNameHint="b.vmdk"'
open('b.vmdk', 'wb').write(b)
PY
refused "a parent loop of one" "b.vmdk: backing chain has a cycle through" b.vmdk
mkdir -p loop && cd loop || exit 1
"$IO" -f vmdk create x.vmdk 4M
"$VDISK" create -f vmdk -o backing_file=x.vmdk y.vmdk 4M
cid_y=$(strings y.vmdk | sed -n 's/^CID=//p')
python3 - "$cid_y" <<'PY'
# x now names y as its parent, with y's CID: x -> y -> x
import sys
b = bytearray(open('x.vmdk', 'rb').read())
i = b.find(b'parentCID=ffffffff')
new = ('parentCID=%s\nparentFileNameHint="y.vmdk"' % sys.argv[1]).encode()
b[i:i + 18] = new
open('x.vmdk', 'wb').write(b[:len(b) - len(new) + 18])
PY
refused "a parent loop of two" "backing chain has a cycle through .*/loop/" y.vmdk
cd ..
{ printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=2\nparentFileNameHint="/etc/passwd"\ncreateType="monolithicFlat"\nRW 2048 FLAT "data.raw" 0\n'; } >pabs.vmdk
refused "absolute parent path" "pabs.vmdk: parent /etc/passwd: an absolute path" pabs.vmdk

# --- the shared hostile image ---
if bzcat "$(testdata_dir)/afl9.vmdk.bz2" >afl9.vmdk 2>/dev/null; then
    refused "afl9.vmdk (huge grain directory)" "afl9.vmdk: capacity of .* sectors is invalid" afl9.vmdk
else
    skip testdata "no shared testdata images"
fi

finish
