#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk luks add-key / remove-key / dump on LUKS2 images (vdisk's own and
# cryptsetup's), checked with cryptsetup: luksDump lists the keyslots vdisk
# says, open --test-passphrase takes the new key and refuses a removed one;
# the data reads the same through every key; the last keyslot and a wrong key
# are refused clearly; LUKS1 images (QEMU's and cryptsetup's)
# the same way, QEMU reading the data through the added key. Runtime: about 15 s.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
IO=$BUILD/tests/tools/vdisk-test-io
command -v cryptsetup >/dev/null || { fail "cryptsetup missing: run scripts/install-deps"; finish; }
cd "$T" || exit 1
printf 'first key' >k1
printf 'second key' >k2
printf 'third key' >k3

# slots IMG: cryptsetup's keyslot ids of IMG, on one line
slots() { cryptsetup luksDump "$1" | sed -n 's/^  \([0-9]*\): luks2$/\1/p' | tr '\n' ' '; }
# sum IMG KEYFILE: md5 of the plaintext vdisk reads with KEYFILE
sum() { VDISK_TEST_OPEN_OPTIONS=key-file=$2 "$IO" dump "$1" - 2>/dev/null | md5sum | cut -d' ' -f1; }

for kind in vdisk cryptsetup; do
    img=$kind.luks
    if [ $kind = vdisk ]; then
        "$VDISK" create -f luks --key-file k1 -o argon2-memory=8192,iter-time=10 "$img" 8M
    else
        truncate -s 24M "$img"
        cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
            --key-file k1 "$img"
    fi
    echo 'w 0 1048576 0x42' | VDISK_TEST_OPEN_OPTIONS=key-file=k1 "$IO" script "$img" >/dev/null
    before=$(sum "$img" k1)
    ok "$kind: add-key" "$VDISK" luks add-key --key-file k1 --new-key-file k2 \
        -o pbkdf=argon2id,argon2-memory=8192 "$img"
    eq "$kind: add-key names the keyslot" "$(cat "$T/.out")" "key added to keyslot 1"
    eq "$kind: cryptsetup sees keyslots 0 and 1" "$(slots "$img")" "0 1 "
    ok "$kind: cryptsetup takes the new key" cryptsetup open --test-passphrase --key-file k2 "$img"
    ok "$kind: cryptsetup still takes the old key" cryptsetup open --test-passphrase --key-file k1 "$img"
    eq "$kind: the data reads the same through the new key" "$(sum "$img" k2)" "$before"
    ok "$kind: a third key, added with the second" "$VDISK" luks add-key --key-file k2 \
        --new-key-file k3 -o pbkdf=pbkdf2,iter-time=10 "$img"
    eq "$kind: keyslots 0 1 2" "$(slots "$img")" "0 1 2 "
    ok "$kind: vdisk luks dump" "$VDISK" luks dump "$img"
    eq "$kind: dump lists the same keyslots" \
        "$(sed -n 's/^keyslot \([0-9]*\):.*/\1/p' "$T/.out" | tr '\n' ' ')" "0 1 2 "
    ok "$kind: remove-key with the first key" "$VDISK" luks remove-key --key-file k1 "$img"
    eq "$kind: remove-key names keyslot 0" "$(cat "$T/.out")" "keyslot 0 removed"
    eq "$kind: cryptsetup sees keyslots 1 and 2" "$(slots "$img")" "1 2 "
    fails "$kind: cryptsetup refuses the removed key" cryptsetup open --test-passphrase \
        --key-file k1 "$img"
    fails_with "$kind: vdisk refuses the removed key" "wrong key" "$VDISK" info --key-file k1 "$img"
    eq "$kind: the data reads the same through the third key" "$(sum "$img" k3)" "$before"
    ok "$kind: remove-key with the third key" "$VDISK" luks remove-key --key-file k3 "$img"
    fails_with "$kind: the last keyslot stays" "keyslot 1 is the last one" \
        "$VDISK" luks remove-key --key-file k2 "$img"
    ok "$kind: cryptsetup still takes the second key" cryptsetup open --test-passphrase \
        --key-file k2 "$img"
    fails_with "$kind: add-key with a wrong key" "wrong key" \
        "$VDISK" luks add-key --key-file k1 --new-key-file k3 "$img"
    eq "$kind: still one keyslot" "$(slots "$img")" "1 "
