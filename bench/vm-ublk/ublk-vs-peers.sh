#!/bin/bash
# SPDX-License-Identifier: MIT
# In the VM (bench/vm-ublk.sh): fio on vdisk's ublk device and on its peers,
# same files, same boot, alternating contenders job by job, page cache dropped
# before each; prints
# "BENCH: PAIR JOB ublk=… peer=… UNIT ratio=…" (ratio = ublk / peer).
#   raw:   ublk (vdisk, raw, O_DIRECT) vs loop (direct I/O)         target >= 1.0
#   qcow2: ublk vs qemu-nbd --cache=none --aio=native + kernel NBD  target >= 3 on 4k
#   qcow2: ublk vs vdisk's own NBD way (--via nbd)                  reported
#   ceiling: ublk-null (reads answered without file I/O: the copy and the
#            round trips of 6.12's copy mode alone) vs loop, read jobs only
#   ublk-nofix: ublk on raw without registered buffers (what they save)
# With N vCPUs (BENCH_SMP), ublk gets N queues and fio N jobs (QD/N each,
# each on its own 1/N of the disk) for every contender.
# Per job also "cs/io": context switches of the whole guest per I/O (approx.).
. /vm/lib.sh
RUNTIME=${BENCH_RUNTIME:-8}
ROUNDS=${BENCH_ROUNDS:-2}
SIZE_MB=${BENCH_SIZE_MB:-512}
CONTENDERS=${BENCH_CONTENDERS:-ublk-raw loop ublk-qcow2 qemu-nbd vdisk-nbd ublk-null}
NJ=$(nproc)
JOBS=("randread 4k 32" "randwrite 4k 32" "read 1M 4" "write 1M 4")
export VDISK_UBLK_QUEUES=$NJ
at_exit "$VDISK close --all; qemu-nbd -d /dev/nbd15 >/dev/null 2>&1; losetup -D"
command -v qemu-nbd >/dev/null || { fail "no qemu-nbd in the VM"; finish; }
mkdir -p /var/lock # qemu-nbd -c keeps its socket there
echo "BENCH: guest $NJ vCPU(s); fio numjobs=$NJ; contenders: $CONTENDERS"

dd if=/dev/urandom of=img.raw bs=1M count=$SIZE_MB 2>/dev/null && sync
ok "make the qcow2 image (every cluster allocated)" qemu-img convert -O qcow2 img.raw img.qcow2
declare -A sum cs

