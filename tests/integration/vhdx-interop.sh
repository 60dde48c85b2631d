#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# VHDX against QEMU and 7-Zip: images qemu-img makes (every block size from
# 1 MiB to 256 MiB, both logical sector sizes, fixed and dynamic, several log
# sizes) and qemu-io writes (patterns, zeroes, discards across block
# boundaries) read back through libvdisk as `qemu-img convert -O raw` reads
# them; images libvdisk makes and writes (random writes, zeroes and discards
# across block boundaries, every create option) pass `qemu-img check`, equal
# a raw image given the same writes (`qemu-img compare`), and 7-Zip reads
# them alike. Runtime: about a minute.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
command -v qemu-img >/dev/null || { fail "qemu-img missing: install qemu-utils"; finish; }
[ -x "$IO" ] || { fail "$IO not built"; finish; }
cd "$T" || exit 1

same() {
    if cmp -s "$2" "$3"; then pass "$1"; else fail "$1 ($(cmp "$2" "$3" 2>&1 | head -1))"; fi
}

# readback DESC IMG: libvdisk reads IMG as qemu-img does.
readback() {
    rm -f "$T/rb.want" "$T/rb.got"
    if qemu-img convert -U -f vhdx -O raw "$2" "$T/rb.want" 2>"$T/.err" &&
        "$IO" dump "$2" "$T/rb.got" 2>>"$T/.err"; then
        same "$1" "$T/rb.want" "$T/rb.got"
    else
        fail "$1 (convert or dump failed: $(head -c 300 "$T/.err"))"
    fi
    rm -f "$T/rb.want" "$T/rb.got"
}

# qemu_ops IMG BS: qemu-io writes around block boundaries (patterns, unaligned, zeroes, discards).
qemu_ops() {
    local img=$1 bs=$2
    qemu-io -f vhdx "$img" \
        -c "write -P 0x11 0 65536" \
        -c "write -P 0x22 $((bs - 4096)) 8192" \
        -c "write -P 0x33 $((bs * 2 - 512)) 1536" \
        -c "write -P 0x44 $((bs * 3 + 1024)) 3072" \
        -c "write -z $((bs - 2048)) 4096" \
        -c "write -P 0x55 $((bs * 4 - 65536)) 131072" \
        -c "discard $((bs * 4 - 32768)) 65536" \
        -c "write -z $((bs * 5)) $((bs < 4194304 ? bs : 4194304))" \
        -c "write -P 0x66 $((bs * 6 + 4096)) 8192" >/dev/null
}

# Read: images made by qemu-img create + qemu-io. (qemu-img makes and opens 512-byte logical
# sectors only; 4096-byte ones are checked below against 7-Zip and a raw model.)
while read -r name opts bs size; do
    img=$T/r-$name.vhdx
    qemu-img create -q -f vhdx -o "$opts" "$img" "$size" || { fail "create $name"; continue; }
    if ! qemu_ops "$img" "$bs"; then fail "qemu-io $name"; rm -f "$img"; continue; fi
    readback "read qemu image $name ($opts)" "$img"
    "$IO" info "$img" >"$T/info" 2>&1
    eq "$name: block size in info" "$(grep ^cluster_size= "$T/info")" "cluster_size=$bs"
    rm -f "$img"
done <<'EOF'
b1m block_size=1M 1048576 64M
b2m block_size=2M 2097152 64M
b4m block_size=4M,log_size=4M 4194304 64M
b8m block_size=8M,block_state_zero=off 8388608 128M
b16m block_size=16M,log_size=8M 16777216 256M
b32m block_size=32M 33554432 512M
b64m block_size=64M,log_size=2M 67108864 1G
b128m block_size=128M,log_size=16M 134217728 2G
b256m block_size=256M 268435456 2G
fixed-1m subformat=fixed,block_size=1M 1048576 16M
fixed-8m subformat=fixed,block_size=8M,log_size=2M 8388608 64M
fixed-nozero subformat=fixed,block_size=2M,block_state_zero=off 2097152 32M
auto-size log_size=3M 8388608 64M
EOF

