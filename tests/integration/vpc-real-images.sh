#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Real VHD images made elsewhere (shared/testdata/images, see its MANIFEST.md): Hyper-V,
# Virtual PC, Disk2vhd and qemu-img images read back with the manifest's size and md5; the
# hostile ones (bad footer checksum, a BAT of 2^30 entries) and hand-broken images (truncated,
# BAT entries past the end, absurd block sizes) refused with a clear error naming the file.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
DATA=$(testdata_dir) # tests/needs.sh
[ -d "$DATA" ] || skip_all testdata "$DATA is absent: the real-image checks cannot run"
cd "$T" || exit 1

unpack() { # unpack FILE: decompressed into $T, prints the path
    local out=$T/$(basename "${1%.*}")
    case $1 in
    *.bz2) bzip2 -dc "$DATA/$1" >"$out" ;;
    *.xz) xz -dc "$DATA/$1" >"$out" ;;
    esac && echo "$out"
}

# The big images of 127 GiB are all unallocated: their md5 is that of zeroes, which vdisk shows
# by mapping them as one zero run (VPC_FULL_MD5=1 reads every byte instead, some minutes).
while read -r file size md5 app; do
    img=$(unpack "$file") || { fail "$file: decompress"; continue; }
    "$IO" info "$img" >info 2>&1
    eq "$file: virtual size (creator '$app')" "$(sed -n 's/^virtual_size=//p' info)" "$size"
    eq "$file: vdisk check finds no corruption" "$(sed -n 's/^corruptions=//p' info)" 0
    "$VDISK" info "$img" | grep -q "^creator app: $app" && pass "$file: info names the creator '$app'" ||
        fail "$file: vdisk info: $("$VDISK" info "$img" 2>&1 | head -c 300)"
    if [ "$size" -gt $((1 << 30)) ] && [ -z "${VPC_FULL_MD5:-}" ]; then
        eq "$file: maps as one run of zeroes" "$("$IO" map "$img")" "0 $size 3"
        eq "$file: qemu-img maps it as zeroes too" \
            "$(qemu-img map -f vpc --output=json "$img" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(all(e["zero"] and not e["data"] for e in m))')" True
    else
        eq "$file: md5 of the contents" "$("$IO" dump "$img" - | md5sum | cut -d' ' -f1)" "$md5"
    fi
    rm -f "$img"
done <<'LIST'
hyperv2012r2-dynamic.vhd.bz2 136365211648 2d1246210de184923b5270e9fa87b04d win
virtualpc-dynamic.vhd.bz2 136363130880 31a9c6963bfcee2eb56d32d849da6785 vpc
d2v-zerofilled.vhd.bz2 263454720 b97887579deb55faac424ec9be103073 d2v
ext2.vhd.xz 4212736 3f0e360a1211f80b3f5633a68dbe98ba qemu
LIST

# The size of the Virtual PC image follows CHS, as QEMU reads it.
img=$(unpack virtualpc-dynamic.vhd.bz2)
eq "virtualpc-dynamic.vhd: size as qemu-img reads it" "$("$IO" info "$img" | sed -n 's/^virtual_size=//p')" \
    "$(qemu-img info -f vpc --output=json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')"
rm -f "$img"

# Hostile images: a clear error that names the file, never a crash, a hang or a huge allocation.
refused() { # refused DESC REGEX IMG
    local rc
    timeout 20 "$VDISK" info "$3" >/dev/null 2>"$T/.err"
    rc=$?
    if [ $rc -ne 0 ] && [ $rc -lt 124 ] && grep -Eq -- "vdisk: .*$(basename "$3").*$2" "$T/.err"; then
        pass "$1"
    else
        fail "$1 (exit $rc, stderr: $(head -c 300 "$T/.err"), wanted /$2/)"
    fi
}
img=$(unpack image.vhd.xz)
refused "image.vhd: bad footer checksum refused" "checksum" "$img"
img=$(unpack afl5.img.bz2)
refused "afl5.img: a BAT of 2^30 entries refused" "BAT of 1073741825 entries|dynamic header" "$img"
fails "afl5.img: opening it takes no more than 64 MiB" mem_capped 256 "$VDISK" info "$img"

# Hand-broken copies of a small dynamic image with one allocated block.
"$VDISK" create -f vpc good.vhd 16M >/dev/null
printf 'w 0 4096 0x5a\n' | "$IO" script good.vhd
patch_be32() { # patch_be32 FILE OFFSET VALUE [CHECKSUM-AT START LEN]: write a big-endian u32, reseal
    python3 - "$@" <<'EOF'
import struct, sys
path, off, val = sys.argv[1], int(sys.argv[2]), int(sys.argv[3], 0)
with open(path, 'r+b') as f:
    f.seek(off); f.write(struct.pack('>I', val))
    if len(sys.argv) > 4:
        ck, start, n = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
        f.seek(start); d = bytearray(f.read(n)); d[ck - start:ck - start + 4] = b'\0' * 4
        f.seek(ck); f.write(struct.pack('>I', ~sum(d) & 0xffffffff))
EOF
}
cp good.vhd t.vhd && truncate -s 300 t.vhd
refused "a VHD cut short inside its footer copy is refused" "VHD|footer" t.vhd
cp good.vhd t.vhd && truncate -s 1000 t.vhd
refused "a VHD cut short before its dynamic header ends is refused" "dynamic header" t.vhd
cp good.vhd t.vhd && truncate -s 4096 t.vhd
fails_with "a VHD cut short inside its blocks: reading the lost block fails clearly" \
    "t.vhd: VHD BAT entry 0 .*past the end of the file" "$IO" dump t.vhd /dev/null
