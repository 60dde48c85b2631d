#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk open --overlay OVERLAY BASE over raw, qcow2, vhdx, vmdk, vdi and vpc bases made by
# qemu-img: the disk reads as the base plus the writes (qemu-img compare of the overlay
# against the expected bytes), qemu-img check is clean, the base is refused for writing
# while the overlay is open, the overlay reopens later; vdisk commit refuses without
# --yes, then gives a base equal to what the overlay showed (qemu-img compare, check) and
# an empty overlay. vdisk rebase (safe, -u, to no base) keeps what the overlay shows.
# About 30 s.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"

# write_both DEV EXP BYTE OFFSET_KIB LEN_KIB: the same bytes on the disk and the expected file.
write_both() {
    head -c $(($5 * 1024)) /dev/zero | tr '\0' "\\$3" >"$T/chunk"
    dd if="$T/chunk" of="$1" bs=64k seek=$(($4 / 64)) oflag=direct conv=notrunc status=none &&
        dd if="$T/chunk" of="$2" bs=64k seek=$(($4 / 64)) conv=notrunc status=none
}

for fmt in raw qcow2 vhdx vmdk vdi vpc; do
    TEST_PREFIX="$fmt: "
    base=$T/base.$fmt ov=$T/ov-$fmt.qcow2 exp=$T/exp-$fmt.raw
    qemu-img create -q -f "$fmt" "$base" 32M &&
        qemu-io -f "$fmt" -c "write -P 0x11 0 1M" -c "write -P 0x22 20M 2M" "$base" >/dev/null ||
        { fail "make the base"; continue; }
    qemu-img convert -f "$fmt" -O raw "$base" "$exp" || fail "expected bytes"
    base_sum=$(sha256sum <"$base")

    dev=$("$VDISK" open --overlay "$ov" -f "$fmt" "$base") && pass "open --overlay (new)" ||
        { fail "open --overlay"; continue; }
    eq "the overlay records the base and its format" \
        "$(qemu-img info -U --output=json "$ov" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["full-backing-filename"], j["backing-filename-format"])')" \
        "$(realpath "$base") $fmt"
    # writes over base data, over holes, unaligned to the base's blocks
    write_both "$dev" "$exp" 063 512 1024 && write_both "$dev" "$exp" 104 30720 64 &&
        write_both "$dev" "$exp" 167 21504 128 && pass "write through the disk" || fail "write"
    cmp -n $((32 << 20)) "$dev" "$exp" && pass "the disk reads base + writes" || fail "disk content"
    fails_with "vdisk refuses the base read-write while the overlay is open" "in use" \
        "$VDISK" open -f "$fmt" "$base"
    fails "qemu-io cannot write the base" qemu-io -f "$fmt" -c "write 0 512" "$base"
    ok "close" "$VDISK" close "$ov"
    ok "qemu-img check on the overlay" qemu-img check -q "$ov"
    ok "qemu-img compare: overlay = base + writes" qemu-img compare -q -f qcow2 -F raw "$ov" "$exp"
    eq "the base is unchanged" "$(sha256sum <"$base")" "$base_sum"

    # it is kept: reopen, more writes
    dev=$("$VDISK" open --overlay "$ov" "$base") && pass "reopen the existing overlay" ||
        fail "reopen"
    write_both "$dev" "$exp" 252 4096 64 || fail "write after reopen"
    cmp -n $((32 << 20)) "$dev" "$exp" && pass "reopened disk reads base + all writes" ||
        fail "reopened content"
    "$VDISK" close "$ov" || fail "close after reopen"

    # commit: asked first
    fails_with "commit without --yes says what it would do" "would write [0-9]+ bytes .* into its base" \
        "$VDISK" commit "$ov"
    eq "commit without --yes leaves the base alone" "$(sha256sum <"$base")" "$base_sum"
    ok "commit --yes" "$VDISK" commit --yes "$ov"
    ok "qemu-img compare: the base is what the overlay showed" qemu-img compare -q -f "$fmt" -F raw "$base" "$exp"
    [ "$fmt" = raw ] || [ "$fmt" = vpc ] || ok "qemu-img check on the base" qemu-img check -q -f "$fmt" "$base"
    ok "the emptied overlay still shows the same disk" qemu-img compare -q -f qcow2 -F raw "$ov" "$exp"
    eq "the emptied overlay holds no data of its own" \
        "$(qemu-img map --output=json "$ov" | grep -c '"depth": 0,.*"data": true')" 0
    ok "qemu-img check on the emptied overlay" qemu-img check -q "$ov"
    rm -f "$ov" "$exp"
done
TEST_PREFIX=

# refusals
qemu-img create -q -f raw "$T/other.raw" 32M
qemu-img create -q -f qcow2 -b "$T/base.raw" -F raw "$T/over-raw.qcow2"
fails_with "--overlay over another base is refused" "is an overlay over .*base.raw, not over" \
    "$VDISK" open --overlay "$T/over-raw.qcow2" "$T/other.raw"
