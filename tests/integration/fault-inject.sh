#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fault injection (lib/io/record.h: VDISK_IO_FAULT, VDISK_IO_FAULT_ARM) and a
# real full file system. In process (tests/crash/fault-check), for every format:
# EIO on write and read, ENOSPC on write and when the file grows, short writes,
# EIO in the middle of an allocation, a failed flush that stays failed; the
# library returns the errno, keeps every completed write, and the image passes
# vdisk check and qemu-img check. Through the frontends: vdisk serve (libnbd
# sees the NBD error as EIO / ENOSPC, the server keeps serving, a retry after
# the fault succeeds, a failed flush stays failed) and the FUSE file of
# --via fuse (the errno of pwrite/fsync). Then an image on a 64 MiB ext4 filled
# up through NBD and through FUSE: ENOSPC reaches the client, the image stays
# clean, and after space is freed the write succeeds and reads back.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
PY=/usr/bin/python3 # Debian's python3-libnbd lives there, whatever python3 PATH finds
$PY -c 'import nbd' 2>/dev/null || { fail "python3-libnbd missing: install python3-libnbd"; finish; }
FC=$BUILD/tests/crash/fault-check

for fmt in raw qcow2 vpc vhdx vmdk vmdk-split vdi luks; do
    "$FC" "$fmt" "$T/fault-$fmt" 2>"$T/fault-$fmt.err" | grep -E '^(PASS|FAIL): '
    rm -rf "${T:?}/fault-$fmt"
done

# client.py URI ACTION...: runs libnbd actions; prints "ok" or the errno name per action.
cat >"$T/client.py" <<'EOF'
import errno, sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
out = []
for a in sys.argv[2:]:
    op, _, arg = a.partition(':')
    try:
        if op == 'write':  # write:OFF:LEN:BYTE
            off, n, b = (int(x, 0) for x in arg.split(':'))
            h.pwrite(bytes([b]) * n, off)
        elif op == 'read':  # read:OFF:LEN:BYTE (BYTE -1: any)
            off, n, b = (int(x, 0) for x in arg.split(':'))
            d = h.pread(n, off)
            if b >= 0 and d != bytes([b]) * n:
                out.append('mismatch'); continue
        elif op == 'flush':
            h.flush()
        elif op == 'fill':  # fill:OFF: 1 MiB writes until one fails
            off = int(arg, 0)
            try:
                while off < h.get_size():
                    h.pwrite(b'\x77' * (1 << 20), off); off += 1 << 20
                out.append('full-not-reached'); continue
            except nbd.Error as e:
                print('filled to', off, file=sys.stderr); raise
        out.append('ok')
    except nbd.Error as e:
        out.append(errno.errorcode.get(e.errno, str(e.errno)) if e.errno else 'error:' + e.string)
print(' '.join(out))
EOF

# serve IMAGE FMT RULES: vdisk serve with fault RULES armed by $T/arm; sets URI, SPID.
serve() {
    rm -f "$T/arm" "$T/s.sock"
    VDISK_IO_FAULT=$3 VDISK_IO_FAULT_ARM=$T/arm "$VDISK" serve -f "$2" --socket "$T/s.sock" "$1" \
        >/dev/null 2>"$T/serve.log" &
    SPID=$!
    at_exit "kill $SPID"
    URI="nbd+unix:///?socket=$T/s.sock"
    for _ in $(seq 100); do nbdinfo --size "$URI" >/dev/null 2>&1 && return 0; sleep 0.05; done
    fail "server did not start: $(cat "$T/serve.log")"
}
client() { $PY "$T/client.py" "$URI" "$@" 2>>"$T/client.err"; }
stop() { kill -TERM "$SPID"; wait "$SPID" 2>/dev/null; }
clean() { # clean DESC IMAGE FMT: vdisk check and qemu-img check find no corruption (leaks: 3)
    "$VDISK" check -f "$3" "$2" >"$T/check.out" 2>&1; local rc=$?
    [ $rc = 0 ] || [ $rc = 3 ] && pass "$1: vdisk check clean (exit $rc$(grep -m1 -o 'Leaked: [0-9]* bytes' "$T/check.out" | sed 's/^/, /'))" ||
        fail "$1: vdisk check exit $rc: $(head -c 300 "$T/check.out")"
    qemu-img check -q -f "$3" "$2" >/dev/null 2>&1; rc=$?
    [ $rc = 0 ] || [ $rc = 3 ] && pass "$1: qemu-img check clean (exit $rc)" ||
        fail "$1: qemu-img check exit $rc"
}

