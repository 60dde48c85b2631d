#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# LUKS images that must not open, and keys that must not leak: no key, a wrong
# key, damaged headers (one LUKS2 copy: the other serves; both: refused),
# damaged key material, truncated keyslot areas, hostile costs and sizes in a
# re-checksummed LUKS2 JSON: each a clear "vdisk: FILE: WHY" and a non-zero
# exit, no device, no record, quickly. The key of a disk served by a forked
# server is in no command line, environment or record. Runtime: about 15 s.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
cd "$T" || exit 1
printf 'pass phrase' >k
printf 'wrong phrase' >bad
"$VDISK" create -f luks --key-file k -o argon2-memory=8192,iter-time=10 v2.luks 8M ||
    fail "create"
qemu_create_kdf -f luks --object secret,id=s0,file=k -o key-secret=s0,iter-time=10 q1.luks 8M ||
    { fail "qemu-img create -f luks: $(head -c 300 "$T/.qerr")"; finish; }

# refused DESC REGEX IMAGE [KEY]: every command refuses IMAGE with REGEX, leaving nothing
refused() {
    local d=$1 re=$2 img=$3 key=${4:-k}
    fails_with "$d: info" "^vdisk: .*$img.*$re" timeout 60 "$VDISK" info --key-file "$key" "$img"
    fails_with "$d: open" "^vdisk: .*$re" timeout 60 "$VDISK" open --via fuse --key-file "$key" \
        "$img"
    fails_with "$d: convert" "$re" timeout 60 "$VDISK" convert --key-file "$key" -O raw "$img" out.raw
    [ -e out.raw ] && fail "$d: convert left its output" || pass "$d: convert left no output"
    eq "$d: no record" "$("$VDISK" list)" ""
}

# no terminal (setsid): nothing to ask the key on
fails_with "no key: a clear message" "v2.luks: encrypted \(LUKS\): give the key" setsid -w "$VDISK" check v2.luks
fails_with "no key: open refuses" "give the key" setsid -w "$VDISK" open --via fuse v2.luks
ok "no key: info shows the header" "$VDISK" info v2.luks
grep -q "^key: not given: header fields only" "$T/.out" && pass "no key: info says it has no key" ||
    fail "no key: info says it has no key"
refused "wrong key (LUKS2, after argon2)" "wrong key: it opens none of the 1 active keyslot" \
    v2.luks bad
refused "wrong key (LUKS1, after pbkdf2)" "wrong key" q1.luks bad
fails_with "keyslot=N names a slot that is not there" "no active keyslot 3" \
    env VDISK_TEST_OPEN_OPTIONS=key-file=k,keyslot=3 "$BUILD/tests/tools/vdisk-test-io" info v2.luks
fails_with "an empty key file" "the key is empty" "$VDISK" info --key-file /dev/null v2.luks
fails_with "a key for an image that takes none" "has no option 'key-fd'" \
    "$VDISK" info --key-file k "$(printf '' >plain.raw; echo plain.raw)"

# damaged LUKS2 headers: one copy damaged, the other serves; both, refused
cp v2.luks d1.luks
printf 'X' | dd of=d1.luks bs=1 seek=5000 conv=notrunc status=none # primary JSON
ok "LUKS2 primary header damaged: the secondary opens it" "$VDISK" info --key-file k d1.luks
printf 'X' | dd of=d1.luks bs=1 seek=$((16384 + 5000)) conv=notrunc status=none
refused "LUKS2 both headers damaged" "no copy with a valid checksum" d1.luks
# damaged key material: the digest check refuses it (never a partial open)
cp v2.luks d2.luks
dd if=/dev/urandom of=d2.luks bs=4096 seek=10 count=4 conv=notrunc status=none
refused "LUKS2 key material damaged" "wrong key" d2.luks
cp q1.luks d3.luks
dd if=/dev/urandom of=d3.luks bs=512 seek=20 count=8 conv=notrunc status=none
refused "LUKS1 key material damaged" "wrong key" d3.luks
# truncated keyslot areas
cp v2.luks t2.luks && truncate -s 100000 t2.luks
refused "LUKS2 truncated in the keyslot area" "keyslot 0.*(past the (end of the )?file|truncated)" \
    t2.luks
