#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# VMDK against QEMU and 7-Zip: images qemu-img/qemu-io make (every subformat,
# zeroed_grain, compat6, hwversion, adapter_type) read back through libvdisk
# as `qemu-img convert -O raw` reads them; images libvdisk makes and writes
# (every subformat) pass qemu-img check, qemu-img compare with a raw image
# given the same writes, and 7-Zip reads the same bytes. A twoGb image over
# 4 GiB has the right extent files; a create failing half-way leaves none.
# A stream vdisk convert writes has the structure of a true stream.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
command -v 7zz >/dev/null || { fail "7zz missing: install 7zip"; finish; }
[ -x "$IO" ] || { fail "$IO not built"; finish; }
cd "$T" || exit 1

same() {
    if cmp -s "$2" "$3"; then pass "$1"; else fail "$1 ($(cmp "$2" "$3" 2>&1 | head -1))"; fi
}

# readback DESC IMG: libvdisk reads IMG as qemu-img does.
readback() {
    rm -f "$T/rb.want" "$T/rb.got"
    if qemu-img convert -U -f vmdk -O raw "$2" "$T/rb.want" && "$IO" dump "$2" "$T/rb.got" 2>"$T/.err"; then
        same "$1" "$T/rb.want" "$T/rb.got"
    else
        fail "$1 (convert or dump failed: $(head -c 300 "$T/.err"))"
    fi
}

CS=65536
# qemu_ops IMG: patterns, unaligned writes, zeroes (plain and unmap), a discard.
qemu_ops() {
    qemu-io -f vmdk "$1" \
        -c "write -P 0x11 0 $((CS * 3 + 512))" \
        -c "write -P 0x22 $((CS * 5 - 1024)) 4096" \
        -c "write -P 0x44 $((CS * 8 + 1536)) 1024" \
        -c "write -z $((CS * 2)) $((CS * 2))" \
        -c "write -z -u $((CS * 12)) $CS" \
        -c "write -P 0x55 $((CS * 16)) $((CS * 4))" \
        -c "discard $((CS * 17)) $CS" \
        -c "write -P 0x66 $((CS * 30 + 4096)) 8192" \
        -c "write -P 0x77 $((30 << 20)) $((2 << 20))" >/dev/null
}

# stream_ops IMG: QEMU writes a stream only forwards, whole grains, each once.
stream_ops() {
    qemu-io -f vmdk "$1" \
        -c "write -P 0x11 0 $((CS * 3))" \
        -c "write -P 0x22 $((CS * 5)) $CS" \
        -c "write -P 0x55 $((CS * 16)) $((CS * 4))" \
        -c "write -P 0x77 $((30 << 20)) $((2 << 20))" >/dev/null
}

# Read: qemu-img makes, qemu-io writes, vdisk reads.
while read -r name opts; do
    img=$T/r-$name.vmdk
    qemu-img create -q -f vmdk -o "$opts" "$img" 40M || { fail "create $name ($opts)"; continue; }
    case $opts in
    *streamOptimized*) stream_ops "$img" ;;
    *) qemu_ops "$img" ;;
    esac || { fail "qemu-io $name"; continue; }
    readback "read qemu image $name ($opts)" "$img"
    ok "$name: vdisk check clean" "$IO" check "$img" none
    rm -f "$T"/r-"$name"*
done <<'EOF2'
sparse subformat=monolithicSparse
sparse-zg subformat=monolithicSparse,zeroed_grain=on
sparse-compat6 subformat=monolithicSparse,compat6=on
sparse-hw7-lsi subformat=monolithicSparse,hwversion=7,adapter_type=lsilogic
sparse-buslogic subformat=monolithicSparse,adapter_type=buslogic
flat subformat=monolithicFlat
flat-esx subformat=monolithicFlat,adapter_type=legacyESX
twogb-sparse subformat=twoGbMaxExtentSparse
twogb-sparse-zg subformat=twoGbMaxExtentSparse,zeroed_grain=on
twogb-flat subformat=twoGbMaxExtentFlat
stream subformat=streamOptimized
stream-hw7 subformat=streamOptimized,hwversion=7,adapter_type=lsilogic
EOF2

