#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qcow2 against QEMU: images qemu-img/qemu-io make read back through libvdisk
# byte for byte (qemu-img convert -O raw is the oracle); images libvdisk writes
# pass qemu-img check and qemu-img compare with a raw image given the same
# writes (and equal virtual sizes; -s would also demand equal allocation maps). Runtime: about a minute.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
[ -x "$IO" ] || { fail "$IO not built"; finish; }
cd "$T" || exit 1

# same DESC A B: files A and B are byte-identical.
same() {
    if cmp -s "$2" "$3"; then pass "$1"; else fail "$1 ($(cmp "$2" "$3" 2>&1 | head -1))"; fi
}

# readback DESC IMG: libvdisk reads IMG as qemu-img does.
readback() {
    rm -f "$T/rb.want" "$T/rb.got"
    qemu-img convert -U -O raw "$2" "$T/rb.want" &&
        "$IO" dump "$2" "$T/rb.got" && same "$1" "$T/rb.want" "$T/rb.got" ||
        fail "$1 (convert or dump failed: $(head -c 300 "$T/.err" 2>/dev/null))"
}

# qemu_ops IMG CS [nocomp]: qemu-io writes (plain, unaligned, compressed, zero, discard).
qemu_ops() {
    local img=$1 cs=$2 c=-c
    [ "${3:-}" = nocomp ] && c= # qemu cannot compress 512-byte or preallocated clusters
    qemu-io -f qcow2 "$img" \
        -c "write -P 0x11 0 $((cs * 3 + 512))" \
        -c "write -P 0x22 $((cs * 5 - 1024)) 4096" \
        -c "write $c -P 0x33 $((cs * 8)) $((cs * 2))" \
        -c "write -P 0x44 $((cs * 8 + 1536)) 1024" \
        -c "write -z $((cs * 2)) $((cs * 2))" \
        -c "write -z -u $((cs * 12)) $cs" \
        -c "write -P 0x55 $((cs * 16)) $((cs * 4))" \
        -c "discard $((cs * 17)) $cs" \
        -c "write -P 0x66 $((cs * 30 + 4096)) 8192" \
        -c "write $c -P 0x77 $((cs * 40)) $cs" >/dev/null
}

# Read: images made by qemu-img create + qemu-io, every option that matters.
while read -r name opts cs comp; do
    img=$T/r-$name.qcow2
    qemu-img create -q -f qcow2 -o "$opts" "$img" 128M || { fail "create $name"; continue; }
    qemu_ops "$img" "$cs" "$comp" || { fail "qemu-io $name"; continue; }
    readback "read qemu image $name ($opts)" "$img"
    ok "vdisk check agrees with qemu-img check: $name clean" "$IO" check "$img" none
    rm -f "$img"
done <<'EOF'
v3-64k cluster_size=65536 65536
v2 compat=0.10 65536
c512 cluster_size=512 512 nocomp
c2m cluster_size=2M 2097152
c4k-v2 compat=0.10,cluster_size=4096 4096
rc1 refcount_bits=1 65536
rc2 refcount_bits=2,cluster_size=4096 4096
rc4 refcount_bits=4 65536
rc8 refcount_bits=8 65536
rc32 refcount_bits=32 65536
rc64 refcount_bits=64,cluster_size=512 512 nocomp
zstd compression_type=zstd 65536
extl2 extended_l2=on 65536
extl2-16k extended_l2=on,cluster_size=16384 16384
extl2-2m extended_l2=on,cluster_size=2M,compression_type=zstd 2097152
lazy lazy_refcounts=on 65536
prealloc preallocation=metadata 65536 nocomp
EOF

# Read: a size that is not a multiple of the cluster size.
qemu-img create -q -f qcow2 "$T/odd.qcow2" 10000384
qemu-io -c "write -P 0x71 9900032 100352" -c "write -c -P 0x72 9830400 65536" "$T/odd.qcow2" >/dev/null
readback "read qemu image of 10000384 bytes" "$T/odd.qcow2"

# Read: a backing chain three deep (raw base, qcow2 in between), relative names.
mkdir -p "$T/chain/sub"
qemu-img create -q -f raw "$T/chain/base.raw" 32M
qemu-io -f raw -c "write -P 0xa1 0 8M" -c "write -P 0xa2 20M 1M" "$T/chain/base.raw" >/dev/null
(cd "$T/chain" && qemu-img create -q -f qcow2 -b ../base.raw -F raw sub/mid.qcow2 32M &&
    qemu-img create -q -f qcow2 -o cluster_size=4096 -b mid.qcow2 -F qcow2 sub/top.qcow2 40M)
