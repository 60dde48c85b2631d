#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qcow2 with encrypt.format=luks, as QEMU makes it (the LUKS header in clusters
# of the image, data clusters encrypted with the physical sector as IV):
# written by qemu-io (aligned, unaligned, zeroes, over an unencrypted backing
# file), read back through vdisk equal to qemu-img convert --image-opts; vdisk
# check counts the LUKS header's clusters (no leaks); a wrong key, a missing
# key, a write open and QEMU's old AES method are refused clearly; a read-only
# disk through fuse shows the plaintext. vdisk's writes (unaligned, partial
# sectors, whole clusters, over a backing file) read back in qemu-img equal to
# a raw file given the same writes, and qemu-img check finds no error; the
# user's cycle (mkfs, mount, write, close, reopen, verify) through fuse.
# Runtime: about 30 s.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
IO=$BUILD/tests/tools/vdisk-test-io
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
cd "$T" || exit 1
printf 'pass phrase' >k
SEC=(--object "secret,id=s0,file=$T/k")

# qcreate ARGS...: qemu-img create, retried (qemu_create_kdf)
qcreate() {
    qemu_create_kdf -f qcow2 "${SEC[@]}" "$@" && return 0
    fail "qemu-img create $*: $(head -c 300 "$T/.qerr")"
}

# same DESC A B
same() {
    if cmp -s "$2" "$3"; then pass "$1"; else fail "$1 ($(cmp "$2" "$3" 2>&1 | head -1))"; fi
}

# made NAME CREATE-OPTS [BACKING]: an encrypted qcow2 written by qemu-io, and QEMU's plaintext of it
made() {
    local name=$1 o=$2 b=${3:-}
    qcreate -o "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10,$o" \
        ${b:+-b "$b" -F raw} "$name.qcow2" 8M
    qemu-io "${SEC[@]}" --image-opts "driver=qcow2,encrypt.key-secret=s0,file.filename=$name.qcow2" \
        -c "write -P 0xa1 0 1M" -c "write -P 0xb2 1500k 5000" -c "write -P 0xc3 4097k 512" \
        -c "write -z 200k 64k" -c "write -P 0xd4 $((8 * 1024 * 1024 - 512)) 512" \
        >/dev/null 2>"$T/.qerr" || fail "$name: qemu-io: $(head -c 300 "$T/.qerr")"
    rm -f "$name.want"
    qemu-img convert "${SEC[@]}" --image-opts \
        "driver=qcow2,encrypt.key-secret=s0,file.filename=$name.qcow2" -O raw "$name.want" ||
        fail "$name: qemu-img convert"
}

head -c 8M /dev/urandom >base.raw
made xts cluster_size=65536
made essiv encrypt.cipher-alg=aes-256,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256,cluster_size=4096
made backed cluster_size=65536 base.raw
for n in xts essiv backed; do
    rm -f "$n.got"
    VDISK_TEST_OPEN_OPTIONS=key-file=$T/k "$IO" dump "$n.qcow2" "$n.got" 2>"$T/.err" ||
        fail "$n: dump: $(head -c 300 "$T/.err")"
    same "$n: vdisk reads what qemu-io wrote" "$n.want" "$n.got"
    rm -f "$n.conv"
    ok "$n: vdisk convert --key-file -O raw" "$VDISK" convert --key-file k -O raw "$n.qcow2" "$n.conv"
    same "$n: convert equals qemu-img convert" "$n.want" "$n.conv"
    ok "$n: vdisk check --key-file: clean, the LUKS header's clusters counted" \
        "$VDISK" check --key-file k "$n.qcow2"
    eq "$n: info tells the encryption" \
        "$("$VDISK" info --key-file k "$n.qcow2" | sed -n 's/^encrypt format: //p')" luks
done
eq "essiv: the cipher" "$("$VDISK" info --key-file k essiv.qcow2 | sed -n 's/^encrypt cipher: //p')" \
    aes-cbc-essiv:sha256
fails_with "no key: refused" "xts.qcow2: encrypted \(LUKS\): give the key" setsid -w "$VDISK" info xts.qcow2
fails_with "wrong key: refused" "xts.qcow2: wrong key" "$VDISK" info --key-file /etc/hostname xts.qcow2
qemu-img create -q -f qcow2 "${SEC[@]}" -o encrypt.format=aes,encrypt.key-secret=s0 aes.qcow2 1M \
    2>/dev/null && fails_with "QEMU's old AES method: refused" "AES-encrypted qcow2 images .*not supported" \
    "$VDISK" info --key-file k aes.qcow2