# Read: an odd size, the last grain partial, and qemu's own info facts.
qemu-img create -q -f vmdk -o adapter_type=lsilogic,hwversion=7 "$T/odd.vmdk" 10000384
qemu-io -f vmdk -c "write -P 0x71 9900032 100352" "$T/odd.vmdk" >/dev/null
readback "read qemu image of 10000384 bytes" "$T/odd.vmdk"
"$VDISK" info "$T/odd.vmdk" >"$T/info" 2>&1
eq "info: adapter type" "$(grep '^adapter type:' "$T/info")" "adapter type: lsilogic"
eq "info: hwversion" "$(grep '^hwversion:' "$T/info")" "hwversion: 7"
eq "info: grain size" "$(grep '^cluster size:' "$T/info")" "cluster size: 65536"
eq "info: create type" "$(grep '^create type:' "$T/info")" "create type: monolithicSparse"
"$VDISK" info --json "$T/odd.vmdk" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d)' >"$T/json" 2>&1 &&
    pass "info --json is valid JSON" || fail "info --json: $(head -c 300 "$T/json")"

# Write: random ops near grain boundaries; discard is a no-op here, so none.
gen_ops() {
    awk -v seed="$1" -v size="$2" -v cs="$CS" -v n="$3" 'BEGIN {
        srand(seed)
        for (i = 0; i < n; i++) {
            r = rand()
            if (r < 0.4) base = int(rand() * size / cs) * cs
            else base = int(rand() * size)
            off = base + int(rand() * 2 * cs) - cs
            off -= off % 512
            if (off < 0) off = 0
            len = (int(rand() * 3 * cs / 512) + 1) * 512
            if (off + len > size) len = size - off
            if (len <= 0) continue
            if (rand() < 0.8) printf "w %d %d %d\n", off, len, 1 + int(rand() * 250)
            else printf "z %d %d\n", off, len
            if (rand() < 0.1) print "f"
        }
    }'
}

# write_case NAME OPTS SIZE: vdisk creates and writes; qemu-img and 7-Zip agree with raw.
write_case() {
    local name=$1 opts=$2 size=$3 img=$T/w/w.vmdk ref=$T/w.raw
    rm -rf "$T/w" && mkdir "$T/w"
    "$IO" -f raw create "$ref" "$size" || { fail "$name: raw create"; return; }
    if ! "$IO" -f vmdk -o "$opts" create "$img" "$size" 2>"$T/.err"; then
        fail "$name: create ($opts): $(cat "$T/.err")"; return
    fi
    gen_ops "$RANDOM" "$size" 150 >"$T/ops"
    "$IO" -f raw script "$ref" <"$T/ops" || { fail "$name: raw script"; return; }
    if ! "$IO" script "$img" <"$T/ops" 2>"$T/.err"; then
        fail "$name: vdisk script: $(cat "$T/.err")"; cp "$T/ops" "/tmp/failed-ops-$name"; return
    fi
    ok "$name: qemu-img check clean" qemu-img check -q "$img"
    ok "$name: qemu-img compare with raw" qemu-img compare -q -f vmdk -F raw "$img" "$ref"
    if "$IO" dump "$img" "$T/w.got" 2>"$T/.err"; then
        same "$name: libvdisk reads back its writes" "$ref" "$T/w.got"
    else fail "$name: libvdisk reads back its writes (dump: $(cat "$T/.err"))"; fi
    if (cd "$T/w" && 7zz x -so -tvmdk w.vmdk >"$T/w.7z" 2>"$T/.err"); then
        same "$name: 7-Zip reads the same bytes" "$ref" "$T/w.7z"
    else fail "$name: 7-Zip: $(tail -2 "$T/.err")"; fi
    rm -f "$ref" "$T/w.got" "$T/w.7z"
}

write_case sparse subformat=monolithicSparse 24M
write_case sparse-zg subformat=monolithicSparse,zeroed_grain=on 24M
write_case sparse-lsi-hw7 subformat=monolithicSparse,adapter_type=lsilogic,hwversion=7 24M
write_case sparse-odd subformat=monolithicSparse 10000384
write_case flat subformat=monolithicFlat 24M
write_case twogb-sparse subformat=twoGbMaxExtentSparse 24M
write_case twogb-flat subformat=twoGbMaxExtentFlat,compat6=on 24M
write_case stream subformat=streamOptimized 24M
write_case stream-odd subformat=streamOptimized 10000384

# COWD (ESX vmfsSparse), made by hand: read alone and as a VMFSSPARSE extent, as qemu-img reads it
mkdir -p "$T/cowd"
python3 - "$T/cowd/c-delta.vmdk" <<'PY'
import struct, sys
cap, grain, gd, gt = 8192, 8, 4, 5            # 4 MiB, 4 KiB grains, directory, one table
h = struct.pack('<4sIIIIIII', b'COWD', 1, 3, cap, grain, gd, 1, 64)
f = bytearray(h.ljust(2048, b'\0'))
f += bytes(37 * 512 - len(f))
struct.pack_into('<I', f, gd * 512, gt)       # directory entry 0 -> table at sector 5
for g, sec, byte in ((0, 40, 0x31), (3, 48, 0x32), (1000, 56, 0x33)):
    struct.pack_into('<I', f, gt * 512 + 4 * g, sec)
    f += bytes(sec * 512 - len(f)) + bytes([byte]) * (grain * 512)
