#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk resize of VMDK (qemu-img resize refuses every VMDK): monolithicSparse (grain
# directory grown in place, and moved to the end of the file when its padding is full),
# monolithicFlat, twoGbMaxExtentFlat/Sparse (new extent files), made by qemu-img and by
# vdisk; odd sizes round up to a sector. Checked with qemu-img (info, check, compare with
# a raw reference resized the same way), writes across the old end by qemu-io read back
# by vdisk convert; shrink refused over data and without --shrink, allowed over holes;
# streamOptimized refused; ext4 on a grown disk through fuse, like a user; a live grow
# across 2 GiB through fuse. ~6-15 s.
. "$(dirname "$0")/../lib.sh"

qsize() { qemu-img info -f vmdk --output=json "$1" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p' | head -1; }
sec() { echo $((($1 + 511) / 512 * 512)); } # VMDK sizes are whole sectors

# step NAME IMG REF SIZE [--shrink]: resize both to SIZE, then info, check, compare.
step() {
    local name=$1 a=$2 ref=$3 size=$4
    shift 4
    ok "$name: resize $* to $size" "$VDISK" resize "$@" "$a" "$size"
    qemu-img resize -q -f raw "$@" "$ref" "$(sec "$size")"
    eq "$name: qemu-img info size after $size" "$(qsize "$a")" "$(sec "$size")"
    ok "$name: qemu-img check clean after $size" qemu-img check -q -f vmdk "$a"
    ok "$name: qemu-img compare with the raw reference after $size" \
        qemu-img compare -q -f vmdk -F raw "$a" "$ref"
}

# cycle NAME IMG SIZE...: patterns at the start and end, grow to each SIZE, write across the
# old end, read it back with vdisk.
cycle() {
    local name=$1 a=$2 ref=$T/ref.raw old size
    shift 2
    old=$(qsize "$a")
    qemu-io -f vmdk -c 'write -P 0xab 0 64k' -c "write -P 0xcd $((old - 65536)) 64k" "$a" >/dev/null
    qemu-img convert -f vmdk -O raw "$a" "$ref"
    for size in "$@"; do
        step "$name" "$a" "$ref" "$size"
    done
    ok "$name: qemu-io writes across the old end" \
        qemu-io -f vmdk -c "write -P 0xee $((old - 1048576)) 2M" "$a"
    qemu-io -f raw -c "write -P 0xee $((old - 1048576)) 2M" "$ref" >/dev/null
    ok "$name: qemu-img compare after that" qemu-img compare -q -f vmdk -F raw "$a" "$ref"
    rm -f "$T/back.raw"
    case $name in
    *twoGbMaxExtentFlat) ;; # vdisk convert reads 2 GiB of flat zeroes: ~9 s on a busy machine
    *)
        "$VDISK" convert -O raw "$a" "$T/back.raw" &&
            qemu-img compare -q -f raw -F raw "$T/back.raw" "$ref" &&
            pass "$name: vdisk reads back the same disk" || fail "$name: vdisk reads other bytes"
        ;;
    esac
    rm -f "$T/back.raw"
    OLD=$old
}

# single-extent images: shrink refused over data, allowed over holes (inside a written grain: the
# grain's tail past the end reads as zeroes after a later grow, as the raw reference's)
shrinks() {
    local name=$1 a=$2 ref=$T/ref.raw
    fails_with "$name: shrink without --shrink refused" 'smaller .*--shrink' \
        "$VDISK" resize "$a" $((OLD / 2))
    qemu-io -f vmdk -c "write -P 0x77 $((OLD + 1536 * 1024)) 64k" "$a" >/dev/null
    qemu-io -f raw -c "write -P 0x77 $((OLD + 1536 * 1024)) 64k" "$ref" >/dev/null
    step "$name" "$a" "$ref" $((OLD + 1536 * 1024 + 1000)) --shrink
    step "$name" "$a" "$ref" $((OLD + 4 * 1048576))
    rm -f "$ref"
}

