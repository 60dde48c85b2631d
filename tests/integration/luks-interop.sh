#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# LUKS against QEMU and cryptsetup. LUKS1 images qemu-img makes (xts, cbc-essiv)
# and qemu-io writes read back through vdisk as qemu-img convert --image-opts
# reads them; what vdisk writes into LUKS1 images (QEMU's and cryptsetup's)
# reads back in QEMU equal to a raw file given the same writes. LUKS2 (QEMU 7.2
# reads no LUKS2): cryptsetup luksFormat images (pbkdf2, argon2id; 512 and
# 4096-byte sectors) and vdisk's own take vdisk writes that a second reader
# (luks-decrypt.py with the volume key cryptsetup dumps) decrypts equal;
# cryptsetup luksDump accepts vdisk's headers and shows its keyslot;
# cryptsetup open --test-passphrase takes the key; the file never holds the
# plaintext. Runtime: about 20 s.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
DEC=$ROOT/tests/integration/luks-decrypt.py
export VDISK_RUN_DIR=$T/run
for c in qemu-img qemu-io cryptsetup; do
    command -v $c >/dev/null || { fail "$c missing: run scripts/install-deps"; finish; }
done
/usr/bin/python3 -c 'import cryptography' 2>/dev/null ||
    { fail "python3-cryptography missing: run scripts/install-deps"; finish; }
cd "$T" || exit 1
printf 'pass phrase' >k
export VDISK_TEST_OPEN_OPTIONS=key-file=$T/k
SEC=(--object secret,id=s0,file="$T/k")

# same DESC A B: files A and B are byte-identical.
same() {
    if cmp -s "$2" "$3"; then pass "$1"; else fail "$1 ($(cmp "$2" "$3" 2>&1 | head -1))"; fi
}

# qraw IMG OUT: QEMU's plaintext of a LUKS1 image
qraw() {
    rm -f "$2"
    qemu-img convert "${SEC[@]}" --image-opts "driver=luks,key-secret=s0,file.filename=$1" \
        -O raw "$2" 2>"$T/.qerr"
}

# WRITES: unaligned, partial-sector and multi-sector writes (vdisk-test-io script: plain numbers)
WRITES='w 0 65536 0x11
w 5000 3000 0x22
w 1048576 1048576 0x33
w 1572864 512 0x44
w 3145728 100 0x55
w 4190000 4000 0x66
f'

# vdisk_writes DESC IMG: vdisk writes WRITES into IMG (its whole disk zeroed first, as the raw twin)
vdisk_writes() {
    local size
    size=$("$IO" info "$2" | sed -n 's/^virtual_size=//p')
    rm -f "$T/twin.raw" && truncate -s "$size" "$T/twin.raw"
    { echo "w 0 $size 0"; echo "$WRITES"; } | "$IO" script "$2" >"$T/.out" 2>"$T/.err" &&
        echo "$WRITES" | VDISK_TEST_OPEN_OPTIONS= "$IO" -f raw script "$T/twin.raw" >/dev/null 2>&1 &&
        pass "$1: vdisk writes" || fail "$1: vdisk writes: $(head -c 300 "$T/.err")"
}

# ---- QEMU's LUKS1 images, written by qemu-io, read by vdisk
for c in xts cbc-essiv; do
    o=key-secret=s0,iter-time=10
    [ $c = cbc-essiv ] && o=$o,cipher-alg=aes-256,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256
    qemu_create_kdf -f luks "${SEC[@]}" -o "$o" q-$c.luks 8M ||
        fail "qemu-img create $c: $(head -c 300 "$T/.qerr")"
    qemu-io "${SEC[@]}" --image-opts "driver=luks,key-secret=s0,file.filename=q-$c.luks" \
        -c "write -P 0 0 8M" -c "write -P 0xa1 0 1M" -c "write -P 0xb2 1536k 4k" \
        -c "write -P 0xc3 4097k 512" -c "write -P 0xd4 $((8 * 1024 * 1024 - 512)) 512" \
        >/dev/null 2>"$T/.qerr" || fail "qemu-io $c: $(head -c 300 "$T/.qerr")"
    qraw q-$c.luks want.raw || fail "qemu-img convert $c: $(head -c 300 "$T/.qerr")"
    rm -f got.raw
    ok "qemu luks1 $c: vdisk dump" "$IO" dump q-$c.luks got.raw
    same "qemu luks1 $c: vdisk reads what qemu-io wrote" want.raw got.raw
    rm -f got.raw
    ok "qemu luks1 $c: vdisk convert --key-file -O raw" "$VDISK" convert --key-file k -O raw \
        q-$c.luks got.raw
    same "qemu luks1 $c: convert equals qemu-img convert" want.raw got.raw
    eq "qemu luks1 $c: info names the cipher" \
        "$("$VDISK" info --key-file k q-$c.luks | sed -n 's/^cipher: //p')" \
        "$([ $c = xts ] && echo aes-xts-plain64 || echo aes-cbc-essiv:sha256)"
    vdisk_writes "qemu luks1 $c" q-$c.luks
    qraw q-$c.luks want.raw
    same "qemu luks1 $c: qemu-img reads what vdisk wrote" want.raw twin.raw
done

