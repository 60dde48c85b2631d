#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What a new user throws at vdisk (issue 13, "and behave like it"), part 2:
# sizes, option errors, lock errors, a user who is not root, --help against
# the README, convert's progress for scripts, --version and COMMAND --help.
# Every check here failed with the vdisk before the fix.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
at_exit "$VDISK" close --all

# --- sizes: as qemu-img (fractions that make whole bytes), and say what is allowed ---
ok "create 1.5G (a fraction, as qemu-img)" "$VDISK" create "$T/f.img" 1.5G
eq "1.5G is 1536 MiB" "$(stat -c %s "$T/f.img")" $((1536 << 20))
qemu-img create -q -f raw "$T/q.img" 1.5G
eq "qemu-img agrees on 1.5G" "$(stat -c %s "$T/q.img")" "$(stat -c %s "$T/f.img")"
ok "create 2.5 (bare, MiB)" "$VDISK" create "$T/b.img" 2.5
eq "2.5 is 2.5 MiB" "$(stat -c %s "$T/b.img")" $((5 << 19))
for s in 0x10 1e3 0.1K 12abc 1.5.5G; do
    fails_with "size $s refused, saying what is allowed" \
        "invalid size '$s': .*decimal number.*suffix B, K, M, G, T, P or E" "$VDISK" create "$T/z.img" "$s"
done
fails_with "0x10: hexadecimal named" "hexadecimal" "$VDISK" create "$T/z.img" 0x10
fails_with "1e3: exponent named" "exponent" "$VDISK" create "$T/z.img" 1e3
fails_with "1B refused: below one sector" "below one 512-byte sector" "$VDISK" create "$T/z.img" 1B
fails_with "511B refused" "below one 512-byte sector" "$VDISK" create "$T/z.img" 511B
fails_with "open with SIZE 100B refused" "below one 512-byte sector" "$VDISK" open "$T/z.img" 100B
[ -e "$T/z.img" ] && fail "refused sizes left $T/z.img" || pass "refused sizes leave no file"
ok "create 512B (one sector)" "$VDISK" create "$T/one.img" 512B
printf 'x' >"$T/tiny.img"
fails_with "open of a 1-byte image refused" "below one 512-byte sector" "$VDISK" open "$T/tiny.img"
fails_with "size 0 still says greater than zero" "greater than zero" "$VDISK" create "$T/z.img" 0

# --- option errors carry the vdisk: prefix ---
fails_with "-1 as an option: vdisk: prefix" "^vdisk: create: invalid option -- '1'" \
    "$VDISK" create "$T/z.img" -1
fails_with "open -x: vdisk: prefix" "^vdisk: open: invalid option -- 'x'" "$VDISK" open -x "$T/z.img"
fails_with "convert --bogus: vdisk: prefix" "^vdisk: convert: unrecognized option '--bogus'" \
    "$VDISK" convert --bogus -O raw a b

# --- not root ---
chmod 755 "$T"
fails_with "a non-root user is told to be root (open)" "^vdisk: must be root" \
    runuser -u nobody -- "$VDISK" open "$T/one.img"
fails_with "a non-root user is told to be root (close)" "^vdisk: must be root" \
    runuser -u nobody -- "$VDISK" close --all
mkdir -p "$VDISK_RUN_DIR"
fails_with "a non-root user is told to be root (list)" "^vdisk: must be root" \
    runuser -u nobody -- "$VDISK" list
chmod 644 "$T/one.img"
ok "a non-root user may still run info on an image it can read" runuser -u nobody -- "$VDISK" info "$T/one.img"
chmod 700 "$T"

# --- lock errors name the disk that holds the image, and vdisk list ---
qemu-img create -q -f raw "$T/base.img" 4M
qemu-img create -q -f qcow2 -b "$T/base.img" -F raw "$T/top.qcow2"
if dev=$("$VDISK" open "$T/top.qcow2" 2>"$T/open.err"); then
    pass "open an overlay ($dev)"
    id=$("$VDISK" info --json "$T/top.qcow2" | python3 -c "import json,sys; print(json.load(sys.stdin)['id'])")
    fails_with "open of a backing file in use names the disk and vdisk list" \
        "base.img: held by the open disk $dev \(id $id, image $T/top.qcow2\); see vdisk list" \
        "$VDISK" open -f raw "$T/base.img"
    fails_with "check -r all of it names the disk too" "base.img: held by the open disk $dev" \
        "$VDISK" check -r all -f raw "$T/base.img"
    fails_with "serve of it names the disk too" "base.img: held by the open disk $dev" \
        "$VDISK" serve --socket "$T/s.sock" -f raw "$T/base.img"
    "$VDISK" close "$T/top.qcow2"