cp good.vhd t.vhd && patch_be32 t.vhd 1536 $((0x7fffff00))
fails_with "a BAT entry past the end: reading fails clearly" "t.vhd: VHD BAT entry 0 .*past the end" \
    "$VDISK" convert -O raw t.vhd t.raw
"$VDISK" check t.vhd >/dev/null 2>"$T/.err"
eq "a BAT entry past the end: vdisk check exits 2 (corruption)" "$?" 2
grep -q "past the end of the file" "$T/.err" && pass "check names the bad BAT entry" || fail "check said: $(cat "$T/.err")"
fails_with "a BAT entry past the end: a writable open is refused" "t.vhd: VHD BAT entry 0 .*open it read-only" \
    "$IO" -f vpc script t.vhd </dev/null
cp good.vhd t.vhd && patch_be32 t.vhd 1540 2
"$VDISK" check t.vhd >/dev/null 2>"$T/.err"
eq "a block over the metadata: vdisk check exits 2" "$?" 2
printf 'w 2097152 512 0x6b\n' | "$IO" script good.vhd # a second block
cp good.vhd t.vhd && patch_be32 t.vhd 1540 $(($(python3 -c "import struct; f=open('good.vhd','rb'); f.seek(1536); print(struct.unpack('>I', f.read(4))[0])") + 1))
"$VDISK" check t.vhd >/dev/null 2>"$T/.err"
eq "two blocks that overlap: vdisk check exits 2" "$?" 2
grep -q "overlaps another block" "$T/.err" && pass "check names the overlap" || fail "check said: $(cat "$T/.err")"
cp good.vhd t.vhd && patch_be32 t.vhd $((512 + 32)) $((1 << 31)) $((512 + 36)) 512 1024
refused "a block size of 2 GiB is refused" "block size 2147483648" t.vhd
cp good.vhd t.vhd && patch_be32 t.vhd $((512 + 32)) $((1 << 20))
refused "a dynamic header with a bad checksum is refused" "dynamic header: bad checksum" t.vhd
cp good.vhd t.vhd && patch_be32 t.vhd $((512 + 32)) 12345 $((512 + 36)) 512 1024
refused "a block size that is not a power of two is refused" "block size 12345" t.vhd
cp good.vhd t.vhd && patch_be32 t.vhd $((512 + 28)) $((0x40000001)) $((512 + 36)) 512 1024
refused "a BAT larger than the file is refused" "BAT of 1073741825 entries" t.vhd
cp good.vhd t.vhd && patch_be32 t.vhd $((512 + 28)) 1 $((512 + 36)) 512 1024
refused "a BAT too small for the disk is refused" "too small" t.vhd
cp good.vhd t.vhd && patch_be32 t.vhd 60 9 64 0 512
refused "an unknown disk type is refused" "disk type 9" t.vhd
cp good.vhd t.vhd && patch_be32 t.vhd 0 0 && patch_be32 t.vhd $(($(stat -c %s t.vhd) - 512)) 0
fails_with "-f vpc of a file without any footer is refused" "t.vhd: not a VHD image" "$IO" -f vpc info t.vhd

# Old Virtual PC wrote fixed footers one byte short: refused with the repair to make.
qemu-img create -q -f vpc -o subformat=fixed f511.vhd 4M
qemu-io -f vpc -c "write -P 0x3c 0 4M" f511.vhd >/dev/null
qemu-img convert -f vpc -O raw f511.vhd f511.raw
truncate -s -1 f511.vhd
refused "a fixed VHD with a 511-byte footer is refused, saying how to repair it" "511 bytes.*append one zero byte" f511.vhd
truncate -s +1 f511.vhd
"$IO" dump f511.vhd f511.got && cmp -s f511.got f511.raw && pass "after the repair it reads as before" ||
    fail "511 repaired: dump differs"

# A bad footer copy at the end: check reports it, -r rewrites it, qemu-img still reads.
cp good.vhd t.vhd && patch_be32 t.vhd $(($(stat -c %s t.vhd) - 512 + 40)) 7
"$VDISK" check t.vhd >/dev/null 2>&1
eq "a damaged end footer: check exits 3 (harmless, as a crash leaves it)" "$?" 3
ok "check -r leaks repairs it" "$VDISK" check -r leaks t.vhd
ok "then check is clean" "$VDISK" check t.vhd
ok "and qemu-img reads the same as before" qemu-img compare -q -f vpc -F vpc t.vhd good.vhd
finish