# ---- cryptsetup's images: LUKS1 (QEMU reads it too) and LUKS2
# cs NAME ARGS...: cryptsetup luksFormat a 24 MiB file (no dm-crypt needed)
cs() {
    local name=$1
    shift
    rm -f "$name" && truncate -s 24M "$name"
    cryptsetup luksFormat -q --key-file k "$@" "$name" >"$T/.out" 2>"$T/.err" ||
        fail "cryptsetup luksFormat $*: $(head -c 300 "$T/.err")"
}

# second_reader DESC IMG: the payload decrypted with the dumped volume key equals the raw twin
second_reader() {
    local vk off ss cipher
    vk=$(cryptsetup luksDump --dump-volume-key --key-file k -q "$2" 2>/dev/null |
        sed -n '/^MK dump:/,$p' | sed 's/^MK dump://' | tr -d ' \t\n:')
    off=$("$VDISK" info --key-file k "$2" | sed -n 's/^payload offset: //p')
    ss=$("$VDISK" info --key-file k "$2" | sed -n 's/^sector size: //p')
    cipher=$("$VDISK" info --key-file k "$2" | sed -n 's/^cipher: //p')
    rm -f dec.raw
    if [ -z "$vk" ] || ! /usr/bin/python3 "$DEC" "$2" "$vk" "$off" "$ss" "$cipher" dec.raw; then
        fail "$1: second reader failed"
        return
    fi
    same "$1: the second reader decrypts what vdisk wrote" dec.raw twin.raw
}

cs c1.luks --type luks1 --pbkdf-force-iterations 1000
vdisk_writes "cryptsetup luks1" c1.luks
qraw c1.luks want.raw
same "cryptsetup luks1: qemu-img reads what vdisk wrote" want.raw twin.raw
second_reader "cryptsetup luks1" c1.luks
cs c1e.luks --type luks1 --pbkdf-force-iterations 1000 --cipher aes-cbc-essiv:sha256 --key-size 256
vdisk_writes "cryptsetup luks1 cbc-essiv" c1e.luks
qraw c1e.luks want.raw
same "cryptsetup luks1 cbc-essiv: qemu-img reads what vdisk wrote" want.raw twin.raw

for v in "pbkdf2 512" "pbkdf2 4096" "argon2id 4096" "argon2i 512"; do
    set -- $v
    if [ "$1" = pbkdf2 ]; then
        cs c2.luks --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --sector-size "$2"
    else
        cs c2.luks --type luks2 --pbkdf "$1" --pbkdf-memory 8192 --pbkdf-force-iterations 4 \
            --sector-size "$2"
    fi
    vdisk_writes "cryptsetup luks2 $v" c2.luks
    second_reader "cryptsetup luks2 $v" c2.luks
    rm -f got.raw
    "$IO" dump c2.luks got.raw && same "cryptsetup luks2 $v: vdisk reads its writes back" got.raw \
        twin.raw
    ok "cryptsetup luks2 $v: cryptsetup still takes the key" cryptsetup open --test-passphrase \
        --key-file k c2.luks
done

# ---- vdisk's own LUKS2 images
for v in "aes-xts-plain64 16M" "aes-xts-plain64 6001K" "aes-cbc-essiv:sha256 16M"; do
    set -- $v
    rm -f v2.luks
    ok "vdisk create luks $v" "$VDISK" create -f luks --key-file k \
        -o "cipher=$1,argon2-memory=8192,iter-time=10" v2.luks "$2"
    ok "vdisk luks $v: cryptsetup luksDump accepts the header" cryptsetup luksDump v2.luks
    eq "vdisk luks $v: luksDump shows keyslot 0 as vdisk info does" \
        "$(sed -n 's/^  \([0-9]*\): luks2$/\1/p' "$T/.out") $(sed -n 's/^\tPBKDF: *//p' "$T/.out")" \
        "$("$VDISK" info --key-file k v2.luks | sed -n 's/^keyslot \([0-9]*\): \([a-z0-9]*\).*/\1 \2/p')"
    eq "vdisk luks $v: sector size" "$(sed -n 's/^\tsector: \([0-9]*\).*/\1/p' "$T/.out")" \
        "$([ "$2" = 16M ] && echo 4096 || echo 512)"
    ok "vdisk luks $v: cryptsetup open --test-passphrase takes the key" cryptsetup open \
        --test-passphrase --key-file k v2.luks
    vdisk_writes "vdisk luks $v" v2.luks
    second_reader "vdisk luks $v" v2.luks
done

# threads racing on interleaved 4k blocks of a zeroed image read back what each wrote
for ss in 4096 512; do
    rm -f mt.luks
    "$VDISK" create -f luks --key-file k -o argon2-memory=8192,sector-size=$ss mt.luks 16M
    echo "w 0 16777216 0" | "$IO" script mt.luks >/dev/null
    ok "4 threads race on a LUKS2 image with $ss-byte sectors" "$IO" mt mt.luks 4 3000
done

# the plaintext never reaches the file
yes 'SECRET-PLAINTEXT-MARKER' | head -c 4M >plain.raw
"$VDISK" convert --key-file k -O luks -o argon2-memory=8192 plain.raw v4.luks &&
    pass "convert --key-file -O luks" || fail "convert --key-file -O luks"
if grep -q SECRET-PLAINTEXT-MARKER v4.luks; then fail "the plaintext is in the file"; else
    pass "the plaintext is not in the file"; fi
"$VDISK" convert --key-file k -O raw v4.luks back.raw && cmp -s <(head -c 4M back.raw) plain.raw &&
    pass "converted back, the plaintext returns" || fail "converted back: differs"
finish
