#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk serve --snapshot: clients (nbdcopy, qemu-img, qemu-io) write through the socket
# into a temporary overlay; they read their writes back over the base, the base's sha256
# never changes (raw and qcow2 bases), and the overlay (an unlinked file in a small tmpfs
# --snapshot-dir) takes space while served and none after SIGTERM or SIGKILL. About 5 s.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
snap=$T/snap
mkdir -p "$snap" && mount -t tmpfs -o size=64m tmpfs "$snap" || fail "tmpfs for --snapshot-dir"
at_exit "umount $snap"
used() { df --output=used -k "$snap" | tail -1 | tr -d ' '; }

# serve NAME IMAGE [ARGS...]: vdisk serve on $T/NAME.sock; sets URI, SPID.
serve() {
    local name=$1 img=$2
    shift 2
    "$VDISK" serve "$@" --socket "$T/$name.sock" "$img" >"$T/$name.uri" 2>"$T/$name.log" &
    SPID=$!
    at_exit "kill -9 $SPID 2>/dev/null"
    URI="nbd+unix:///?socket=$T/$name.sock"
    for _ in $(seq 100); do nbdinfo --size "$URI" >/dev/null 2>&1 && return 0; sleep 0.05; done
    fail "$name: server did not start: $(cat "$T/$name.log")"
}

truncate -s 32M "$T/src.raw"
dd if=/dev/urandom of="$T/src.raw" bs=1M seek=2 count=4 conv=notrunc status=none
head -c 8M /dev/urandom >"$T/new.bin"

for fmt in raw qcow2; do
    base=$T/base.$fmt
    qemu-img convert -f raw -O $fmt "$T/src.raw" "$base"
    sum=$(sha256sum <"$base")
    u0=$(used)
    serve $fmt "$base" --snapshot --snapshot-dir "$snap"
    eq "$fmt: nothing visible in the snapshot dir" "$(ls -A "$snap")" ""
    eq "$fmt: nbdinfo size" "$(nbdinfo --size "$URI")" 33554432
    # the expected disk: the base with 8 MiB written at 16 MiB
    cp "$T/src.raw" "$T/want.raw"
    dd if="$T/new.bin" of="$T/want.raw" bs=1M seek=16 conv=notrunc status=none
    ok "$fmt: qemu-io writes 8 MiB at 16 MiB" qemu-io -f raw \
        -c "write -s $T/new.bin 16M 8M" "$URI"
    ok "$fmt: qemu-img compare: the base plus the write" qemu-img compare -f raw -F raw "$T/want.raw" "$URI"
    nbdcopy "$URI" "$T/got.raw" && cmp -s "$T/got.raw" "$T/want.raw" &&
        pass "$fmt: nbdcopy reads the same" || fail "$fmt: nbdcopy reads other data"
    [ $(($(used) - u0)) -ge 8192 ] && pass "$fmt: the overlay holds the write ($(($(used) - u0)) KiB in $snap)" ||
        fail "$fmt: the overlay takes $(($(used) - u0)) KiB, not the 8 MiB written"
    eq "$fmt: the base is unchanged while served" "$(sha256sum <"$base")" "$sum"
    fails "$fmt: the base is locked against writers" qemu-img resize -f $fmt "$base" +1M
    if [ $fmt = raw ]; then
        kill -TERM "$SPID" && wait "$SPID" && pass "$fmt: SIGTERM: clean exit" || fail "$fmt: exit after SIGTERM"
    else
        kill -KILL "$SPID"
        wait "$SPID" 2>/dev/null
        pass "$fmt: SIGKILL"
    fi
    eq "$fmt: the base is unchanged after" "$(sha256sum <"$base")" "$sum"
    eq "$fmt: the overlay's space is free again" "$(used)" "$u0"
    eq "$fmt: nothing left in the snapshot dir" "$(ls -A "$snap")" ""
    [ $fmt = raw ] || ok "$fmt: qemu-img check of the base" qemu-img check -q -f $fmt "$base"
done

# refusals
fails_with "--snapshot-dir without --snapshot" "needs --snapshot" \
    "$VDISK" serve --snapshot-dir "$snap" --socket "$T/x.sock" "$T/base.raw"
fails_with "--snapshot with --read-only" "choose one" \
    "$VDISK" serve --snapshot -r --socket "$T/x.sock" "$T/base.raw"
fails_with "--snapshot-dir that does not exist" "$T/nowhere" \
    "$VDISK" serve --snapshot --snapshot-dir "$T/nowhere" --socket "$T/x.sock" "$T/base.raw"
finish
