#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Images in formats vdisk does not serve (QED, Parallels, ...) are never
# opened as raw: every command refuses them with a message naming the format,
# leaves no device or record behind and never writes to them. -f raw still
# opens any file as raw, because the user asked for it.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
at_exit "$VDISK" close --all
command -v qemu-img >/dev/null || { echo "qemu-img missing: install qemu-utils"; exit 1; }
cd "$T" || exit 1

# sums DIR: md5 of every file in DIR (an image may be several files)
sums() { (cd "$1" && md5sum -- *); }

# refused NAME FORMAT DIR IMAGE: every way in refuses IMAGE (in DIR) as FORMAT, harmlessly.
refused() {
    local name=$1 fmt=$2 dir=$3 img=$3/$4 re="\\(format $2\\)" before
    before=$(sums "$dir")
    fails_with "$name: open refuses it" "^vdisk: .*$re: this vdisk cannot serve $fmt images" \
        "$VDISK" open "$img"
    fails_with "$name: open -r refuses it" "$re" "$VDISK" open -r "$img"
    fails_with "$name: info refuses it" "$re" "$VDISK" info "$img"
    fails_with "$name: check refuses it" "$re" "$VDISK" check "$img"
    fails_with "$name: convert refuses it" "$re" "$VDISK" convert -O qcow2 "$img" "$T/out.qcow2"
    [ -e "$T/out.qcow2" ] && fail "$name: convert left its output" ||
        pass "$name: convert left no output"
    fails_with "$name: serve refuses it" "$re" timeout 20 "$VDISK" serve --socket "$T/s.sock" "$img"
    fails_with "$name: open -f $fmt names it too" "$re" "$VDISK" open -f "$fmt" "$img"
    eq "$name: no loop device over it" "$(losetup -j "$img")" ""
    eq "$name: no record" "$("$VDISK" list)" ""
    eq "$name: image unchanged" "$(sums "$dir")" "$before"
}

# made NAME FORMAT FILE QEMU-IMG-CREATE-ARGS...: qemu-img makes it in its own directory
made() {
    local name=$1 fmt=$2 file=$3
    shift 3
    mkdir -p "$T/$name"
    for _ in 1 2 3; do
        qemu-img create -q "$@" "$T/$name/$file" 64M >"$T/.qerr" 2>&1 && break
        rm -f "$T/$name/$file"
    done
    if [ -e "$T/$name/$file" ]; then
        # -f: qemu-img's own probe takes a fixed VHD for raw
        eq "$name: qemu-img reads it as $fmt" \
            "$(qemu-img info -U -f "$fmt" --output=json "$T/$name/$file" |
                python3 -c 'import json,sys; print(json.load(sys.stdin)["format"])')" "$fmt"
        refused "$name" "$fmt" "$T/$name" "$file"
    else
        fail "$name: qemu-img create $*: $(head -c 300 "$T/.qerr")"
    fi
}

made qed qed t.qed -f qed
made parallels parallels t.hdd -f parallels
made qcow qcow t.qcow -f qcow

# Formats qemu-img only reads: their signatures written by hand into a 1 MiB file.
handmade() { # handmade NAME FORMAT OFFSET PRINTF-FORMAT
    mkdir -p "$T/$1"
    truncate -s 1M "$T/$1/t.img"
    printf "$4" | dd of="$T/$1/t.img" bs=1 seek="$3" conv=notrunc status=none
    refused "$1" "$2" "$T/$1" t.img
}
handmade dmg dmg $(((1 << 20) - 512)) 'koly\0\0\0\4\0\0\2\0'
handmade cloop cloop 0 '#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n'
handmade bochs bochs 0 'Bochs Virtual HD Image\0\0\0\0\0\0\0\0\0\0Redolog\0\0\0\0\0\0\0\0\0Growing\0\0\0\0\0\0\0\0\0\0\0\2\0'

# VHDX is served now (vhdx*.c): no longer refused
mkdir -p "$T/vhdx"
qemu-img create -q -f vhdx "$T/vhdx/t.vhdx" 64M
eq "vhdx: info names it vhdx (served, not refused)" \
    "$("$VDISK" info "$T/vhdx/t.vhdx" | sed -n 's/^format: //p')" vhdx

# -f raw: the user said raw, so any file opens as raw (and writes land in it)
img=$T/vhdx/t.vhdx
dev=$("$VDISK" open -f raw "$img") && pass "open -f raw of a vhdx" || fail "open -f raw: $dev"
if [ -b "$dev" ]; then
    eq "-f raw: the device shows the file's bytes" "$(head -c 8 "$dev")" "vhdxfile"
    "$VDISK" list | grep -q " raw .*$img\$" && pass "-f raw: recorded as raw" ||
        fail "-f raw: list says $("$VDISK" list)"
    ok "-f raw: close" "$VDISK" close "$img"
fi
eq "-f raw: closed, no loop device left" "$(losetup -j "$img")" ""

# a new image named for a foreign format is not made as raw
eq "no file made for them" "$(ls "$T"/new.* 2>/dev/null)" ""
ok "open new.img still makes a raw image" "$VDISK" open "$T/new.img" 16M
ok "close new.img" "$VDISK" close "$T/new.img"

# Real images made by other tools (shared/testdata/images, see its MANIFEST.md)
DATA=$(testdata_dir) # tests/needs.sh
if [ ! -d "$DATA" ]; then
    skip testdata "$DATA is absent: the real-image checks cannot run"
else
    mkdir -p "$T/real"
    while read -r file fmt; do
        img=$T/real/${file%.*}
        case $file in
        *.bz2) bzip2 -dc "$DATA/$file" >"$img" ;;
        *.xz) xz -dc "$DATA/$file" >"$img" ;;
        esac || { fail "$file: decompress"; continue; }
        fails_with "$file: info names it $fmt" "\\(format $fmt\\)" "$VDISK" info "$img"
        fails_with "$file: open refuses it" "\\(format $fmt\\)" "$VDISK" open "$img"
        eq "$file: no loop device over it" "$(losetup -j "$img")" ""
        rm -f "$img"
    done <<'LIST'
LIST
    eq "real images: no record" "$("$VDISK" list)" ""
fi
finish
