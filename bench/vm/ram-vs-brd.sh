#!/bin/bash
# SPDX-License-Identifier: MIT
# In the VM: a RAM disk through vdisk.ko (vdisk open --ram --via kmod: the
# module's own page store, kmod/ram.c) against the kernel's brd, both 256 MiB
# and filled first; fio 4k random read and write at QD32 and 1 MiB sequential
# read and write at QD8 (direct I/O), alternating, same boot. Prints
# "BENCH: JOB vdisk=… brd=… IOPS|MB/s ratio=…" (ratio = vdisk / brd; target >= 1.0).
# The VM is emulated (TCG): only the ratios mean anything.
. /vm/lib.sh
RUNTIME=${BENCH_RUNTIME:-8}
MiB=256
ok "load vdisk.ko" load_vdisk
ok "load brd (rd_size $MiB MiB)" insmod /lib/modules/brd.ko rd_nr=1 rd_size=$((MiB * 1024))
dev=$($VDISK open --ram ${MiB}M --via kmod) || fail "open --ram --via kmod"
[ -e /sys/block/${dev#/dev/}/vdisk/ram_bytes ] && echo "vdisk: the module's page store" ||
    echo "vdisk: a memfd through the file path (vdisk.ko without RAM disks)"
for d in $dev /dev/ram0; do dd if=/dev/urandom of=$d bs=1M count=$MiB oflag=direct 2>/dev/null; done
echo "vdisk scheduler: $(cat /sys/block/${dev#/dev/}/queue/scheduler); brd: $(cat /sys/block/ram0/queue/scheduler 2>/dev/null)"

# run DEV RW BS QD: IOPS (4k) or MB/s (1M) of one fio run.
run() {
    fio --name=b --filename=$1 --ioengine=libaio --direct=1 --rw=$2 --bs=$3 --iodepth=$4 \
        --runtime=$RUNTIME --time_based --ramp_time=1 --norandommap --randrepeat=0 \
        --size=${MiB}M --minimal 2>/dev/null |
        awk -F';' -v bs=$3 '{ print bs == "4k" ? $8 + $49 : ($7 + $48) * 1024 / 1e6 }'
}
for job in randread:4k:32 randwrite:4k:32 read:1M:8 write:1M:8; do
    IFS=: read -r rw bs qd <<<"$job"
    v1=$(run $dev $rw $bs $qd); b1=$(run /dev/ram0 $rw $bs $qd)
    v2=$(run $dev $rw $bs $qd); b2=$(run /dev/ram0 $rw $bs $qd)
    awk -v j="$rw-$bs-qd$qd" -v u=$([ $bs = 4k ] && echo IOPS || echo MB/s) \
        -v a="$v1" -v b="$v2" -v c="$b1" -v d="$b2" 'BEGIN {
        v = (a + b) / 2; r = (c + d) / 2;
        printf "BENCH: %-18s vdisk=%.1f brd=%.1f %s ratio=%.2f\n", j, v, r, u, r ? v / r : 0 }'
done
ok "close the RAM disk" $VDISK close $dev
ok "unload brd" rmmod brd
finish
