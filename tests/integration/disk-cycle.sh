#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A disk's life as a user lives it, for each way of serving it (--via loop, --via fuse):
# open (creating), mkfs, mount, write, close, reopen, verify, fsck; fstrim reaching the
# image; read-only opens; eight disks at once. Then a qcow2 image through --via fuse,
# checked with qemu-img. About 30 s in all.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"

cycle() { # cycle VIA
    local via=$1 img=$T/$1.img dev dev2 pid before after blocks_full blocks_trim
    rm -rf "${MNT:?}"/*

    # open creates the image; mkfs, mount, write files with known checksums
    dev=$("$VDISK" open --via "$via" "$img" 64) && pass "$via: open creates the image" ||
        fail "$via: open $img"
    [ -b "$dev" ] && pass "$via: $dev is a block device" || fail "$via: no block device ($dev)"
    eq "$via: image has the size asked for" "$(stat -c %s "$img")" $((64 << 20))
    eq "$via: device has the image's size" "$(blockdev --getsize64 "$dev")" $((64 << 20))
    eq "$via: loop on top uses direct I/O" "$(cat "/sys/block/${dev#/dev/}/loop/dio")" 1
    "$VDISK" list | grep -q "$dev .*$via .*raw .*rw .*open .*$img" && pass "$via: list shows it open" ||
        fail "$via: list: $("$VDISK" list)"
    ok "$via: mkfs.ext4" mkfs.ext4 -q "$dev"
    ok "$via: mount" mount "$dev" "$MNT"
    head -c 5000000 /dev/urandom >"$MNT/big" && head -c 4097 /dev/urandom >"$MNT/odd" &&
        mkdir "$MNT/d" && echo "hello $via" >"$MNT/d/small" && pass "$via: write files" ||
        fail "$via: write files"
    before=$(sums "$MNT")
    sync
    ok "$via: umount" umount "$MNT"
    pid=$(rec_field "$img" pid)
    ok "$via: close" "$VDISK" close "$img"
    loop_free "$dev" && pass "$via: loop device unbound after close" || fail "$via: $dev still bound"
    if [ "$via" = fuse ]; then
        [ -n "$pid" ] && proc_gone "$pid" && pass "$via: server $pid exited" ||
            fail "$via: server '$pid' still running"
    fi
    nothing_left "$via: close" "$img"
    ok "$via: qemu-img sees the image free (lock released)" qemu-img info -U "$img"
    ok "$via: qemu-io can take the write lock after close" qemu-io -f raw -c "read 0 512" "$img"

    # reopen, verify, fsck
    dev=$("$VDISK" open --via "$via" "$img") && pass "$via: reopen" || fail "$via: reopen"
    ok "$via: mount again" mount "$dev" "$MNT"
    after=$(sums "$MNT")
    eq "$via: files read back with the same checksums" "$after" "$before"
    ok "$via: umount again" umount "$MNT"
    ok "$via: e2fsck -fn on the device is clean" e2fsck -fn "$dev"

    # fstrim reaches the image: its allocated blocks shrink
    ok "$via: mount for fstrim" mount "$dev" "$MNT"
    head -c 20000000 /dev/urandom >"$MNT/trimme" && sync
    blocks_full=$(stat -c %b "$img")
    rm "$MNT/trimme" && sync
    ok "$via: fstrim" fstrim "$MNT"
    blocks_trim=$(stat -c %b "$img")
    [ $((blocks_full - blocks_trim)) -ge $((15000000 / 512)) ] &&
        pass "$via: fstrim freed the file's blocks in the image ($blocks_full -> $blocks_trim sectors)" ||
        fail "$via: fstrim freed too little ($blocks_full -> $blocks_trim sectors)"
    eq "$via: files intact after fstrim" "$(sums "$MNT")" "$before"
    ok "$via: umount after fstrim" umount "$MNT"
    ok "$via: close after fstrim" "$VDISK" close "$dev"
    ok "$via: e2fsck -fn on the image is clean" e2fsck -fn "$img"

    # read-only: the device refuses writes, a read-only mount works
    dev=$("$VDISK" open -r --via "$via" "$img") && pass "$via: open -r" || fail "$via: open -r"
    eq "$via: device is read-only" "$(blockdev --getro "$dev")" 1
    if dd if=/dev/zero of="$dev" bs=4k count=1 oflag=direct status=none 2>/dev/null; then
        fail "$via: write to a read-only device succeeded"
    else pass "$via: write to the read-only device fails"; fi
    fails_with "$via: read-write mount of a read-only disk" "read-only|write-protected" \
        mount -w "$dev" "$MNT"
    ok "$via: read-only mount" mount -o ro,noload "$dev" "$MNT"
    eq "$via: files readable read-only" "$(sums "$MNT")" "$before"
    ok "$via: umount read-only" umount "$MNT"
    if [ "$via" = fuse ]; then
        mp=$(rec_field "$img" mountpoint)
        fails_with "fuse: the FUSE file itself refuses writes" "Read-only|Permission" \
            dd if=/dev/zero of="$mp" bs=512 count=1 conv=notrunc status=none
    fi
    "$VDISK" list | grep -q "$dev .*$via .*ro .*open" && pass "$via: list shows ro" || fail "$via: list ro"
    ok "$via: close read-only" "$VDISK" close "$img"
    nothing_left "$via: read-only close" "$img"
}

eight() { # eight VIA: eight disks open at once, each with its own data
    local via=$1 i devs=() good=0
    for i in 1 2 3 4 5 6 7 8; do
        devs[i]=$("$VDISK" open --via "$via" "$T/$via-$i.img" 8) || fail "$via: open disk $i of 8"
    done
    eq "$via: eight distinct devices" "$(printf '%s\n' "${devs[@]}" | sort -u | grep -c /dev/)" 8
    eq "$via: list shows eight open" "$("$VDISK" list | grep -c " $via .* open ")" 8
    for i in 1 2 3 4 5 6 7 8; do
        printf 'disk %s via %s\n' "$i" "$via" | dd of="${devs[i]}" bs=4k conv=sync oflag=direct status=none
    done
    for i in 1 2 3 4 5 6 7 8; do
        [ "$(dd if="${devs[i]}" bs=4k count=1 iflag=direct status=none | tr -d '\0')" = "disk $i via $via" ] &&
            good=$((good + 1))
    done
    eq "$via: each of the eight reads back its own data" "$good" 8
    for i in 1 2 3 4 5 6 7 8; do "$VDISK" close "$T/$via-$i.img" || fail "$via: close disk $i"; done
    for i in 1 2 3 4 5 6 7 8; do
        [ "$(head -c 16 "$T/$via-$i.img")" = "disk $i via $via" ] && good=$((good + 1))
    done
    eq "$via: the eight images hold their data after close" "$good" 16
    nothing_left "$via: eight closed" "$T/$via-1.img"
}

qcow2_cycle() { # --via fuse serves any format: a qcow2 image's life, checked by qemu-img
    local img=$T/q.qcow2 dev before blocks_full
    rm -rf "${MNT:?}"/*
    dev=$("$VDISK" open --via fuse "$img" 64) && pass "qcow2: open creates a qcow2 image" ||
        fail "qcow2: open"
    qemu-img info "$img" 2>/dev/null | grep -q '^file format: qcow2' || qemu-img info -U "$img" |
        grep -q '^file format: qcow2' && pass "qcow2: qemu-img sees qcow2" || fail "qcow2: format"
    eq "qcow2: device has the virtual size" "$(blockdev --getsize64 "$dev")" $((64 << 20))
    ok "qcow2: mkfs.ext4" mkfs.ext4 -q "$dev"
    ok "qcow2: mount" mount "$dev" "$MNT"
    head -c 12000000 /dev/urandom >"$MNT/big" && echo qcow2 >"$MNT/small" && sync
    before=$(sums "$MNT")
    blocks_full=$(stat -c %b "$img")
    rm "$MNT/big" && sync
    ok "qcow2: fstrim" fstrim "$MNT"
    before=$(sums "$MNT")
    ok "qcow2: umount" umount "$MNT"
    ok "qcow2: close" "$VDISK" close "$img"
    [ $(($(stat -c %b "$img") + 10000000 / 512)) -le "$blocks_full" ] &&
        pass "qcow2: fstrim shrank the image ($blocks_full -> $(stat -c %b "$img") sectors)" ||
        fail "qcow2: fstrim left $blocks_full -> $(stat -c %b "$img") sectors"
    ok "qcow2: qemu-img check is clean" qemu-img check "$img"
    dev=$("$VDISK" open --via fuse "$img") && pass "qcow2: reopen" || fail "qcow2: reopen"
    ok "qcow2: mount again" mount "$dev" "$MNT"
    eq "qcow2: files read back" "$(sums "$MNT")" "$before"
    ok "qcow2: umount again" umount "$MNT"
    ok "qcow2: e2fsck -fn on the device" e2fsck -fn "$dev"
    ok "qcow2: close again" "$VDISK" close "$img"
    nothing_left "qcow2: closed" "$img"
}

for via in ${VIAS:-loop fuse}; do
    cycle "$via"
    eight "$via"
done
[[ " ${VIAS:-fuse} " == *" fuse "* ]] && qcow2_cycle
finish
