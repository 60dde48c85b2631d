#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qcow2 with encrypt.format=luks, as QEMU makes it (the LUKS header in clusters
# of the image, data clusters encrypted with the physical sector as IV):
# written by qemu-io (aligned, unaligned, zeroes, over an unencrypted backing
# file), read back through vdisk equal to qemu-img convert --image-opts; vdisk
# check counts the LUKS header's clusters (no leaks); a wrong key, a missing
# key, a write open and QEMU's old AES method are refused clearly; a read-only
# disk through fuse shows the plaintext. Runtime: about 10 s.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
IO=$BUILD/tests/tools/vdisk-test-io
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
cd "$T" || exit 1
printf 'pass phrase' >k
SEC=(--object "secret,id=s0,file=$T/k")

# same DESC A B
same() {
    if cmp -s "$2" "$3"; then pass "$1"; else fail "$1 ($(cmp "$2" "$3" 2>&1 | head -1))"; fi
}

# made NAME CREATE-OPTS [BACKING]: an encrypted qcow2 written by qemu-io, and QEMU's plaintext of it
made() {
    local name=$1 o=$2 b=${3:-}
    for _ in 1 2 3; do # qemu-img times its KDF on a busy clock: retry
        qemu-img create -q -f qcow2 "${SEC[@]}" \
            -o "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10,$o" \
            ${b:+-b "$b" -F raw} "$name.qcow2" 8M 2>"$T/.qerr" && break
    done
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
fails_with "no key: refused" "xts.qcow2: encrypted \(LUKS\): give the key" "$VDISK" info xts.qcow2
fails_with "wrong key: refused" "xts.qcow2: wrong key" "$VDISK" info --key-file /etc/hostname xts.qcow2
fails_with "a write open: refused clearly" "writing encrypted \(LUKS\) qcow2 images is not supported" \
    "$VDISK" open --via fuse --key-file k xts.qcow2
eq "a write open: no record" "$("$VDISK" list)" ""
qemu-img create -q -f qcow2 "${SEC[@]}" -o encrypt.format=aes,encrypt.key-secret=s0 aes.qcow2 1M \
    2>/dev/null && fails_with "QEMU's old AES method: refused" "AES encryption .*not supported" \
    "$VDISK" info --key-file k aes.qcow2
dev=$("$VDISK" open -r --via fuse --key-file k xts.qcow2) && pass "open -r --via fuse" ||
    fail "open -r: $dev"
if [ -b "$dev" ]; then
    cmp -s "$dev" xts.want && pass "the device shows the plaintext" || fail "device differs"
    ok "close" "$VDISK" close xts.qcow2
fi
nothing_left "close" "$T/xts.qcow2"
finish