# Read: a size that is not a multiple of the block size.
qemu-img create -q -f vhdx -o block_size=1M "$T/odd.vhdx" 10000384
qemu-io -f vhdx -c "write -P 0x71 9900032 100352" -c "write -P 0x72 1048064 1024" \
    "$T/odd.vhdx" >/dev/null
readback "read qemu image of 10000384 bytes" "$T/odd.vhdx"

# Write: vdisk writes; qemu-img check clean; compare with a raw image given the same ops.
# gen_ops SEED SIZE BS COUNT: random writes, zeroes, whole-block discards near block boundaries.
gen_ops() {
    awk -v seed="$1" -v size="$2" -v bs="$3" -v n="$4" 'BEGIN {
        srand(seed)
        for (i = 0; i < n; i++) {
            r = rand()
            if (r < 0.6) base = int(rand() * size / bs) * bs
            else base = int(rand() * size)
            off = base + int(rand() * 131072) - 65536
            off -= off % 512
            if (off < 0) off = 0
            len = (int(rand() * 512) + 1) * 512
            if (rand() < 0.1) len = bs + 4096
            if (off + len > size) len = size - off
            if (len <= 0) continue
            k = rand()
            if (k < 0.7) printf "w %d %d %d\n", off, len, 1 + int(rand() * 250)
            else if (k < 0.85) printf "z %d %d%s\n", off, len, rand() < 0.5 ? " unmap" : ""
            else {
                a = int(off / bs) * bs; b = a + bs * (1 + int(rand() * 2))
                if (b > size) b = int(size / bs) * bs
                if (b > a) printf "d %d %d\n", a, b - a
            }
            if (rand() < 0.1) print "f"
        }
    }'
}

vsize() { qemu-img info -U --output=json "$1" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p'; }

# write_case NAME CREATE_OPTS SIZE BS: ops on a vdisk-made image vs raw.
write_case() {
    local name=$1 opts=$2 size=$3 bs=$4 img=$T/w-$1.vhdx ref=$T/w-$1.raw
    "$IO" -f raw create "$ref" "$size" || { fail "$name: raw create"; return; }
    if ! "$IO" -f vhdx -o "$opts" create "$img" "$size" 2>"$T/.err"; then
        fail "$name: create ($opts): $(cat "$T/.err")"; return
    fi
    gen_ops "$RANDOM" "$size" "$bs" 150 >"$T/ops"
    "$IO" -f raw script "$ref" <"$T/ops" || { fail "$name: raw script"; return; }
    if ! "$IO" -f vhdx script "$img" <"$T/ops" 2>"$T/.err"; then
        fail "$name: vdisk script: $(cat "$T/.err")"; cp "$T/ops" "/tmp/failed-ops-$name"; return
    fi
    case $opts in
    *logical_sector_size=4096*) # QEMU refuses these (ENOTSUP): 7-Zip is the outside reader
        ok "$name: vdisk check clean" "$IO" check "$img" none ;;
    *)
        ok "$name: qemu-img check clean" qemu-img check -q -f vhdx "$img"
        ok "$name: qemu-img compare with raw" qemu-img compare -q -f vhdx -F raw "$img" "$ref"
        eq "$name: virtual size" "$(vsize "$img")" "$(stat -c %s "$ref")" ;;
    esac
    if "$IO" dump "$img" "$T/w.got" 2>"$T/.err"; then
        same "$name: libvdisk reads back its writes" "$ref" "$T/w.got"
    else fail "$name: libvdisk reads back its writes (dump: $(cat "$T/.err"))"; fi
    if command -v 7zz >/dev/null; then # 7-Zip skips the log: ours is empty after a close
        if 7zz x -so -tvhdx "$img" >"$T/w.7z" 2>"$T/.err"; then
            same "$name: 7-Zip reads it alike" "$ref" "$T/w.7z"
        else fail "$name: 7zz x: $(head -c 300 "$T/.err")"; fi
    else
        fail "$name: 7zz missing: install 7zip (scripts/install-deps test)"
    fi
    eq "$name: log clean after close" "$("$VDISK" info "$img" | grep '^log state:')" "log state: clean"
    rm -f "$img" "$ref" "$T/w.got" "$T/w.7z"
}