fails_with "--overlay naming a raw file is refused" "is not a qcow2 overlay" \
    "$VDISK" open --overlay "$T/other.raw" "$T/base.raw"
fails_with "--overlay with a missing base" "base of an overlay must exist" \
    "$VDISK" open --overlay "$T/new.qcow2" "$T/missing.raw"
[ ! -e "$T/new.qcow2" ] && pass "no overlay made for a missing base" || fail "overlay left behind"
fails_with "--overlay with -r" "an overlay takes the writes" \
    "$VDISK" open -r --overlay "$T/new.qcow2" "$T/base.raw"
fails_with "commit of an image without a base" "has no backing file" "$VDISK" commit --yes "$T/other.raw"
fails_with "commit of an open overlay" "is open as" sh -c \
    "'$VDISK' open --overlay '$T/over-raw.qcow2' '$T/base.raw' >/dev/null && '$VDISK' commit --yes '$T/over-raw.qcow2'"
"$VDISK" close "$T/over-raw.qcow2"
nothing_left "refusals" "$T/base.raw"

# commit keeps what the overlay is: compat 0.10 stays, internal snapshots are never dropped
qemu-img create -q -f raw "$T/cb.raw" 16M
qemu-img create -q -f qcow2 -o compat=0.10 -b cb.raw -F raw "$T/c.qcow2"
qemu-io -f qcow2 -c "write -P 7 0 1M" "$T/c.qcow2" >/dev/null
ok "commit of a compat 0.10 overlay" "$VDISK" commit --yes "$T/c.qcow2"
eq "the emptied overlay is still compat 0.10" \
    "$(qemu-img info --output=json "$T/c.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["compat"])')" 0.10
qemu-io -f qcow2 -c "write -P 8 0 1M" "$T/c.qcow2" >/dev/null && qemu-img snapshot -c s1 "$T/c.qcow2"
out=$("$VDISK" commit --yes "$T/c.qcow2") && grep -q "not emptied, as it has internal snapshots" <<<"$out" &&
    pass "an overlay with internal snapshots is committed, not emptied" || fail "commit with snapshots: $out"
eq "its snapshot is still there" "$(qemu-img snapshot -l "$T/c.qcow2" | grep -c ' s1 ')" 1
ok "the base has the overlay's bytes" qemu-io -f raw -c "read -P 8 0 1M" "$T/cb.raw"

# rebase: the overlay shows the same disk over its new base
qemu-img create -q -f raw "$T/b1.raw" 16M
qemu-io -f raw -c "write -P 0x11 0 4M" -c "write -P 0x22 8M 1M" "$T/b1.raw" >/dev/null
qemu-img create -q -f vdi "$T/b2.vdi" 16M
qemu-io -f vdi -c "write -P 0x11 0 2M" -c "write -P 0x33 12M 64k" "$T/b2.vdi" >/dev/null
qemu-img create -q -f qcow2 -b b1.raw -F raw "$T/r.qcow2"
qemu-io -f qcow2 -c "write -P 0x44 1M 128k" "$T/r.qcow2" >/dev/null
qemu-img convert -O raw "$T/r.qcow2" "$T/r-view.raw"
ok "rebase onto a vdi base" "$VDISK" rebase -b b2.vdi "$T/r.qcow2"
eq "rebase: the header names the new base" \
    "$(qemu-img info --output=json "$T/r.qcow2" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["backing-filename"], j["backing-filename-format"])')" \
    "b2.vdi vdi"
ok "rebase: the overlay shows the same disk" qemu-img compare -q -F raw "$T/r.qcow2" "$T/r-view.raw"
ok "rebase: qemu-img check" qemu-img check -q "$T/r.qcow2"
ok "rebase -u back to the raw base" "$VDISK" rebase -u -b b1.raw -F raw "$T/r.qcow2"
eq "rebase -u: the header names it" \
    "$(qemu-img info --output=json "$T/r.qcow2" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["backing-filename"], j["backing-filename-format"])')" \
    "b1.raw raw"
ok "rebase to no base" "$VDISK" rebase -b "" "$T/r.qcow2"
eq "rebase to no base: no backing file" \
    "$(qemu-img info --output=json "$T/r.qcow2" | grep -c backing-filename)" 0
ok "rebase to no base: the same disk, standalone" qemu-img compare -q -F raw "$T/r.qcow2" "$T/r-view.raw"
ok "rebase to no base: qemu-img check" qemu-img check -q "$T/r.qcow2"
fails_with "rebase of a raw image" "not a qcow2 image vdisk can rebase" \
    "$VDISK" rebase -u -b b1.raw -F raw "$T/b1.raw"
finish
