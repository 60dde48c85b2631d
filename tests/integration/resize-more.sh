#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk resize of the subformats qemu-img resize refuses (it resizes no VDI and no VHD):
# static VDI (the file and the block map grow), differencing VDI and VHD (grow only:
# new blocks read as zeroes past the parent's end). Each checked against a raw
# reference grown the same way (qemu-img compare), the size, qemu-img check (static
# vdi) or vdisk check, and writes across the old end read back. qemu opens no
# differencing VDI or VHD: those are read and written through vdisk serve. ~5 s.
. "$(dirname "$0")/../lib.sh"

vsize() { "$VDISK" info "$1" | sed -n 's/^virtual size: //p'; }

# served IMG CMD...: CMD, its @URI@ replaced, on IMG served by vdisk serve.
served() {
    local img=$1 sock=$T/s.sock pid rc a args=()
    shift
    "$VDISK" serve --socket "$sock" "$img" 2>"$T/serve.log" &
    pid=$!
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
    for a in "$@"; do args+=("${a//@URI@/nbd+unix:///?socket=$sock}"); done
    "${args[@]}"
    rc=$?
    kill -TERM $pid && wait $pid || rc=1
    return $rc
}

# grown NAME IMG FMT REF SIZE WANT: IMG grown to SIZE is WANT bytes (default SIZE) and
# agrees with the raw REF grown too, before and after a write across the old end.
grown() {
    local name=$1 img=$2 fmt=$3 ref=$4 size=$5 want=${6:-$5} open=(-f "$3" "$2")
    ok "$name: grow to $size" "$VDISK" resize -f "$fmt" "$img" "$size"
    eq "$name: size" "$(vsize "$img" "$fmt")" "$want"
    qemu-img resize -q -f raw "$ref" "$want"
    case ${img##*/} in c.*) open=(-f raw @URI@) ;; esac # a child: through NBD
    run() { if [ "${open[2]}" = @URI@ ]; then served "$img" "$@"; else "$@"; fi; }
    ok "$name: qemu-img compare with the raw reference" run qemu-img compare "${open[@]}" -F raw "$ref"
    ok "$name: qemu-io writes across the old end" run qemu-io -c 'write -P 0xee 9M 2M' "${open[@]}"
    qemu-io -f raw -c "write -P 0xee 9M 2M" "$ref" >/dev/null
    ok "$name: and it agrees after that" run qemu-img compare "${open[@]}" -F raw "$ref"
}

# static VDI: all blocks allocated in order, the file as long as the disk
a=$T/s.vdi
qemu-img create -q -f vdi -o static=on "$a" 10M
qemu-io -f vdi -c 'write -P 0xab 1M 1M' -c 'write -P 0xcd 9M 64k' "$a" >/dev/null
qemu-img convert -f vdi -O raw "$a" "$T/s.raw"
grown "vdi static" "$a" vdi "$T/s.raw" 30M $((30 << 20))
ok "vdi static: qemu-img check clean" qemu-img check -q "$a"
eq "vdi static: still static, every block allocated" \
    "$("$VDISK" info "$a" | grep -E '^(image type|blocks allocated):' | tr '\n' ' ')" \
    "image type: static blocks allocated: 30 "
[ "$(stat -c %s "$a")" -ge $((30 << 20)) ] && pass "vdi static: the file holds the new blocks" ||
    fail "vdi static: file is $(stat -c %s "$a") bytes"
fails_with "vdi static: shrink refused clearly" 's.vdi: a static VDI image is not shrunk' \
    "$VDISK" resize --shrink "$a" 5M

# differencing VDI over a dynamic parent
p=$T/p.vdi c=$T/c.vdi
qemu-img create -q -f vdi "$p" 10M
qemu-io -f vdi -c 'write -P 0xab 1M 1M' -c 'write -P 0xcd 9M 64k' "$p" >/dev/null
"$VDISK" create -f vdi -o backing_file=p.vdi "$c" 0 >/dev/null || fail "vdi: create a differencing child"
served "$c" qemu-io -f raw -c 'write -P 0x77 4M 64k' @URI@ >/dev/null
"$VDISK" convert -O raw "$c" "$T/c.raw"
psum=$(sha256sum <"$p")
grown "vdi differencing" "$c" vdi "$T/c.raw" 20M $((20 << 20))
ok "vdi differencing: vdisk check clean" "$VDISK" check -q "$c"
eq "vdi differencing: the parent is unchanged" "$(sha256sum <"$p")" "$psum"
fails_with "vdi differencing: shrink refused clearly" 'c.vdi: a differencing VDI image is not shrunk' \
    "$VDISK" resize --shrink "$c" 12M

# differencing VHD over a dynamic parent; the size rounds to CHS as qemu-img create rounds it
p=$T/p.vhd c=$T/c.vhd
qemu-img create -q -f vpc -o subformat=dynamic "$p" 10M
qemu-io -f vpc -c 'write -P 0xab 1M 1M' -c 'write -P 0xcd 9M 64k' "$p" >/dev/null
"$VDISK" create -f vpc -o backing_file=p.vhd "$c" 0 >/dev/null || fail "vpc: create a differencing child"
served "$c" qemu-io -f raw -c 'write -P 0x77 4M 64k' @URI@ >/dev/null
"$VDISK" convert -O raw "$c" "$T/cv.raw"
psum=$(sha256sum <"$p")
qemu-img create -q -f vpc "$T/r.vhd" 3G
grown "vpc differencing" "$c" vpc "$T/cv.raw" 3G "$(qemu-img info -f vpc --output=json "$T/r.vhd" |
    sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')"
ok "vpc differencing: vdisk check clean" "$VDISK" check -q -f vpc "$c"
eq "vpc differencing: the parent is unchanged" "$(sha256sum <"$p")" "$psum"
fails_with "vpc differencing: shrink refused clearly" 'c.vhd: a differencing VHD is not shrunk' \
    "$VDISK" resize --shrink -f vpc "$c" 12M
finish
