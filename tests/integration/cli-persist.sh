#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Persistent disks without systemd: the table ($VDISK_CONF_DIR/disks), edited by
# `vdisk open --persist`, `vdisk persist add|remove|list` and by hand; the boot
# path `vdisk open --all-persistent` (in order, a missing image skipped with a
# message, the others still opened) and `vdisk close --all-persistent`
# (reverse order, only the table's disks).
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run VDISK_CONF_DIR=$T/etc
at_exit "$VDISK" close --all
tab=$VDISK_CONF_DIR/disks

dev=$("$VDISK" open --persist "$T/a.img" 8) && pass "open --persist" || fail "open --persist"
[ -f "$tab" ] && pass "the table is made" || fail "no $tab"
grep -q '^#' "$tab" && pass "the table explains itself in comments" || fail "no comments in the table"
grep -qx "$T/a.img auto rw" "$tab" && pass "a.img recorded as 'IMAGE WAY OPTIONS'" || fail "table: $(cat "$tab")"
"$VDISK" create -f qcow2 "$T/b.qcow2" 4M
ok "persist add with options" "$VDISK" persist add -r -f qcow2 -o l2-cache-size=1M --no-direct "$T/b.qcow2"
grep -qx "$T/b.qcow2 auto ro,format=qcow2,no-direct,o=l2-cache-size=1M" "$tab" && pass "options recorded" ||
    fail "table: $(cat "$tab")"
sp="$T/with space#and
newline.img"
"$VDISK" create "$sp" 2M
ok "persist add a path with space, # and newline" "$VDISK" persist add --via loop "$sp"
grep -q 'with\\040space\\043and\\012newline.img loop rw$' "$tab" && pass "the path is escaped as in fstab" ||
    fail "table: $(cat "$tab")"
ok "persist add a.img again replaces its line" "$VDISK" persist add -r "$T/a.img"
eq "one line for a.img" "$(grep -c "^$T/a.img " "$tab")" 1
ok "persist add a.img back to rw" "$VDISK" persist add "$T/a.img"
fails_with "persist add of a missing image" "must exist" "$VDISK" persist add "$T/none.img"
# a person edits it: comments, blank lines, a disk whose image is gone
printf '\n# my comment\n%s/gone.img loop rw\n' "$T" >>"$tab"
"$VDISK" create "$T/c.img" 1M
echo "$T/c.img loop rw   # trailing comment" >>"$tab"
ok "persist list" "$VDISK" persist list
eq "persist list has 5 disks" "$(wc -l <"$T/.out")" 5
grep -q 'with space#and\\nnewline.img$' "$T/.out" && pass "persist list escapes the newline" || fail "persist list: $(cat "$T/.out")"

# boot: open all, in order; the missing one is skipped with a clear message
ok "close --all before boot" "$VDISK" close --all
"$VDISK" open --all-persistent >"$T/boot.out" 2>"$T/boot.err"
eq "open --all-persistent fails when an image is missing" "$?" 1
grep -q "gone.img: No such file or directory; skipped ($tab:[0-9]*)" "$T/boot.err" &&
    pass "the missing image is named, with the table line" || fail "boot stderr: $(cat "$T/boot.err")"
"$VDISK" list --json >"$T/list.json"
python3 - "$T/list.json" "$T" <<'PY' && pass "the four others are open, as the table says" || fail "after boot: $(cat "$T/list.json")"
import json, sys
d = {x["image"]: x for x in json.load(open(sys.argv[1]))}
t = sys.argv[2]
assert len(d) == 4, d
assert d[t + "/a.img"]["read_only"] is False
assert d[t + "/b.qcow2"]["read_only"] is True and d[t + "/b.qcow2"]["format"] == "qcow2"
assert d[t + "/with space#and\nnewline.img"]["via"] == "loop"
assert d[t + "/c.img"]["via"] == "loop"
assert all(x["state"] == "open" for x in d.values())
PY
eq "boot prints a device per opened disk" "$(wc -l <"$T/boot.out")" 4
"$VDISK" open --all-persistent >"$T/again.out" 2>/dev/null
eq "open --all-persistent again: the open ones are left as they are" \
    "$(sort "$T/again.out")" "$(sort "$T/boot.out")"
eq "still four disks" "$("$VDISK" list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" 4
ok "persist remove by path" "$VDISK" persist remove "$T/gone.img"
id=$("$VDISK" persist list | awk '/c.img$/ {print $1}')
ok "persist remove by id" "$VDISK" persist remove "$id"
grep -q "c.img" "$tab" && fail "c.img still in the table" || pass "c.img removed"
grep -q "# my comment" "$tab" && pass "comments kept" || fail "comment lost"
fails_with "persist remove of what is not there" "not in $tab" "$VDISK" persist remove "$T/c.img"
ok "open --all-persistent with every image present" "$VDISK" open --all-persistent

# shutdown: close the table's disks, last first; c.img (no longer in the table) stays open
ids=$("$VDISK" persist list | awk '{print $1}' | tac | tr '\n' ' ')
# (LeakSanitizer cannot run under ptrace: the asan stage checks leaks elsewhere)
ok "close --all-persistent" env ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" strace -f -e trace=unlink,unlinkat -o "$T/strace" "$VDISK" close --all-persistent
eq "closed in reverse table order" "$(grep -oE '[0-9a-f]{16}\.rec"' "$T/strace" | cut -c1-16 | tr '\n' ' ')" "$ids"
"$VDISK" list --json | python3 -c "import json,sys; d=json.load(sys.stdin); assert [x['image'] for x in d]==[sys.argv[1]], d" "$T/c.img" &&
    pass "only the table's disks were closed" || fail "after shutdown: $("$VDISK" list)"
