#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk open --partition N: one partition as its own disk. Partition 2 of an MBR raw image
# (loop, with its offset) and partition 3 of a GPT qcow2 image (fuse): the device has the
# partition's size, mkfs, mount, write, close, reopen, the files are there, e2fsck of the
# partition's bytes is clean, and nothing outside the partition changed. A logical
# partition works too; bad numbers, the extended partition and images without a table
# are refused. A whole-disk loop device is set up to scan partitions. About 15 s.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"

truncate -s 100M "$T/mbr.img"
printf 'label: dos\n,20M,83\n,30M,83\n,,5\n,10M,83\n' | sfdisk -q "$T/mbr.img" || fail "sfdisk"
truncate -s 100M "$T/gpt.raw"
sgdisk -n 1:2048:+20M -n 3:0:+30M -c 3:data "$T/gpt.raw" >/dev/null || fail "sgdisk"
qemu-img convert -f raw -O qcow2 "$T/gpt.raw" "$T/gpt.qcow2" && rm "$T/gpt.raw"

# part_bytes IMAGE FMT N: start and size in bytes of partition N, from sfdisk -J of a raw copy.
part_bytes() {
    qemu-img convert -f "$2" -O raw "$1" "$T/flat.raw" &&
        sfdisk -J "$T/flat.raw" | python3 -c "
import json, re, sys
for p in json.load(sys.stdin)['partitiontable']['partitions']:
    if re.search(r'(\d+)\$', p['node']).group(1) == '$3':
        print(p['start'] * 512, p['size'] * 512)"
}

# outside_sum IMAGE FMT START SIZE: sha256 of the disk's bytes outside [START, START+SIZE).
outside_sum() {
    qemu-img convert -f "$2" -O raw "$1" "$T/flat.raw" &&
        { head -c "$3" "$T/flat.raw"; tail -c +$(($3 + $4 + 1)) "$T/flat.raw"; } | sha256sum
}

# cycle NAME IMAGE FMT N [OPEN OPTIONS]
cycle() {
    local name=$1 img=$2 fmt=$3 n=$4 start size before dev
    shift 4
    read -r start size < <(part_bytes "$img" "$fmt" "$n")
    before=$(outside_sum "$img" "$fmt" "$start" "$size")
    dev=$("$VDISK" open --partition "$n" "$@" "$img") && pass "$name: open --partition $n ($dev)" ||
        { fail "$name: open"; return; }
    eq "$name: the device is the partition's size" "$(blockdev --getsize64 "$dev")" "$size"
    eq "$name: info --json names the partition" \
        "$("$VDISK" info --json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partition"])')" "$n"
    mkfs.ext4 -q -L "part$n" "$dev" && mount "$dev" "$MNT" && head -c 2000000 /dev/urandom >"$MNT/data" &&
        sha256sum <"$MNT/data" >"$T/data.sum" && umount "$MNT" && pass "$name: mkfs, mount, write" ||
        fail "$name: mkfs/mount/write"
    ok "$name: close" "$VDISK" close "$img"
    dev=$("$VDISK" open --partition "$n" "$@" "$img") && mount "$dev" "$MNT" &&
        eq "$name: reopened, the file is there" "$(sha256sum <"$MNT/data")" "$(cat "$T/data.sum")" ||
        fail "$name: reopen and mount"
    umount "$MNT"
    "$VDISK" close "$img"
    qemu-img convert -f "$fmt" -O raw "$img" "$T/flat.raw"
    dd if="$T/flat.raw" of="$T/part.raw" bs=512 skip=$((start / 512)) count=$((size / 512)) status=none
    ok "$name: e2fsck of the partition's bytes in the image" e2fsck -fn "$T/part.raw"
    eq "$name: e2fsck finds the label at the partition's place" "$(e2label "$T/part.raw")" "part$n"
    eq "$name: nothing outside the partition changed" "$(outside_sum "$img" "$fmt" "$start" "$size")" "$before"
    nothing_left "$name" "$img"
}

cycle "mbr raw partition 2" "$T/mbr.img" raw 2
eq "mbr raw: a linear partition goes to loop with its offset" \
    "$(dev=$("$VDISK" open --partition 2 "$T/mbr.img") && cat "/sys/block/${dev#/dev/}/loop/offset"; "$VDISK" close "$T/mbr.img")" \
    $((2048 * 512 + 20 * 1048576))
cycle "mbr raw logical partition 5" "$T/mbr.img" raw 5
cycle "gpt qcow2 partition 3" "$T/gpt.qcow2" qcow2 3
ok "gpt qcow2: qemu-img check" qemu-img check -q "$T/gpt.qcow2"
cycle "mbr raw partition 1 through fuse" "$T/mbr.img" raw 1 --via fuse

# a whole disk: the loop device scans its partitions (the devices appear where the kernel
# reads MBR/GPT; tests/vm checks them per way)
dev=$("$VDISK" open --via loop "$T/mbr.img") && eq "whole disk: loop partscan is on" \
    "$(cat "/sys/block/${dev#/dev/}/loop/partscan")" 1
"$VDISK" close "$T/mbr.img"

# refusals
fails_with "--partition of the extended partition" "partition 3 is the extended partition" \
    "$VDISK" open --partition 3 "$T/mbr.img"
fails_with "--partition that does not exist" "has no partition 4 \(dos table\)" \
    "$VDISK" open --partition 4 "$T/mbr.img"
fails_with "--partition 0" "not a partition number" "$VDISK" open --partition 0 "$T/mbr.img"
fails_with "--partition 129" "not a partition number" "$VDISK" open --partition 129 "$T/mbr.img"
fails_with "--partition -1" "not a partition number" "$VDISK" open --partition -1 "$T/mbr.img"
fails_with "--partition 2x" "not a partition number" "$VDISK" open --partition 2x "$T/mbr.img"
truncate -s 10M "$T/plain.img"
fails_with "--partition of an image without a table" "has no partition table" \
    "$VDISK" open --partition 1 "$T/plain.img"
fails_with "--partition of a missing image" "missing.img: No such file" \
    "$VDISK" open --partition 1 "$T/missing.img"
[ ! -e "$T/missing.img" ] && pass "--partition never creates an image" || fail "image created"
# a partition that runs past the end of the image
cp "$T/mbr.img" "$T/short.img" && truncate -s 30M "$T/short.img"
fails_with "--partition past the end of the image" "is not inside the image" \
    "$VDISK" open --partition 2 "$T/short.img"
nothing_left "refusals" "$T/mbr.img"
finish
