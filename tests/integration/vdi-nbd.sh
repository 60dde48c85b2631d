#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A VDI image through vdisk's NBD server (`vdisk serve`), checked by clients
# nobody here wrote: nbdcopy reads it as qemu-img reads the file; qemu-io writes
# patterns, zeroes and discards over NBD; afterwards qemu-img check is clean and
# qemu-img compare equals a raw image that got the same writes. A differencing
# image served read-only shows its chain.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
command -v nbdcopy >/dev/null || { fail "nbdcopy missing: install libnbd-bin"; finish; }
cd "$T" || exit 1
MB=1048576

serve() { # serve NAME IMAGE [ARGS...]: vdisk serve on $T/NAME.sock; sets URI, SPID
    local name=$1 img=$2
    shift 2
    "$VDISK" serve "$@" --socket "$T/$name.sock" "$img" >"$T/$name.uri" 2>"$T/$name.log" &
    SPID=$!
    at_exit "kill $SPID 2>/dev/null"
    URI="nbd+unix:///?socket=$T/$name.sock"
    for _ in $(seq 100); do nbdinfo --size "$URI" >/dev/null 2>&1 && return 0; sleep 0.05; done
    fail "$name: server did not start: $(cat "$T/$name.log")"
}
stop_server() { kill -TERM "$SPID" && wait "$SPID"; }

ops=(-c "write -P 0x11 $((MB - 4096)) 8192" -c "write -P 0x22 $((5 * MB)) $((3 * MB))"
     -c "write -z $((6 * MB)) $MB" -c "discard $((7 * MB)) $MB" -c "write -P 0x33 12345 1000"
     -c "write -z -u $((20 * MB)) $((2 * MB))" -c "flush")
for kind in dynamic static; do
    opt=; [ $kind = static ] && opt="-o static=on"
    qemu-img create -q -f vdi $opt $kind.vdi 32M
    qemu-io -f vdi -c "write -P 0x5a 0 $((3 * MB))" -c "write -P 0x6b $((20 * MB)) $MB" $kind.vdi >/dev/null
    qemu-img convert -f vdi -O raw $kind.vdi $kind.raw
    serve $kind $kind.vdi
    rm -f got.raw
    ok "$kind: nbdcopy reads the export" nbdcopy "$URI" got.raw
    cmp -s got.raw $kind.raw && pass "$kind: as qemu-img reads the file" || fail "$kind: nbdcopy differs"
    ok "$kind: qemu-io writes, zeroes, discards over NBD" qemu-io -f raw "${ops[@]}" "$URI"
    qemu-io -f raw "${ops[@]}" $kind.raw >/dev/null
    ok "$kind: the server exits cleanly" stop_server
    ok "$kind: qemu-img check clean" qemu-img check -q $kind.vdi
    # the discard covers a whole block: the VDI reads zeroes there, as the raw file does
    ok "$kind: qemu-img compare with the raw image" qemu-img compare -q -f vdi -F raw $kind.vdi $kind.raw
done

# A differencing image, served read-only: the chain's bytes.
"$VDISK" create -f vdi -o backing_file=dynamic.vdi child.vdi
printf 'w %d 4096 99\nf\n' $((2 * MB)) | "$BUILD/tests/tools/vdisk-test-io" script child.vdi
printf 'w %d 4096 99\n' $((2 * MB)) | "$BUILD/tests/tools/vdisk-test-io" -f raw script dynamic.raw
serve child child.vdi -r
rm -f got.raw
ok "differencing: nbdcopy reads the export" nbdcopy "$URI" got.raw
cmp -s got.raw dynamic.raw && pass "differencing: the chain's bytes" || fail "differencing: differs"
ok "differencing: the server exits cleanly" stop_server
finish
