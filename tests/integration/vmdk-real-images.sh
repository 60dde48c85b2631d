#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Real VMDK images made elsewhere (shared/testdata/images, see its MANIFEST.md):
# a VMware-style stream (header version 3, directory in the footer) and a
# qemu-img sparse image read back with the md5 the manifest lists, through
# libvdisk and through `vdisk convert`; afl9.vmdk (a huge grain directory) is
# refused cleanly.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
DATA=$(testdata_dir) # tests/needs.sh
[ -d "$DATA" ] || skip_all testdata "$DATA is absent: the real-image checks cannot run"
while read -r file size md5 type; do
    if [ ! -f "$DATA/$file" ]; then fail "$file missing from $DATA"; continue; fi
    img=$T/${file%.*}
    case $file in
    *.bz2) bzip2 -dc "$DATA/$file" >"$img" ;;
    *.xz) xz -dc "$DATA/$file" >"$img" ;;
    esac || { fail "$file: decompress"; continue; }
    "$IO" info "$img" >"$T/info" 2>&1
    eq "$file: virtual size" "$(sed -n 's/^virtual_size=//p' "$T/info")" "$size"
    eq "$file: md5 of the contents" "$("$IO" dump "$img" - | md5sum | cut -d' ' -f1)" "$md5"
    eq "$file: check finds no corruption" "$(sed -n 's/^corruptions=//p' "$T/info")" 0
    eq "$file: vdisk info says $type" "$("$VDISK" info "$img" | sed -n 's/^create type: //p')" "$type"
    if [ "$size" -le $((1 << 30)) ]; then # the 16 GiB stream's zeroes: the dump above is enough
        ok "$file: vdisk convert -O raw" "$VDISK" convert -O raw "$img" "$T/out.raw"
        eq "$file: converted md5" "$(md5sum <"$T/out.raw" | cut -d' ' -f1)" "$md5"
    fi
    rm -f "$img" "$T/out.raw"
done <<'LIST'
iotest-version3.vmdk.bz2 17179869184 df8a33ad9063a43ae69a17f63d3b91a9 streamOptimized
ext2.vmdk.xz 4194304 196066add11fb71c4c49cf1bb50d6d24 monolithicSparse
LIST

# the stream, opened for writing: a write, then qemu-img reads the old and new bytes
bzip2 -dc "$DATA/iotest-version3.vmdk.bz2" >"$T/v3.vmdk"
fails_with "the stream as shipped (RDONLY extent) refuses writes" "v3.vmdk: extent .* is RDONLY" \
    "$IO" script "$T/v3.vmdk" <<<"w 0 512 1"
# its extent line says RDONLY: make it RW, same length (the descriptor is embedded)
python3 -c 'import sys; p=sys.argv[1]; b=open(p,"rb").read(); open(p,"wb").write(b.replace(b"RDONLY 33554432", b"RW     33554432", 1))' "$T/v3.vmdk"
qemu-img convert -f vmdk -O raw "$T/v3.vmdk" "$T/v3.raw"
printf 'w 1048576 65536 90\nw 17179803648 65536 91\n' >"$T/ops"
"$IO" script "$T/v3.vmdk" <"$T/ops" && "$IO" -f raw script "$T/v3.raw" <"$T/ops"
ok "a VMware stream written by vdisk: qemu-img check clean" qemu-img check -q "$T/v3.vmdk"
ok "a VMware stream written by vdisk: qemu-img compare" qemu-img compare -q -f vmdk -F raw "$T/v3.vmdk" "$T/v3.raw"
rm -f "$T/v3.vmdk" "$T/v3.raw"

bzip2 -dc "$DATA/afl9.vmdk.bz2" >"$T/afl9.vmdk"
fails_with "afl9.vmdk refused cleanly" "^vdisk: .*afl9.vmdk: capacity of .* sectors is invalid" \
    "$VDISK" info "$T/afl9.vmdk"
fails_with "afl9.vmdk: open refused" "afl9.vmdk" "$VDISK" open "$T/afl9.vmdk"
eq "afl9.vmdk: nothing open" "$("$VDISK" list)" ""
finish
