#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qcow2 data never lands on metadata. Each case damages one metadata
# structure of an image holding data (a zeroed refcount block, refcount-table
# entry, refcount of the L1 or snapshot table; L2 entries pointing into the L1
# table, a refcount block, the L2 table itself; an L1 entry pointing at the
# refcount table), then writes through vdisk: the write fails with EIO, not one byte
# of metadata changes (sha256 of every metadata range, parsed by
# overlap-meta.py), the image is marked corrupt as QEMU marks it (qemu-img
# info says so, a read-write open is refused, a read-only one works), `vdisk
# check` reports it, `vdisk check -r all` repairs it and clears the bit, and
# then writes work, qemu-img check is clean and the old data reads back.
# One case goes through the NBD server (qemu-io as the client).
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
META="python3 $ROOT/tests/integration/overlap-meta.py"
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
command -v nbdinfo >/dev/null || { fail "nbdinfo missing: install libnbd-bin"; finish; }
cd "$T" || exit 1
MB=1048576

qemu-img create -q -f qcow2 good.qcow2 64M
qemu-io -c "write -P 0x11 0 $((8 * MB))" good.qcow2 >/dev/null
cp good.qcow2 snap.qcow2
qemu-img snapshot -c s1 snap.qcow2
qemu-io -c "write -P 0x22 $((2 * MB)) $MB" snap.qcow2 >/dev/null
# offsets in good.qcow2 (64 KiB clusters): reftable 0x10000, refblock 0x20000, L1 0x30000, L2 0x40000
u64() { python3 -c "import struct,sys; sys.stdout.buffer.write(struct.pack('>Q', $1))"; }
poke() { dd of="$1" bs=1 seek=$(($2)) conv=notrunc status=none; } # poke FILE OFF < bytes
corrupt_bit() { qemu-img info --output=json "$1" | python3 -c \
    "import json,sys; print(json.load(sys.stdin)['format-specific']['data']['corrupt'])"; }

# case NAME BASE WRITE_OFF DAMAGE...: DAMAGE (a shell command on NAME.qcow2), then the whole story
case_() {
    local name=$1 base=$2 woff=$3 img=$1.qcow2 before after
    shift 3
    cp "$base" "$img" && eval "$*"
    $META ranges qcow2 "$img" >"$name.ranges"
    before=$($META hash "$img" "$name.ranges")
    fails_with "$name: the write fails with EIO" "Input/output error" \
        sh -c "printf 'w $woff 65536 170\n' | '$IO' script '$img'"
    after=$($META hash "$img" "$name.ranges")
    eq "$name: no metadata byte changed" "$after" "$before"
    eq "$name: qemu-img info says corrupt" "$(corrupt_bit "$img")" True
    fails_with "$name: a read-write open is refused" \
        "^vdisk: .*$img: image is marked corrupt; it can only be opened read-only" \
        "$VDISK" open "$img"
    "$VDISK" close "$img" >/dev/null 2>&1 # in case it opened
    ok "$name: a read-only open reads" "$IO" dump "$img" "$name.raw"
    fails "$name: vdisk check reports it" "$VDISK" check "$img"
    if [ "${UNREPAIRABLE:-}" ]; then # a table inside another: nothing to rebuild it from
        fails_with "$name: vdisk check -r all says it cannot repair it" "$UNREPAIRABLE" \
            sh -c "'$VDISK' check -r all '$img' >&2"
        eq "$name: the corrupt bit stays" "$(corrupt_bit "$img")" True
        return
    fi
    ok "$name: vdisk check -r all repairs it" "$VDISK" check -r all "$img"
    eq "$name: the corrupt bit is clear" "$(corrupt_bit "$img")" False
    ok "$name: now the write works" sh -c "printf 'w $woff 65536 170\n' | '$IO' script '$img'"
    ok "$name: qemu-img check is clean" qemu-img check -q "$img"
    ok "$name: the old data reads back" qemu-io -r -c "read -P 0x11 0 65536" \
        -c "read -P 0x11 $((4 * MB)) $MB" -c "read -P 170 $woff 65536" "$img"
}

case_ refblock good.qcow2 $((16 * MB)) 'head -c 65536 /dev/zero | poke $img 0x20000'
case_ reftable-0 good.qcow2 $((16 * MB)) 'u64 0 | poke $img 0x10000'
case_ l1-refcount good.qcow2 $((16 * MB)) 'printf "\0\0" | poke $img $((0x20000 + 3 * 2))'
case_ l2-refcount good.qcow2 $((16 * MB)) 'printf "\0\0" | poke $img $((0x20000 + 4 * 2))'
snapc=$(python3 -c "import struct; print(struct.unpack('>Q', open('snap.qcow2','rb').read()[64:72])[0] >> 16)")
case_ snaptable-refcount snap.qcow2 $((16 * MB)) \
    'printf "\0\0" | poke $img $((0x20000 + snapc * 2))'
# L2 entry 1 (guest 64 KiB) into the L1 table, a refcount block, its own L2 table
case_ l2-into-l1 good.qcow2 65536 'u64 "(1<<63)|0x30000" | poke $img $((0x40000 + 8))'
case_ l2-into-refblock good.qcow2 65536 'u64 "(1<<63)|0x20000" | poke $img $((0x40000 + 8))'
case_ l2-into-l2 good.qcow2 65536 'u64 "(1<<63)|0x40000" | poke $img $((0x40000 + 8))'
UNREPAIRABLE="errors? (was|were) found" case_ l1-into-reftable good.qcow2 65536 'u64 "(1<<63)|0x10000" | poke $img 0x30000'

# The same through a frontend: vdisk serve, qemu-io as the NBD client.
cp good.qcow2 nbd.qcow2
u64 "(1<<63)|0x30000" | poke nbd.qcow2 $((0x40000 + 8))
$META ranges qcow2 nbd.qcow2 >nbd.ranges
before=$($META hash nbd.qcow2 nbd.ranges)
"$VDISK" serve --socket "$T/nbd.sock" nbd.qcow2 >nbd.uri 2>nbd.log &
SPID=$!
at_exit "kill $SPID"
URI="nbd+unix:///?socket=$T/nbd.sock"
for _ in $(seq 100); do nbdinfo --size "$URI" >/dev/null 2>&1 && break; sleep 0.05; done
fails_with "nbd: a write over NBD fails" "Input/output error" \
    sh -c "qemu-io -f raw -c 'write -P 0xaa 65536 4096' '$URI' >&2"
ok "nbd: reads still work" qemu-io -f raw -c "read -P 0x11 0 65536" "$URI"
fails_with "nbd: so do later writes elsewhere" "Input/output error" \
    sh -c "qemu-io -f raw -c 'write -P 0xaa $((16 * MB)) 4096' '$URI' >&2"
kill -TERM $SPID && wait $SPID
eq "nbd: no metadata byte changed" "$($META hash nbd.qcow2 nbd.ranges)" "$before"
eq "nbd: qemu-img info says corrupt" "$(corrupt_bit nbd.qcow2)" True
finish