# hostile headers: crypt_method 2 without the encryption header extension, or pointing outside
qemu-img create -q -f qcow2 plain.qcow2 1M
cp plain.qcow2 h1.qcow2
printf '\0\0\0\2' | dd of=h1.qcow2 bs=1 seek=32 conv=notrunc status=none
fails_with "crypt_method 2 without the header extension" "no valid encryption header extension" \
    "$VDISK" info --key-file k h1.qcow2
cp xts.qcow2 h2.qcow2
/usr/bin/python3 - h2.qcow2 <<'EOF'
import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
i = d.find(struct.pack(">I", 0x0537BE77), 72, 4096)
d[i + 8:i + 16] = struct.pack(">Q", 1 << 40)  # the LUKS header 1 TiB away
open(sys.argv[1], "wb").write(d)
EOF
fails_with "encryption header extension pointing past the file" \
    "no valid encryption header extension" "$VDISK" info --key-file k h2.qcow2
cp xts.qcow2 h3.qcow2
/usr/bin/python3 - h3.qcow2 <<'EOF'
import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
i = d.find(struct.pack(">I", 0x0537BE77), 72, 4096)
off = struct.unpack(">Q", d[i + 8:i + 16])[0]
d[off:off + 6] = b"XXXXXX"  # the LUKS magic gone
open(sys.argv[1], "wb").write(d)
EOF
fails_with "a damaged LUKS header inside the qcow2" "h3.qcow2: not a LUKS image" \
    "$VDISK" info --key-file k h3.qcow2

dev=$("$VDISK" open -r --via fuse --key-file k xts.qcow2) && pass "open -r --via fuse" ||
    fail "open -r: $dev"
if [ -b "$dev" ]; then
    cmp -s "$dev" xts.want && pass "the device shows the plaintext" || fail "device differs"
    ok "close" "$VDISK" close xts.qcow2
fi
nothing_left "close" "$T/xts.qcow2"

# vdisk writes into QEMU's encrypted qcow2 images; qemu-img reads them back
WRITES='w 0 65536 17
w 5000 3000 34
w 1048576 1048576 51
w 1572864 512 68
w 3145728 100 85
w 4190000 4000 102
w 200000 70000 119
f'
qcheck() { qemu-img check "${SEC[@]}" --image-opts "driver=qcow2,encrypt.key-secret=s0,file.filename=$1"; }
for v in "64k 65536" "4k 4096" "extl2 65536,extended_l2=on" "backed 65536"; do
    set -- $v
    n=w-$1
    rm -f "$n.qcow2" twin.raw
    if [ "$1" = backed ]; then
        qcreate -b base.raw -F raw \
            -o "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10,cluster_size=$2" \
            "$n.qcow2" 8M
        cp base.raw twin.raw
    else
        qcreate \
            -o "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10,cluster_size=$2" \
            "$n.qcow2" 8M
        truncate -s 8M twin.raw
    fi
    echo "$WRITES" | VDISK_TEST_OPEN_OPTIONS=key-file=$T/k "$IO" script "$n.qcow2" >/dev/null \
        2>"$T/.err" && pass "$n: vdisk writes" || fail "$n: vdisk writes: $(head -c 300 "$T/.err")"
    echo "$WRITES" | "$IO" -f raw script twin.raw >/dev/null
    rm -f "$n.want"
    qemu-img convert "${SEC[@]}" --image-opts \
        "driver=qcow2,encrypt.key-secret=s0,file.filename=$n.qcow2" -O raw "$n.want"
    same "$n: qemu-img reads what vdisk wrote" "$n.want" twin.raw
    ok "$n: qemu-img check is clean" qcheck "$n.qcow2"
    grep -q "$(printf '\x33\x33\x33\x33\x33\x33\x33\x33\x33\x33\x33\x33')" "$n.qcow2" &&
        fail "$n: plaintext in the file" || pass "$n: the plaintext is not in the file"
done
rm -f mt.qcow2
qcreate -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10,cluster_size=4096 \
    mt.qcow2 8M
echo "w 0 8388608 0" | VDISK_TEST_OPEN_OPTIONS=key-file=$T/k "$IO" script mt.qcow2 >/dev/null
ok "4 threads race on an encrypted qcow2" env VDISK_TEST_OPEN_OPTIONS=key-file=$T/k "$IO" mt mt.qcow2 4 2000
ok "qemu-img check after the race" qcheck mt.qcow2

