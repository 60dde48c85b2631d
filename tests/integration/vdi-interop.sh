#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# VDI against QEMU and 7-Zip: static and dynamic images qemu-img/qemu-io make
# (patterns, zeroes, discards across 1 MiB blocks) read back through libvdisk as
# `qemu-img convert -O raw` reads them; images libvdisk writes pass qemu-img
# check, equal (qemu-img compare) a raw image given the same writes, and 7-Zip
# reads them the same. Runtime: about half a minute.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
command -v 7zz >/dev/null || { fail "7zz missing: install 7zip"; finish; }
[ -x "$IO" ] || { fail "$IO not built"; finish; }
cd "$T" || exit 1
MB=1048576

same() { # same DESC A B: byte-identical files
    if cmp -s "$2" "$3"; then pass "$1"; else fail "$1 ($(cmp "$2" "$3" 2>&1 | head -1))"; fi
}

readback() { # readback DESC IMG: libvdisk and 7-Zip read IMG as qemu-img does
    rm -f rb.want rb.got rb.7z
    qemu-img convert -U -f vdi -O raw "$2" rb.want || { fail "$1: qemu-img convert"; return; }
    if "$IO" dump "$2" rb.got 2>.err; then same "$1" rb.want rb.got; else fail "$1: dump: $(cat .err)"; fi
    7zz x -so -tvdi "$2" >rb.7z 2>/dev/null
    same "$1: 7-Zip reads it the same" rb.want rb.7z
}

qemu_ops() { # qemu_ops IMG: patterns (aligned, unaligned, across blocks), zeroes, discards
    qemu-io -f vdi "$1" \
        -c "write -P 0x11 0 $((3 * MB + 512))" \
        -c "write -P 0x22 $((5 * MB - 1024)) 4096" \
        -c "write -P 0x33 $((8 * MB)) $((2 * MB))" \
        -c "write -P 0x44 $((8 * MB + 1536)) 1024" \
        -c "write -z $((2 * MB)) $((2 * MB))" \
        -c "write -z $((12 * MB)) $MB" \
        -c "write -P 0x55 $((16 * MB)) $((4 * MB))" \
        -c "discard $((17 * MB)) $MB" \
        -c "write -P 0x66 $((30 * MB + 4096)) 8192" >/dev/null
}

# Read: images qemu-img makes, written by qemu-io.
for kind in dynamic static; do
    opts=; [ $kind = static ] && opts="-o static=on"
    qemu-img create -q -f vdi $opts "r-$kind.vdi" 64M || { fail "qemu-img create $kind"; continue; }
    qemu_ops "r-$kind.vdi" || fail "qemu-io on $kind"
    readback "read qemu-made $kind image" "r-$kind.vdi"
    ok "vdisk check: qemu-made $kind image clean" "$VDISK" check -q "r-$kind.vdi"
done
"$VDISK" info r-static.vdi >info.txt
grep -q '^capabilities:.*linear' info.txt && pass "a static image is linear (loop can serve it)" ||
    fail "static not linear: $(cat info.txt)"
eq "static: data offset is the header's" "$(sed -n 's/^data offset: //p' info.txt)" \
    "$(od -An -tu4 -j344 -N4 r-static.vdi | tr -d ' ')"
"$VDISK" info r-dynamic.vdi | grep -q '^capabilities: thread-safe$' && pass "a dynamic image is not linear (thread safe)" ||
    fail "dynamic: $("$VDISK" info r-dynamic.vdi | grep capab)"
# a size that is not a whole number of blocks
qemu-img create -q -f vdi odd.vdi 10000384
qemu-io -f vdi -c "write -P 0x71 9900032 100352" -c "write -P 0x72 $((9 * MB - 512)) 4096" odd.vdi >/dev/null
readback "read qemu-made image of 10000384 bytes" odd.vdi
eq "virtual size of the odd image" "$("$IO" info odd.vdi | sed -n 's/^virtual_size=//p')" 10000384