open(sys.argv[1], 'wb').write(f)
PY
printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="vmfsSparse"\nRW 8192 VMFSSPARSE "c-delta.vmdk"\n' >"$T/cowd/c.vmdk"
readback "COWD extent through a VMFSSPARSE descriptor" "$T/cowd/c.vmdk"
# qemu-img opens a COWD file only through a descriptor; vdisk reads it alone the same
"$IO" dump "$T/cowd/c-delta.vmdk" "$T/cowd/alone.raw" && same "COWD extent read alone" "$T/rb.want" "$T/cowd/alone.raw"
fails_with "COWD: writes refused (read-only here)" "COWD .* read-only here" \
    "$IO" script "$T/cowd/c.vmdk" <<<"w 0 512 1"

# seSparse (ESXi 6.5+ snapshots; nothing here writes them), made by hand from QEMU's reading of
# the format: read through a SESPARSE descriptor and alone, as qemu-img reads it
mkdir -p "$T/se"
python3 - "$T/se/s-sesparse.vmdk" <<'PY'
import struct, sys
cap = 8192                                     # 4 MiB: 4 KiB grains, one 4096-entry table
h = struct.pack('<QQQQQQ', 0xcafebabe, 0x200000001, cap, 8, 64, 0) + bytes(32)
# volatile header, journal header, journal, directory, tables, free bitmap, backmap, grains
h += struct.pack('<16Q', 1, 1, 2, 1, 3, 1, 4, 1, 8, 64, 72, 1, 73, 1, 100, 64)
f = bytearray(h.ljust(512, b'\0'))
f += struct.pack('<QQQQ', 0xcafecafe, 1, 1, 0).ljust(512, b'\0')
f += bytes(100 * 512 - len(f))
struct.pack_into('<Q', f, 4 * 512, 0x1000000000000000)
def gte(g, e): struct.pack_into('<Q', f, 8 * 512 + 8 * g, e)
def clus(c): return 0x3000000000000000 | ((c & 0xfff) << 48) | (c >> 12)
gte(0, clus(0)); gte(5, clus(1)); gte(7, 0x2000000000000000); gte(9, 0x1000000000000000)
gte(1000, clus(4097))
for c, b in ((0, 0x41), (1, 0x42)):
    f += bytes([b]) * 4096
f += bytes((100 + 4097 * 8) * 512 - len(f)) + bytes([0x43]) * 4096
open(sys.argv[1], 'wb').write(f)
PY
printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="seSparse"\nRW 8192 SESPARSE "s-sesparse.vmdk"\n' >"$T/se/s.vmdk"
readback "seSparse extent through a SESPARSE descriptor" "$T/se/s.vmdk"
"$IO" dump "$T/se/s-sesparse.vmdk" "$T/se/alone.raw" && same "seSparse extent read alone" "$T/rb.want" "$T/se/alone.raw"
eq "seSparse: the grain past cluster 4096 holds its bytes" "$(od -An -tx1 -j $((1000 * 4096)) -N 2 "$T/rb.want" | tr -d ' ')" 4343
fails_with "seSparse: writes refused (read-only here)" "seSparse extents are read-only here" \
    "$IO" script "$T/se/s.vmdk" <<<"w 0 512 1"
python3 -c 'import sys,struct; f=open(sys.argv[1],"r+b"); f.seek(512+24); f.write(struct.pack("<Q",1))' "$T/se/s-sesparse.vmdk"
fails_with "seSparse: a journal to replay is refused" "seSparse journal must be replayed" \
    "$IO" dump "$T/se/s.vmdk" /dev/null

# Threads racing on interleaved 4k blocks (shared grains and tables, the stream's pending set).
for cfg in subformat=monolithicSparse subformat=monolithicSparse,zeroed_grain=on \
    subformat=twoGbMaxExtentSparse subformat=streamOptimized subformat=monolithicFlat; do
    rm -rf "$T/mt" && mkdir "$T/mt"
    "$IO" -f vmdk -o "$cfg" create "$T/mt/m.vmdk" 8M
    ok "4 threads, writes/zeroes/flushes ($cfg): every block verified" "$IO" mt "$T/mt/m.vmdk" 4 1500
    ok "4 threads ($cfg): qemu-img check clean" qemu-img check -q "$T/mt/m.vmdk"