# vdisk's own encrypted qcow2 (create, convert): QEMU opens, checks and reads it
for v in "v3 encrypt.format=luks,encrypt.iter-time=10" \
    "v2 encrypt.format=luks,encrypt.iter-time=10,compat=0.10,cluster_size=4096" \
    "backed encrypt.format=luks,encrypt.iter-time=10,backing_file=base.raw,backing_fmt=raw"; do
    set -- $v
    n=v-$1
    rm -f "$n.qcow2" twin.raw
    ok "$n: vdisk create -f qcow2 -o $2 --key-file" "$VDISK" create -f qcow2 -o "$2" --key-file k \
        "$n.qcow2" 8M
    eq "$n: qemu-img info: encrypted with luks" \
        "$(qemu-img info --output=json "$n.qcow2" | python3 -c \
            'import json,sys; d=json.load(sys.stdin); print(d["encrypted"], d["format-specific"]["data"]["encrypt"]["format"])')" \
        "True luks"
    ok "$n: qemu-img check of the new image" qcheck "$n.qcow2"
    if [ "$1" = backed ]; then cp base.raw twin.raw; else truncate -s 8M twin.raw; fi
    echo "$WRITES" | VDISK_TEST_OPEN_OPTIONS=key-file=$T/k "$IO" script "$n.qcow2" >/dev/null ||
        fail "$n: vdisk writes"
    echo "$WRITES" | "$IO" -f raw script twin.raw >/dev/null
    rm -f "$n.want"
    qemu-img convert "${SEC[@]}" --image-opts \
        "driver=qcow2,encrypt.key-secret=s0,file.filename=$n.qcow2" -O raw "$n.want"
    same "$n: qemu-img reads what vdisk wrote" "$n.want" twin.raw
    ok "$n: qemu-img check after the writes" qcheck "$n.qcow2"
    qemu-io "${SEC[@]}" --image-opts "driver=qcow2,encrypt.key-secret=s0,file.filename=$n.qcow2" \
        -c "write -P 0x5a 6M 70000" >/dev/null
    ok "$n: vdisk reads what qemu-io wrote" env VDISK_TEST_OPEN_OPTIONS=key-file=$T/k \
        "$IO" script "$n.qcow2" <<<"r 6291456 70000 0x5a"
done
fails_with "create: encrypt.format=aes refused" "encrypt.format must be luks" \
    "$VDISK" create -f qcow2 -o encrypt.format=aes --key-file k x.qcow2 8M
fails_with "create: encrypt.format=luks without a key" "give the key" \
    setsid -w "$VDISK" create -f qcow2 -o encrypt.format=luks y.qcow2 8M
eq "create failures leave no file" "$(ls x.qcow2 y.qcow2 2>/dev/null)" ""
rm -f conv.qcow2
ok "convert --key-file -O qcow2 -o encrypt.format=luks" "$VDISK" convert --key-file k -O qcow2 \
    -o encrypt.format=luks,encrypt.iter-time=10 base.raw conv.qcow2
rm -f conv.want
qemu-img convert "${SEC[@]}" --image-opts "driver=qcow2,encrypt.key-secret=s0,file.filename=conv.qcow2" \
    -O raw conv.want
same "convert: qemu-img reads the plaintext back" conv.want base.raw
ok "convert: qemu-img check" qcheck conv.qcow2

# the user's cycle through fuse
rm -f c.qcow2
qcreate -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 c.qcow2 64M
dev=$("$VDISK" open --via fuse --key-file k c.qcow2) && pass "cycle: open" || fail "cycle: open: $dev"
if [ -b "$dev" ]; then
    ok "cycle: mkfs.ext4" mkfs.ext4 -q "$dev"
    ok "cycle: mount" mount "$dev" "$MNT"
    head -c 3000000 /dev/urandom >"$MNT/big" && echo hello >"$MNT/small"
    before=$(sums "$MNT")
    ok "cycle: umount" umount "$MNT"
    ok "cycle: close" "$VDISK" close c.qcow2
    ok "cycle: qemu-img check" qcheck c.qcow2
    dev=$(printf 'pass phrase' | "$VDISK" open --via fuse --key-stdin c.qcow2) &&
        pass "cycle: reopen" || fail "cycle: reopen"
    ok "cycle: mount again" mount "$dev" "$MNT"
    eq "cycle: files read back" "$(sums "$MNT")" "$before"
    ok "cycle: umount again" umount "$MNT"
    ok "cycle: close again" "$VDISK" close c.qcow2
    rm -f c.raw
    qemu-img convert "${SEC[@]}" --image-opts "driver=qcow2,encrypt.key-secret=s0,file.filename=c.qcow2" \
        -O raw c.raw
    ok "cycle: e2fsck -fn on QEMU's plaintext" e2fsck -fn c.raw
fi
nothing_left "cycle" "$T/c.qcow2"
finish