# Write: random ops near block boundaries, on a vdisk-made (or qemu-made) image and a raw twin.
gen_ops() { # gen_ops SEED SIZE COUNT
    awk -v seed="$1" -v size="$2" -v n="$3" -v bs=$MB 'BEGIN {
        srand(seed)
        for (i = 0; i < n; i++) {
            base = rand() < 0.5 ? int(rand() * size / bs) * bs : int(rand() * size)
            off = base + int(rand() * 2 * 65536) - 65536
            off -= off % 512
            if (off < 0) off = 0
            len = (int(rand() * (rand() < 0.3 ? 6144 : 256)) + 1) * 512
            if (off + len > size) len = size - off
            if (len <= 0) continue
            k = rand()
            if (k < 0.65) printf "w %d %d %d\n", off, len, 1 + int(rand() * 250)
            else if (k < 0.8) printf "z %d %d%s\n", off, len, rand() < 0.5 ? " unmap" : ""
            else {
                a = int((off + bs - 1) / bs) * bs; b = int((off + len) / bs) * bs
                if (b > a) printf "d %d %d\n", a, b - a
            }
            if (rand() < 0.1) print "f"
        }
    }'
}

# Images laid out as VirtualBox lays them out (map at 1 MiB, data at 2 MiB, a 0x190 header,
# slots out of order, ZERO entries), and with other block sizes than QEMU's; written by a
# script here, with the raw image they hold (QEMU and 7-Zip read 1 MiB blocks only).
craft() { # craft IMG RAW BLOCK_SIZE
    python3 - "$@" <<'PY'
import os, random, struct, sys
img, raw, bs = sys.argv[1], sys.argv[2], int(sys.argv[3])
random.seed(bs)
blocks = 24
disk = blocks * bs - (512 if bs > 512 else 0)
off_bmap, off_data = 1 << 20, 2 << 20
h = bytearray(off_data)
h[0:40] = b"<<< Oracle VM VirtualBox Disk Image >>>\n"
struct.pack_into("<IIIII", h, 64, 0xbeda107f, 0x00010001, 0x190, 1, 0)
struct.pack_into("<II", h, 340, off_bmap, off_data)
struct.pack_into("<I", h, 360, 512)
slots = list(range(14)); random.shuffle(slots)
entries, data = [], {}
for b in range(blocks):
    k = random.random()
    if k < 0.2: entries.append(0xffffffff)
    elif k < 0.3 or not slots: entries.append(0xfffffffe)
    else: entries.append(slots.pop())
used = [e for e in entries if e < 0xfffffffe]
struct.pack_into("<QIIII", h, 368, disk, bs, 0, blocks, len(used))
h[392:424] = os.urandom(32)
for i, e in enumerate(entries): struct.pack_into("<I", h, off_bmap + 4 * i, e)
body = bytearray(len(used) * bs)
out = bytearray(blocks * bs)
for b, e in enumerate(entries):
    if e < 0xfffffffe:
        d = os.urandom(bs)
        body[e * bs:(e + 1) * bs] = d
        out[b * bs:(b + 1) * bs] = d
open(img, "wb").write(h + body)
open(raw, "wb").write(out[:disk])
PY
}
craft vbox.vdi vbox.raw $MB
ok "VirtualBox layout: qemu-img check clean" qemu-img check -q vbox.vdi
qemu-img convert -f vdi -O raw vbox.vdi vbox.qemu.raw
same "VirtualBox layout: qemu-img reads what the script put there" vbox.raw vbox.qemu.raw
readback "VirtualBox layout (map at 1 MiB, data at 2 MiB, slots out of order)" vbox.vdi
for bs in 512 4096 65536 $((4 * MB)); do
    craft "bs$bs.vdi" "bs$bs.raw" "$bs"
    "$IO" dump "bs$bs.vdi" got.raw 2>.err && same "block size $bs: reads what the script put there" "bs$bs.raw" got.raw ||
        fail "block size $bs: $(cat .err)"
done
# writes into them (metadata in two places: map, then header), checked by a model
for f in vbox bs4096 bs$((4 * MB)); do
    # (discard is advisory: a discard of part of a 4 MiB block keeps its data, raw's reads zeroes)
    gen_ops "$RANDOM" "$(stat -c %s $f.raw)" 80 | grep -v '^d' >ops
    "$IO" -f raw script $f.raw <ops && "$IO" script $f.vdi <ops 2>.err || fail "$f: writes: $(cat .err)"
    "$IO" dump $f.vdi got.raw && same "$f: writes read back as the model" $f.raw got.raw
    ok "$f: vdisk check clean after writes" "$VDISK" check -q $f.vdi
done
ok "VirtualBox layout after writes: qemu-img check clean" qemu-img check -q vbox.vdi
ok "VirtualBox layout after writes: qemu-img compare" qemu-img compare -q -f vdi -F raw vbox.vdi vbox.raw