done

# vmfs: QEMU 7.2 reads the VMFS extent type but cannot create it; vdisk does.
"$IO" -f vmdk -o subformat=vmfs create "$T/vmfs.vmdk" 8M
"$IO" -f raw create "$T/vmfs.raw" 8M
printf 'w 4096 70000 9\nw 7000000 4096 10\n' >"$T/ops"
"$IO" script "$T/vmfs.vmdk" <"$T/ops" && "$IO" -f raw script "$T/vmfs.raw" <"$T/ops"
ok "vmfs: qemu-img compare with raw" qemu-img compare -q -f vmdk -F raw "$T/vmfs.vmdk" "$T/vmfs.raw"
grep -q '^RW 16384 VMFS "vmfs-flat.vmdk"$' "$T/vmfs.vmdk" && pass "vmfs: a VMFS extent line" ||
    fail "vmfs: extent line: $(grep ^RW "$T/vmfs.vmdk")"

# zeroed_grain: write-zeroes sets zeroed-grain entries instead of writing data
"$IO" -f vmdk -o zeroed_grain=on create "$T/zg.vmdk" 16M
printf 'w 0 8388608 5\nf\n' | "$IO" script "$T/zg.vmdk"
size1=$(stat -c %s "$T/zg.vmdk")
printf 'z 65536 8323072\nz 8388608 8388608\n' | "$IO" script "$T/zg.vmdk"
size2=$(stat -c %s "$T/zg.vmdk")
[ "$size2" -le $((size1 + 65536)) ] && pass "zeroed_grain: 16 MiB of zeroes allocate at most one grain ($size1 -> $size2)" ||
    fail "zeroed_grain: zeroes grew the file $size1 -> $size2"
qemu-io -f vmdk -c "read -P 5 0 65536" -c "read -P 0 65536 16711680" "$T/zg.vmdk" | grep -c '^read' >"$T/n"
eq "zeroed_grain: qemu-io reads the data and the zeroes" "$(cat "$T/n")" 2
ok "zeroed_grain: qemu-img check clean" qemu-img check -q "$T/zg.vmdk"

# CID changes on the first write, not on a read-only open.
"$IO" -f vmdk create "$T/cid.vmdk" 4M
cid0=$(qemu-img info "$T/cid.vmdk" >/dev/null; strings "$T/cid.vmdk" | sed -n 's/^CID=//p')
"$IO" dump "$T/cid.vmdk" /dev/null
eq "CID kept by a read" "$(strings "$T/cid.vmdk" | sed -n 's/^CID=//p')" "$cid0"
echo "w 0 4096 7" | "$IO" script "$T/cid.vmdk"
cid1=$(strings "$T/cid.vmdk" | sed -n 's/^CID=//p')
[ -n "$cid1" ] && [ "$cid1" != "$cid0" ] && pass "CID changed by the first write ($cid0 -> $cid1)" ||
    fail "CID after a write: '$cid1' (was $cid0)"
ok "CID change: qemu-img check clean" qemu-img check -q "$T/cid.vmdk"

# twoGb over 4 GiB: 5 GiB is three extent files (2, 2, 1 GiB), as qemu-img makes it.
mkdir -p "$T/big" "$T/bigq"
"$IO" -f vmdk -o subformat=twoGbMaxExtentSparse create "$T/big/b.vmdk" 5G
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse "$T/bigq/b.vmdk" 5G
eq "twoGb sparse 5G: extent files" "$(cd "$T/big" && ls)" "$(cd "$T/bigq" && ls)"
eq "twoGb sparse 5G: extent lines as qemu-img's" "$(grep ^RW "$T/big/b.vmdk")" "$(grep ^RW "$T/bigq/b.vmdk")"
echo "w $((4608 << 20)) 65536 99" | "$IO" script "$T/big/b.vmdk"
qemu-io -f vmdk -c "read -P 99 $((4608 << 20)) 65536" "$T/big/b.vmdk" | grep -q "^read" &&
    pass "twoGb sparse: a write in the third extent reads back in qemu-io" ||
    fail "twoGb sparse: qemu-io does not read the write back"
ok "twoGb sparse 5G: qemu-img check clean" qemu-img check -q "$T/big/b.vmdk"
rm -rf "$T/big" "$T/bigq"
mkdir -p "$T/big"
"$IO" -f vmdk -o subformat=twoGbMaxExtentFlat create "$T/big/f.vmdk" 4097M
eq "twoGb flat 4097M: three extent files" "$(cd "$T/big" && ls | tr '\n' ' ')" \
    "f-f001.vmdk f-f002.vmdk f-f003.vmdk f.vmdk "
