#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The utility's bookkeeping, as a user drives it: create, list, info, close by
# image, device or id, close --all, records and their instance ids.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
at_exit "$VDISK" close --all

# create
ok "create raw 4T sparse" "$VDISK" create "$T/big.img" 4T
eq "4T image has its size" "$(stat -c %s "$T/big.img")" $((4 << 40))
eq "4T image is sparse" "$(stat -c %b "$T/big.img")" 0
ok "create with bare MiB size" "$VDISK" create "$T/m.img" 3
eq "bare number means MiB" "$(stat -c %s "$T/m.img")" $((3 << 20))
fails_with "create over an existing file" "exists" "$VDISK" create "$T/m.img" 5
eq "existing file untouched" "$(stat -c %s "$T/m.img")" $((3 << 20))
fails_with "create size 0" "greater than zero" "$VDISK" create "$T/z.img" 0
fails_with "create junk size" "invalid size" "$VDISK" create "$T/z.img" 12abc
fails_with "create overflowing size" "too large" "$VDISK" create "$T/z.img" 99999999999999999T
fails_with "create unknown format" "unknown image format" "$VDISK" create -f nope "$T/z.img" 1
fails_with "create unknown option" "no option 'colour'" "$VDISK" create -o colour=red "$T/z.img" 1
# the message names the bad option (it was printed from freed memory)
fails_with "create option without =" "^vdisk: option 'foo': expected KEY=VALUE$" \
    "$VDISK" create -f qcow2 -o foo "$T/z.img" 1M
fails_with "create option with empty key" "^vdisk: option '=64K': expected KEY=VALUE$" \
    "$VDISK" create -f qcow2 -o cluster_size=64K,=64K "$T/z.img" 1M
[ -e "$T/z.img" ] && fail "failed creates left $T/z.img" || pass "failed creates leave no file"
fails_with "create without size is a usage error" "usage" "$VDISK" create "$T/z.img"
ok "create preallocated" "$VDISK" create -o preallocation=falloc "$T/p.img" 8M
[ "$(stat -c %b "$T/p.img")" -ge 16384 ] && pass "preallocated blocks" || fail "preallocated blocks"

# Is DEVICE bound to a file? (sysfs, so a hung FUSE-backed loop elsewhere can't stall us)
bound() { grep -qs "^$2" "/sys/block/${1#/dev/}/loop/backing_file"; }

# open, list, info
dev1=$("$VDISK" open "$T/a.img" 16) && pass "open creates a.img" || fail "open a.img"
dev2=$("$VDISK" open "$T/m.img") && pass "open m.img" || fail "open m.img"
[ -b "$dev1" ] && [ -b "$dev2" ] && [ "$dev1" != "$dev2" ] && pass "two distinct block devices" ||
    fail "block devices $dev1 $dev2"
eq "device size is the image size" "$(blockdev --getsize64 "$dev1")" $((16 << 20))
eq "loop uses direct I/O" "$(cat /sys/block/${dev1#/dev/}/loop/dio)" 1
eq "two records" "$(ls "$VDISK_RUN_DIR"/*.rec | wc -l)" 2
"$VDISK" list >"$T/list" && pass "list" || fail "list"
grep -q "$dev1 .*loop .*raw .*rw .*16777216 .*open .*$T/a.img" "$T/list" && pass "list shows a.img" ||
    fail "list line for a.img: $(cat "$T/list")"
"$VDISK" list --json >"$T/list.json"
python3 -c "import json,sys; d=json.load(open('$T/list.json')); assert len(d)==2 and all(x['state']=='open' for x in d)" &&
    pass "list --json parses, two open disks" || fail "list --json: $(cat "$T/list.json")"
"$VDISK" info --json "$dev1" >"$T/info.json"
python3 -c "import json; d=json.load(open('$T/info.json')); assert d['format']=='raw' and d['virtual_size']==16<<20 and d['device']=='$dev1'" &&
    pass "info --json of the device" || fail "info --json: $(cat "$T/info.json")"
"$VDISK" info "$T/a.img" | grep -q "^device: $dev1" && pass "info of the image names its device" ||
    fail "info of image"
id=$("$VDISK" info --json "$T/a.img" | python3 -c "import json,sys; print(json.load(sys.stdin)['id'])")
[ -f "$VDISK_RUN_DIR/$id.rec" ] && pass "record is named by the instance id" || fail "record for $id"
ln -s "$T/a.img" "$T/link.img"
fails_with "open through a symlink is the same image" "already open as $dev1" "$VDISK" open "$T/link.img"
fails_with "open of an open image" "already open as $dev1" "$VDISK" open "$T/a.img"
fails_with "open with a different size" "not the" "$VDISK" open "$T/p.img" 9
eq "size mismatch left the image alone" "$(stat -c %s "$T/p.img")" $((8 << 20))

# close by id, by device, by image; closing what is not open
ok "close by id" "$VDISK" close "$id"
bound "$dev1" "$T/a.img" && fail "loop device $dev1 still bound" || pass "loop device released"
ok "close by device" "$VDISK" close "$dev2"
fails_with "close what is not open" "not open" "$VDISK" close "$T/m.img"
fails_with "close a missing path" "not open" "$VDISK" close "$T/nothing.img"
fails_with "close without argument" "usage" "$VDISK" close
eq "no records left" "$(ls "$VDISK_RUN_DIR" | grep -c rec)" 0

# close --all; reopen after close works (the image lock was let go)
d1=$("$VDISK" open "$T/a.img") && d2=$("$VDISK" open -r "$T/m.img") && d3=$("$VDISK" open "$T/p.img") &&
    pass "three disks open" || fail "three opens"
ok "close --all" "$VDISK" close --all
eq "close --all leaves no records" "$(ls "$VDISK_RUN_DIR" | grep -c rec)" 0
bound "$d1" "$T/a.img" || bound "$d2" "$T/m.img" || bound "$d3" "$T/p.img" && fail "close --all left devices bound" ||
    pass "close --all freed the devices"
ok "qemu-io can write the image after close (lock released)" qemu-io -f raw -c "write 0 4k" "$T/a.img"

# open options: the format's, checked (as qemu's -o / --image-opts)
"$VDISK" create -f qcow2 "$T/o.qcow2" 8M
ok "open -o l2-cache-size,refcount-cache-size" \
    "$VDISK" open -o l2-cache-size=1M,refcount-cache-size=256K --via fuse "$T/o.qcow2"
ok "close it" "$VDISK" close "$T/o.qcow2"
fails_with "an option the format lacks is refused by name" "format qcow2 has no option 'bogus'" \
    "$VDISK" open -o bogus=1 --via fuse "$T/o.qcow2"
fails_with "a bad size is refused by name" "l2-cache-size" \
    "$VDISK" open -o l2-cache-size=lots --via fuse "$T/o.qcow2"
fails_with "raw takes no open options" "format raw has no option 'l2-cache-size'" \
    "$VDISK" open -o l2-cache-size=1M "$T/a.img"
eq "refused opens leave nothing open" "$("$VDISK" list | grep -c "$T")" 0

# unknown command and via
fails_with "unknown command" "unknown command" "$VDISK" frobnicate
fails_with "unknown via" "unknown way" "$VDISK" open --via carrier-pigeon "$T/a.img"
finish
