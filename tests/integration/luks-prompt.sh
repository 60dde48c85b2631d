#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The key asked on the terminal when an encrypted image gets no --key-file or
# --key-stdin, driven on a pseudo-terminal (luks-tty.py) as a user types:
# create asks twice (a mismatch refused, nothing made), the passphrase never
# echoes, cryptsetup takes what was typed; open, convert and luks add-key /
# remove-key ask; a wrong key fails with the keyslot message; Ctrl-C at the
# prompt leaves echo on; no terminal: a clear error naming --key-file and
# --key-stdin. info without a key shows the header. Runtime: about 15 s.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
export VDISK_RUN_DIR=$T/run
TTY="python3 $ROOT/tests/integration/luks-tty.py"
command -v cryptsetup >/dev/null || { fail "cryptsetup missing: run scripts/install-deps"; finish; }
cd "$T" || exit 1
KDF=argon2-memory=8192,iter-time=10
printf 'typed secret' >typed

# at NAME OUT WANT...: the terminal session OUT shows every WANT (fixed strings)
at() {
    local name=$1 out=$2 w
    shift 2
    for w in "$@"; do
        grep -qF -- "$w" <<<"$out" || { fail "$name (wanted '$w' in: $(tr '\n' '|' <<<"$out"))"; return; }
    done
    pass "$name"
}

out=$($TTY 'typed secret' 'typed secret' -- "$VDISK" create -f luks -o $KDF p.luks 8M)
at "create: asks twice, made" "$out" "Enter passphrase for p.luks:" "Verify passphrase:" "exit 0"
grep -qF 'typed secret' <<<"$out" && fail "create: the passphrase echoed" ||
    pass "create: the passphrase does not echo"
ok "cryptsetup takes the typed passphrase" cryptsetup open --test-passphrase --key-file typed p.luks
out=$($TTY 'typed secret' 'typed secrex' -- "$VDISK" create -f luks -o $KDF m.luks 8M)
at "create: a mismatch refused" "$out" "m.luks: passphrases do not match" "exit 1"
[ -e m.luks ] && fail "create: a refused key left m.luks" || pass "create: a mismatch makes nothing"

head -c 4M /dev/urandom >data.raw
ok "convert --key-file: data in" "$VDISK" convert --key-file typed -O luks -o $KDF data.raw d.luks
out=$($TTY 'typed secret' -- "$VDISK" convert -O raw d.luks back.raw)
at "convert: asks for the source's key" "$out" "Enter passphrase for d.luks:" "exit 0"
ok "convert: the plaintext is the data" cmp data.raw back.raw
out=$($TTY 'typed secreT' -- "$VDISK" convert -O raw d.luks back2.raw)
at "convert: a wrong key fails with the keyslot message" "$out" \
    "d.luks: wrong key: it opens none of the 1 active keyslot" "exit 1"
out=$($TTY 'typed secret' 'typed secret' -- "$VDISK" convert -O luks -o $KDF data.raw n.luks)
at "convert to luks: asks twice for the new key" "$out" "Verify passphrase:" "exit 0"
eq "convert to luks: the data under the typed key" \
    "$(VDISK_TEST_OPEN_OPTIONS=key-file=typed "$BUILD/tests/tools/vdisk-test-io" dump n.luks - | md5sum)" \
    "$(md5sum <data.raw)"

out=$($TTY 'typed secret' -- "$VDISK" open --via fuse d.luks)
at "open: asks, opens" "$out" "Enter passphrase for d.luks:" "exit 0"
dev=$(grep -o '/dev/[a-z0-9]*' <<<"$out" | tail -1)
at_exit "$VDISK" close --force d.luks
eq "open: the device shows the plaintext" "$(head -c 4M "$dev" 2>/dev/null | md5sum)" "$(md5sum <data.raw)"
out=$("$VDISK" info d.luks 2>&1)
at "info on the open disk without a key: the header" "$out" "format: luks" "luks version: 2" \
    "key: not given: header fields only" "keyslot 0: argon2id" "device: $dev"
ok "info --json without a key parses" sh -c "\"$VDISK\" info --json d.luks | python3 -m json.tool"
ok "close" "$VDISK" close d.luks
out=$($TTY 'wrong one' -- "$VDISK" open --via fuse d.luks)
at "open: a wrong key fails with the keyslot message" "$out" "wrong key: it opens none" "exit 1"

out=$($TTY 'typed secret' 'second secret' 'second secret' -- "$VDISK" luks add-key -o $KDF p.luks)
at "luks add-key: asks the old key, then the new twice" "$out" "Enter passphrase for p.luks:" \
    "Enter passphrase for the new key:" "Verify passphrase:" "key added to keyslot 1" "exit 0"
printf 'second secret' >second
ok "cryptsetup takes the added passphrase" cryptsetup open --test-passphrase --key-file second p.luks
out=$($TTY 'typed secret' -- "$VDISK" luks remove-key p.luks)
at "luks remove-key: asks, removes" "$out" "keyslot 0 removed" "exit 0"
fails "cryptsetup refuses the removed passphrase" cryptsetup open --test-passphrase --key-file typed p.luks

out=$($TTY --interrupt -- "$VDISK" create -f luks c.luks 8M)
at "Ctrl-C at the prompt: echo is back on" "$out" "signal 2" "echo on"
fails_with "no terminal: a clear error" "d.luks: encrypted: give the key with --key-file FILE or --key-stdin .no terminal to ask on" \
    setsid -w "$VDISK" open --via fuse d.luks
fails_with "create, no terminal: a clear error" "give the key with --key-file FILE or --key-stdin" \
    setsid -w "$VDISK" create -f luks x.luks 8M
finish