qemu-io -f qcow2 -c "write -P 0xb1 1M 3M" -c "write -z 6M 64k" "$T/chain/sub/mid.qcow2" >/dev/null
qemu-io -f qcow2 -c "write -P 0xc1 2M 4096" -c "write -P 0xc2 7M 100k" -c "write -z 1M 8192" \
    -c "write -P 0xc3 36M 1M" "$T/chain/sub/top.qcow2" >/dev/null
readback "read backing chain raw <- qcow2 <- qcow2 (relative paths, top larger)" \
    "$T/chain/sub/top.qcow2"
"$IO" info "$T/chain/sub/top.qcow2" >"$T/info" 2>&1
eq "info reports the backing file" "$(grep ^backing_file= "$T/info")" "backing_file=mid.qcow2"
eq "info reports the backing format" "$(grep ^backing_format= "$T/info")" "backing_format=qcow2"
eq "info reports the cluster size" "$(grep ^cluster_size= "$T/info")" "cluster_size=4096"
# block status through the chain: data where any layer has data, holes elsewhere
"$IO" map "$T/chain/sub/top.qcow2" >"$T/map"
eq "block status: base data at 0 shows through" "$(head -1 "$T/map")" "0 1048576 0"
eq "block status: hole past the backing file's data" \
    "$(awk '$1 == 22020096 {print $3}' "$T/map")" "3"
qemu-io -f qcow2 -c "write -P 0xee 0 64k" "$T/chain/sub/top.qcow2" >/dev/null

# Write: vdisk writes; qemu-img check clean; compare with a raw image given the same ops.
# gen_ops SEED SIZE CS L2SPAN COUNT DISCARD: random ops near cluster and L2 boundaries.
gen_ops() {
    awk -v seed="$1" -v size="$2" -v cs="$3" -v l2="$4" -v n="$5" -v disc="$6" 'BEGIN {
        srand(seed)
        for (i = 0; i < n; i++) {
            r = rand()
            if (r < 0.3) base = int(rand() * size / cs) * cs
            else if (r < 0.6) base = int(rand() * size / l2) * l2
            else base = int(rand() * size)
            off = base + int(rand() * 2 * cs) - cs
            off -= off % 512
            if (off < 0) off = 0
            len = (int(rand() * 3 * cs / 512) + 1) * 512
            if (off + len > size) len = size - off
            if (len <= 0) continue
            k = rand()
            if (k < 0.65) printf "w %d %d %d\n", off, len, 1 + int(rand() * 250)
            else if (k < 0.8) printf "z %d %d%s\n", off, len, rand() < 0.5 ? " unmap" : ""
            else if (disc) {
                a = int((off + cs - 1) / cs) * cs; b = int((off + len) / cs) * cs
                if (b > a) printf "d %d %d\n", a, b - a
            }
            if (rand() < 0.1) print "f"
        }
    }'
}

vsize() { qemu-img info -U --output=json "$1" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p'; }

# write_case NAME CREATE_OPTS SIZE CS [BASE]: ops on a vdisk-made image vs raw.
write_case() {
    local name=$1 opts=$2 size=$3 cs=$4 base=${5:-} img=$T/w-$1.qcow2 ref=$T/w-$1.raw l2 disc=1
    l2=$((cs * cs / 8))
    case $opts in *extended_l2=on*) l2=$((cs * cs / 16)) ;; esac
    case $opts in *compat=0.10*) [ -n "$base" ] && disc=0 ;; esac
    if [ -n "$base" ]; then
        qemu-img convert -O raw "$base" "$ref" && truncate -s "$size" "$ref"
        opts="$opts,backing_file=$base,backing_fmt=qcow2"
    else
        "$IO" -f raw create "$ref" "$size" || { fail "$name: raw create"; return; }
    fi
    if ! "$IO" -o "${opts#,}" create "$img" "$size" 2>"$T/.err"; then
        fail "$name: create (${opts#,}): $(cat "$T/.err")"; return
    fi
    gen_ops "$RANDOM" "$size" "$cs" "$l2" 120 "$disc" >"$T/ops"
    "$IO" -f raw script "$ref" <"$T/ops" || { fail "$name: raw script"; return; }
    if ! "$IO" script "$img" <"$T/ops" 2>"$T/.err"; then
        fail "$name: vdisk script: $(cat "$T/.err")"; cp "$T/ops" "/tmp/failed-ops-$name"; return
    fi
    ok "$name: qemu-img check clean" qemu-img check -q "$img"
    # -s would also compare allocation, which differs by design (clusters vs 4k holes)
    ok "$name: qemu-img compare with raw" qemu-img compare -q -f qcow2 -F raw "$img" "$ref"
    eq "$name: virtual size" "$(vsize "$img")" "$(stat -c %s "$ref")"
    if "$IO" dump "$img" "$T/w.got" 2>"$T/.err"; then
        same "$name: libvdisk reads back its writes" "$ref" "$T/w.got"
    else fail "$name: libvdisk reads back its writes (dump: $(cat "$T/.err"))"; fi
    rm -f "$img" "$ref" "$T/w.got"
}

