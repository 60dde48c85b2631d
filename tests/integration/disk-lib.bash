# SPDX-License-Identifier: MIT
# Helpers for the disk-*.sh tests (sourced after tests/lib.sh; not a test itself):
# what a via leaves behind, checked from the outside.
export VDISK_RUN_DIR=$T/run
MNT=$T/mnt
mkdir -p "$MNT"

# Unmount whatever the test left mounted under $T, then close every disk of this test.
disk_cleanup() {
    grep -o " $T/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    "$VDISK" close --all
}
at_exit disk_cleanup

# The record field KEY of the disk open on IMAGE ("" if none).
rec_field() {
    local id
    id=$("$VDISK" info --json "$1" 2>/dev/null | sed -n 's/.*"id": "\([0-9a-f]*\)".*/\1/p')
    [ -n "$id" ] && [ -f "$VDISK_RUN_DIR/$id.rec" ] && sed -n "s/^$2=//p" "$VDISK_RUN_DIR/$id.rec"
}

# Loop devices bound to anything under $T (images, FUSE files).
loops_of_test() { losetup -a 2>/dev/null | grep -c -- "$T/" || true; }
# Mounts under $T.
mounts_of_test() { grep -c -- " $T/" /proc/mounts || true; }
# Processes holding IMAGE open.
holders() { ls -l /proc/[0-9]*/fd/ 2>/dev/null | grep -c -- "-> $1\$" || true; }
# Files in the run dir besides the lock.
run_files() { ls -A "$VDISK_RUN_DIR" 2>/dev/null | grep -vc '^\.lock$' || true; }

# nothing_left DESC IMAGE: no loop device, mount, record, run file or holder remains.
nothing_left() {
    local what="loops=$(loops_of_test) mounts=$(mounts_of_test) run=$(run_files) holders=$(holders "$2")"
    eq "$1: nothing left behind" "$what" "loops=0 mounts=0 run=0 holders=0"
}

# sums DIR: checksums of every file under DIR, sorted by name.
sums() { (cd "$1" && find . -type f -exec sha256sum {} + | sort -k2); }

# Is DEVICE a loop device bound to nothing?
loop_free() { [ ! -e "/sys/block/${1#/dev/}/loop/backing_file" ]; }
# Has PID exited (gone, or a zombie nobody reaped yet)?
proc_gone() { [ ! -d "/proc/$1" ] || [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" = Z ]; }
