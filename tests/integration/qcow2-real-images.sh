#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Real qcow2 images made elsewhere (shared/testdata/images, see its MANIFEST.md)
# read back through libvdisk with the md5 the manifest lists.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
DATA=$(testdata_dir) # tests/needs.sh
[ -d "$DATA" ] || skip_all testdata "$DATA is absent: the real-image checks cannot run"
while read -r file size md5; do
    if [ ! -f "$DATA/$file" ]; then fail "$file missing from $DATA"; continue; fi
    img=$T/${file%.xz}
    xz -dc "$DATA/$file" >"$img" || { fail "$file: decompress"; continue; }
    "$IO" info "$img" >"$T/info" 2>&1
    eq "$file: virtual size" "$(sed -n 's/^virtual_size=//p' "$T/info")" "$size"
    eq "$file: md5 of the contents" "$("$IO" dump "$img" - | md5sum | cut -d' ' -f1)" "$md5"
    eq "$file: check finds no corruption" "$(sed -n 's/^corruptions=//p' "$T/info")" 0
    rm -f "$img"
done <<'LIST'
ext2.qcow2.xz 4194304 196066add11fb71c4c49cf1bb50d6d24
windows_volume.qcow2.xz 35913728 e472c93726a55ee3c5f9a860f3a39cae
LIST
finish
