#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk open --snapshot: an ext4 left dirty (a copy taken while it was mounted: its journal
# needs replay, which needs writes) is mounted through a temporary overlay; the files
# written before the "crash" are there, new files can be written, and the base's sha256
# never changes (raw base, and a qcow2 base). The overlay is an unlinked file: nothing in
# --snapshot-dir while open, after close or after kill -9 of the server. About 15 s.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
snap=$T/snap
mkdir -p "$snap"

# The dirty file system: written through a disk, copied while mounted.
"$VDISK" create "$T/live.img" 64M >/dev/null && mkfs.ext4 -q "$T/live.img" || fail "mkfs"
dev=$("$VDISK" open --via loop "$T/live.img") && mount "$dev" "$MNT" || fail "mount live"
for i in 1 2 3; do head -c 300000 /dev/urandom >"$MNT/f$i"; done
sync
(cd "$MNT" && sha256sum f1 f2 f3) >"$T/files.sum"
cp --sparse=always "$T/live.img" "$T/base.img"
umount "$MNT" && "$VDISK" close "$T/live.img" || fail "close live"
dumpe2fs -h "$T/base.img" 2>/dev/null | grep -q needs_recovery &&
    pass "base: ext4 journal needs recovery" || fail "base is not dirty: $(dumpe2fs -h "$T/base.img" 2>&1 | grep -i features)"
base_sum=$(sha256sum <"$T/base.img")

# a read-only disk cannot replay the journal: the mount fails (why --snapshot exists)
dev=$("$VDISK" open -r "$T/base.img") || fail "open -r"
fails "mount of the read-only disk fails (replay needs writes)" mount -o ro "$dev" "$MNT"
"$VDISK" close "$T/base.img"

# snapshot_cycle NAME IMAGE [OPEN OPTIONS]: mount with replay, files there, write, fsck, close.
snapshot_cycle() {
    local name=$1 img=$2 sum
    shift 2
    sum=$(sha256sum <"$img")
    dev=$("$VDISK" open --snapshot --snapshot-dir "$snap" "$@" "$img") && pass "$name: open --snapshot ($dev)" ||
        { fail "$name: open --snapshot"; return; }
    eq "$name: nothing visible in the snapshot dir" "$(ls -A "$snap")" ""
    "$VDISK" info "$img" | grep -q "^snapshot: yes" && pass "$name: info says it is a snapshot" ||
        fail "$name: info: $("$VDISK" info "$img" | tail -5)"
    ok "$name: mount (journal replayed)" mount "$dev" "$MNT"
    ok "$name: files written before the crash are whole" sh -c "cd '$MNT' && sha256sum -c --quiet '$T/files.sum'"
    head -c 1000000 /dev/urandom >"$MNT/new" && sync && pass "$name: write a new file" || fail "$name: write"
    umount "$MNT"
    dumpe2fs -h "$dev" 2>/dev/null | grep -q needs_recovery && fail "$name: disk still needs recovery" ||
        pass "$name: the snapshot's ext4 is recovered"
    ok "$name: e2fsck -fn on the snapshot disk" e2fsck -fn "$dev"
    ok "$name: close" "$VDISK" close "$img"
    eq "$name: base sha256 unchanged" "$(sha256sum <"$img")" "$sum"
    eq "$name: nothing left in the snapshot dir" "$(ls -A "$snap")" ""
    nothing_left "$name" "$img"
}

snapshot_cycle "raw base" "$T/base.img"
eq "raw base: sha256 as before the test" "$(sha256sum <"$T/base.img")" "$base_sum"

# the writes are gone at close: a new snapshot shows the base again
dev=$("$VDISK" open --snapshot --snapshot-dir "$snap" "$T/base.img") && mount "$dev" "$MNT" &&
    { [ ! -e "$MNT/new" ] && pass "reopened snapshot: the last snapshot's file is gone" ||
        fail "reopened snapshot shows the old writes"; }
