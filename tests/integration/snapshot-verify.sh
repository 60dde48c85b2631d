#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The snapshot overlay's data path (sparse file + 4 KiB bitmap) through the request engine,
# judged by tools nobody here wrote: dd writes of every shape (whole blocks, parts of
# blocks, across blocks, the disk's short last block) applied to the snapshot disk and to
# a copy of the base, then cmp; blkdiscard -z (write-zeroes) likewise; fio randwrite with
# mixed sizes and verify=crc32c; the base's sha256 never changes. About 15 s.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
snap=$T/snap
mkdir -p "$snap"

# a base full of data, 32 MiB + 2 KiB: its last 4 KiB block is short
head -c $((32 * 1024 * 1024 + 2048)) /dev/urandom >"$T/base.img"
cp "$T/base.img" "$T/model.img"
base_sum=$(sha256sum <"$T/base.img")

dev=$("$VDISK" open --snapshot --snapshot-dir "$snap" -f raw "$T/base.img") &&
    pass "open --snapshot ($dev)" || { fail "open --snapshot"; finish; }
cmp "$dev" "$T/base.img" && pass "fresh snapshot reads as the base" || fail "fresh snapshot differs"

# write SIZE bytes of random data at byte OFFSET to both the disk and the model
put() {
    head -c "$2" /dev/urandom >"$T/chunk"
    dd if="$T/chunk" of="$dev" bs=512 seek=$(($1 / 512)) conv=notrunc,fsync status=none &&
        dd if="$T/chunk" of="$T/model.img" bs=512 seek=$(($1 / 512)) conv=notrunc status=none
}
ok "whole blocks" put $((1024 * 1024)) 65536
ok "one sector inside a block" put $((2 * 1024 * 1024 + 1024)) 512
ok "across blocks, partial at both ends" put $((3 * 1024 * 1024 + 3072)) 10240
ok "over blocks partly in the overlay" put $((1024 * 1024 + 60 * 1024)) 12288
ok "the short last block" put $((32 * 1024 * 1024)) 2048
for i in $(seq 1 40); do
    put $(((RANDOM * 32768 + RANDOM) % (64 * 1024 - 64) * 512)) $(((RANDOM % 48 + 1) * 512)) ||
        fail "random write $i"
done
cmp "$dev" "$T/model.img" && pass "snapshot disk = model after dd writes of every shape" ||
    fail "snapshot disk differs from the model: $(cmp "$dev" "$T/model.img" 2>&1 | head -1)"

# write-zeroes over base bytes, partial at both ends: zeroes, no base showing through
if blkdiscard -z -o $((5 * 1024 * 1024 + 512)) -l $((3 * 4096)) "$dev" 2>"$T/err"; then
    dd if=/dev/zero of="$T/model.img" bs=512 seek=$(((5 * 1024 * 1024 + 512) / 512)) count=24 \
        conv=notrunc status=none
    cmp "$dev" "$T/model.img" && pass "blkdiscard -z: zeroes, as in the model" ||
        fail "blkdiscard -z: $(cmp "$dev" "$T/model.img" 2>&1 | head -1)"
else
    fail "blkdiscard -z: $(cat "$T/err")"
fi

# many writers at once through the engine: fio checks every block it wrote
ok "fio randwrite 512..64k QD16 with verify=crc32c" fio --name=v --filename="$dev" \
    --ioengine=libaio --direct=1 --rw=randwrite --bsrange=512-64k --iodepth=16 \
    --offset=8M --size=16M --verify=crc32c --do_verify=1 --verify_fatal=1 \
    --verify_state_save=0 --randrepeat=0 --output=/dev/null
ok "close" "$VDISK" close "$T/base.img"
eq "base sha256 unchanged" "$(sha256sum <"$T/base.img")" "$base_sum"
eq "nothing left in the snapshot dir" "$(ls -A "$snap")" ""

# the bitmap is in memory (32 KiB per GiB): an absurd disk is refused, saying why
qemu-img create -q -f qcow2 "$T/huge.qcow2" 20T || fail "qemu-img create 20T"
fails_with "a 20 TiB disk is refused for --snapshot" "too large for a snapshot" \
    "$VDISK" open --snapshot --snapshot-dir "$snap" "$T/huge.qcow2"
eq "refused: nothing left in the snapshot dir" "$(ls -A "$snap")" ""
finish