done
qemu_create_kdf -f luks --object secret,id=s0,file=k1 -o key-secret=s0,iter-time=10 q1.luks 1M ||
    fail "qemu-img create -f luks: $(head -c 300 "$T/.qerr")"
ok "LUKS1: dump works" "$VDISK" luks dump q1.luks

# LUKS1: QEMU's layout and cryptsetup's; slot ids of ENABLED slots, and one slot's area bytes
slots1() { cryptsetup luksDump "$1" | sed -n 's/^Key Slot \([0-7]\): ENABLED$/\1/p' | tr '\n' ' '; }
# off1 IMG SLOT: the sector of an enabled slot's key material (luksDump); area1 IMG SECTOR: its md5
off1() { cryptsetup luksDump "$1" | awk -v s="Key Slot $2:" '$0 ~ s { f = 1 } f && /Key material offset/ { print $NF; exit }'; }
area1() { dd if="$1" bs=512 skip="$2" count=500 status=none | md5sum | cut -d' ' -f1; }
truncate -s 8M c1.luks
cryptsetup luksFormat -q --type luks1 --pbkdf-force-iterations 1000 --key-file k1 c1.luks
for img in q1.luks c1.luks; do
    echo 'w 0 65536 0x5a' | VDISK_TEST_OPEN_OPTIONS=key-file=k1 "$IO" script "$img" >/dev/null
    before=$(sum "$img" k1)
    ok "LUKS1 $img: add-key" "$VDISK" luks add-key --key-file k1 --new-key-file k2 -o iter-time=10 "$img"
    eq "LUKS1 $img: add-key names keyslot 1" "$(cat "$T/.out")" "key added to keyslot 1"
    eq "LUKS1 $img: cryptsetup sees keyslots 0 and 1" "$(slots1 "$img")" "0 1 "
    ok "LUKS1 $img: cryptsetup takes the new key" cryptsetup open --test-passphrase --key-file k2 "$img"
    ok "LUKS1 $img: cryptsetup still takes the old key" cryptsetup open --test-passphrase --key-file k1 "$img"
    eq "LUKS1 $img: the data reads the same through the new key" "$(sum "$img" k2)" "$before"
    fails_with "LUKS1 $img: argon2 refused" "pbkdf=pbkdf2 only" "$VDISK" luks add-key --key-file k1 \
        --new-key-file k3 -o pbkdf=argon2id "$img"
    off=$(off1 "$img" 0)
    area=$(area1 "$img" "$off")
    ok "LUKS1 $img: remove-key of the old key" "$VDISK" luks remove-key --key-file k1 "$img"
    eq "LUKS1 $img: remove-key names keyslot 0" "$(cat "$T/.out")" "keyslot 0 removed"
    eq "LUKS1 $img: cryptsetup sees keyslot 1 only" "$(slots1 "$img")" "1 "
    fails "LUKS1 $img: cryptsetup refuses the removed key" cryptsetup open --test-passphrase \
        --key-file k1 "$img"
    [ -n "$off" ] && [ "$(area1 "$img" "$off")" != "$area" ] && pass "LUKS1 $img: the removed slot's area is overwritten" ||
        fail "LUKS1 $img: the removed slot's area is unchanged"
    ok "LUKS1 $img: cryptsetup takes the remaining key" cryptsetup open --test-passphrase \
        --key-file k2 "$img"
    fails_with "LUKS1 $img: the last keyslot stays" "is the last one" "$VDISK" luks remove-key \
        --key-file k2 "$img"
done
ok "LUKS1: QEMU reads the data through the added key" qemu-img convert \
    --object secret,id=s0,file=k2 --image-opts "driver=luks,key-secret=s0,file.filename=q1.luks" \
    -O raw q1.raw
eq "LUKS1: QEMU's plaintext is vdisk's" "$(md5sum <q1.raw | cut -d' ' -f1)" "$(sum q1.luks k2)"
fails_with "add-key without a key, no terminal" "no terminal to ask on" setsid -w "$VDISK" luks add-key \
    --new-key-file k2 vdisk.luks
finish