# A header of major version 0 (VirtualBox's first: no offsets, the map right after the
# header, the data right after the map): read only; its bytes as the script put them.
python3 - v0.vdi v0.raw <<'PY'
import os, struct, sys
bs, blocks = 65536, 6
h = bytearray(72 + 348)
h[0:38] = b"<<< innotek VirtualBox Disk Image >>>\n"
struct.pack_into("<III", h, 64, 0xbeda107f, 0x00000001, 1)
struct.pack_into("<I", h, 72 + 8 + 256 + 12, 512)
struct.pack_into("<QIII", h, 352, blocks * bs, bs, blocks, 3)
h[372:404] = os.urandom(32)
entries = [2, 0xffffffff, 0, 0xfffffffe, 1, 0xffffffff]
m = b"".join(struct.pack("<I", e) for e in entries)
slots = [os.urandom(bs) for _ in range(3)]
out = b"".join(slots[e] if e < 3 else bytes(bs) for e in entries)
open(sys.argv[1], "wb").write(h + m + b"".join(slots))
open(sys.argv[2], "wb").write(out)
PY
"$IO" dump v0.vdi got.raw 2>.err && same "version 0 header: reads what the script put there" v0.raw got.raw ||
    fail "version 0: $(cat .err)"
eq "version 0 header: info says so" "$("$VDISK" info v0.vdi | sed -n 's/^version: //p')" 0
fails_with "version 0 header: a writable open is refused" "read only here: open it read-only" \
    sh -c "echo 'w 0 512 1' | '$IO' script v0.vdi"
ok "version 0 header: vdisk convert makes a 1.1 image of it" "$VDISK" convert -O vdi v0.vdi v0-11.vdi
ok "... which qemu-img reads the same" qemu-img compare -q -f vdi -F raw v0-11.vdi v0.raw

# Info, as qemu-img info sees it.
"$VDISK" info --json r-dynamic.vdi >info.json
eq "info --json: image type" "$(grep -o '"image_type": "[a-z]*"' info.json)" '"image_type": "dynamic"'
eq "info --json: block size" "$(grep -o '"block_size": "[0-9]*"' info.json)" '"block_size": "1048576"'
eq "info: cluster size as qemu-img's" "$("$IO" info r-dynamic.vdi | sed -n 's/^cluster_size=//p')" \
    "$(qemu-img info --output=json r-dynamic.vdi | sed -n 's/.*"cluster-size": \([0-9]*\).*/\1/p')"
eq "info: blocks allocated = the header's" "$(grep -o '"blocks_allocated": "[0-9]*"' info.json)" \
    "\"blocks_allocated\": \"$(od -An -tu4 -j388 -N4 r-dynamic.vdi | tr -d ' ')\""
eq "info: UUID as VirtualBox prints it (first fields little endian)" \
    "$(grep -o '"uuid": "[0-9a-f-]*"' info.json | cut -d'"' -f4 | cut -c1-8)" \
    "$(od -An -tx1 -j392 -N4 r-dynamic.vdi | awk '{print $4$3$2$1}')"

write_case() { # write_case NAME SIZE HOW: HOW = vdisk OPTS | qemu OPTS
    local name=$1 size=$2 how=$3 opts=${4:-} img=w-$1.vdi ref=w-$1.raw
    rm -f "$img" "$ref"
    if [ "$how" = qemu ]; then
        qemu-img create -q -f vdi ${opts:+-o $opts} "$img" "$size" && qemu_ops "$img" &&
            qemu-img convert -O raw "$img" "$ref" || { fail "$name: qemu setup"; return; }
    else
        "$IO" -f vdi ${opts:+-o $opts} create "$img" "$size" 2>.err || { fail "$name: create: $(cat .err)"; return; }
        "$IO" -f raw create "$ref" "$size"
    fi
    gen_ops "$RANDOM" "$size" 150 >ops
    "$IO" -f raw script "$ref" <ops || { fail "$name: raw script"; return; }
    if ! "$IO" script "$img" <ops 2>.err; then
        fail "$name: vdisk script: $(cat .err)"; cp ops "/tmp/vdi-failed-ops-$name"; return
    fi
    ok "$name: qemu-img check clean" qemu-img check -q "$img"
    ok "$name: qemu-img compare with raw" qemu-img compare -q -f vdi -F raw "$img" "$ref"
    7zz x -so -tvdi "$img" >w.7z 2>/dev/null
    same "$name: 7-Zip reads what was written" "$ref" w.7z
    if "$IO" dump "$img" w.got 2>.err; then same "$name: libvdisk reads back its writes" "$ref" w.got
    else fail "$name: dump: $(cat .err)"; fi
    ok "$name: vdisk check clean" "$VDISK" check -q "$img"
}
write_case dynamic 64M vdisk
write_case dynamic-2 48M vdisk
write_case static 32M vdisk static=on
write_case subformat-static 16M vdisk subformat=static
write_case odd-size 10000384 vdisk
write_case on-qemu-dynamic 64M qemu
write_case on-qemu-static 64M qemu static=on

