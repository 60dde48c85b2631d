#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The FUSE file itself (what the loop device of --via fuse reads), driven with plain
# system calls: odd offsets and sizes, the end of the disk, SEEK_DATA/SEEK_HOLE,
# fallocate punch hole and zero range, fsync, truncate refused; with direct I/O on
# two threads and buffered on one (all through the request engine); fio verify
# through the loop device. A few seconds.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"
command -v python3 >/dev/null || { fail "python3 is needed"; finish; }

check_file() { # check_file NAME: runs with $img open, FUSE file at $mp
    local name=$1 out
    local rc
    out=$(python3 - "$mp" "$img" 2>&1 <<'EOF'
import errno, os, sys, ctypes
mp, img = sys.argv[1], sys.argv[2]
size = os.stat(img).st_size
f = os.open(mp, os.O_RDWR)
def raw(off, n):
    with open(img, 'rb') as g:
        g.seek(off); return g.read(n)
def say(ok, what): print(("PASS: " if ok else "FAIL: ") + what)
# odd reads compare with the image file
for off, n in [(0, 1), (4095, 2), (12345, 10000), (size - 3, 3), (1 << 20, 1 << 20)]:
    say(os.pread(f, n, off) == raw(off, n), "pread %d bytes at %d matches the image" % (n, off))
say(os.pread(f, 100, size) == b'', "read at the end returns nothing")
say(os.pread(f, 100, size - 10) == raw(size - 10, 10), "read across the end is short")
# odd writes land in the image
os.pwrite(f, b'abc', 7); os.pwrite(f, b'x' * 5000, 8191)
say(raw(7, 3) == b'abc' and raw(8191, 5000) == b'x' * 5000, "unaligned pwrites reach the image")
try:
    os.pwrite(f, b'z', size); say(False, "write at the end refused")
except OSError as e:
    say(e.errno == errno.ENOSPC, "write at the end fails with ENOSPC (%s)" % e.strerror)
say(os.pwrite(f, b'y' * 100, size - 10) == 10, "write across the end is short")
os.fsync(f); say(True, "fsync")
# allocation map: data at 2M..2M+64K only (the test made the image sparse)
say(os.lseek(f, 0, os.SEEK_DATA) == 0, "SEEK_DATA at 0 (written above)")
say(os.lseek(f, 1 << 20 | 4096, os.SEEK_DATA) == 2 << 20, "SEEK_DATA finds the data at 2M")
say(os.lseek(f, 2 << 20, os.SEEK_HOLE) == (2 << 20) + 65536, "SEEK_HOLE finds its end")
say(os.lseek(f, 4 << 20, os.SEEK_DATA) == size - 4096, "SEEK_DATA finds the last block")
try:
    os.lseek(f, size, os.SEEK_DATA); say(False, "SEEK_DATA at the end")
except OSError as e:
    say(e.errno == errno.ENXIO, "SEEK_DATA at the end is ENXIO")
# fallocate: punch hole frees and zeroes, zero range zeroes
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
before = os.stat(img).st_blocks
say(libc.fallocate(f, 3, 2 << 20, 65536) == 0, "fallocate PUNCH_HOLE|KEEP_SIZE")
say(raw(2 << 20, 65536) == bytes(65536), "punched range reads zeroes")
say(os.stat(img).st_blocks <= before - 65536 // 512, "punched range freed in the image")
os.pwrite(f, b'q' * 8192, 3 << 20)
say(libc.fallocate(f, 0x10 | 1, 3 << 20, 8192) == 0, "fallocate ZERO_RANGE|KEEP_SIZE")
say(raw(3 << 20, 8192) == bytes(8192), "zeroed range reads zeroes")
r = libc.fallocate(f, 0, 0, 4096)
say(r != 0 and ctypes.get_errno() == errno.EOPNOTSUPP, "plain fallocate is EOPNOTSUPP")
try:
    os.ftruncate(f, size // 2); say(False, "truncate refused")
except OSError as e:
    say(e.errno in (errno.EPERM, errno.EACCES), "truncate is refused (%s)" % e.strerror)
say(os.stat(mp).st_size == size, "the FUSE file keeps the disk's size")
os.close(f)
EOF
)
    rc=$?
    echo "$out" | sed "s/^\(PASS\|FAIL\): /\1: $name: /"
    FAILS=$((FAILS + $(echo "$out" | grep -c '^FAIL: ')))
    [ "$rc" -eq 0 ] || fail "$name: the python checks stopped part-way (exit $rc)"
}

for mode in direct buffered; do
    img=$T/$mode.img
    truncate -s 8M "$img"
    printf 'D%.0s' $(seq 65536) | dd of="$img" bs=64k seek=32 conv=notrunc status=none # 2M..2M+64K
    opt=()
    if [ $mode = buffered ]; then opt=(--no-direct); export VDISK_FUSE_THREADS=1; fi
    dev=$("$VDISK" open --via fuse "${opt[@]}" "$img") && pass "$mode: open" || fail "$mode: open"
    mp=$(rec_field "$img" mountpoint)
    check_file "$mode"
    # concurrent writes of mixed sizes and alignments, then verify every block
    ok "$mode: fio random writes (512 B..256 KiB, QD32) verify" \
        fio --name=verify --filename="$dev" --rw=randwrite --bsrange=512-256k --iodepth=32 \
        --ioengine=libaio --direct=1 --size=6M --verify=crc32c --do_verify=1 \
        --verify_fatal=1 --verify_state_save=0 --output=/dev/null
    ok "$mode: close" "$VDISK" close "$img"
    unset VDISK_FUSE_THREADS
done
finish
