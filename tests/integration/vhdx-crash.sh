#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# VHDX crash consistency.
# 1. A libvdisk writer (random 4k writes, discards, zeroes, flushes) is killed
#    with SIGKILL at a random moment, 60 times over several layouts. Then: every
#    write acknowledged before the last completed flush reads back (a read-only
#    open, which replays the log in memory and leaves the file alone); QEMU opens
#    the image (after its own replay when a log entry is live) and reads the same
#    bytes; a read-write reopen replays to disk and qemu-img check is clean.
# 2. A crash inside a metadata update: the writer stops after each single file
#    write of a log commit (VDISK_VHDX_STOP_AFTER=N); vdisk and QEMU then read
#    the old state or the new one, never a mix. Runtime: about a minute.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
RUNS=${VHDX_CRASH_RUNS:-60}
cd "$T" || exit 1

# qemu_view IMG OUT: QEMU's bytes of IMG (a copy replayed by qemu-img check -r all if needed).
qemu_view() {
    if ! qemu-img convert -U -f vhdx -O raw "$1" "$2" 2>"$T/qerr"; then
        grep -q "needs to be replayed" "$T/qerr" || return 1
        cp "$1" "$T/qcopy.vhdx"
        qemu-img check -q -r all "$T/qcopy.vhdx" >/dev/null 2>&1
        qemu-img convert -f vhdx -O raw "$T/qcopy.vhdx" "$2" || return 1
        replays=$((replays + 1))
    fi
}

configs=("block_size=1M" "block_size=2M,log_size=1M" "block_size=1M,block_state_zero=off"
         "subformat=fixed,block_size=1M" "block_size=8M,log_size=4M")
bad_data=0 bad_ro=0 bad_qemu=0 bad_repair=0 bad_check=0 replays=0
for i in $(seq 1 "$RUNS"); do
    cfg=${configs[$((i % ${#configs[@]}))]}
    img=$T/c$i.vhdx
    rm -f "$img"
    "$IO" -f vhdx -o "$cfg" create "$img" 16M || { fail "run $i: create ($cfg)"; continue; }
    "$IO" -f vhdx crash "$img" "$i" 4096 "$T/log" 2>"$T/writer.err" &
    pid=$!
    sleep "0.$((RANDOM % 30 + 5))"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    if [ -s "$T/writer.err" ]; then fail "run $i: writer failed: $(head -c 300 "$T/writer.err")"; fi
    before=$(md5sum <"$img")
    if ! "$IO" -f vhdx verify "$img" "$T/log" 2>"$T/verify.err"; then
        bad_data=$((bad_data + 1))
        fail "run $i ($cfg): flushed writes lost: $(head -c 300 "$T/verify.err")"
        cp "$img" "/tmp/vhdx-crash-fail-$i.vhdx" 2>/dev/null
    fi
    "$VDISK" check "$img" >"$T/vcheck" 2>&1
    rc=$?
    if [ "$rc" != 0 ] && [ "$rc" != 3 ]; then # leaks (a block allocated, its entry not yet) only
        bad_check=$((bad_check + 1))
        fail "run $i ($cfg): vdisk check exit $rc: $(head -c 300 "$T/vcheck")"
    fi
    [ "$(md5sum <"$img")" = "$before" ] || { bad_ro=$((bad_ro + 1)); fail "run $i: verify wrote"; }
    "$IO" dump "$img" "$T/v.raw"
    if ! qemu_view "$img" "$T/q.raw" || ! cmp -s "$T/v.raw" "$T/q.raw"; then
        bad_qemu=$((bad_qemu + 1))
        fail "run $i ($cfg): QEMU reads other bytes than vdisk ($(head -c 200 "$T/qerr"))"
        cp "$img" "/tmp/vhdx-crash-fail-$i.vhdx" 2>/dev/null
    fi
    if ! printf 'f\n' | "$IO" -f vhdx script "$img" 2>"$T/reopen.err" ||
        ! qemu-img check -q "$img" >"$T/check" 2>&1 ||
        ! "$IO" dump "$img" "$T/v2.raw" || ! cmp -s "$T/v.raw" "$T/v2.raw"; then
        bad_repair=$((bad_repair + 1))
        fail "run $i ($cfg): after a read-write reopen: $(head -c 300 "$T/reopen.err" "$T/check")"
    fi
    rm -f "$img" "$T/v.raw" "$T/v2.raw" "$T/q.raw" "$T/qcopy.vhdx"
done
eq "crash runs: every flushed write read back" "$bad_data" 0
eq "crash runs: the read-only opens (verify, check) never wrote the file" "$bad_ro" 0
eq "crash runs: vdisk check finds no corruption" "$bad_check" 0
eq "crash runs: QEMU reads what vdisk reads" "$bad_qemu" 0
eq "crash runs: clean (qemu-img check) and unchanged after a read-write reopen" "$bad_repair" 0
echo "NOTE: $replays of $RUNS runs left a live log entry that QEMU replayed too"

# 2. Stop inside a metadata update, after each single file write of the log commit.
"$IO" -f vhdx -o block_size=1M create old.vhdx 16M
printf 'w 0 1048576 1\nw 3145728 1048576 3\nw 5242880 4096 5\n' | "$IO" -f vhdx script old.vhdx
"$IO" dump old.vhdx old.raw
# the update: new blocks (BAT entries), a whole-block discard and zeroes (states), one flush
printf 'w 2097152 8192 7\nw 9437184 1048576 9\nd 3145728 1048576\nz 5242880 1048576\nw 15728640 512 11\nf\n' >ops
cp old.raw new.raw
"$IO" -f raw script new.raw <ops
mixes=0 stops=0 qemu_bad=0 seen=
for n in $(seq 0 40); do
    cp old.vhdx s.vhdx
    VDISK_VHDX_STOP_AFTER=$n "$IO" -f vhdx script s.vhdx <ops 2>/dev/null
    rc=$?
    "$IO" dump s.vhdx s.raw 2>/dev/null
    if cmp -s s.raw old.raw; then state=old; elif cmp -s s.raw new.raw; then state=new; else
        state=mix; mixes=$((mixes + 1)); cp s.vhdx "/tmp/vhdx-stop-$n.vhdx"; fi
    if ! qemu_view s.vhdx q.raw || ! cmp -s s.raw q.raw; then
        qemu_bad=$((qemu_bad + 1))
        fail "stopped after write $n: QEMU reads other bytes than vdisk ($state)"
    fi
    seen="$seen $state"
    [ "$rc" = 99 ] || break # the writer finished: every stop point was tried
    stops=$((stops + 1))
done
[ "$stops" -ge 4 ] && pass "metadata update: the writer was stopped at $stops points" ||
    fail "metadata update: only $stops stop points"
eq "metadata update: every stop reads the old state or the new one" "$mixes" 0
eq "metadata update: QEMU reads the same state at every stop" "$qemu_bad" 0
eq "metadata update: after it all, the new state" "$state" new
case $seen in *old*new*) pass "metadata update: old state before the entry is whole, new after ($seen)" ;;
*) fail "metadata update: states seen: $seen" ;; esac
finish
