#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A writable direct-I/O open drops the image file's clean cached pages (left by
# whoever wrote it): a direct write over a cached page cannot be done without
# blocking, so io_uring would hand every such write to a kernel worker (the
# ublk server's writes ran at a third of its reads). fincore is the oracle.
# Buffered and read-only opens leave the cache alone.
. "$(dirname "$0")/../lib.sh"
command -v fincore >/dev/null || skip_all util-linux "no fincore"
res() { fincore -n -b -o RES "$1" | tr -d ' '; }
for fmt in raw qcow2; do
    img=$T/c.$fmt
    ok "$fmt: make a 4 MiB image" qemu-img create -q -f $fmt "$img" 4M
    ok "$fmt: fill it" qemu-io -f $fmt -c "write -P 0x5a 0 4M" "$img"
    ok "$fmt: cache it" dd if="$img" of=/dev/null bs=1M status=none
    sync "$img"
    [ "$(res "$img")" -gt 0 ] && pass "$fmt: the file is cached" || fail "$fmt: not cached: $(res "$img")"
    ok "$fmt: buffered write" "$VDISK" bench -q -t writeback -w -c 16 -f $fmt "$img"
    sync "$img"
    [ "$(res "$img")" -gt 0 ] && pass "$fmt: a buffered open keeps the cache" || fail "$fmt: buffered open dropped it"
    ok "$fmt: direct read-only" "$VDISK" bench -q -t none -c 16 -f $fmt "$img"
    [ "$(res "$img")" -gt 0 ] && pass "$fmt: a read-only open keeps the cache" || fail "$fmt: read-only open dropped it"
    ok "$fmt: direct write" "$VDISK" bench -q -t none -w -c 16 -f $fmt "$img"
    # qcow2 reads its metadata (header, L1, L2, refcounts) through the cache again
    n=$(res "$img")
    max=0; [ $fmt = qcow2 ] && max=65536
    [ "$n" -le $max ] && pass "$fmt: a writable direct open dropped the cache ($n bytes left)" ||
        fail "$fmt: $n bytes still cached after a writable direct open"
    ok "$fmt: the data is intact" qemu-io -f $fmt -c "read -P 0x5a 65536 4128768" "$img"
    [ $fmt = qcow2 ] && ok "qcow2: qemu-img check" qemu-img check -q "$img"
done
finish
