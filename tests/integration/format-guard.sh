#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# QEMU's CVE-2008-2004, tried as an attacker would: whoever can write a raw disk
# writes the first clusters of a qcow2 whose backing file is a secret file of the
# host, hoping that a later open probes the image as qcow2 and serves the secret.
# Through each way (the kernel's loop; FUSE and NBD, served by vdisk), for an
# image vdisk created and for one it first saw at open: a user-space way refuses
# the write; after a kernel way, every later probe refuses the image (vdisk
# remembered it as raw). Where nothing can be remembered (ramfs: no user xattrs),
# the kernel way is refused unless -f raw is given. The secret never shows.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
nbdsh() { /usr/bin/python3 -m nbd "$@"; }

echo "secret-$RANDOM$RANDOM-do-not-show" >"$T/secret"
chmod 600 "$T/secret"
qemu-img create -q -f qcow2 -b "$T/secret" -F raw "$T/evil.qcow2" 16M
head -c 65536 "$T/evil.qcow2" >"$T/payload" # the header cluster names the secret

# The secret must not come out of IMAGE whatever is asked of vdisk afterwards.
no_secret() { # no_secret DESC IMAGE
    rm -f "$T/conv.raw"
    { "$VDISK" info "$2"; "$VDISK" convert -O raw "$2" "$T/conv.raw" && cat "$T/conv.raw"; } \
        >"$T/out" 2>&1
    rm -f "$T/conv.raw"
    if grep -aq 'do-not-show' "$T/out"; then fail "$1: the secret came out"; else
        pass "$1: the secret never comes out"; fi
}

# attack_kernel NAME IMAGE: loop takes the write; every later probe must refuse.
attack_kernel() {
    local name=$1 img=$2 dev
    dev=$("$VDISK" open --via loop "$img") || { fail "$name: open --via loop"; return; }
    ok "$name: loop takes the guest's write (the kernel cannot be asked)" \
        dd if="$T/payload" of="$dev" bs=64k oflag=direct conv=notrunc,fsync status=none
    ok "$name: close" "$VDISK" close "$img"
    fails_with "$name: info refuses the changed image" "served this file as raw.*qcow2" \
        "$VDISK" info "$img"
    fails_with "$name: open refuses it" "served this file as raw" "$VDISK" open -r "$img"
    fails_with "$name: convert refuses it" "served this file as raw" \
        "$VDISK" convert -O raw "$img" "$T/conv.raw"
    no_secret "$name" "$img"
    ok "$name: -f raw still opens it, as raw" "$VDISK" open -f raw --via loop "$img"
    eq "$name: ... showing the guest's bytes, nothing else" \
        "$(head -c 65536 "$(rec_field "$img" device)" | md5sum)" "$(md5sum <"$T/payload")"
    ok "$name: close" "$VDISK" close "$img"
}

# attack_fuse NAME IMAGE [OPEN-ARGS]: the write that would change what it probes as is refused.
attack_fuse() {
    local name=$1 img=$2 dev before
    shift 2
    before=$(head -c 65536 "$img" | md5sum)
    dev=$("$VDISK" open --via fuse "$@" "$img") || { fail "$name: open --via fuse"; return; }
    fails "$name: FUSE refuses the guest's write" \
        dd if="$T/payload" of="$dev" bs=64k oflag=direct conv=notrunc,fsync status=none
    ok "$name: an ordinary write at the start is fine" \
        dd if=/dev/urandom of="$dev" bs=4k count=4 oflag=direct conv=notrunc status=none
    ok "$name: close" "$VDISK" close "$img"
    [ "$(head -c 65536 "$img" | md5sum)" != "$before" ] && pass "$name: the ordinary write landed" ||
        fail "$name: the ordinary write is missing"
    eq "$name: still raw" "$("$VDISK" info "$img" | sed -n 's/^format: //p')" raw
    no_secret "$name" "$img"
}

# attack_nbd NAME IMAGE: vdisk serve refuses it the same way.
attack_nbd() {
    local name=$1 img=$2 pid uri
    "$VDISK" serve --socket "$T/s.sock" "$img" >/dev/null 2>"$T/serve.log" &
    pid=$!
    uri="nbd+unix:///?socket=$T/s.sock"
    for _ in $(seq 100); do nbdinfo --size "$uri" >/dev/null 2>&1 && break; sleep 0.05; done
    fails "$name: the NBD server refuses the guest's write" nbdsh -u "$uri" -c \
        "h.pwrite(open('$T/payload','rb').read(), 0); h.flush()"
    ok "$name: an ordinary write at the start is fine" nbdsh -u "$uri" -c \
        "h.pwrite(b'\\x55' * 4096, 0); h.flush()"
    kill -TERM "$pid"
    wait "$pid"
    eq "$name: still raw" "$("$VDISK" info "$img" | sed -n 's/^format: //p')" raw
    no_secret "$name" "$img"
}

# an image vdisk created (remembered at create), and one it first sees at open
for how in created plain; do
    for way in kernel fuse nbd; do
        img=$T/$how-$way.img
        if [ $how = created ]; then "$VDISK" create "$img" 16M; else truncate -s 16M "$img"; fi
        "attack_$way" "$how/$way" "$img"
    done
done

# where the format cannot be remembered (ramfs keeps no user xattrs)
mkdir -p "$T/ram"
mount -t ramfs ramfs "$T/ram" && at_exit "umount -l $T/ram"
truncate -s 16M "$T/ram/disk.img"
fails_with "no xattrs: a kernel way is refused for a probed image" "cannot be remembered" \
    "$VDISK" open --via loop --no-direct "$T/ram/disk.img"
ok "no xattrs: -f raw states it" "$VDISK" open -f raw --via loop --no-direct "$T/ram/disk.img"
ok "no xattrs: close" "$VDISK" close "$T/ram/disk.img"
attack_fuse "no xattrs/fuse" "$T/ram/disk.img" --no-direct
umount "$T/ram"
nothing_left "format guard" "$T/ram/disk.img"
finish
