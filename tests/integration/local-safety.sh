#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Local safety of `vdisk open` on the host: the run directory is 0700 and
# ours (a symlink or another user's directory in its place is refused), its
# records and lock are 0600 and never opened through a planted symlink; the
# device nodes of loop and FUSE disks are root:disk 0660, the FUSE file 0600
# behind default_permissions; another uid gets at none of it. A disk is used
# as a user would: mkfs, mount, write, umount, close, e2fsck. About 10 s.
. "$(dirname "$0")/../lib.sh"
RUN=$T/run
export VDISK_RUN_DIR=$RUN
NOBODY=(setpriv --reuid nobody --regid nogroup --clear-groups)
DISK_GID=$(getent group disk | cut -d: -f3)
chmod 711 "$T" # others may pass through $T: only the modes under test stand in their way

[ -w /dev/loop-control ] || skip_all kmod-load "no loop devices here"
truncate -s 64M "$T/a.raw"
dev=$("$VDISK" open --via loop "$T/a.raw" 2>"$T/err") || fail "open --via loop: $(cat "$T/err")"
at_exit "'$VDISK' close '$T/a.raw'"
eq "run dir: 0700 root" "$(stat -c '%a %U' "$RUN")" "700 root"
rec=$(ls "$RUN"/*.rec)
eq "record: 0600 root, a regular file" "$(stat -c '%a %U %F' "$rec")" "600 root regular file"
eq "lock: 0600 root" "$(stat -c '%a %U' "$RUN/.lock")" "600 root"
eq "loop: $dev is root:disk 0660" "$(stat -c '%U %g %a %F' "$dev")" "root $DISK_GID 660 block special file"
fails "loop: nobody cannot read $dev" "${NOBODY[@]}" dd if="$dev" of=/dev/null bs=4k count=1 status=none
fails "run dir: nobody cannot list it" "${NOBODY[@]}" ls "$RUN"
# the disk, used: mkfs, mount, write, umount, close, fsck
ok "loop: mkfs.ext4" mkfs.ext4 -q -F "$dev"
mkdir "$T/mnt"
if mount "$dev" "$T/mnt" 2>"$T/err"; then
    dd if=/dev/urandom of="$T/mnt/f" bs=1M count=4 status=none
    sum=$(md5sum <"$T/mnt/f")
    umount "$T/mnt"
    pass "loop: mount, write, umount"
else
    sum=
    fail "loop: mount: $(cat "$T/err")"
fi
ok "loop: close" "$VDISK" close "$T/a.raw"
ok "loop: e2fsck agrees" e2fsck -fn "$T/a.raw"
if [ -n "$sum" ] && command -v debugfs >/dev/null; then
    eq "loop: the file is in the image" "$(debugfs -R 'cat /f' "$T/a.raw" 2>/dev/null | md5sum)" "$sum"
fi
eq "record gone after close" "$(ls "$RUN"/*.rec 2>/dev/null)" ""

# a planted symlink where the next record's temporary file goes: not written through
echo victim >"$T/victim"
id=$(basename "$rec" .rec)
ln -s "$T/victim" "$RUN/$id.rec.tmp"
dev=$("$VDISK" open --via loop "$T/a.raw" 2>"$T/err") || fail "open over a planted .tmp: $(cat "$T/err")"
eq "planted .rec.tmp symlink: the victim is untouched" "$(cat "$T/victim")" victim
eq "planted .rec.tmp symlink: the record is a file of its own" "$(stat -c '%a %F' "$rec")" "600 regular file"
ok "close" "$VDISK" close "$T/a.raw"
# a planted record symlink: refused, not followed
printf 'id=%s\nimage=/etc/shadow\nvia=loop\ndevice=/dev/sda\npid=1\n' "$id" >"$T/fake.rec"
ln -s "$T/fake.rec" "$rec"
"$VDISK" list >"$T/list" 2>"$T/list.err"
ok "planted record symlink: refused, said" grep -q "$rec: a symlink, not a record: refused" "$T/list.err"
fails "planted record symlink: its disk is not listed" grep -q shadow "$T/list"
fails_with "planted record symlink: close refuses it too" "symlink" "$VDISK" close "$id"
rm -f "$rec"
# a lock symlink
rm -f "$RUN/.lock" && ln -s "$T/victim" "$RUN/.lock"
fails_with "planted lock symlink: refused" "\.lock: a symlink: refused" "$VDISK" open --via loop "$T/a.raw"
eq "planted lock symlink: the victim is untouched" "$(cat "$T/victim")" victim
rm -f "$RUN/.lock"
# the run directory itself: a symlink, another user's, too open
mv "$RUN" "$T/run.real" && ln -s "$T/run.real" "$RUN"
fails_with "run dir a symlink: refused" "not a directory \(a symlink\?\): refused" "$VDISK" open --via loop "$T/a.raw"
rm "$RUN" && mv "$T/run.real" "$RUN"
chown nobody "$RUN"
fails_with "run dir of another uid: refused" "owned by uid [0-9]+, not by us: refused" "$VDISK" open --via loop "$T/a.raw"
chown root "$RUN" && chmod 755 "$RUN"
dev=$("$VDISK" open --via loop "$T/a.raw" 2>"$T/err") && pass "run dir 0755: open works" || fail "open: $(cat "$T/err")"
eq "run dir 0755: made 0700 again" "$(stat -c %a "$RUN")" 700
ok "close" "$VDISK" close "$T/a.raw"

# FUSE: the file the loop device reads, and the device
qemu-img create -q -f qcow2 "$T/b.qcow2" 64M
dev=$("$VDISK" open --via fuse "$T/b.qcow2" 2>"$T/err") || fail "open --via fuse: $(cat "$T/err")"
at_exit "'$VDISK' close '$T/b.qcow2'"
mp=$(ls "$RUN"/*.fuse 2>/dev/null | head -1)
eq "fuse: $dev is root:disk 0660" "$(stat -c '%U %g %a' "$dev")" "root $DISK_GID 660"
eq "fuse: the FUSE file is 0600 root" "$(stat -c '%a %U' "$mp")" "600 root"
ok "fuse: mounted with default_permissions" grep -q "$mp fuse.vdisk .*default_permissions" /proc/mounts
fails "fuse: nobody cannot read the FUSE file" "${NOBODY[@]}" dd if="$mp" of=/dev/null bs=4k count=1 status=none
fails "fuse: nobody cannot read $dev" "${NOBODY[@]}" dd if="$dev" of=/dev/null bs=4k count=1 status=none
ok "fuse: mkfs.ext4" mkfs.ext4 -q -F "$dev"
ok "fuse: close" "$VDISK" close "$T/b.qcow2"
ok "fuse: qemu-img check agrees" qemu-img check -q "$T/b.qcow2"
finish
