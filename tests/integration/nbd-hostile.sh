#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk serve against a hand-rolled hostile client (tests/tools/nbd-hostile.py)
# and nbdsh: bad magic, unknown options, oversized lengths, offsets past the
# end, truncated requests, disconnects mid-write; page cache, --direct and
# without io_uring. About 10 s.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
nbdsh() { /usr/bin/python3 -m nbd "$@"; }

truncate -s 16M "$T/d.raw"
dd if=/dev/urandom of="$T/d.raw" bs=1M count=2 conv=notrunc status=none
# through the page cache, with --direct, and without io_uring (the server
# polls, the engine's workers do the I/O); the body is not indented: it holds
# Python for nbdsh
for mode in page direct nouring; do
args=()
[ "$mode" = direct ] && args=(--direct)
if [ "$mode" = nouring ]; then export VDISK_NO_IO_URING=1; else unset VDISK_NO_IO_URING; fi
"$VDISK" serve "${args[@]}" --socket "$T/s.sock" "$T/d.raw" >/dev/null 2>"$T/serve.log" &
SPID=$!
at_exit "kill $SPID"
URI="nbd+unix:///?socket=$T/s.sock"
for _ in $(seq 100); do nbdinfo --size "$URI" >/dev/null 2>&1 && break; sleep 0.05; done

# it prints its own PASS/FAIL lines; a crash part-way would leave checks unrun
python3 "$ROOT/tests/tools/nbd-hostile.py" "$T/s.sock" $((16 << 20)) "$mode" | tee "$T/hostile.out"
rc=${PIPESTATUS[0]}
FAILS=$((FAILS + $(grep -c '^FAIL: ' "$T/hostile.out")))
[ "$rc" -eq 0 ] || grep -q '^FAIL: ' "$T/hostile.out" || fail "$mode: hostile client crashed (exit $rc)"

# libnbd's strict mode off: let nbdsh send what the server must refuse
ok "$mode: nbdsh: read past the end gets EINVAL" nbdsh -u "$URI" -c '
import errno
h.set_strict_mode(0)
try:
    h.pread(512, 16 << 20)
    raise SystemExit("read past the end succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EINVAL, e
'
ok "$mode: nbdsh: trim past the end gets EINVAL" nbdsh -u "$URI" -c '
import errno
h.set_strict_mode(0)
try:
    h.trim(8192, (16 << 20) - 4096)
    raise SystemExit("trim past the end succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EINVAL, e
'
ok "$mode: nbdsh: zero-length read" nbdsh -u "$URI" -c '
import errno
h.set_strict_mode(0)
assert h.pread(0, 0) == b""
'
if kill -0 "$SPID" 2>/dev/null; then pass "$mode: server survived"; else fail "$mode: server died"; fi
ok "$mode: server still serves after all of it" nbdinfo --size "$URI"
kill -TERM "$SPID"; wait "$SPID"; eq "$mode: SIGTERM: exit 0" $? 0
grep -q 'bad request magic' "$T/serve.log" && pass "$mode: misbehaviour logged" || fail "$mode: no log of bad magic"
done
finish