ok "close c.img" "$VDISK" close "$T/c.img"

# vdisk supervise (vdisk@ID.service's main process): ready via sd_notify, a dead
# server closed for systemd's restart, SIGTERM closes, an open disk adopted
"$VDISK" create -f qcow2 "$T/s.qcow2" 4M
ok "persist add s.qcow2 (fuse: a user-space server)" "$VDISK" persist add --via fuse "$T/s.qcow2"
sid=$("$VDISK" persist list | awk '/s.qcow2$/ {print $1}')
python3 - "$T/notify" >"$T/notify.out" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); s.settimeout(30)
for _ in range(2):
    print(s.recv(4096).decode().replace("\n", " | "), flush=True)
PY
npid=$!
for _ in $(seq 100); do [ -S "$T/notify" ] && break; sleep 0.1; done
NOTIFY_SOCKET=$T/notify "$VDISK" supervise "$sid" >"$T/sup.out" 2>&1 &
spid=$!
at_exit kill $spid
for _ in $(seq 100); do grep -q READY "$T/notify.out" && break; sleep 0.1; done
grep -q "^READY=1 | STATUS=$sid on /dev/loop[0-9]* (way fuse, server pid [0-9]*)" "$T/notify.out" &&
    pass "supervise tells systemd it is ready, with the disk" || fail "notify: $(cat "$T/notify.out")"
dev=$(sed -n 's/.*STATUS=[0-9a-f]* on \([^ ]*\) .*/\1/p' "$T/notify.out")
spid_server=$("$VDISK" list --json | python3 -c "import json,sys; print([d['pid'] for d in json.load(sys.stdin) if d['id']=='$sid'][0])")
[ -b "$dev" ] && [ "$spid_server" -gt 0 ] && pass "the supervised disk is open ($dev, server $spid_server)" || fail "supervised disk"
kill -9 "$spid_server"
wait $spid
eq "a dead server: supervise exits 1 (systemd restarts it)" "$?" 1
grep -q "the server of $dev (pid $spid_server) died" "$T/sup.out" && pass "supervise says the server died" ||
    fail "supervise output: $(cat "$T/sup.out")"
"$VDISK" list --json | python3 -c "import json,sys; assert not [d for d in json.load(sys.stdin) if d['id']=='$sid']" &&
    pass "what was left of the dead disk is closed" || fail "dead disk still recorded: $("$VDISK" list)"
grep -qs "^$T/s.qcow2" "/sys/block/${dev#/dev/}/loop/backing_file" && fail "$dev still bound" || pass "its loop device let go"
wait $npid
grep -q "STOPPING=1" "$T/notify.out" && pass "supervise tells systemd it stops" || fail "no STOPPING: $(cat "$T/notify.out")"
"$VDISK" supervise "$T/s.qcow2" >"$T/sup.out" 2>&1 &
spid=$!
for _ in $(seq 100); do "$VDISK" list | grep -q "s.qcow2$" && break; sleep 0.1; done
"$VDISK" list | grep -q "open .*s.qcow2$" && pass "the restarted supervise opens it again" || fail "not reopened: $("$VDISK" list)"
kill $spid
wait $spid
eq "SIGTERM: supervise exits 0" "$?" 0
"$VDISK" list | grep -q "s.qcow2$" && fail "SIGTERM left the disk open" || pass "SIGTERM closed the disk"
"$VDISK" open --all-persistent >/dev/null 2>&1
pid1=$("$VDISK" list --json | python3 -c "import json,sys; print([d['pid'] for d in json.load(sys.stdin) if d['id']=='$sid'][0])")
"$VDISK" supervise "$sid" >"$T/sup.out" 2>&1 &
spid=$!
sleep 1
pid2=$("$VDISK" list --json | python3 -c "import json,sys; print([d['pid'] for d in json.load(sys.stdin) if d['id']=='$sid'][0])")
eq "supervise adopts a disk open already (same server)" "$pid2" "$pid1"
kill $spid
wait $spid
"$VDISK" list | grep -q "s.qcow2$" && fail "the adopted disk is still open after SIGTERM" || pass "the adopted disk closed on SIGTERM"
fails_with "supervise of what is not in the table" "not in $tab" "$VDISK" supervise "$T/c.img"
"$VDISK" close --all-persistent

# a user who is not root is told so
chmod 755 "$T" "$VDISK_CONF_DIR"
fails_with "persist add as a non-root user: must be root" "^vdisk: must be root" \
    runuser -u nobody -- "$VDISK" persist add "$T/a.img"
ok "persist list as a non-root user (the table is readable)" runuser -u nobody -- "$VDISK" persist list
chmod 700 "$T"

# a malformed table names the line
echo "relative.img loop rw" >>"$tab"
fails_with "a relative path in the table names its line" "$tab:[0-9]+: IMAGE must be an absolute path" \
    "$VDISK" open --all-persistent
sed -i '$d' "$tab"
echo "$T/a.img loop rw,bogus" >>"$tab"
fails_with "an unknown option names its line" "$tab:[0-9]+: unknown option" "$VDISK" persist list
finish
