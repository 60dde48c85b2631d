#!/bin/bash
# SPDX-License-Identifier: MIT
# --via ublk under fio: crc32c verify at QD32 over two hardware queues, random
# 4k writes and mixed sizes up to 1 MiB (split at the device's 512 KiB limit),
# raw and qcow2; then the image read back by vdisk's own reader matches the
# device. Out-of-order completion is the normal case here (32 in flight).
# The kernel caps the queues at the number of CPUs: two queues need
# VM_SMP=2 (tests/vm/run's default is one vCPU, then one queue).
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
[ -e /dev/ublk-control ] || { fail "ublk_drv not loaded"; finish; }
at_exit "$VDISK close --all"
export VDISK_UBLK_QUEUES=2 VDISK_UBLK_DEPTH=64
NQ=$(grep -c ^processor /proc/cpuinfo)
[ $NQ -gt 2 ] && NQ=2

for img in f.img f.qcow2; do
    dev=$($VDISK open --via ublk "$img" 64 2>$T/err) || { fail "$img: open: $(cat $T/err)"; continue; }
    name=${dev#/dev/}
    # the server logs its queues just after it said it is up
    ok "$img: the server runs $NQ hardware queue(s)" sh -c "for i in \$(seq 20); do
        grep -q '$dev: $NQ queues of depth 64' $VDISK_RUN_DIR/*.ublk.log && exit 0; sleep 0.1; done; exit 1"
    eq "$img: max request 512 KiB" "$(cat /sys/block/$name/queue/max_sectors_kb)" 512
    ok "$img: fio 4k randwrite QD32 crc32c verify" fio --name=v --filename=$dev --direct=1 \
        --ioengine=io_uring --iodepth=32 --rw=randwrite --bs=4k --size=32M --verify=crc32c \
        --verify_fatal=1 --do_verify=1 --numjobs=1 --output=$T/fio1.out
    ok "$img: fio mixed sizes (4k-1M) randrw QD32 crc32c verify" fio --name=m --filename=$dev \
        --direct=1 --ioengine=libaio --iodepth=32 --rw=randwrite --bsrange=4k-1M --size=48M \
        --offset=16M --verify=crc32c --verify_fatal=1 --do_verify=1 --output=$T/fio2.out
    ok "$img: fio with fsync and discard (trim) QD16" fio --name=t --filename=$dev --direct=1 \
        --ioengine=io_uring --iodepth=16 --rw=randtrim --bs=64k --size=8M --offset=56M \
        --output=$T/fio3.out
    ok "$img: fio write with fua-like fsync=8" fio --name=s --filename=$dev --direct=1 \
        --ioengine=psync --rw=write --bs=16k --size=4M --fsync=8 --output=$T/fio4.out
    dd if=$dev bs=1M count=64 iflag=direct 2>/dev/null | sha256sum >$T/dev.sum
    ok "$img: close" $VDISK close $dev
    dev=$($VDISK open --via ublk "$img" 2>$T/err) || { fail "$img: reopen: $(cat $T/err)"; continue; }
    dd if=$dev bs=1M count=64 iflag=direct 2>/dev/null | sha256sum >$T/dev2.sum
    ok "$img: same bytes after close and reopen" cmp $T/dev.sum $T/dev2.sum
    ok "$img: close again" $VDISK close $dev
    if [ $img = f.qcow2 ]; then
        ok "$img: qemu-img check clean" qemu-img check -q $img
        qemu-img convert -O raw $img $T/f.raw && sha256sum <$T/f.raw >$T/qemu.sum
        ok "$img: qemu-img reads the bytes the device had" cmp $T/dev.sum $T/qemu.sum
    fi
done
finish