for fmt in qcow2 vhdx vdi; do
    img=$T/n.$fmt
    rm -f "$img"
    "$VDISK" create -f "$fmt" "$img" 64M
    serve "$img" "$fmt" "write:EIO:1:1"
    eq "nbd $fmt: a write before the fault" "$(client write:0:65536:0x11)" ok
    touch "$T/arm"
    eq "nbd $fmt: write EIO reaches the client, the next write and reads are served" \
        "$(client write:1048576:65536:0x22 write:1048576:65536:0x22 read:0:65536:0x11 read:1048576:65536:0x22 flush)" \
        "EIO ok ok ok ok"
    stop
    clean "nbd $fmt write EIO" "$img" "$fmt"

    serve "$img" "$fmt" "grow:ENOSPC:1:0"
    touch "$T/arm"
    eq "nbd $fmt: ENOSPC when the file must grow; in-place writes and reads go on" \
        "$(client write:8388608:65536:0x33 write:0:4096:0x44 read:0:4096:0x44)" "ENOSPC ok ok"
    rm -f "$T/arm" # space freed
    eq "nbd $fmt: the retry after space is freed succeeds" \
        "$(client write:8388608:65536:0x33 flush read:8388608:65536:0x33)" "ok ok ok"
    stop
    clean "nbd $fmt grow ENOSPC" "$img" "$fmt"

    serve "$img" "$fmt" "flush:EIO:1:1,read:EIO:1:1"
    touch "$T/arm"
    eq "nbd $fmt: read EIO reaches the client, the next read works" \
        "$(client read:0:4096:-1 read:0:4096:0x44)" "EIO ok"
    res=$(client write:16777216:65536:0x55 flush flush) # VHDX flushes when it allocates
    [ "$res" = "ok EIO EIO" ] || [ "$res" = "EIO EIO EIO" ] &&
        pass "nbd $fmt: a failed flush stays failed, the data may be lost ($res)" ||
        fail "nbd $fmt: a failed flush stays failed (got '$res', want 'ok EIO EIO')"
    stop
    clean "nbd $fmt flush EIO" "$img" "$fmt"
done

# The FUSE file of --via fuse: the errno of the system calls.
img=$T/f.qcow2
"$VDISK" create -f qcow2 "$img" 64M
rm -f "$T/arm"
dev=$(VDISK_IO_FAULT="write:EIO:1:1,grow:ENOSPC:1:0" VDISK_IO_FAULT_ARM=$T/arm "$VDISK" open --via fuse "$img") ||
    fail "fuse: open: $dev"
mp=$(rec_field "$img" mountpoint)
cat >"$T/fuse.py" <<'EOF'
import errno, os, sys
f = os.open(sys.argv[1], os.O_RDWR)
out = []
def do(fn):
    try:
        fn(); out.append('ok')
    except OSError as e:
        out.append(errno.errorcode[e.errno])
do(lambda: os.pwrite(f, b'a' * 65536, 0))
do(lambda: os.fsync(f))
open(sys.argv[2], 'w').close()  # arm
do(lambda: os.pwrite(f, b'b' * 65536, 0))          # EIO, once
do(lambda: os.pwrite(f, b'c' * 65536, 32 << 20))    # ENOSPC: the file must grow
do(lambda: os.pwrite(f, b'd' * 4096, 4096))         # in place: served
os.unlink(sys.argv[2])                               # space freed
do(lambda: os.pwrite(f, b'c' * 65536, 32 << 20))
do(lambda: os.fsync(f))
print(' '.join(out), os.pread(f, 1, 32 << 20) == b'c' and os.pread(f, 1, 4096) == b'd')
EOF
eq "fuse: EIO and ENOSPC reach pwrite, other writes and the retry succeed" \
    "$($PY "$T/fuse.py" "$mp" "$T/arm" 2>&1)" "ok ok EIO ENOSPC ok ok ok True"
ok "fuse: close" "$VDISK" close "$img"
clean "fuse faults" "$img" qcow2

# A real full file system: the image on a 64 MiB ext4 with a 16 MiB filler file.
small=$T/small.ext4
truncate -s 64M "$small" && mkfs.ext4 -q -m 0 "$small" && mkdir -p "$T/small" &&
    mount -o loop "$small" "$T/small" && at_exit "umount -l '$T/small'" && pass "full: a 64 MiB ext4" ||
    { fail "full: cannot make the small file system"; finish; }
full() { # full WAY FMT
    local way=$1 fmt=$2 img=$T/small/img.$2 res dev mp
    rm -f "$img" "$T/small/filler"
    head -c 16M /dev/zero >"$T/small/filler" && sync
    "$VDISK" create -f "$fmt" "$img" 256M
    if [ "$way" = nbd ]; then
        serve "$img" "$fmt" ""
        res=$(client fill:0)
        eq "full $way $fmt: filling the disk ends in ENOSPC at the client" "$res" ENOSPC
        eq "full $way $fmt: the server still serves reads and in-place writes" \
            "$(client read:0:65536:0x77 write:0:4096:0x78 read:0:4096:0x78)" "ok ok ok"
        stop
    else
        dev=$("$VDISK" open --via fuse "$img") || { fail "full fuse: open: $dev"; return; }
        mp=$(rec_field "$img" mountpoint)
        res=$($PY - "$mp" <<'EOF'
import errno, os, sys
f = os.open(sys.argv[1], os.O_RDWR); off = 0
try:
    while True:
        os.pwrite(f, b'\x77' * (1 << 20), off); off += 1 << 20
except OSError as e:
    print(errno.errorcode[e.errno])
EOF
)
        eq "full $way $fmt: filling the disk ends in ENOSPC at pwrite" "$res" ENOSPC
        ok "full $way $fmt: close" "$VDISK" close "$img"
    fi
    clean "full $way $fmt" "$img" "$fmt"
    rm -f "$T/small/filler" # space freed
    serve "$img" "$fmt" ""
    eq "full $way $fmt: after freeing space the write succeeds and reads back" \
        "$(client write:200000000:1048576:0x99 flush read:200000000:1048576:0x99 read:0:4096:-1)" "ok ok ok ok"
    stop
    clean "full $way $fmt after the retry" "$img" "$fmt"
    rm -f "$img"
}
full nbd qcow2
full fuse qcow2
full nbd vhdx
full nbd vdi
finish
