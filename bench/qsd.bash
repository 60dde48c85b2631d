# SPDX-License-Identifier: MIT
# Sourced by the FUSE benchmarks: qemu-storage-daemon's FUSE export of $IMG
# (scratch dir $B) with a loop device on top, the peer's best setup on this kernel.

dio() { cat "/sys/block/${1#/dev/}/loop/dio"; }

# start_qsd DRIVER: export $IMG as DRIVER (raw, qcow2) with direct native I/O; sets DEV.
start_qsd() {
    touch "$B/qsd.fuse"
    qemu-storage-daemon \
        --blockdev driver=file,node-name=file0,filename="$IMG",cache.direct=on,aio=native \
        --blockdev driver="$1",node-name=disk0,file=file0 \
        --export type=fuse,id=exp0,node-name=disk0,mountpoint="$B/qsd.fuse",writable=on \
        >"$B/qsd.log" 2>&1 &
    QSD_PID=$!
    for _ in $(seq 100); do
        grep -q " $B/qsd.fuse fuse" /proc/mounts && break
        sleep 0.1
    done
    QSD_LOOP=$(losetup --find --show --direct-io=on "$B/qsd.fuse")
    DEV=$QSD_LOOP
}

stop_qsd() {
    losetup -d "$QSD_LOOP"
    QSD_LOOP=
    kill "$QSD_PID"
    wait "$QSD_PID" || true
    QSD_PID=
}
