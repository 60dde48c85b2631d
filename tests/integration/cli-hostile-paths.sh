#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What a new user throws at vdisk (issue 13, "and behave like it"), part 1:
# paths with newlines and control characters, FIFOs, character devices and
# directories as IMAGE, mounted block devices, read-only files.
# Every check here failed with the vdisk before the fix.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
at_exit "$VDISK" close --all

# Is DEVICE bound to a file? (sysfs)
bound() { [ -n "$(cat "/sys/block/${1#/dev/}/loop/backing_file" 2>/dev/null)" ]; }

# --- a path with a newline (and an escape character) ---
nl=$T/$(printf 'nl\nx\033[31m.img')
dev=$("$VDISK" open "$nl" 10) && pass "open a path with a newline" || fail "open a newline path"
ok "list with a newline path" "$VDISK" list
grep -q 'nl\\nx\\x1b\[31m.img' "$T/.out" && pass "list escapes the newline and ESC" ||
    fail "list output: $(cat "$T/.out")"
eq "list prints one line per disk (plus header)" "$(wc -l <"$T/.out")" 2
ok "list --json with a newline path" "$VDISK" list --json
python3 -c "import json,sys; d=json.load(open('$T/.out')); assert d[0]['image']==sys.argv[1], d" "$nl" &&
    pass "list --json gives the exact path" || fail "list --json: $(cat "$T/.out")"
ok "info of a newline path" "$VDISK" info "$nl"
grep -q '^image: .*nl\\nx\\x1b\[31m.img$' "$T/.out" && pass "info escapes the path" ||
    fail "info output: $(head -3 "$T/.out")"
ok "info of its device" "$VDISK" info "$dev"
ok "close a newline path" "$VDISK" close "$nl"
bound "$dev" && fail "$dev still bound after close" || pass "loop device let go"
dev=$("$VDISK" open "$nl") && pass "reopen the newline path" || fail "reopen"
ok "close --all with a newline path" "$VDISK" close --all
bound "$dev" && fail "$dev still bound after close --all" || pass "close --all let it go"
eq "no record left" "$(ls "$VDISK_RUN_DIR" | grep -c rec)" 0
fails_with "messages escape control characters" 'nope\\nname' "$VDISK" info "$T/nope
name"
# a backslash in a path is not an escape
bs="$T/back\\nslash.img"
dev=$("$VDISK" open "$bs" 1) && pass "open a path with a backslash" || fail "open backslash"
"$VDISK" list --json | python3 -c "import json,sys; assert json.load(sys.stdin)[0]['image']==sys.argv[1]" "$bs" &&
    pass "backslash path recorded as it is" || fail "backslash path"
ok "close the backslash path" "$VDISK" close "$bs"

# --- not a regular file or block device: refused by every command, never a hang ---
mkfifo "$T/fifo"
mkdir "$T/dir"
for cmd in info check "convert -O raw" "bench -c 1" "serve --socket $T/s.sock" "open" "open -r"; do
    # shellcheck disable=SC2086
    fails_with "$cmd of a FIFO is refused" "^vdisk: $T/fifo: is a FIFO, not a regular file or block device" \
        timeout 10 "$VDISK" $cmd "$T/fifo" $([ "${cmd%% *}" = convert ] && echo "$T/out.img")
    # shellcheck disable=SC2086
    fails_with "$cmd of a character device is refused" "/dev/null: .*(character device|not a regular file)" \
        timeout 10 "$VDISK" $cmd /dev/null $([ "${cmd%% *}" = convert ] && echo "$T/out.img")
    # shellcheck disable=SC2086
    fails_with "$cmd of a directory is refused" "$T/dir: is a directory" \
        timeout 10 "$VDISK" $cmd "$T/dir" $([ "${cmd%% *}" = convert ] && echo "$T/out.img")
done
[ -e "$T/out.img" ] && fail "a refused convert left its target" || pass "no target left behind"
fails_with "create over a FIFO" "exists" timeout 10 "$VDISK" create "$T/fifo" 1M
fails_with "convert into a FIFO" "exists" timeout 10 "$VDISK" convert -O raw "$T/nl"* "$T/fifo"
[ -p "$T/fifo" ] && pass "the FIFO is left alone" || fail "the FIFO was replaced"

# --- kernel pseudo files are not images ---
fails_with "info /proc/version" "/proc/version: is a file of proc" "$VDISK" info /proc/version
fails_with "open -r /proc/cpuinfo names the file, not LOOP_CONFIGURE" \
    "^vdisk: /proc/cpuinfo: is a file of proc" "$VDISK" open -r /proc/cpuinfo
fails_with "open /proc/cpuinfo" "^vdisk: /proc/cpuinfo: " "$VDISK" open /proc/cpuinfo
grep -q LOOP_CONFIGURE "$T/.err" && fail "blames the loop device" || pass "does not blame the loop device"

# --- read-only files: honoured, with a hint to use -r ---
"$VDISK" create "$T/ro.img" 1M
chmod 0444 "$T/ro.img"
sum=$(md5sum <"$T/ro.img")
fails_with "open of a 0444 file (as root) is refused with a hint" "read-only.*-r" "$VDISK" open "$T/ro.img"
fails_with "serve of a 0444 file is refused" "read-only" "$VDISK" serve --socket "$T/s.sock" "$T/ro.img"
fails_with "bench -w of a 0444 file is refused" "read-only" "$VDISK" bench -w -c 1 "$T/ro.img"
dev=$("$VDISK" open -r "$T/ro.img") && pass "open -r of a 0444 file" || fail "open -r of 0444"
ok "close it" "$VDISK" close "$T/ro.img"
eq "0444 image unchanged" "$(md5sum <"$T/ro.img")" "$sum"
chmod 0644 "$T/ro.img"
chattr +i "$T/ro.img" 2>/dev/null && {
    at_exit chattr -i "$T/ro.img"
    fails_with "open of an immutable file is refused with a hint" "immutable.*-r" "$VDISK" open "$T/ro.img"
    dev=$("$VDISK" open -r "$T/ro.img") && pass "open -r of an immutable file" || fail "open -r immutable"
    "$VDISK" close "$T/ro.img"
    chattr -i "$T/ro.img"
}
mkdir "$T/mnt"
if mount -t tmpfs -o size=8m tmpfs "$T/mnt"; then
    at_exit umount -l "$T/mnt"
    "$VDISK" create "$T/mnt/a.img" 1M
    mount -o remount,ro "$T/mnt"
    fails_with "open on a read-only mount is refused with a hint" "read-only.*-r" "$VDISK" open "$T/mnt/a.img"
    dev=$("$VDISK" open -r "$T/mnt/a.img") && pass "open -r on a read-only mount" || fail "open -r ro mount"
    "$VDISK" close "$T/mnt/a.img"
    umount "$T/mnt"
else
    fail "cannot mount a tmpfs for the read-only mount check"
fi

# --- a full file system: a clear error, never a hang ---
mkdir -p "$T/full"
if mount -t tmpfs -o size=2m tmpfs "$T/full"; then
    at_exit umount -l "$T/full"
    "$VDISK" create -f qcow2 "$T/full/b.qcow2" 64M
    timeout 30 "$VDISK" bench -w -c 4000 -d 16 -s 4k "$T/full/b.qcow2" >/dev/null 2>"$T/bench.err"
    rc=$?
    [ $rc = 1 ] && grep -q "No space left on device" "$T/bench.err" &&
        pass "bench -w on a full file system fails with ENOSPC (no hang)" ||
        fail "bench -w on a full file system: exit $rc (124: hung), $(head -c 200 "$T/bench.err")"
    head -c 8M /dev/urandom >"$T/big-src.img"
    timeout 30 "$VDISK" convert -O raw "$T/big-src.img" "$T/full/x.img" 2>"$T/conv.err"
    rc=$?
    [ $rc = 1 ] && grep -q "No space left on device" "$T/conv.err" &&
        pass "convert into a full file system fails with ENOSPC (no hang)" ||
        fail "convert into a full file system: exit $rc, $(head -c 200 "$T/conv.err")"
    [ -e "$T/full/x.img" ] && fail "the failed convert left its target" || pass "the failed convert removed its target"
    umount "$T/full"
else
    fail "cannot mount a tmpfs for the full file system check"
fi

# --- a mounted block device: opened exclusively, as mkfs does ---
"$VDISK" create "$T/fs.img" 16M
mkfs.ext4 -q "$T/fs.img"
ldev=$(losetup --find --show "$T/fs.img") && at_exit losetup -d "$ldev"
mount "$ldev" "$T/mnt" && at_exit umount -l "$T/mnt"
fails_with "open of a mounted block device is refused" "$ldev: block device is in use" "$VDISK" open "$ldev"
fails_with "check -r all of a mounted block device is refused" "in use" "$VDISK" check -r all "$ldev"
ok "info of a mounted block device still reads it" "$VDISK" info "$ldev"
umount "$T/mnt"
ldev2=$("$VDISK" open -f raw "$ldev") && pass "open of the unmounted block device" || fail "open unmounted"
fails_with "mount of the block device held by vdisk fails" "" mount "$ldev" "$T/mnt"
ok "close the block device" "$VDISK" close "$ldev"
finish