cp q1.luks t1.luks && truncate -s 60000 t1.luks
refused "LUKS1 truncated in the keyslot area" "keyslot 0: area ends at .*truncated" t1.luks
cp v2.luks t3.luks && truncate -s 2000 t3.luks
refused "LUKS2 cut inside its header" "no copy with a valid checksum" t3.luks
# LUKS1 with hostile iterations: refused before any work
cp q1.luks h1.luks
printf '\377\377\377\377' | dd of=h1.luks bs=1 seek=212 conv=notrunc status=none
refused "LUKS1 keyslot with 2^32-1 iterations" "iterations out of range" h1.luks
# an unknown LUKS version stays refused as a foreign format, never raw
truncate -s 1M v3.luks && printf 'LUKS\272\276\0\3' | dd of=v3.luks conv=notrunc status=none
fails_with "LUKS version 3: refused" "format luks\).*cannot serve" "$VDISK" info v3.luks

# rejson IN OUT PY-EXPR: rewrite the LUKS2 JSON (j) of both copies, re-checksummed
rejson() {
    /usr/bin/python3 - "$1" "$2" "$3" <<'EOF'
import hashlib, json, sys
src, dst, expr = sys.argv[1:4]
data = bytearray(open(src, "rb").read())
for off in (0, 16384):
    hdr = data[off:off + 16384]
    j = json.loads(hdr[4096:].split(b"\0")[0])
    exec(expr)
    text = json.dumps(j).encode()
    hdr[4096:] = text + bytes(16384 - 4096 - len(text))
    hdr[448:512] = bytes(64)
    hdr[448:480] = hashlib.sha256(hdr).digest()
    data[off:off + 16384] = hdr
open(dst, "wb").write(data)
EOF
}
rejson v2.luks j0.luks 'pass'
ok "rejson itself keeps a good image good" "$VDISK" info --key-file k j0.luks
rejson v2.luks j1.luks 'j["keyslots"]["0"]["kdf"]["memory"] = 4294967295'
refused "argon2 memory 4 TiB" "argon2: cost out of range" j1.luks
rejson v2.luks j2.luks 'j["keyslots"]["0"]["af"]["stripes"] = 4000000000'
refused "4e9 AF stripes" "does not fit its area" j2.luks
rejson v2.luks j3.luks 'j["segments"]["0"]["offset"] = "1099511627776"'
refused "payload offset past the end" "payload offset .* outside the file" j3.luks
rejson v2.luks j4.luks 'j["keyslots"]["0"]["area"]["offset"] = "4096"'
refused "keyslot area over the header" "area out of place" j4.luks
rejson v2.luks j5.luks 'j["segments"]["1"] = dict(j["segments"]["0"])'
refused "two segments (reencryption)" "2 segments" j5.luks
rejson v2.luks j6.luks 'j["segments"]["0"]["encryption"] = "twofish-xts-plain64"'
refused "an unsupported cipher" "cipher twofish-xts-plain64 .*not supported" j6.luks
rejson v2.luks j7.luks 'j["digests"]["0"]["salt"] = "***"'
refused "a digest salt that is not base64" "digest 0: missing or bad field" j7.luks
rejson v2.luks j8.luks 'j["segments"]["0"]["sector_size"] = 3000'
refused "sector size 3000" "not in whole sectors|sector size 3000" j8.luks
rejson v2.luks j9.luks 'j["keyslots"]["0"]["kdf"]["type"] = "scrypt"'
refused "an unknown KDF" "keyslot 0: unsupported kdf" j9.luks

# the key never shows: a fuse server keeps it only inside its own memory
dev=$(printf 'pass phrase' | "$VDISK" open --via fuse --key-stdin v2.luks) &&
    pass "open --key-stdin" || fail "open --key-stdin: $dev"
pid=$(sed -n 's/^pid=//p' "$VDISK_RUN_DIR"/*.rec) # (vdisk info would want the key)
if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then
    grep -qa 'pass phrase' "/proc/$pid/cmdline" && fail "key in the server's cmdline" ||
        pass "key not in the server's command line"
    grep -qa 'pass phrase' "/proc/$pid/environ" && fail "key in the server's environment" ||
        pass "key not in the server's environment"
    eq "the server closed the key's memfd once the image was open" \
        "$(ls -l "/proc/$pid/fd" | grep -c memfd)" 0
    grep -rqa 'pass phrase' "$VDISK_RUN_DIR" && fail "key in a record" || pass "key in no record"
    "$VDISK" list | grep -q 'pass phrase' && fail "list shows the key" || pass "list hides the key"
    # (AddressSanitizer makes mlock a no-op: not checked in the asan stage)
    [ -n "${ASAN_OPTIONS:-}" ] ||
        { grep -q "VmLck:[[:space:]]*0 kB" "/proc/$pid/status" && fail "no locked memory in the server" ||
            pass "the server holds its key in locked memory"; }
else
    fail "no server pid for v2.luks"
fi
ok "close" "$VDISK" close v2.luks
nothing_left "close" "$T/v2.luks"
finish
