#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk serve against the NBD fuzz target's corpus (tests/fuzz/corpus/nbd: client
# transcripts, and inputs that once hung or crashed the server), replayed on its
# Unix socket: each one sent whole, then the write side shut; the server must
# hang up within 10 s, keep serving, stop on SIGTERM within 10 s (a connection
# stuck after its stream broke once kept it running) and leave a clean image. Page cache and
# without io_uring. A few seconds.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
command -v nbdinfo >/dev/null || { fail "nbdinfo missing: run scripts/install-deps"; finish; }
"$VDISK" create -f qcow2 -o cluster_size=4096 "$T/d.qcow2" 4M >/dev/null
for mode in page nouring; do
    if [ "$mode" = nouring ]; then export VDISK_NO_IO_URING=1; else unset VDISK_NO_IO_URING; fi
    "$VDISK" serve --socket "$T/s.sock" "$T/d.qcow2" >/dev/null 2>"$T/serve.log" &
    SPID=$!
    at_exit "kill $SPID"
    URI="nbd+unix:///?socket=$T/s.sock"
    for _ in $(seq 100); do nbdinfo --size "$URI" >/dev/null 2>&1 && break; sleep 0.05; done
    for f in "$ROOT"/tests/fuzz/corpus/nbd/*; do
        r=$(python3 - "$T/s.sock" "$f" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(10)
t = time.time()
try:
    s.sendall(open(sys.argv[2], "rb").read())
    s.shutdown(socket.SHUT_WR)
except OSError:
    pass  # it hung up early: read what is left
try:
    while s.recv(65536):
        pass
    print("hung up in %.1f s" % (time.time() - t))
except socket.timeout:
    print("HUNG")
except OSError as e:
    print("hung up in %.1f s (%s)" % (time.time() - t, e.strerror))
PY
        )
        case $r in
        hung*) pass "$mode: $(basename "$f"): $r" ;;
        *) fail "$mode: $(basename "$f"): the server kept the connection 10 s after the input ended" ;;
        esac
    done
    if kill -0 "$SPID" 2>/dev/null; then pass "$mode: server survived"; else fail "$mode: server died"; fi
    ok "$mode: server still serves" nbdinfo --size "$URI"
    # a connection left hanging would keep the server from stopping: wait 10 s at most
    kill -TERM "$SPID"
    for _ in $(seq 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$SPID" 2>/dev/null; then
        fail "$mode: SIGTERM: the server still runs after 10 s"
        kill -KILL "$SPID"
    fi
    wait "$SPID"
    eq "$mode: SIGTERM: exit 0" $? 0
    ok "$mode: the image is consistent (qemu-img check)" qemu-img check -q "$T/d.qcow2"
done
finish