# Create: what the options make, as qemu-img sees it.
"$VDISK" create -f vdi -o static=on c-static.vdi 8M >/dev/null 2>&1
eq "static=on: image type 2 in the header" "$(od -An -tu4 -j76 -N4 c-static.vdi | tr -d ' ')" 2
eq "static=on: every block allocated" "$(od -An -tu4 -j388 -N4 c-static.vdi | tr -d ' ')" 8
ok "static=on: qemu-img check clean" qemu-img check -q c-static.vdi
"$VDISK" create -f vdi c-dyn.vdi 8M >/dev/null 2>&1
eq "dynamic: image type 1, nothing allocated" "$(od -An -tu4 -j76 -N4 c-dyn.vdi | tr -d ' ')/$(od -An -tu4 -j388 -N4 c-dyn.vdi | tr -d ' ')" 1/0
ok "dynamic: qemu-img check clean" qemu-img check -q c-dyn.vdi
eq "qemu-img info: virtual size" "$(qemu-img info --output=json c-dyn.vdi | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')" 8388608
fails_with "subformat=sparse refused" "subformat must be static or dynamic" \
    "$VDISK" create -f vdi -o subformat=sparse c-bad.vdi 8M
[ ! -e c-bad.vdi ] && pass "a refused create leaves no file" || fail "c-bad.vdi left behind"
fails_with "a size not a multiple of 512 refused" "multiple of 512" "$IO" -f vdi create c-bad.vdi 1000

# Discard frees whole blocks (ZERO state) and the file shrinks; partial blocks keep their data.
"$IO" -f vdi create d.vdi 16M && "$IO" -f raw create d.raw 16M
printf 'w 0 %d 7\nf\n' $((16 * MB)) | tee ops | "$IO" script d.vdi && "$IO" -f raw script d.raw <ops
before=$(stat -c %s d.vdi)
printf 'd %d %d\nd %d %d\nf\n' $((2 * MB)) $((3 * MB)) $((10 * MB)) $MB | tee ops | "$IO" script d.vdi &&
    "$IO" -f raw script d.raw <ops
eq "discard of 4 blocks: the file is 4 MiB shorter" $((before - $(stat -c %s d.vdi))) $((4 * MB))
eq "discard: 12 blocks left allocated" "$(od -An -tu4 -j388 -N4 d.vdi | tr -d ' ')" 12
eq "discard: map entries of the freed blocks are ZERO (~1)" \
    "$(od -An -tx4 -j$((512 + 8)) -N12 d.vdi | xargs)" "fffffffe fffffffe fffffffe"
ok "discard: qemu-img check clean" qemu-img check -q d.vdi
ok "discard: qemu-img compare with raw" qemu-img compare -q -f vdi -F raw d.vdi d.raw

# Threads racing (the image layer serialises the driver; allocation under load).
"$IO" -f vdi create mt.vdi 8M
ok "4 threads, writes/zeroes/discards/flushes: every block verified" "$IO" mt mt.vdi 4 1500
ok "4 threads: qemu-img check clean" qemu-img check -q mt.vdi

# vdisk convert both ways, against qemu-img.
head -c $((5 * MB + 4096)) /dev/urandom >src.raw && truncate -s 24M src.raw
ok "convert raw -> vdi" "$VDISK" convert -O vdi src.raw conv.vdi
ok "convert: qemu-img check clean" qemu-img check -q conv.vdi
ok "convert: qemu-img compare with the source" qemu-img compare -q -f vdi -F raw conv.vdi src.raw
ok "convert -o static=on" "$VDISK" convert -O vdi -o static=on src.raw conv-s.vdi
ok "convert static: qemu-img compare" qemu-img compare -q -f vdi -F raw conv-s.vdi src.raw
ok "convert vdi -> qcow2" "$VDISK" convert -O qcow2 conv.vdi back.qcow2
ok "convert back: equal" qemu-img compare -q -f qcow2 -F raw back.qcow2 src.raw
finish