qemu-img create -q -f qcow2 -o cluster_size=65536 "$T/wbase.qcow2" 48M
qemu_ops "$T/wbase.qcow2" 65536
qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4096 "$T/wbase2.qcow2" 8M
qemu_ops "$T/wbase2.qcow2" 4096
write_case v3-64k "cluster_size=64K" 64M 65536
write_case v2-64k "compat=0.10" 64M 65536
write_case c512 "cluster_size=512" 4M 512
write_case c512-rc64 "cluster_size=512,refcount_bits=64" 2M 512
write_case c1k-rc1 "cluster_size=1024,refcount_bits=1" 4M 1024
write_case c4k-rc2 "cluster_size=4096,refcount_bits=2" 8M 4096
write_case c4k-rc4 "cluster_size=4096,refcount_bits=4" 8M 4096
write_case c8k-rc8 "cluster_size=8192,refcount_bits=8" 16M 8192
write_case c16k-rc32 "cluster_size=16384,refcount_bits=32" 16M 16384
write_case c32k "cluster_size=32768" 32M 32768
write_case c128k "cluster_size=128K" 64M 131072
write_case c256k-l2 "cluster_size=256K" 128M 262144
write_case c2m "cluster_size=2M" 128M 2097152
write_case c1m-zstd "cluster_size=1M,compression_type=zstd" 64M 1048576
write_case lazy "lazy_refcounts=on" 64M 65536
write_case extl2-64k "extended_l2=on" 64M 65536
write_case extl2-16k "extended_l2=on,cluster_size=16384" 16M 16384
write_case prealloc "preallocation=metadata" 32M 65536
write_case prealloc-extl2 "preallocation=metadata,extended_l2=on,cluster_size=32K" 16M 32768
write_case l2-boundary "cluster_size=4096" 20M 4096
write_case odd-size "cluster_size=65536" 10000384 65536
write_case odd-size-extl2 "extended_l2=on,cluster_size=64K" 10000384 65536
write_case backing-v3 "cluster_size=65536" 48M 65536 "$T/wbase.qcow2"
write_case backing-v3-c4k "cluster_size=4096" 48M 4096 "$T/wbase.qcow2"
write_case backing-extl2 "extended_l2=on,cluster_size=32K" 48M 32768 "$T/wbase.qcow2"
write_case backing-v2 "compat=0.10,cluster_size=8192" 8M 8192 "$T/wbase2.qcow2"
write_case backing-512 "cluster_size=512" 8M 512 "$T/wbase2.qcow2"

# Threads racing on interleaved 4k blocks (shared clusters, L2 tables, subclusters).
for cfg in cluster_size=4096 cluster_size=65536 extended_l2=on,cluster_size=32K \
    cluster_size=512,refcount_bits=8; do
    rm -f "$T/mt.qcow2"
    "$IO" -o "$cfg" create "$T/mt.qcow2" 8M
    ok "4 threads, writes/zeroes/discards/flushes ($cfg): every block verified" \
        "$IO" mt "$T/mt.qcow2" 4 1500
    ok "4 threads ($cfg): qemu-img check clean" qemu-img check -q "$T/mt.qcow2"
done

