#!/bin/bash
# SPDX-License-Identifier: MIT
# In the VM: fio on /dev/vdiskN (vdisk.ko, direct I/O) and on the kernel's
# loop driver (direct I/O) over the same 512 MiB file, same boot, alternating;
# prints "BENCH: JOB vdisk=… loop=… ratio=…" lines (ratio = vdisk / loop).
# The VM is emulated (TCG): only the ratios mean anything.
. /vm/lib.sh
RUNTIME=${BENCH_RUNTIME:-8}
ok "load vdisk.ko" load_vdisk
dd if=/dev/urandom of=img bs=1M count=512 2>/dev/null && sync
n=$(vdisk-ctl add -d img) || fail "add vdisk"
# loop needs its own descriptor: the same file, opened by losetup
lo=$(losetup --direct-io=on -f --show img) || fail "losetup"
eq "loop uses direct I/O" "$(cat /sys/block/${lo#/dev/}/loop/dio)" 1

# run DEV RW BS QD: print IOPS (4k) or MiB/s (1M) of one fio run.
run() {
    fio --name=b --filename=$1 --ioengine=libaio --direct=1 --rw=$2 --bs=$3 --iodepth=$4 \
        --runtime=$RUNTIME --time_based --ramp_time=1 --norandommap --randrepeat=0 \
        --size=512M --minimal 2>/dev/null |
        awk -F';' -v bs=$3 '{ if (bs == "4k") print $8 + $49; else printf "%.1f\n", ($7 + $48) / 1024 }'
}
for job in "randread 4k 32" "randwrite 4k 32" "read 1M 4" "write 1M 4"; do
    set -- $job
    v1=$(run /dev/vdisk$n $1 $2 $3); l1=$(run $lo $1 $2 $3)
    v2=$(run /dev/vdisk$n $1 $2 $3); l2=$(run $lo $1 $2 $3)
    unit=IOPS; [ $2 = 1M ] && unit=MiB/s
    awk -v j="$1-$2-qd$3" -v u=$unit -v a="$v1" -v b="$v2" -v c="$l1" -v d="$l2" 'BEGIN {
        v = (a + b) / 2; l = (c + d) / 2;
        printf "BENCH: %-18s vdisk=%.1f loop=%.1f %s ratio=%.2f\n", j, v, l, u, l ? v / l : 0 }'
done
losetup -d $lo
ok "remove vdisk" vdisk-ctl remove $n
finish