for who in qemu vdisk; do
    mk() { # mk SUBFORMAT FILE SIZE
        if [ $who = qemu ]; then
            qemu-img create -q -f vmdk -o subformat="$1" "$2" "$3"
        else
            "$VDISK" create -f vmdk -o subformat="$1" "$2" "$3" >/dev/null
        fi
    }
    d=$T/$who && mkdir "$d"

    mk monolithicSparse "$d/s.vmdk" 64M
    # 64 MiB: 2 directory entries in a 512-byte sector of room (128 tables, 4 GiB)
    cycle "$who monolithicSparse" "$d/s.vmdk" $((65 << 20)) 70000001 $((3 << 30)) $((5 << 30))
    fails_with "$who monolithicSparse: shrink over data refused, naming the offset" \
        's.vmdk: data lies at offset 66060288, past the new size' \
        "$VDISK" resize --shrink "$d/s.vmdk" 60M
    shrinks "$who monolithicSparse" "$d/s.vmdk"
    ok "$who monolithicSparse: vdisk check clean" "$VDISK" check -q "$d/s.vmdk"

    mk monolithicFlat "$d/f.vmdk" 64M
    cycle "$who monolithicFlat" "$d/f.vmdk" $((65 << 20)) 70000001
    shrinks "$who monolithicFlat" "$d/f.vmdk"
    eq "$who monolithicFlat: the flat file follows" "$(stat -c %s "$d/f-flat.vmdk")" \
        $((OLD + 4 * 1048576))

    for sub in twoGbMaxExtentSparse twoGbMaxExtentFlat; do
        mk $sub "$d/t.vmdk" 64M
        cycle "$who $sub" "$d/t.vmdk" 70000001 $(((2 << 30) + (3 << 20)))
        x=$(echo $sub | sed 's/twoGbMaxExtent\(.\).*/\1/' | tr SF sf)
        ls "$d/t-${x}002.vmdk" >/dev/null 2>&1 && pass "$who $sub: extent t-${x}002.vmdk added" ||
            fail "$who $sub: no t-${x}002.vmdk"
        eq "$who $sub: two extent lines" "$(grep -ac "^RW .*t-${x}00[12].vmdk" "$d/t.vmdk")" 2
        fails_with "$who $sub: shrink of several extents refused" 't.vmdk: shrinking a VMDK of several extents' \
            "$VDISK" resize --shrink "$d/t.vmdk" 1G
        rm -f "$T/ref.raw" "$d"/t*
    done
done

# like a user: ext4 on a qemu-img monolithicSparse disk (through fuse), grown offline past
# its directory's room and live by its server, resize2fs, files intact, fsck clean
. "$(dirname "$0")/disk-lib.bash"
u=$T/user.vmdk
qemu-img create -q -f vmdk "$u" 64M
dev=$("$VDISK" open --via fuse "$u") && pass "user: open via fuse" || fail "user: open via fuse"
ok "user: mkfs.ext4" mkfs.ext4 -q "$dev"
ok "user: mount" mount "$dev" "$MNT"
head -c 3000000 /dev/urandom >"$MNT/a" && echo hello >"$MNT/b" || fail "user: write files"
before=$(sums "$MNT")
ok "user: umount" umount "$MNT"
ok "user: close" "$VDISK" close "$u"
ok "user: resize offline to 5G (the directory moves)" "$VDISK" resize "$u" 5G
dev=$("$VDISK" open --via fuse "$u") && pass "user: open again" || fail "user: open again"
ok "user: resize live by +64M (its server)" "$VDISK" resize "$u" +64M
eq "user: the device grew" "$(blockdev --getsize64 "$dev")" $(((5 << 30) + (64 << 20)))
ok "user: e2fsck -f" e2fsck -fy "$dev"
ok "user: resize2fs" resize2fs "$dev"
ok "user: mount the grown file system" mount "$dev" "$MNT"
head -c 80000000 /dev/urandom >"$MNT/big" && pass "user: 80 MB more fit" || fail "user: 80 MB more"
eq "user: files intact" "$(sums "$MNT" | grep -v ' ./big$')" "$before"
ok "user: umount" umount "$MNT"
ok "user: e2fsck -fn clean" e2fsck -fn "$dev"
ok "user: close" "$VDISK" close "$u"
ok "user: qemu-img check clean" qemu-img check -q "$u"
eq "user: qemu-img info size" "$(qsize "$u")" $(((5 << 30) + (64 << 20)))

# live across 2 GiB: a twoGbMaxExtentSparse disk open through fuse gains an extent file
w=$T/live.vmdk
"$VDISK" create -f vmdk -o subformat=twoGbMaxExtentSparse "$w" 64M >/dev/null
dev=$("$VDISK" open --via fuse "$w") && pass "live: open via fuse" || fail "live: open via fuse"
ok "live: resize by its server to 2G+64M" "$VDISK" resize "$w" $(((2 << 30) + (64 << 20)))
eq "live: the device grew" "$(blockdev --getsize64 "$dev")" $(((2 << 30) + (64 << 20)))
head -c 1048576 /dev/urandom >"$T/pat"
ok "live: write 1 MiB across 2 GiB on the device" \
    dd if="$T/pat" of="$dev" bs=64k seek=$(((2 << 30) / 65536 - 8)) oflag=direct status=none
ok "live: close" "$VDISK" close "$w"
ok "live: qemu-img check clean" qemu-img check -q "$w"
qemu-img convert -f vmdk -O raw "$w" "$T/live.raw"
eq "live: qemu-img reads it back" "$(dd if="$T/live.raw" bs=64k skip=$(((2 << 30) / 65536 - 8)) \
    count=16 status=none | sha256sum)" "$(sha256sum <"$T/pat")"
rm -f "$T/live.raw"

# refused: streamOptimized, clearly, and left as it was
qemu-img create -q -f vmdk -o subformat=streamOptimized "$T/st.vmdk" 10M
fails_with "streamOptimized: resize refused" \
    'st.vmdk: resize of a streamOptimized VMDK is not supported: convert it first' \
    "$VDISK" resize "$T/st.vmdk" +1M
eq "streamOptimized: size unchanged" "$(qsize "$T/st.vmdk")" $((10 << 20))
fails "qemu-img resize refuses vmdk too" qemu-img resize -q -f vmdk "$d/s.vmdk" +1M
finish