# Write into a qemu image: compressed clusters reallocate, zero clusters fill.
img=$T/mod.qcow2
qemu-img create -q -f qcow2 "$img" 64M && qemu_ops "$img" 65536
qemu-img convert -O raw "$img" "$T/mod.raw"
printf 'w %d 4096 200\nw %d 100 201\nw %d 70000 202\nw %d 512 203\nf\n' \
    $((8 * 65536 + 4096)) $((40 * 65536 + 65000)) $((2 * 65536 + 1000)) $((12 * 65536)) >"$T/ops"
ok "writes into compressed/zero clusters: the raw reference" "$IO" -f raw script "$T/mod.raw" <"$T/ops"
ok "writes into compressed/zero clusters: libvdisk" "$IO" script "$img" <"$T/ops"
ok "writes into compressed/zero clusters: qemu-img check clean" qemu-img check -q "$img"
ok "writes into compressed/zero clusters: compare" qemu-img compare -q -F raw "$img" "$T/mod.raw"

# Internal snapshots stay intact when the active layer is written.
img=$T/snap.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4096 "$img" 16M
qemu-io -c "write -P 0x31 0 2M" -c "write -c -P 0x32 4M 64k" "$img" >/dev/null
qemu-img snapshot -c s1 "$img"
qemu-img convert -O raw "$img" "$T/snap-s1.raw"
cp "$T/snap-s1.raw" "$T/snap-now.raw"
gen_ops 7 $((16 << 20)) 4096 $((4096 * 512)) 80 1 >"$T/ops"
ok "snapshot image: the raw reference" "$IO" -f raw script "$T/snap-now.raw" <"$T/ops"
ok "snapshot image: libvdisk writes the active layer" "$IO" script "$img" <"$T/ops"
ok "snapshot image: qemu-img check clean after vdisk writes" qemu-img check -q "$img"
ok "snapshot image: active layer matches" qemu-img compare -q -F raw "$img" "$T/snap-now.raw"
qemu-img convert -l snapshot.name=s1 -O raw "$img" "$T/snap-s1.got"
same "snapshot image: snapshot s1 unchanged" "$T/snap-s1.raw" "$T/snap-s1.got"
readback "snapshot image: libvdisk reads the active layer" "$img"

# Dirty bit: a lazy-refcount image left by an abort is repaired on a read-write open.
img=$T/dirty.qcow2
qemu-img create -q -f qcow2 -o lazy_refcounts=on "$img" 16M
bash -c 'qemu-io -c "write -P 0x51 0 1M" -c "write -P 0x52 5M 64k" -c abort "$1"; :' _ "$img" \
    >/dev/null 2>&1
"$IO" info "$img" >"$T/info"
eq "dirty image: info says dirty" "$(grep ^dirty= "$T/info")" "dirty=1"
readback "dirty image reads back (read-only open)" "$img"
printf 'w 8388608 4096 9\n' | "$IO" script "$img"
ok "dirty image: clean after a read-write open" qemu-img check -q "$img"
"$IO" info "$img" >"$T/info"
eq "dirty image: dirty bit cleared" "$(grep ^dirty= "$T/info")" "dirty=0"

