#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The VHDX log, with entries written by hand (vhdx-mklog.py) into images
# vdisk made: a read-only open replays in memory (reads see the replayed
# bytes, metadata and data alike; the file is unchanged), a writable open
# replays to disk and clears the log; QEMU's replay (qemu-img check -r all)
# gives the same bytes. Sequences of entries, stale entries of an older log
# GUID, torn entries, and hostile entries (outside the file, over the log or
# the headers, a broken sequence, a truncated file). Runtime: ~15 s.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
MKLOG="python3 $ROOT/tests/integration/vhdx-mklog.py"
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
cd "$T" || exit 1

# A 64 MiB image, 1 MiB blocks, blocks 0-7 written with 0x10.., block 5 discarded.
"$IO" -f vhdx -o block_size=1M create base.vhdx 64M
for i in 0 1 2 3 4 5 6 7; do echo "w $((i << 20)) 1048576 $((16 + i))"; done |
    "$IO" -f vhdx script base.vhdx
BAT=$((3 << 20)) # vdisk lays out: headers 1 MiB, log 1 MiB, metadata 1 MiB, then the BAT
H=$(python3 -c 'import struct,sys; f=open("base.vhdx","rb"); f.seek(int(sys.argv[1]))
print(struct.unpack("<Q", f.read(8))[0] & ~0xfffff)' "$BAT") # block 0's data in the file

# agree NAME IMG: vdisk's in-memory replay, the file untouched, QEMU's replay the same bytes,
# then vdisk's replay to disk the same again and a clean log.
agree() {
    local name=$1 img=$2 before
    before=$(md5sum <"$img")
    "$IO" dump "$img" "$T/v.raw" 2>"$T/.err" || { fail "$name: read: $(cat "$T/.err")"; return; }
    eq "$name: log state" "$("$VDISK" info "$img" | sed -n 's/^log state: //p')" \
        "replayed in memory"
    eq "$name: a read-only open leaves the file alone" "$(md5sum <"$img")" "$before"
    cp "$img" "$T/q.vhdx"
    qemu-img check -q -r all "$T/q.vhdx" >/dev/null 2>&1
    qemu-img convert -f vhdx -O raw "$T/q.vhdx" "$T/q.raw" 2>"$T/.err" ||
        { fail "$name: QEMU's replay: $(cat "$T/.err")"; return; }
    ok "$name: QEMU's replay reads the same bytes" cmp -s "$T/v.raw" "$T/q.raw"
    echo f | "$IO" -f vhdx script "$img" || fail "$name: writable open"
    eq "$name: writable open: log clean" "$("$VDISK" info "$img" | sed -n 's/^log state: //p')" \
        clean
    "$IO" dump "$img" "$T/v2.raw"
    ok "$name: replayed to disk: same bytes" cmp -s "$T/v.raw" "$T/v2.raw"
    ok "$name: replayed to disk: qemu-img check clean" qemu-img check -q "$img"
    rm -f "$T/v.raw" "$T/v2.raw" "$T/q.raw" "$T/q.vhdx"
}

# byte_at IMG OFF: the guest byte at OFF as vdisk reads it (decimal).
byte_at() { "$IO" dump "$1" - | od -An -tu1 -j "$2" -N1 | tr -d ' '; }

# A data page of block 0 rewritten by the log
cp base.vhdx a.vhdx
$MKLOG a.vhdx "0:1:0:d@$H=0xab"
eq "data entry: read-only open sees the logged page" "$(byte_at a.vhdx 0)" 171
eq "data entry: the file itself still holds the old byte" \
    "$(od -An -tu1 -j "$H" -N1 a.vhdx | tr -d ' ')" 16
agree "data entry" a.vhdx

# The BAT through the log: block 2 becomes ZERO, block 3 points at block 4's data
cp base.vhdx b.vhdx
python3 - "$BAT" <<'EOF'
import struct, sys
bat = int(sys.argv[1])
f = open("b.vhdx", "rb"); f.seek(bat); page = bytearray(f.read(4096))
e4 = struct.unpack_from("<Q", page, 32)[0]
struct.pack_into("<Q", page, 16, 2)
struct.pack_into("<Q", page, 24, e4)
open("batpage", "wb").write(page)
EOF
$MKLOG b.vhdx "0:7:0:p@$BAT=batpage@0"
eq "BAT entry: block 2 reads as zeroes" "$(byte_at b.vhdx $((2 << 20)))" 0
eq "BAT entry: block 3 reads block 4's data" "$(byte_at b.vhdx $((3 << 20)))" 20
agree "BAT entry" b.vhdx

# A sequence of three entries from its tail: later entries win
cp base.vhdx c.vhdx
$MKLOG c.vhdx "0:10:0:d@$H=0x01" "8192:11:0:d@$H=0x02+d@$((H + 4096))=0x03" \
    "20480:12:0:z@$((H + 4096))=4096"
eq "sequence: the last entry's page" "$(byte_at c.vhdx 0)" 2
eq "sequence: zeroed by the head" "$(byte_at c.vhdx 4096)" 0
agree "sequence" c.vhdx

# A stale entry with a higher sequence number under an older log GUID is ignored
cp base.vhdx d.vhdx
$MKLOG d.vhdx --guid new "40960:99:40960:d@$H=0xee"
$MKLOG d.vhdx --guid new "0:1:0:d@$H=0x05"
eq "stale GUID: ignored" "$(byte_at d.vhdx 0)" 5
agree "stale GUID" d.vhdx

# A torn head (bad checksum): the entry before it is the head
cp base.vhdx e.vhdx
$MKLOG e.vhdx "0:5:0:d@$H=0x06" "8192:6:0:d@$H=0x07:torn"
eq "torn head: the previous entry wins" "$(byte_at e.vhdx 0)" 6
agree "torn head" e.vhdx

# A log GUID without any entry: nothing to replay
cp base.vhdx f.vhdx
$MKLOG f.vhdx
eq "empty log: reads as before" "$(byte_at f.vhdx 0)" 16
eq "empty log: clean" "$("$VDISK" info f.vhdx | sed -n 's/^log state: //p')" clean

# Hostile entries: a clear error, never a crash or a write
size=$(stat -c %s base.vhdx)
hostile() { # hostile NAME REGEX ENTRY...
    local name=$1 re=$2
    shift 2
    cp base.vhdx h.vhdx
    $MKLOG h.vhdx "$@"
    local before
    before=$(md5sum <h.vhdx)
    fails_with "hostile log: $name: read-only open refused" "$re" "$IO" dump h.vhdx /dev/null
    fails_with "hostile log: $name: writable open refused" "$re" "$VDISK" check -r all h.vhdx
    eq "hostile log: $name: file unchanged" "$(md5sum <h.vhdx)" "$before"
}
hostile "page past the end of the file" "h.vhdx: VHDX log entry 1 .* invalid" "0:1:0:d@$size=0x01"
hostile "page over the log" "h.vhdx: VHDX log entry 1 .* invalid" "0:1:0:d@$((1 << 20))=0x01"
hostile "page over the headers" "h.vhdx: VHDX log entry 1 .* invalid" "0:1:0:d@65536=0x01"
hostile "zeroes of 2^60 bytes" "h.vhdx: VHDX log entry 1 .* invalid" "0:1:0:z@$H=$((1 << 60))"
hostile "tail into nothing" "h.vhdx: VHDX log is corrupt" "8192:3:0:d@$H=0x01"
hostile "sequence with a gap" "h.vhdx: VHDX log is corrupt" "0:3:0:d@$H=0x01" "8192:5:0:d@$H=0x02"
cp base.vhdx t.vhdx
$MKLOG t.vhdx "0:1:0:d@$H=0x01"
truncate -s $((size - (1 << 20))) t.vhdx
fails_with "hostile log: file truncated below the log's flushed size" "t.vhdx: .*truncated" \
    "$IO" dump t.vhdx /dev/null
finish
