#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A VHDX disk's life as a user lives it, through each way that serves it
# (--via fuse; --via nbd and --via ublk where the kernel has them; vdisk serve with nbdcopy as
# the NBD client): open (creating a .vhdx),
# mkfs, mount, write, fstrim, umount, close, qemu-img check, reopen, verify,
# fsck; then a differencing child over it, written through the way while the
# parent stays unchanged, and the result checked by qemu-img after a flatten.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }

vhdx_cycle() { # vhdx_cycle VIA
    local via=$1 img=$T/$1.vhdx dev before blocks_full
    rm -rf "${MNT:?}"/*
    if [ "$via" = fuse ]; then
        dev=$("$VDISK" open --via "$via" "$img" 64) && pass "$via: open creates a VHDX image" ||
            { fail "$via: open: $dev"; return; }
        ok "$via: close the new image" "$VDISK" close "$img"
        rm -f "$img"
    fi
    # 1 MiB blocks: a trimmed file frees whole blocks
    ok "$via: create with 1 MiB blocks" "$VDISK" create -f vhdx -o block_size=1M "$img" 64M
    dev=$("$VDISK" open --via "$via" "$img") && pass "$via: open" ||
        { fail "$via: open: $dev"; return; }
    eq "$via: qemu-img sees vhdx" \
        "$(qemu-img info -U "$img" | sed -n 's/^file format: //p')" vhdx
    eq "$via: device has the virtual size" "$(blockdev --getsize64 "$dev")" $((64 << 20))
    # no lazy init: nothing writes behind the test's back while it measures
    ok "$via: mkfs.ext4" mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 "$dev"
    ok "$via: mount" mount "$dev" "$MNT"
    head -c 12000000 /dev/urandom >"$MNT/big" && head -c 4097 /dev/urandom >"$MNT/odd" &&
        echo "vhdx $via" >"$MNT/small" && sync
    blocks_full=$(stat -c %b "$img")
    rm "$MNT/big" && sync
    ok "$via: fstrim" fstrim "$MNT"
    sync # the flush commits the BAT; the trimmed blocks' space goes back after it
    [ $(($(stat -c %b "$img") + 6000000 / 512)) -le "$blocks_full" ] &&
        pass "$via: fstrim gave blocks back ($blocks_full -> $(stat -c %b "$img") sectors)" ||
        fail "$via: fstrim left $blocks_full -> $(stat -c %b "$img") sectors"
    before=$(sums "$MNT")
    ok "$via: umount" umount "$MNT"
    ok "$via: close" "$VDISK" close "$img"
    nothing_left "$via: closed" "$img"
    ok "$via: qemu-img check clean" qemu-img check -q "$img"
    eq "$via: log clean after close" "$("$VDISK" info "$img" | sed -n 's/^log state: //p')" clean
    dev=$("$VDISK" open --via "$via" "$img") && pass "$via: reopen" || fail "$via: reopen"
    ok "$via: mount again" mount "$dev" "$MNT"
    eq "$via: files read back" "$(sums "$MNT")" "$before"
    ok "$via: umount again" umount "$MNT"
    ok "$via: e2fsck -fn on the device" e2fsck -fn "$dev"
    ok "$via: close again" "$VDISK" close "$img"

    # a differencing child: writes land in it, the parent stays as it was
    local child=$T/$via-child.vhdx parent_md5
    parent_md5=$(md5sum <"$img")
    ok "$via: create a differencing child" \
        "$VDISK" create -f vhdx -o backing_file="$img" "$child" 64M
    dev=$("$VDISK" open --via "$via" "$child") && pass "$via: open the child" ||
        { fail "$via: open child: $dev"; return; }
    ok "$via: mount the child" mount "$dev" "$MNT"
    eq "$via: child shows the parent's files" "$(sums "$MNT")" "$before"
    echo "child $via" >"$MNT/child" && head -c 3000000 /dev/urandom >"$MNT/c2" && sync
    local after
    after=$(sums "$MNT")
    ok "$via: umount the child" umount "$MNT"
    ok "$via: e2fsck -fn on the child" e2fsck -fn "$dev"
    ok "$via: close the child" "$VDISK" close "$child"
    eq "$via: parent unchanged" "$(md5sum <"$img")" "$parent_md5"
    ok "$via: flatten the child" "$VDISK" convert -O vhdx "$child" "$T/$via-flat.vhdx"
    ok "$via: flattened: qemu-img check clean" qemu-img check -q "$T/$via-flat.vhdx"
    ok "$via: flattened: e2fsck clean" sh -c "qemu-img convert -O raw '$T/$via-flat.vhdx' '$T/f.raw' && e2fsck -fn '$T/f.raw'"
    ok "$via: mount the flattened image" mount -o loop,ro "$T/f.raw" "$MNT"
    eq "$via: flattened image holds the child's files" "$(sums "$MNT")" "$after"
    umount "$MNT"
    rm -f "$T/f.raw"
    nothing_left "$via: all closed" "$img"
}

vhdx_cycle fuse

# vdisk serve (the NBD server, no kernel needed) with nbdcopy as the client, both ways
serve_vhdx() {
    local img=$T/s.vhdx sock=$T/s.sock spid uri=nbd+unix:///?socket=$T/s.sock
    "$VDISK" create -f vhdx -o block_size=1M "$img" 32M
    head -c 32M /dev/urandom >"$T/s.raw"
    "$VDISK" serve --socket "$sock" "$img" >/dev/null 2>"$T/serve.log" &
    spid=$!
    for _ in $(seq 100); do nbdinfo --size "$uri" >/dev/null 2>&1 && break; sleep 0.05; done
    ok "serve: nbdcopy writes the image" nbdcopy "$T/s.raw" "$uri"
    ok "serve: nbdcopy reads it back" nbdcopy "$uri" "$T/s.back"
    ok "serve: what was written reads back" cmp -s "$T/s.raw" "$T/s.back"
    kill -TERM "$spid"
    wait "$spid"
    eq "serve: the server exits cleanly" "$?" 0
    ok "serve: qemu-img check clean" qemu-img check -q "$img"
    ok "serve: qemu-img compare with the data" qemu-img compare -q -F raw "$img" "$T/s.raw"
}
if command -v nbdcopy >/dev/null; then serve_vhdx; else fail "nbdcopy missing: install libnbd-bin"; fi
if has_need kernel-nbd; then vhdx_cycle nbd; else skip kernel-nbd "no NBD in this kernel: --via nbd not tried"; fi
if has_need ublk; then vhdx_cycle ublk; else skip ublk "no ublk in this kernel: --via ublk not tried"; fi
finish
