#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# RAM disks (a memfd) through loop, and through fuse: the user's cycle (open --ram, mkfs, mount, write,
# umount, save to qcow2 and raw, compare with qemu-img, check), list/info show a RAM
# disk, memory is taken on write, given back by discard (fstrim) and by close
# (/proc/meminfo Shmem, with margins for other users of the machine), and bad input
# is refused clearly. ~10 s.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"

shmem() { echo $(($(awk '$1 == "Shmem:" {print $2}' /proc/meminfo) * 1024)); }
MB=$((1 << 20))

base=$(shmem)
dev=$("$VDISK" open --ram 256M) && pass "open --ram 256M: $dev" || fail "open --ram"
[ -b "$dev" ] && pass "$dev is a block device" || fail "no block device ($dev)"
eq "device is 256 MiB" "$(blockdev --getsize64 "$dev")" $((256 * MB))
"$VDISK" list | grep -q "$dev .*loop .*ram .*rw .*open .*ram:" && pass "list shows a RAM disk" ||
    fail "list: $("$VDISK" list)"
"$VDISK" info "$dev" | grep -q '^format: ram (a RAM disk' && pass "info says it is a RAM disk" ||
    fail "info: $("$VDISK" info "$dev" 2>&1)"
"$VDISK" info --json "$dev" | grep -q '"ram": true' && pass "info --json says ram" ||
    fail "info --json: $("$VDISK" info --json "$dev" 2>&1)"
now=$(shmem)
[ $((now - base)) -lt $((32 * MB)) ] && pass "an empty RAM disk takes no memory ($(((now - base) / MB)) MiB)" ||
    fail "empty RAM disk took $(((now - base) / MB)) MiB"

ok "mkfs.ext4" mkfs.ext4 -q -E nodiscard "$dev"
ok "mount" mount "$dev" "$MNT"
head -c 150000000 /dev/urandom >"$MNT/big" && echo "hello ram" >"$MNT/small" && pass "write 150 MB" ||
    fail "write files"
sync
before=$(sums "$MNT")
full=$(shmem)
[ $((full - base)) -gt $((120 * MB)) ] && pass "writing takes memory (+$(((full - base) / MB)) MiB)" ||
    fail "writing 150 MB took only $(((full - base) / MB)) MiB"
rm "$MNT/big" && sync && ok "fstrim the RAM disk" fstrim "$MNT"
trimmed=$(shmem)
[ $((full - trimmed)) -gt $((120 * MB)) ] && pass "discard gives memory back (-$(((full - trimmed) / MB)) MiB)" ||
    fail "discard gave back only $(((full - trimmed) / MB)) MiB"
head -c 20000000 /dev/urandom >"$MNT/big" && pass "write 20 MB again" || fail "write again"
before=$(sums "$MNT")
ok "umount" umount "$MNT"

# save: a sparse image of any format, equal to the device
ok "save to qcow2" "$VDISK" save "$dev" "$T/saved.qcow2" -O qcow2
ok "qemu-img check of the saved qcow2" qemu-img check -q "$T/saved.qcow2"
ok "qemu-img compare: saved qcow2 equals the RAM disk" qemu-img compare -f raw -F qcow2 "$dev" "$T/saved.qcow2"
alloc=$(stat -c %b "$T/saved.qcow2")
[ $((alloc * 512)) -lt $((64 * MB)) ] && pass "saved qcow2 is sparse ($((alloc / 2)) KiB on disk)" ||
    fail "saved qcow2 takes $((alloc / 2)) KiB"
id=$("$VDISK" list --json | sed -n 's/.*"id": "\([0-9a-f]*\)".*/\1/p' | head -1)
ok "save to raw with -o, by id" "$VDISK" save -O raw -o preallocation=off "$id" "$T/saved.raw"
ok "qemu-img compare: saved raw equals the RAM disk" qemu-img compare -f raw -F raw "$dev" "$T/saved.raw"
fails_with "save refuses an existing file" 'saved.qcow2' "$VDISK" save "$dev" "$T/saved.qcow2" -O qcow2
fails_with "save without -O is a usage error" 'usage: vdisk save' "$VDISK" save "$dev" "$T/x.qcow2"
fails_with "save of something that is no RAM disk" 'nothere: not an open RAM disk' "$VDISK" save nothere "$T/y.qcow2" -O qcow2

