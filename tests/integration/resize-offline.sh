#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk resize offline, checked against qemu-img: raw and qcow2 grow (qcow2 past
# its L1 table: a new table), the data stays, qemu-img check is clean and agrees
# on the size; vdi grows its block map into its room (qemu-img check and qemu-io
# the oracles); vpc moves its footer (fixed) or its BAT (dynamic); odd sizes as
# qemu-img resize does them; shrink refused without --shrink and over data,
# allowed over holes; formats that cannot, refused. ~15 s.
. "$(dirname "$0")/../lib.sh"

# qsize IMG FMT: the virtual size qemu-img reports.
qsize() { qemu-img info -f "$2" --output=json "$1" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p'; }

# pattern IMG FMT: write two known patterns (1 MiB at 1 MiB, 64 KiB at 9 MiB).
pattern() { qemu-io -f "$2" -c 'write -P 0xab 1M 1M' -c 'write -P 0xcd 9M 64k' "$1" >/dev/null; }
# patterned IMG FMT: the patterns read back.
patterned() {
    qemu-io -f "$2" -c 'read -P 0xab 1M 1M' -c 'read -P 0xcd 9M 64k' "$1" 2>&1 |
        grep -q 'Pattern verification failed' && return 1
    qemu-io -f "$2" -c 'read -P 0xab 1M 1M' -c 'read -P 0xcd 9M 64k' "$1" >/dev/null 2>&1
}

for fmt in raw qcow2; do
    a=$T/a.$fmt q=$T/q.$fmt
    qemu-img create -q -f "$fmt" "$a" 10M && pattern "$a" "$fmt"
    cp --sparse=always "$a" "$q"
    for step in +1G 3G +5M; do # qcow2 64k clusters: one L1 cluster covers 4 TiB, so also below
        ok "$fmt: resize $step" "$VDISK" resize -f "$fmt" "$a" "$step"
        qemu-img resize -q -f "$fmt" "$q" "$step"
        eq "$fmt: size after $step agrees with qemu-img resize" "$(qsize "$a" "$fmt")" "$(qsize "$q" "$fmt")"
    done
    patterned "$a" "$fmt" && pass "$fmt: data intact after growing" || fail "$fmt: data changed"
    ok "$fmt: qemu-img compare with qemu-img's own resize" qemu-img compare -f "$fmt" -F "$fmt" "$a" "$q"
    [ "$fmt" = qcow2 ] && ok "$fmt: qemu-img check clean" qemu-img check -q "$a"
done

# qcow2 with 512-byte clusters: each L1 entry covers 32 KiB, so growing needs a new
# L1 table of many clusters (and new refcount blocks); check it, compare with qemu-img
a=$T/small.qcow2 q=$T/small-q.qcow2
qemu-img create -q -f qcow2 -o cluster_size=512 "$a" 10M && pattern "$a" qcow2
cp "$a" "$q"
l1_before=$(od -An -tx1 -j36 -N4 "$a" | tr -d ' ')
ok "qcow2 512-byte clusters: grow 10M -> 256M (L1 table grows to 128 clusters)" "$VDISK" resize "$a" 256M
qemu-img resize -q "$q" 256M
[ "$(od -An -tx1 -j36 -N4 "$a" | tr -d ' ')" != "$l1_before" ] &&
    pass "qcow2 512-byte clusters: header names a larger L1 table" || fail "qcow2: L1 size unchanged"
ok "qcow2 512-byte clusters: qemu-img check clean after L1 growth" qemu-img check -q "$a"
eq "qcow2 512-byte clusters: size" "$(qsize "$a" qcow2)" $((256 << 20))
patterned "$a" qcow2 && pass "qcow2 512-byte clusters: data intact" || fail "qcow2 512: data changed"
ok "qcow2 512-byte clusters: writes past the old end work (qemu-io)" \
    qemu-io -c 'write -P 0xee 250M 1M' "$a"
ok "qcow2 512-byte clusters: qemu-img check clean after writing there" qemu-img check -q "$a"
qemu-io -c 'write -P 0xee 250M 1M' "$q" >/dev/null
ok "qcow2 512-byte clusters: equal to qemu-img's resize plus the same write" qemu-img compare "$a" "$q"
fails_with "qcow2 512-byte clusters: an L1 table beyond one refcount block's range refused" \
    'small.qcow2: .*needs an L1 table of .* clusters' "$VDISK" resize "$a" 1G
ok "qcow2 512-byte clusters: still clean after the refusal" qemu-img check -q "$a"

# odd sizes, as qemu-img resize does them: raw takes any byte count, qcow2 refuses a
# size that is not whole sectors
a=$T/odd.raw q=$T/odd-q.raw
truncate -s 10M "$a" && truncate -s 10M "$q"
ok "raw: resize to an odd size" "$VDISK" resize -f raw "$a" 20000001
qemu-img resize -q -f raw "$q" 20000001
eq "raw: odd size: file length as qemu-img sets it" "$(stat -c %s "$a")" "$(stat -c %s "$q")"
eq "raw: odd size: qemu-img info agrees" "$(qsize "$a" raw)" "$(qsize "$q" raw)"
a=$T/odd.qcow2
qemu-img create -q -f qcow2 "$a" 10M
fails_with "qcow2: odd size refused, as qemu-img refuses it" 'odd.qcow2: .*not a multiple of 512' \
    "$VDISK" resize "$a" 20000001
fails "qemu-img refuses it too" qemu-img resize -q "$a" 20000001
eq "qcow2: refused resize left the size" "$(qsize "$a" qcow2)" $((10 << 20))

# shrinking: only with --shrink, only over holes
for fmt in raw qcow2; do
    a=$T/s.$fmt
    rm -f "$a"
    qemu-img create -q -f "$fmt" "$a" 20M && pattern "$a" "$fmt"
    fails_with "$fmt: shrink without --shrink refused" "s.$fmt: .*smaller .*--shrink" "$VDISK" resize "$a" 5M
    fails_with "$fmt: shrink over data refused, naming the first data offset" \
        "s.$fmt: data lies at offset $((9 << 20)), past the new size $((5 << 20))" \
        "$VDISK" resize --shrink "$a" 5M
    fails_with "$fmt: -SIZE over data refused too" "data lies at offset" "$VDISK" resize --shrink "$a" -15M
    eq "$fmt: refused shrinks left the size" "$(qsize "$a" "$fmt")" $((20 << 20))
    ok "$fmt: shrink over holes allowed" "$VDISK" resize --shrink "$a" -10M
    eq "$fmt: shrunk size" "$(qsize "$a" "$fmt")" $((10 << 20))
    patterned "$a" "$fmt" && pass "$fmt: data intact after shrinking" || fail "$fmt: data changed"
    [ "$fmt" = qcow2 ] && ok "$fmt: qemu-img check clean after shrink" qemu-img check -q "$a"
done

# vdi (dynamic): the block map grows into its room (qemu-img cannot resize vdi: its
# check, info and qemu-io are the oracles)
a=$T/q.vdi
qemu-img create -q -f vdi "$a" 10M && pattern "$a" vdi
ok "vdi (made by qemu-img): grow by 100M" "$VDISK" resize "$a" +100M
eq "vdi: qemu-img info size" "$(qsize "$a" vdi)" $((110 << 20))
ok "vdi: qemu-img check clean" qemu-img check -q "$a"
patterned "$a" vdi && pass "vdi: data intact after growing" || fail "vdi: data changed"
ok "vdi: qemu-io writes past the old end" qemu-io -f vdi -c 'write -P 0xee 100M 1M' "$a"
ok "vdi: qemu-img check clean after that" qemu-img check -q "$a"
fails_with "vdi: growth past the block map's room refused clearly" \
    'q.vdi: its block map has room for 128 blocks .* would move the data' "$VDISK" resize "$a" 300G
eq "vdi: refused growth left the size" "$(qsize "$a" vdi)" $((110 << 20))
fails_with "vdi: shrink over data refused" "data lies at offset $((100 << 20))" \
    "$VDISK" resize --shrink "$a" 50M
ok "vdi: shrink over unallocated blocks" "$VDISK" resize --shrink "$a" 101M
eq "vdi: shrunk size" "$(qsize "$a" vdi)" $((101 << 20))
ok "vdi: qemu-img check clean after shrinking" qemu-img check -q "$a"
patterned "$a" vdi && pass "vdi: data intact after shrinking" || fail "vdi: data changed"
a=$T/v.vdi
"$VDISK" create -f vdi "$a" 10M >/dev/null && pattern "$a" vdi
ok "vdi (made by vdisk, a MiB of map): grow to 100G" "$VDISK" resize "$a" 100G
ok "vdi: qemu-img check clean" qemu-img check -q "$a"
eq "vdi: qemu-img info size" "$(qsize "$a" vdi)" $((100 << 30))
patterned "$a" vdi && pass "vdi: data intact" || fail "vdi: data changed"
"$VDISK" create -f vdi -o static=on "$T/s.vdi" 10M >/dev/null 2>&1 ||
    qemu-img create -q -f vdi -o static=on "$T/s.vdi" 10M
fails_with "vdi: static image not shrunk, clearly" 's.vdi: a static VDI image is not shrunk' \
    "$VDISK" resize --shrink "$T/s.vdi" 5M # its growth: tests/integration/resize-more.sh

# vpc: fixed moves its footer, dynamic grows its BAT (moved past the blocks when the
# reserved entries run out); sizes round to CHS as vdisk create rounds them.
# qemu-img cannot resize or check vpc: qemu-io, qemu-img info/convert and vdisk check
for sub in fixed dynamic; do
    a=$T/v-$sub.vhd
    qemu-img create -q -f vpc -o subformat=$sub "$a" 10M && pattern "$a" vpc
    ok "vpc $sub: grow to 30M" "$VDISK" resize -f vpc "$a" 30M
    qemu-img create -q -f vpc -o subformat=$sub "$T/ref-$sub.vhd" 30M
    eq "vpc $sub: size rounded to CHS as qemu-img create rounds 30M" "$(qsize "$a" vpc)" \
        "$(qsize "$T/ref-$sub.vhd" vpc)"
    patterned "$a" vpc && pass "vpc $sub: data intact" || fail "vpc $sub: data changed"
    ok "vpc $sub: the new space reads as zeroes (qemu-io)" qemu-io -f vpc -c 'read -P 0 10M 64k' "$a"
    ok "vpc $sub: qemu-io writes past the old end" qemu-io -f vpc -c 'write -P 0xee 25M 1M' "$a"
    ok "vpc $sub: vdisk check clean" "$VDISK" check -q -f vpc "$a"
    ok "vpc $sub: grow to 3G" "$VDISK" resize -f vpc "$a" 3G
    ok "vpc $sub: qemu-io writes near the new end" qemu-io -f vpc -c 'write -P 0x11 3000M 1M' "$a"
    ok "vpc $sub: vdisk check clean after that" "$VDISK" check -q -f vpc "$a"
    ok "vpc $sub: qemu-io reads everything back" qemu-io -f vpc -c 'read -P 0xab 1M 1M' \
        -c 'read -P 0xcd 9M 64k' -c 'read -P 0xee 25M 1M' -c 'read -P 0x11 3000M 1M' "$a"
    qemu-img convert -f vpc -O raw "$a" "$T/v-$sub.raw" &&
        eq "vpc $sub: qemu-img convert reads the written block back" \
            "$(dd if="$T/v-$sub.raw" bs=1M skip=3000 count=1 status=none | tr -d '\021' | wc -c)" 0
    rm -f "$T/v-$sub.raw"
    fails_with "vpc $sub: shrink over data refused" 'data lies at offset' \
        "$VDISK" resize --shrink -f vpc "$a" 20M
done
a=$T/v-shrink.vhd
qemu-img create -q -f vpc -o subformat=dynamic "$a" 100M && pattern "$a" vpc
ok "vpc dynamic: shrink over free blocks" "$VDISK" resize --shrink -f vpc "$a" 20M
[ "$(qsize "$a" vpc)" -lt $((21 << 20)) ] && pass "vpc dynamic: shrunk ($(qsize "$a" vpc) bytes)" ||
    fail "vpc dynamic: size $(qsize "$a" vpc)"
patterned "$a" vpc && pass "vpc dynamic: data intact after shrinking" || fail "vpc: data changed"
ok "vpc dynamic: vdisk check clean after shrinking" "$VDISK" check -q -f vpc "$a"

# bad input: clear refusals naming the object
qemu-img create -q -f vmdk -o subformat=streamOptimized "$T/x.vmdk" 10M # others: resize-vmdk.sh
fails_with "streamOptimized vmdk: resize refused clearly" \
    'x.vmdk: resize of a streamOptimized VMDK is not supported: convert it first' \
    "$VDISK" resize "$T/x.vmdk" +1M
fails_with "missing image named" 'nothere.img: ' "$VDISK" resize "$T/nothere.img" 1G
fails_with "bad size named" "invalid size '1Q'" "$VDISK" resize "$T/a.raw" 1Q
fails_with "-SIZE below zero refused" "the image is only" "$VDISK" resize --shrink "$T/a.raw" -100G
chmod 444 "$T/a.raw"
[ "$(id -u)" = 0 ] && chattr +i "$T/a.raw" 2>/dev/null && {
    fails_with "immutable image refused" 'a.raw' "$VDISK" resize "$T/a.raw" +1M
    chattr -i "$T/a.raw"
}
ok "usage error exits 2" test "$("$VDISK" resize 2>/dev/null; echo $?)" = 2
finish
