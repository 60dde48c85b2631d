#!/bin/bash
# SPDX-License-Identifier: MIT
# fio with crc32c verification: random read/write at QD32 over 256 MiB, on a
# disk with direct I/O and on one with buffered I/O.
. /vm/lib.sh
ok "load vdisk.ko" load_vdisk
for mode in direct buffered; do
    truncate -s 256M $mode.img
    flag=; [ $mode = direct ] && flag=-d
    n=$(vdisk-ctl add $flag $mode.img) || { fail "add $mode"; continue; }
    if fio --name=verify --filename=/dev/vdisk$n --ioengine=libaio --direct=1 --iodepth=32 \
        --rw=randrw --bs=4k --bsrange=4k-64k --size=256M --verify=crc32c --verify_fatal=1 \
        --do_verify=1 --randrepeat=1 --output=fio-$mode.log >/dev/null 2>&1 &&
        ! grep -qi 'verify.*bad\|crc32c.*mismatch' fio-$mode.log; then
        pass "fio randrw QD32 256 MiB crc32c verify ($mode): no mismatch"
    else
        fail "fio verify ($mode): $(grep -i 'err\|bad\|mismatch' fio-$mode.log | head -3)"
    fi
    ok "remove $mode disk" vdisk-ctl remove $n
done
finish