# close gives all memory back; the saved image holds the files
used=$(shmem)
ok "close the RAM disk" "$VDISK" close "$dev"
freed=$(shmem)
[ $((used - freed)) -gt $((16 * MB)) ] && pass "close gives the memory back (-$(((used - freed) / MB)) MiB)" ||
    fail "close gave back only $(((used - freed) / MB)) MiB"
loop_free "$dev" && pass "loop device unbound after close" || fail "$dev still bound"
eq "no record left" "$(run_files)" 0
dev=$("$VDISK" open "$T/saved.qcow2") && pass "open the saved qcow2" || fail "open saved"
ok "mount the saved image" mount "$dev" "$MNT"
eq "files of the RAM disk intact in the saved image" "$(sums "$MNT")" "$before"
ok "umount saved" umount "$MNT"
ok "e2fsck -fn of the saved image" e2fsck -fn "$dev"
ok "close saved" "$VDISK" close "$T/saved.qcow2"

# bad input
fails_with "--ram 0 refused" 'size must be greater than zero' "$VDISK" open --ram 0
fails_with "--ram of an odd size refused" 'not a whole number of 512-byte sectors' "$VDISK" open --ram 1000B
fails_with "--ram bad size" "invalid size 'lots'" "$VDISK" open --ram lots
fails_with "--ram read-only refused" 'read-only RAM disk' "$VDISK" open -r --ram 1M
fails_with "--ram through an unknown way refused" "--via bogus: unknown way" "$VDISK" open --ram 1M --via bogus

# through fuse (a server holding the memfd): memory on write, back on discard and close
base=$(shmem)
dev=$("$VDISK" open --ram 64M --via fuse) && pass "fuse: open --ram 64M: $dev" || fail "fuse: open --ram"
"$VDISK" list | grep -q "$dev .*fuse .*ram " && pass "fuse: list shows a RAM disk" || fail "fuse: list: $("$VDISK" list)"
dd if=/dev/urandom of="$dev" bs=1M count=48 oflag=direct status=none
full=$(shmem)
[ $((full - base)) -gt $((40 * MB)) ] && pass "fuse: writing takes memory (+$(((full - base) / MB)) MiB)" ||
    fail "fuse: writing 48 MiB took $(((full - base) / MB)) MiB"
ok "fuse: save to qcow2" "$VDISK" save "$dev" "$T/fuse.qcow2" -O qcow2
ok "fuse: qemu-img compare: saved qcow2 equals the RAM disk" qemu-img compare -f raw -F qcow2 "$dev" "$T/fuse.qcow2"
ok "fuse: blkdiscard 32 MiB" blkdiscard -l $((32 * MB)) "$dev"
trimmed=$(shmem)
[ $((full - trimmed)) -gt $((24 * MB)) ] && pass "fuse: discard gives memory back (-$(((full - trimmed) / MB)) MiB)" ||
    fail "fuse: discard gave back $(((full - trimmed) / MB)) MiB"
ok "fuse: close" "$VDISK" close "$dev"
freed=$(shmem)
[ $((trimmed - freed)) -gt $((12 * MB)) ] && pass "fuse: close gives the rest back (-$(((trimmed - freed) / MB)) MiB)" ||
    fail "fuse: close gave back $(((trimmed - freed) / MB)) MiB"
fails_with "--ram with an image is a usage error" 'usage: vdisk open' "$VDISK" open --ram 1M "$T/img"
fails_with "resize of a RAM disk refused clearly" 'cannot be resized' \
    sh -c "d=\$('$VDISK' open --ram 1M) && '$VDISK' resize \$d +1M; r=\$?; '$VDISK' close \$d; exit \$r"
eq "nothing left" "$(run_files) $(loops_of_test)" "0 0"
finish