write_case dyn-1m "block_size=1M" 64M 1048576
write_case dyn-2m-4k "block_size=2M,logical_sector_size=4096" 64M 2097152
write_case dyn-8m-nozero "block_size=8M,block_state_zero=off" 128M 8388608
write_case dyn-32m-log4m "block_size=32M,log_size=4M" 256M 33554432
write_case dyn-256m "block_size=256M" 1G 268435456
write_case fixed-1m "subformat=fixed,block_size=1M" 32M 1048576
write_case fixed-4m-4k "subformat=fixed,block_size=4M,logical_sector_size=4096" 64M 4194304
write_case dyn-auto "log_size=2M" 64M 8388608
write_case odd-size "block_size=1M" 10000384 1048576

# vdisk writes over images qemu-img made (log replay on a writable open, in-place writes)
qemu-img create -q -f vhdx -o block_size=2M "$T/q.vhdx" 64M
qemu_ops "$T/q.vhdx" 2097152
qemu-img convert -f vhdx -O raw "$T/q.vhdx" "$T/q.raw"
gen_ops 7 67108864 2097152 100 >"$T/ops"
"$IO" -f raw script "$T/q.raw" <"$T/ops"
ok "vdisk writes a qemu-made image" "$IO" -f vhdx script "$T/q.vhdx" <"$T/ops"
ok "qemu-made image written by vdisk: qemu-img check clean" qemu-img check -q "$T/q.vhdx"
ok "qemu-made image written by vdisk: compare with raw" qemu-img compare -q -F raw "$T/q.vhdx" "$T/q.raw"
# qemu-io writes after vdisk: both tools keep working on the same file
qemu-io -f vhdx -c "write -P 0x99 3M 1M" "$T/q.vhdx" >/dev/null
qemu-io -f raw -c "write -P 0x99 3M 1M" "$T/q.raw" >/dev/null
readback "vdisk reads what qemu-io wrote after vdisk" "$T/q.vhdx"
ok "vdisk check: clean" "$IO" check "$T/q.vhdx" none

# Threads racing on interleaved 4k blocks (allocation, zeroes, discards, flushes)
for cfg in block_size=1M block_size=1M,logical_sector_size=4096; do
    rm -f "$T/mt.vhdx"
    "$IO" -f vhdx -o "$cfg" create "$T/mt.vhdx" 8M
    ok "4 threads, writes/zeroes/discards/flushes ($cfg): every block verified" \
        "$IO" mt "$T/mt.vhdx" 4 1500
    case $cfg in
    *4096*) ok "4 threads ($cfg): vdisk check clean" "$IO" check "$T/mt.vhdx" none ;;
    *) ok "4 threads ($cfg): qemu-img check clean" qemu-img check -q "$T/mt.vhdx" ;;
    esac
done

# vdisk convert both ways
qemu-img create -q -f qcow2 "$T/c.qcow2" 48M
qemu-io -f qcow2 -c "write -P 0x5a 1M 5M" -c "write -P 0x5b 30M 64k" "$T/c.qcow2" >/dev/null
ok "vdisk convert qcow2 -> vhdx" "$VDISK" convert -O vhdx -o block_size=4M "$T/c.qcow2" "$T/c.vhdx"
ok "converted: qemu-img check clean" qemu-img check -q "$T/c.vhdx"
ok "converted: qemu-img compare with the qcow2" qemu-img compare -q "$T/c.vhdx" "$T/c.qcow2"
ok "vdisk convert vhdx -> raw" "$VDISK" convert -O raw "$T/c.vhdx" "$T/c.raw"
ok "converted back: equal" qemu-img compare -q -F raw "$T/c.qcow2" "$T/c.raw"
"$VDISK" info --json "$T/c.vhdx" >"$T/info.json" 2>&1
ok "info --json is JSON with VHDX details" python3 -c '
import json,sys; d=json.load(open(sys.argv[1])); s=json.dumps(d)
assert "block_size" in s and "log_state" in s and "creator" in s, s' "$T/info.json"
finish