eq "twoGb flat 4097M: the last extent is 1 MiB" "$(stat -c %s "$T/big/f-f003.vmdk")" 1048576
rm -rf "$T/big"

# A create failing half-way (the second extent file exists) leaves nothing of its own.
mkdir -p "$T/half" && touch "$T/half/h-s002.vmdk"
fails_with "create fails on an existing extent file" "h-s002.vmdk" \
    "$VDISK" create -f vmdk -o subformat=twoGbMaxExtentSparse "$T/half/h.vmdk" 5G
eq "failed create left only the file that was there" "$(ls "$T/half")" "h-s002.vmdk"

# vdisk convert to a stream: the structure of a true stream, qemu-img reads it back equal.
"$IO" -f raw create "$T/src.raw" 48M
gen_ops 7 $((48 << 20)) 300 >"$T/ops"
"$IO" -f raw script "$T/src.raw" <"$T/ops"
ok "convert raw -> streamOptimized" "$VDISK" convert -O vmdk -o subformat=streamOptimized \
    "$T/src.raw" "$T/up.vmdk"
ok "stream: qemu-img check clean" qemu-img check -q "$T/up.vmdk"
ok "stream: qemu-img compare with the source" qemu-img compare -q -f vmdk -F raw "$T/up.vmdk" "$T/src.raw"
python3 - "$T/up.vmdk" >"$T/struct" 2>&1 <<'PY'
import struct, sys, zlib
f = open(sys.argv[1], 'rb').read()
magic, ver, flags = struct.unpack_from('<4sII', f, 0)
gd = struct.unpack_from('<Q', f, 56)[0]
over = struct.unpack_from('<Q', f, 64)[0]
print('header', magic.decode(), ver, hex(flags), 'gd_at_end' if gd == 2**64 - 1 else gd)
pos, lbas, kinds = over * 512, [], []
while pos < len(f):
    lba, size, typ = struct.unpack_from('<QII', f, pos)
    if size:
        zlib.decompress(f[pos + 12:pos + 12 + size])
        lbas.append(lba)
        pos += (12 + size + 511) // 512 * 512
        continue
    kinds.append(typ)
    if typ == 0:
        pos += 512
        break
    pos += 512 + lba * 512
print('grains', len(lbas), 'ascending' if lbas == sorted(lbas) else 'unordered')
print('markers', ' '.join({1: 'GT', 2: 'GD', 3: 'FOOTER'}.get(k, 'EOS') for k in kinds if k != 1 or True).replace('GT GT', 'GT').replace('GT GT', 'GT'))
print('end', 'at EOF' if pos == len(f) else pos)
foot = struct.unpack_from('<4sI', f, len(f) - 1024)
print('footer', foot[0].decode(), foot[1])
PY
eq "stream: header KDMV v3, compressed+markers, directory at the end" "$(sed -n 1p "$T/struct")" \
    "header KDMV 3 0x30001 gd_at_end"
grep -q "^grains [1-9][0-9]* ascending$" "$T/struct" && pass "stream: zlib grains in ascending LBA order" ||
    fail "stream: grains: $(sed -n 2p "$T/struct")"
eq "stream: GT markers, then GD, FOOTER, EOS" "$(sed -n 3p "$T/struct")" "markers GT GD FOOTER EOS"
eq "stream: EOS is the end of the file" "$(sed -n 4p "$T/struct")" "end at EOF"
eq "stream: footer is a v3 header" "$(sed -n 5p "$T/struct")" "footer KDMV 3"
bzcat "$(testdata_dir)/iotest-version3.vmdk.bz2" >"$T/v3.vmdk" 2>/dev/null &&
    python3 - "$T/v3.vmdk" <<'PY' >"$T/struct3" 2>&1
import struct, sys
f = open(sys.argv[1], 'rb').read()
print(struct.unpack_from('<4sII', f, 0)[1], hex(struct.unpack_from('<I', f, 8)[0]), struct.unpack_from('<Q', f, 56)[0] == 2**64 - 1)
PY
[ -s "$T/struct3" ] && eq "stream: the same header facts as iotest-version3.vmdk (VMware-style)" \
    "$(cut -d' ' -f1,3 "$T/struct3")" "3 True"
ok "stream: convert back to raw equals the source" "$VDISK" convert -O raw "$T/up.vmdk" "$T/back.raw"
same "stream: round trip" "$T/src.raw" "$T/back.raw"

finish
