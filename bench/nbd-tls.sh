#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The cost of TLS on NBD: vdisk serve and qemu-nbd on the same raw image over
# loopback TCP, plain, TLS with X.509 and TLS with PSK (the same credentials
# for both servers). Clients: nbdcopy (sequential read of the whole image to
# /dev/null, and a write of it from a file) and 4k random reads and writes at
# QD16 through python3-libnbd (SECONDS x 10000 of each). Prints MiB/s or
# requests/s and the server's CPU time per MiB / per request (steadier on a
# shared machine).
# Usage: bench/nbd-tls.sh [SECONDS, default 10]   Env: BENCH_DIR, SIZE_MB (512).
# Smoke test: SIZE_MB=16 bench/nbd-tls.sh 1
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VDISK=${VDISK:-$ROOT/build/tools/vdisk/vdisk}
SECS=${1:-10}
SIZE_MB=${SIZE_MB:-512}
D=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vdisk-bench-tls.XXXXXX")
PID=
cleanup() { [ -z "$PID" ] || kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$D"; }
trap cleanup EXIT
for t in certtool psktool nbdcopy nbdinfo qemu-nbd; do
    command -v $t >/dev/null || { echo "bench/nbd-tls.sh: needs $t" >&2; exit 1; }
done
COUNT=$((SECS * 10000)) # 4k requests per run of qd.py
# qd.py URI read|write N: N random 4k requests, 16 in flight, through libnbd
cat >"$D/qd.py" <<'PY'
import random, sys
import nbd
h = nbd.NBD()
h.set_uri_allow_local_file(True)
h.connect_uri(sys.argv[1])
write, n = sys.argv[2] == "write", int(sys.argv[3])
blocks = h.get_size() // 4096
buf = nbd.Buffer(4096)
state = {"done": 0, "issued": 0}
def done(err):
    state["done"] += 1
    return 1
while state["done"] < n:
    while state["issued"] < n and h.aio_in_flight() < 16:
        off = random.randrange(blocks) * 4096
        (h.aio_pwrite if write else h.aio_pread)(buf, off, completion=done)
        state["issued"] += 1
    h.poll(-1)
h.shutdown()
PY

# credentials: a CA, a server certificate for 127.0.0.1, a PSK for alice
mkdir -p "$D/certs" "$D/client" "$D/psk"
printf 'cn = bench CA\nca\ncert_signing_key\nexpiration_days = 2\n' >"$D/ca.info"
printf 'cn = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n' >"$D/srv.info"
certtool --generate-privkey --outfile "$D/ca-key.pem" 2>/dev/null
certtool --generate-self-signed --load-privkey "$D/ca-key.pem" --template "$D/ca.info" --outfile "$D/certs/ca-cert.pem" 2>/dev/null
certtool --generate-privkey --outfile "$D/certs/server-key.pem" 2>/dev/null
certtool --generate-certificate --load-ca-certificate "$D/certs/ca-cert.pem" --load-ca-privkey "$D/ca-key.pem" \
    --load-privkey "$D/certs/server-key.pem" --template "$D/srv.info" --outfile "$D/certs/server-cert.pem" 2>/dev/null
cp "$D/certs/ca-cert.pem" "$D/client/"
psktool -u alice -p "$D/psk/keys.psk" >/dev/null

dd if=/dev/urandom of="$D/src.img" bs=1M count="$SIZE_MB" status=none
PORT=$((20000 + RANDOM % 20000))

# start NAME KIND CMD...: a server on 127.0.0.1:$PORT; KIND plain|x509|psk sets the client URI
start() {
    local name=$1 kind=$2 i; shift 2
    cp --sparse=never "$D/src.img" "$D/run.img"
    sync "$D/run.img"
    "$@" >"$D/$name.log" 2>&1 &
    PID=$!
    case $kind in
    plain) URI="nbd://127.0.0.1:$PORT/" ;;
    x509) URI="nbds://127.0.0.1:$PORT/?tls-certificates=$D/client" ;;
    psk) URI="nbds://alice@127.0.0.1:$PORT/?tls-psk-file=$D/psk/keys.psk" ;;
    esac
    for i in $(seq 100); do nbdinfo --size "$URI" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "bench/nbd-tls.sh: $name did not start: $(cat "$D/$name.log")" >&2
    exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; PORT=$((PORT + 1)); }
# cpu: the server's user+system time so far, in clock ticks
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
TICK=$(getconf CLK_TCK)

# measure NAME: nbdcopy read and write, 4k random read and write; one line
measure() {
    local name=$1 t0 t1 c0 c1 line="" mib job iops
    for dir in read write; do
        c0=$(cpu); t0=$(date +%s.%N)
        if [ $dir = read ]; then nbdcopy "$URI" null: 2>>"$D/err"; else nbdcopy "$D/src.img" "$URI" 2>>"$D/err"; fi
        t1=$(date +%s.%N); c1=$(cpu)
        mib=$(echo "$SIZE_MB / ($t1 - $t0)" | bc -l)
        line+=$(printf '  %-5s %7.0f MiB/s %6.2f ms-cpu/MiB' "$dir" "$mib" "$(echo "($c1 - $c0) * 1000 / $TICK / $SIZE_MB" | bc -l)")
    done
    # 4k random requests at QD16 through libnbd (fio's nbd engine refuses TLS URIs with files)
    for job in read write; do
        c0=$(cpu); t0=$(date +%s.%N)
        /usr/bin/python3 "$D/qd.py" "$URI" $job "$COUNT" 2>>"$D/err" || true
        t1=$(date +%s.%N); c1=$(cpu)
        line+=$(printf '  4k-%-5s %6.0f req/s %5.1f us-cpu/req' "$job" "$(echo "$COUNT / ($t1 - $t0)" | bc -l)" \
            "$(echo "($c1 - $c0) * 1000000 / $TICK / $COUNT" | bc -l)")
    done
    printf '%-16s%s\n' "$name" "$line"
}

echo "image: $SIZE_MB MiB raw, loopback TCP; $COUNT random 4k requests at QD16 (libnbd)"
Q509=(--object "tls-creds-x509,id=tls0,dir=$D/certs,endpoint=server,verify-peer=off" --tls-creds tls0)
QPSK=(--object "tls-creds-psk,id=tls0,dir=$D/psk,endpoint=server" --tls-creds tls0)
QNBD=(qemu-nbd -f raw -t -b 127.0.0.1 --cache=none --aio=io_uring --shared=16)
for cfg in plain x509 psk; do
    case $cfg in
    plain) va=(--tls=off) qa=() ;;
    x509) va=(--tls=require --tls-certs "$D/certs") qa=("${Q509[@]}") ;;
    psk) va=(--tls=require --tls-psk "$D/psk/keys.psk") qa=("${QPSK[@]}") ;;
    esac
    start "vdisk-$cfg" $cfg "$VDISK" serve -q --direct --listen "127.0.0.1:$PORT" "${va[@]}" "$D/run.img"
    measure "vdisk $cfg"
    stop
    start "qemu-nbd-$cfg" $cfg "${QNBD[@]}" -p "$PORT" "${qa[@]}" "$D/run.img"
    measure "qemu-nbd $cfg"
    stop
done
[ -s "$D/err" ] && { echo "client errors:"; sort -u "$D/err" | head; }
exit 0