# Header feature bits.
setbyte() { printf "$(printf '\\x%02x' "$3")" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
img=$T/bits.qcow2
qemu-img create -q -f qcow2 "$img" 16M
qemu-io -c "write -P 0x61 0 64k" "$img" >/dev/null
cp "$img" "$T/bits0.qcow2"
setbyte "$img" 79 2 # incompatible bit 1: corrupt
fails_with "corrupt bit: read-write open refused" "corrupt" "$IO" script "$img" </dev/null
ok "corrupt bit: read-only open works" "$IO" dump "$img" /dev/null
cp "$T/bits0.qcow2" "$img"
setbyte "$img" 78 1 # incompatible bit 8: unknown
fails_with "unknown incompatible feature refused" "unknown incompatible" "$IO" dump "$img" /dev/null
cp "$T/bits0.qcow2" "$img"
setbyte "$img" 95 0x84 # autoclear bits 2 and 7: unknown
ok "unknown autoclear bits: read-only open works" "$IO" dump "$img" /dev/null
eq "unknown autoclear bits: kept by a read-only open" "$(od -An -tx1 -j95 -N1 "$img" | tr -d ' ')" "84"
printf 'f\n' | "$IO" script "$img"
eq "unknown autoclear bits: cleared by a read-write open" \
    "$(od -An -tx1 -j88 -N8 "$img" | tr -d ' \n')" "0000000000000000"
ok "autoclear cleared: qemu-img check clean" qemu-img check -q "$img"

# Backing chain cycles and depth.
qemu-img create -q -f qcow2 "$T/cyc-a.qcow2" 1M
qemu-img create -q -f qcow2 -b cyc-a.qcow2 -F qcow2 "$T/cyc-b.qcow2" 1M
qemu-img rebase -u -f qcow2 -b cyc-b.qcow2 -F qcow2 "$T/cyc-a.qcow2"
fails_with "backing cycle refused" "cycle" "$IO" dump "$T/cyc-a.qcow2" /dev/null
qemu-img rebase -u -f qcow2 -b cyc-a.qcow2 -F qcow2 "$T/cyc-a.qcow2"
fails_with "image backed by itself refused" "cycle" "$IO" dump "$T/cyc-a.qcow2" /dev/null
prev=
for i in $(seq 1 70); do
    if [ -z "$prev" ]; then qemu-img create -q -f qcow2 "$T/deep$i.qcow2" 1M
    else qemu-img create -q -f qcow2 -b "deep$prev.qcow2" -F qcow2 "$T/deep$i.qcow2" 1M; fi
    prev=$i
done
fails_with "backing chain 70 deep refused" "deeper than" "$IO" dump "$T/deep70.qcow2" /dev/null
ok "backing chain 60 deep reads" "$IO" dump "$T/deep60.qcow2" /dev/null

# Create options through vdisk, checked by qemu-img info.
"$IO" -o compat=0.10,cluster_size=4096 create "$T/o.qcow2" 8M
eq "create compat=0.10" "$(qemu-img info "$T/o.qcow2" | sed -n 's/^ *compat: //p')" "0.10"
"$IO" -o extended_l2=on,compression_type=zstd,lazy_refcounts=on,refcount_bits=8 create \
    "$T/o3.qcow2" 8M
qemu-img info "$T/o3.qcow2" >"$T/info"
ok "create: extended_l2 recorded" grep -q "extended l2: true" "$T/info"
ok "create: zstd recorded" grep -q "compression type: zstd" "$T/info"
ok "create: lazy refcounts recorded" grep -q "lazy refcounts: true" "$T/info"
ok "create: refcount bits recorded" grep -q "refcount bits: 8" "$T/info"
ok "create with options: qemu-img check clean" qemu-img check -q "$T/o3.qcow2"
# vdisk info tells the format's details as qemu-img info does (qemu-img made both).
for img in "$T/o.qcow2" "$T/o3.qcow2"; do
    qemu-img info --output=json "$img" >"$T/qi.json"
    "$VDISK" info --json "$img" >"$T/vi.json"
    python3 - "$T/qi.json" "$T/vi.json" <<'PY' && pass "info details of ${img##*/} as qemu-img's" ||
import json, sys
q = json.load(open(sys.argv[1]))["format-specific"]["data"]
v = json.load(open(sys.argv[2]))
pairs = [("compat", "compat"), ("refcount_bits", "refcount-bits"),
         ("compression_type", "compression-type"), ("lazy_refcounts", "lazy-refcounts"),
         ("extended_l2", "extended-l2")]
bad = [(k, v.get(k), q.get(qk)) for k, qk in pairs
       if qk in q and str(v.get(k)) != str(q[qk]).lower()]
sys.exit(print(bad) or 1 if bad else 0)
PY
        fail "info details of ${img##*/}: $(cat "$T/vi.json")"
done
"$VDISK" info "$T/o3.qcow2" | grep -qx "refcount bits: 8" && pass "info text: refcount bits" ||
    fail "info text: $("$VDISK" info "$T/o3.qcow2")"

fails_with "create: bad cluster size refused" "cluster_size" "$IO" -o cluster_size=1000 create \
    "$T/o4.qcow2" 8M
fails_with "create: extended_l2 on v2 refused" "compat=1.1" "$IO" \
    -o compat=0.10,extended_l2=on create "$T/o4.qcow2" 8M
fails_with "create: missing backing file refused" "backing file" "$IO" \
    -o backing_file=nonexistent.qcow2 create "$T/o4.qcow2" 8M
[ ! -e "$T/o4.qcow2" ] && pass "failed create leaves nothing" || fail "failed create left a file"

finish