else
    fail "open an overlay: $(cat "$T/open.err")"
fi
qemu-io -f raw "$T/base.img" -c 'sleep 10000' </dev/null >/dev/null 2>&1 &
qpid=$!
at_exit kill $qpid
for _ in $(seq 50); do qemu-img info "$T/base.img" >/dev/null 2>&1 || break; sleep 0.1; done
fails_with "lock held by another program: says no vdisk disk holds it" \
    "base.img: no disk in vdisk list holds it" "$VDISK" open -f raw "$T/base.img"
kill $qpid; wait $qpid 2>/dev/null

# --- README and --help agree about convert ---
help_opts() { "$VDISK" "$1" --help | grep -oE '(^|[ [|,])--?[A-Za-z][-A-Za-z]*' | grep -oE -- '--?[A-Za-z][-A-Za-z]*' | sort -u; }
readme_opts=$(grep -E '^vdisk convert ' "$ROOT/README.md" | sed 's/#.*//' | grep -oE -- '--?[A-Za-z][-A-Za-z]*' | sort -u)
for o in $readme_opts; do
    help_opts convert | grep -qx -- "$o" && pass "README's convert $o is in --help" ||
        fail "README's convert $o is not in vdisk convert --help"
done
# and every option the README shows for any command is one its --help prints
for c in create open close list info serve check bench; do
    for o in $(grep -E "^vdisk $c |^\`vdisk $c " "$ROOT/README.md" | sed 's/#.*//' | grep -oE -- '(^|[ [|])--?[A-Za-z][-A-Za-z]*' | grep -oE -- '--?[A-Za-z][-A-Za-z]*' | sort -u); do
        help_opts "$c" | grep -qx -- "$o" && pass "README's $c $o is in --help" || fail "README's $c $o is not in vdisk $c --help"
    done
done
for o in $(help_opts convert | grep -vx -- '-h\|--help'); do
    grep -E '^vdisk convert ' "$ROOT/README.md" | grep -q -- "$o" && pass "convert --help's $o is in the README" ||
        fail "convert --help's $o is not in the README"
done

# --- convert: progress bar on a terminal only; --progress=json for scripts ---
printf 'data' | dd of="$T/one.img" conv=notrunc status=none
"$VDISK" create "$T/src.img" 8M
ok "convert -p without a terminal" "$VDISK" convert -p -O raw "$T/src.img" "$T/p.img"
[ -s "$T/.err" ] && fail "-p printed to a pipe: $(head -c 100 "$T/.err")" || pass "-p prints nothing to a pipe"
if command -v script >/dev/null; then
    script -qec "$VDISK convert -p -O raw $T/src.img $T/p2.img" /dev/null >"$T/tty.out"
    grep -q '100.00/100%' "$T/tty.out" && pass "-p shows progress on a terminal" || fail "-p on a terminal: $(cat "$T/tty.out")"
fi
ok "convert --progress=json" "$VDISK" convert --progress=json -O qcow2 "$T/src.img" "$T/j.qcow2"
python3 - "$T/.out" <<'PY' && pass "--progress=json: JSON lines, rising, ending at 100" || fail "--progress=json: $(cat "$T/.out")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert lines and lines[-1]["percent"] == 100 and lines[-1]["done"] == lines[-1]["total"] == 8 << 20
assert all(a["done"] <= b["done"] for a, b in zip(lines, lines[1:]))
PY
ok "the JSON-progress copy is right" qemu-img compare -q "$T/src.img" "$T/j.qcow2"
fails_with "--progress takes json only" "--progress takes 'json'" "$VDISK" convert --progress=bar -O raw "$T/src.img" "$T/x.img"

# --- --version and COMMAND --help ---
ok "vdisk --version" "$VDISK" --version
grep -qE '^vdisk [0-9]+\.[0-9]+\.[0-9]+' "$T/.out" && pass "--version prints the version" || fail "--version: $(cat "$T/.out")"
for c in create open close list info serve convert check bench persist supervise formats; do
    ok "vdisk $c --help exits 0" "$VDISK" "$c" --help
    grep -q "^usage: vdisk $c" "$T/.out" && grep -q -- '--help' "$T/.out" && pass "vdisk $c --help prints its usage and options" ||
        fail "vdisk $c --help: $(head -2 "$T/.out")"
done
ok "vdisk formats" "$VDISK" formats
grep -qx qcow2 "$T/.out" && grep -qx raw "$T/.out" && pass "formats lists raw and qcow2" || fail "formats: $(cat "$T/.out")"
finish
