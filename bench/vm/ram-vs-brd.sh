#!/bin/bash
# SPDX-License-Identifier: MIT
# In the VM: a RAM disk through vdisk.ko (vdisk open --ram --via kmod: a memfd the
# driver serves) against the kernel's brd, both 256 MiB and filled first; fio 4k
# random read and write at QD32 (direct I/O), alternating, same boot. Prints
# "BENCH: JOB vdisk=… brd=… IOPS ratio=…" (ratio = vdisk / brd; target >= 1.0).
# The VM is emulated (TCG): only the ratios mean anything.
. /vm/lib.sh
RUNTIME=${BENCH_RUNTIME:-8}
MiB=256
ok "load vdisk.ko" load_vdisk
ok "load brd (rd_size $MiB MiB)" insmod /lib/modules/brd.ko rd_nr=1 rd_size=$((MiB * 1024))
dev=$($VDISK open --ram ${MiB}M --via kmod) || fail "open --ram --via kmod"
for d in $dev /dev/ram0; do dd if=/dev/urandom of=$d bs=1M count=$MiB oflag=direct 2>/dev/null; done
echo "vdisk scheduler: $(cat /sys/block/${dev#/dev/}/queue/scheduler); brd: $(cat /sys/block/ram0/queue/scheduler 2>/dev/null)"

# run DEV RW: IOPS of one fio run, 4k at QD32.
run() {
    fio --name=b --filename=$1 --ioengine=libaio --direct=1 --rw=$2 --bs=4k --iodepth=32 \
        --runtime=$RUNTIME --time_based --ramp_time=1 --norandommap --randrepeat=0 \
        --size=${MiB}M --minimal 2>/dev/null | awk -F';' '{ print $8 + $49 }'
}
for job in randread randwrite; do
    v1=$(run $dev $job); b1=$(run /dev/ram0 $job)
    v2=$(run $dev $job); b2=$(run /dev/ram0 $job)
    awk -v j="$job-4k-qd32" -v a="$v1" -v b="$v2" -v c="$b1" -v d="$b2" 'BEGIN {
        v = (a + b) / 2; r = (c + d) / 2;
        printf "BENCH: %-18s vdisk=%.1f brd=%.1f IOPS ratio=%.2f\n", j, v, r, r ? v / r : 0 }'
done
ok "close the RAM disk" $VDISK close $dev
ok "unload brd" rmmod brd
finish