# run DEV RW BS QD: "VALUE CS" — IOPS (4k) or MiB/s (1M), and guest context switches per I/O.
run() {
    local c0 c1 out
    c0=$(awk '$1 == "ctxt" { print $2 }' /proc/stat)
    out=$(fio --name=b --filename=$1 --ioengine=libaio --direct=1 --rw=$2 --bs=$3 \
        --iodepth=$(($4 / NJ > 0 ? $4 / NJ : 1)) --numjobs=$NJ --group_reporting \
        --size=$((SIZE_MB / NJ))M --offset_increment=$((SIZE_MB / NJ))M \
        --runtime=$RUNTIME --time_based --ramp_time=1 --norandommap --randrepeat=0 \
        --minimal 2>/dev/null)
    c1=$(awk '$1 == "ctxt" { print $2 }' /proc/stat)
    # minimal format: read KiB 6, IOPS 8; write KiB 47, IOPS 49; KiB/s 7 and 48
    echo "$out" | awk -F';' -v bs=$3 -v cs=$((c1 - c0)) -v t=$((RUNTIME + 1)) '{
        iops = $8 + $49; v = bs == "4k" ? iops : ($7 + $48) / 1024
        printf "%.1f %.2f\n", v, iops ? cs / (iops * t) : 0 }'
}
# up WHO: open WHO's device, with the guest's page cache dropped (every contender
# starts cold; a cached image costs direct writes a page invalidation); prints it.
up() {
    sync; echo 3 >/proc/sys/vm/drop_caches
    case $1 in
    ublk-raw) $VDISK open --via ublk -f raw img.raw ;;
    ublk-null) VDISK_TEST_UBLK_NULL_READ=1 $VDISK open --via ublk -f raw img.raw ;;
    ublk-nofix) VDISK_TEST_UBLK_NO_FIXED=1 $VDISK open --via ublk -f raw img.raw ;;
    loop) losetup --direct-io=on -f --show img.raw ;;
    ublk-qcow2) $VDISK open --via ublk img.qcow2 ;;
    qemu-nbd) qemu-nbd -f qcow2 --cache=none --aio=native -c /dev/nbd15 img.qcow2 && sleep 1 &&
        echo /dev/nbd15 ;;
    vdisk-nbd) $VDISK open --via nbd img.qcow2 ;;
    esac
}
# down WHO DEV: close it.
down() {
    case $1 in
    ublk-raw | ublk-null | ublk-nofix) $VDISK close img.raw ;;
    loop) losetup -d $2 ;;
    qemu-nbd) qemu-nbd -d $2 >/dev/null; sleep 1 ;;
    *) $VDISK close img.qcow2 ;;
    esac
}
# Alternate: each job runs on every contender in turn, so that a slow spell of
# the host (TCG) falls on all of them, not on one.
for r in $(seq $ROUNDS); do
    for j in "${JOBS[@]}"; do
        for who in $CONTENDERS; do
            case $who/$j in ublk-null/*write*) continue ;; esac
            dev=$(up $who) || { fail "open $who"; continue; }
            [ $r = 1 ] && [ "$j" = "${JOBS[0]}" ] &&
                echo "BENCH: $who $dev max_sectors_kb=$(cat /sys/block/${dev#/dev/}/queue/max_sectors_kb)"
            set -- $(run $dev $j)
            down $who $dev
            sum[$who,$j]=$(awk -v a="${sum[$who,$j]:-0}" -v b="${1:-0}" 'BEGIN { print a + b }')
            cs[$who,$j]=$(awk -v a="${cs[$who,$j]:-0}" -v b="${2:-0}" 'BEGIN { print a + b }')
        done
    done
done
# The copy that copy mode adds (6.12 has no ublk zero copy; 6.15 has): this
# guest's memcpy rate, page cache to user, 1 MiB at a time, from tmpfs.
mkdir -p /dev/shm && mount -t tmpfs -o size=300M tmpfs /dev/shm 2>/dev/null
dd if=/dev/zero of=/dev/shm/copy bs=1M count=256 2>/dev/null
copy=$(dd if=/dev/shm/copy of=/dev/null bs=1M 2>&1 | awk '/copied/ { v = $(NF-1); u = $NF;
    if (u ~ /^GB/) v *= 1000; else if (u ~ /^kB/) v /= 1000; print v * 1000000 / 1048576 }')
rm -f /dev/shm/copy
echo "BENCH: guest memcpy ${copy:-?} MiB/s (one extra copy per byte caps 1M ublk near 1/(1/loop + 1/memcpy))"
for pair in "ublk-raw loop" "ublk-qcow2 qemu-nbd" "ublk-qcow2 vdisk-nbd" "ublk-null loop" \
    "ublk-nofix loop" "ublk-raw ublk-nofix"; do
    set -- $pair
    case " $CONTENDERS " in *" $1 "*) ;; *) continue ;; esac
    case " $CONTENDERS " in *" $2 "*) ;; *) continue ;; esac
    for j in "${JOBS[@]}"; do
        [ -n "${sum[$1,$j]:-}" ] && [ -n "${sum[$2,$j]:-}" ] || continue
        unit=IOPS; case $j in *1M*) unit=MiB/s ;; esac
        awk -v p="$1/$2" -v j="$(echo $j | tr ' ' -)" -v u=$unit -v a="${sum[$1,$j]}" \
            -v b="${sum[$2,$j]}" -v ca="${cs[$1,$j]}" -v cb="${cs[$2,$j]}" -v n=$ROUNDS 'BEGIN {
            printf "BENCH: %-22s %-18s ublk=%.1f peer=%.1f %s ratio=%.2f cs/io %.2f vs %.2f\n",
                p, j, a / n, b / n, u, b ? a / b : 0, ca / n, cb / n }'
    done
done
finish