umount "$MNT" 2>/dev/null
# while a snapshot is open, the base is not writable by anyone (its lock is held)
fails_with "vdisk refuses the base while a snapshot of it is open" "already open" "$VDISK" open "$T/base.img"
fails "qemu-io cannot write the base" qemu-io -f raw -c "write 0 512" "$T/base.img"
# kill -9 of the server: the kernel drops the unlinked file, nothing is left
pid=$(rec_field "$T/base.img" pid)
ls -l "/proc/$pid/fd" 2>/dev/null | grep -q "$snap/.*(deleted)" && pass "server holds an unlinked file in the snapshot dir" ||
    fail "no unlinked overlay in /proc/$pid/fd: $(ls -l /proc/"$pid"/fd 2>&1 | tail -5)"
[ "${pid:-0}" -gt 0 ] && kill -9 "$pid" # never 0: that is our own process group
for _ in $(seq 100); do proc_gone "$pid" && break; sleep 0.05; done
eq "kill -9: nothing left in the snapshot dir" "$(ls -A "$snap")" ""
ok "kill -9: close cleans up" timeout 60 "$VDISK" close "$T/base.img"
eq "kill -9: base sha256 unchanged" "$(sha256sum <"$T/base.img")" "$base_sum"
nothing_left "kill -9" "$T/base.img"

# a qcow2 base (a user way serves it anyway)
qemu-img convert -f raw -O qcow2 "$T/base.img" "$T/base.qcow2" || fail "convert"
snapshot_cycle "qcow2 base" "$T/base.qcow2"
ok "qcow2 base: qemu-img check clean after the snapshot" qemu-img check -q "$T/base.qcow2"

# the default place is $TMPDIR
mkdir -p "$T/tmpdir"
dev=$(TMPDIR=$T/tmpdir "$VDISK" open --snapshot "$T/base.img") && pass "open --snapshot with TMPDIR" ||
    fail "open --snapshot with TMPDIR"
pid=$(rec_field "$T/base.img" pid)
ls -l "/proc/$pid/fd" 2>/dev/null | grep -q "$T/tmpdir/.*(deleted)" && pass "the overlay lives in \$TMPDIR" ||
    fail "overlay not in TMPDIR: $(ls -l /proc/"$pid"/fd 2>&1 | tail -3)"
"$VDISK" close "$T/base.img"

# a relative --snapshot-dir is the caller's, not the server's (which runs in /)
dev=$(cd "$T" && "$VDISK" open --snapshot --snapshot-dir snap base.img) && pass "open --snapshot-dir relative" ||
    fail "open --snapshot-dir relative"
pid=$(rec_field "$T/base.img" pid)
ls -l "/proc/$pid/fd" 2>/dev/null | grep -q "$snap/.*(deleted)" && pass "relative --snapshot-dir: the overlay is there" ||
    fail "relative dir: $(ls -l /proc/"$pid"/fd 2>&1 | tail -3)"
"$VDISK" close "$T/base.img"

# bad input: clear errors, nothing opened
fails_with "--snapshot-dir that does not exist" "--snapshot-dir $T/nodir: No such file" \
    "$VDISK" open --snapshot --snapshot-dir "$T/nodir" "$T/base.img"
fails_with "--snapshot-dir on a file system without O_TMPFILE" "cannot make the snapshot's temporary file" \
    "$VDISK" open --snapshot --snapshot-dir /proc "$T/base.img"
fails_with "--snapshot of a missing image" "missing.img: No such file" \
    "$VDISK" open --snapshot "$T/missing.img"
fails_with "--snapshot with -r" "an overlay takes the writes" "$VDISK" open -r --snapshot "$T/base.img"
fails_with "--snapshot-dir alone" "needs --snapshot" "$VDISK" open --snapshot-dir "$snap" "$T/base.img"
fails_with "--snapshot with --persist" "cannot be reopened at boot" \
    "$VDISK" open --snapshot --persist "$T/base.img"
fails_with "--snapshot --via loop (the overlay is no linear file)" "--via loop serves images" \
    "$VDISK" open --snapshot --via loop "$T/base.img"
nothing_left "refusals" "$T/base.img"
eq "base sha256 unchanged at the end" "$(sha256sum <"$T/base.img")" "$base_sum"
finish
