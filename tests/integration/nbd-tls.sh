#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk serve with TLS (STARTTLS), against clients nobody here wrote: nbdinfo
# and nbdcopy (libnbd's nbds:// URIs) and qemu-img (--object tls-creds-x509 /
# tls-creds-psk), with X.509 certificates made by certtool and keys made by
# psktool. Data is copied both ways and compared. Also: a plain client under
# --tls=require gets NBD_REP_ERR_TLS_REQD and no export name; a wrong PSK
# fails and the server goes on; --max-connections; the handshake timeout; the
# warning for TCP without TLS; a second uid cannot use a 0600 Unix socket.
# About 30 s.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
RAW="python3 $ROOT/tests/integration/nbd-raw.py"
md5() { md5sum "$1" | cut -d' ' -f1; }

# --- credentials, as qemu's and nbdkit's documentation make them ---------------------------
mkdir -p "$T/certs" "$T/client" "$T/anon" "$T/psk" "$T/badpsk"
gen() { certtool "$@" >/dev/null 2>&1 || fail "certtool $*"; }
printf 'cn = vdisk test CA\nca\ncert_signing_key\nexpiration_days = 2\n' >"$T/ca.info"
printf 'cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n' >"$T/server.info"
printf 'cn = vdisk client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n' >"$T/client.info"
gen --generate-privkey --key-type ecdsa --outfile "$T/ca-key.pem"
gen --generate-self-signed --load-privkey "$T/ca-key.pem" --template "$T/ca.info" --outfile "$T/certs/ca-cert.pem"
gen --generate-privkey --key-type ecdsa --outfile "$T/certs/server-key.pem"
gen --generate-certificate --load-ca-certificate "$T/certs/ca-cert.pem" --load-ca-privkey "$T/ca-key.pem" \
    --load-privkey "$T/certs/server-key.pem" --template "$T/server.info" --outfile "$T/certs/server-cert.pem"
gen --generate-privkey --key-type ecdsa --outfile "$T/client/client-key.pem"
gen --generate-certificate --load-ca-certificate "$T/certs/ca-cert.pem" --load-ca-privkey "$T/ca-key.pem" \
    --load-privkey "$T/client/client-key.pem" --template "$T/client.info" --outfile "$T/client/client-cert.pem"
cp "$T/certs/ca-cert.pem" "$T/client/"
cp "$T/certs/ca-cert.pem" "$T/anon/" # trusts the server, has no certificate of its own
psktool -u alice -p "$T/psk/keys.psk" >/dev/null 2>&1 || fail "psktool"
psktool -u alice -p "$T/badpsk/keys.psk" >/dev/null 2>&1 || fail "psktool"

# a source image: 4 MiB random at 1 MiB, the rest a hole
truncate -s 16M "$T/src.raw"
dd if=/dev/urandom of="$T/src.raw" bs=1M seek=1 count=4 conv=notrunc status=none
truncate -s 16M "$T/src2.raw"
dd if=/dev/urandom of="$T/src2.raw" bs=1M count=16 conv=notrunc status=none # all data: long replies

# serve NAME IMAGE ARGS...: vdisk serve on a free loopback port; sets URI (as printed), PORT, SPID.
serve() {
    local name=$1 img=$2; shift 2
    "$VDISK" serve --listen 127.0.0.1:0 "$@" "$img" >"$T/$name.uri" 2>"$T/$name.log" &
    SPID=$!
    at_exit "kill $SPID"
    for _ in $(seq 100); do [ -s "$T/$name.uri" ] && break; sleep 0.05; done
    URI=$(cat "$T/$name.uri")
    PORT=${URI##*:}
    PORT=${PORT%%/*}
    [ -n "$URI" ] || fail "$name: server did not start: $(cat "$T/$name.log")"
}
stop_server() { kill -TERM "$SPID"; wait "$SPID"; }

# --- X.509 ---------------------------------------------------------------------------------
cp "$T/src.raw" "$T/x509.raw"
serve x509 "$T/x509.raw" --direct --tls-certs "$T/certs" --name disk1
ok "x509: URI is nbds://127.0.0.1:PORT/NAME" grep -Eqx 'nbds://127\.0\.0\.1:[0-9]+/disk1' "$T/x509.uri"
fails "x509: no TCP warning under --tls=require" grep -q warning "$T/x509.log"
X="nbds://127.0.0.1:$PORT/disk1?tls-certificates=$T/anon"
eq "x509: nbdinfo over TLS" "$(nbdinfo --size "$X" 2>&1)" 16777216
ok "x509: nbdinfo says TLS" sh -c "nbdinfo '$X' | grep -q 'with TLS'"
ok "x509: nbdcopy server -> file" nbdcopy "$X" "$T/x509.out"
eq "x509: the copy is the image" "$(md5 "$T/x509.out")" "$(md5 "$T/src.raw")"
ok "x509: nbdcopy file -> server" nbdcopy "$T/src2.raw" "$X"
Q=(--object "tls-creds-x509,id=tls0,dir=$T/anon,endpoint=client")
QO="driver=nbd,host=127.0.0.1,port=$PORT,export=disk1,tls-creds=tls0"
ok "x509: qemu-img convert from the server" qemu-img convert "${Q[@]}" --image-opts "$QO" -O raw "$T/x509.q"
eq "x509: qemu-img read what nbdcopy wrote" "$(md5 "$T/x509.q")" "$(md5 "$T/src2.raw")"
ok "x509: qemu-img writes through TLS" qemu-img convert "${Q[@]}" -n -f raw "$T/src.raw" --target-image-opts "$QO"
# a client with a certificate nobody signed for the server: the handshake fails, the server goes on
mkdir -p "$T/other" && certtool --generate-privkey --outfile "$T/other/k.pem" >/dev/null 2>&1 &&
    printf 'cn = other CA\nca\ncert_signing_key\n' >"$T/o.info" &&
    certtool --generate-self-signed --load-privkey "$T/other/k.pem" --template "$T/o.info" \
        --outfile "$T/other/ca-cert.pem" >/dev/null 2>&1
fails "x509: a client trusting another CA fails" nbdinfo --size "nbds://127.0.0.1:$PORT/disk1?tls-certificates=$T/other"
eq "x509: ... and the server goes on" "$(nbdinfo --size "$X" 2>&1)" 16777216
# plain clients under --tls=require: the spec's error for every option, no export name leaked
fails "x509: plain nbdinfo refused" nbdinfo --size "nbd://127.0.0.1:$PORT/disk1"
$RAW notls "127.0.0.1:$PORT" disk1 >"$T/notls" 2>&1
eq "x509: plain options get NBD_REP_ERR_TLS_REQD" "$(head -5 "$T/notls" | tr '\n' ' ')" \
    "LIST 0x80000005 INFO 0x80000005 GO 0x80000005 STRUCTURED_REPLY 0x80000005 LIST_META_CONTEXT 0x80000005 "
eq "x509: plain EXPORT_NAME is hung up on" "$(sed -n 6p "$T/notls")" "EXPORT_NAME closed"
eq "x509: no export name leaked in the clear" "$(sed -n 7p "$T/notls")" "not leaked"
eq "x509: garbage for a TLS handshake: ACKed, then hung up on" "$($RAW garbage "127.0.0.1:$PORT" | tr '\n' ' ')" \
    "STARTTLS 0x00000001 closed "
ok "x509: ... the server says why" grep -q "TLS handshake failed" "$T/x509.log"
eq "x509: ... and goes on" "$(nbdinfo --size "$X" 2>&1)" 16777216
ok "x509: server stops cleanly" stop_server
eq "x509: qemu-img's write is in the image" "$(md5 "$T/x509.raw")" "$(md5 "$T/src.raw")"
ok "x509: qemu-img compare agrees" qemu-img compare -f raw -F raw "$T/x509.raw" "$T/src.raw"

# client certificates: --tls-verify-peer
cp "$T/src.raw" "$T/peer.raw"
serve peer "$T/peer.raw" --tls=require --tls-certs "$T/certs" --tls-verify-peer
eq "verify-peer: a client with a signed certificate" \
    "$(nbdinfo --size "nbds://127.0.0.1:$PORT/?tls-certificates=$T/client" 2>&1)" 16777216
fails "verify-peer: a client without one is refused" nbdinfo --size "nbds://127.0.0.1:$PORT/?tls-certificates=$T/anon"
ok "verify-peer: qemu-img with a client certificate" qemu-img convert \
    --object "tls-creds-x509,id=tls0,dir=$T/client,endpoint=client" \
    --image-opts "driver=nbd,host=127.0.0.1,port=$PORT,tls-creds=tls0" -O raw "$T/peer.q"
eq "verify-peer: qemu-img read the image" "$(md5 "$T/peer.q")" "$(md5 "$T/src.raw")"
ok "verify-peer: server stops cleanly" stop_server

# --- PSK, --tls=on -------------------------------------------------------------------------
cp "$T/src.raw" "$T/psk.raw"
serve psk "$T/psk.raw" --direct --tls=on --tls-psk "$T/psk/keys.psk" # O_DIRECT: replies wait on the disk
ok "psk: URI is nbds://" grep -Eqx 'nbds://127\.0\.0\.1:[0-9]+/' "$T/psk.uri"
P="nbds://alice@127.0.0.1:$PORT/?tls-psk-file=$T/psk/keys.psk"
eq "psk: nbdinfo over TLS" "$(nbdinfo --size "$P" 2>&1)" 16777216
ok "psk: nbdcopy file -> server" nbdcopy "$T/src2.raw" "$P"
ok "psk: nbdcopy server -> file" nbdcopy "$P" "$T/psk.out"
eq "psk: the copy is what was written" "$(md5 "$T/psk.out")" "$(md5 "$T/src2.raw")"
fails_with "psk: a wrong key fails cleanly" 'nbdinfo: .*(TLS|tls|handshake)' nbdinfo --size "nbds://alice@127.0.0.1:$PORT/?tls-psk-file=$T/badpsk/keys.psk"
fails "psk: an unknown user fails" nbdinfo --size "nbds://bob@127.0.0.1:$PORT/?tls-psk-file=$T/psk/keys.psk"
ok "psk: the server says why" grep -q "TLS handshake failed" "$T/psk.log"
eq "psk: the server goes on serving" "$(nbdinfo --size "$P" 2>&1)" 16777216
ok "psk: --tls=on still serves plain clients" nbdinfo --size "nbd://127.0.0.1:$PORT/"
ok "psk: qemu-img over tls-creds-psk" qemu-img convert \
    --object "tls-creds-psk,id=tls0,dir=$T/psk,username=alice,endpoint=client" -n -f raw "$T/src.raw" \
    --target-image-opts "driver=nbd,host=127.0.0.1,port=$PORT,tls-creds=tls0"
ok "psk: a TCP warning under --tls=on" grep -q "served over TCP without requiring TLS" "$T/psk.log"
ok "psk: server stops cleanly" stop_server
eq "psk: qemu-img's write is in the image" "$(md5 "$T/psk.raw")" "$(md5 "$T/src.raw")"

# --- bad options ---------------------------------------------------------------------------
fails_with "--tls=require without credentials" 'needs --tls-certs' "$VDISK" serve --tls=require "$T/src.raw"
fails_with "--tls=maybe" 'want off, on or require' "$VDISK" serve --tls=maybe "$T/src.raw"
fails_with "--tls-certs without server-cert.pem" "$T/anon/server-cert.pem" \
    "$VDISK" serve --listen 127.0.0.1:0 --tls-certs "$T/anon" "$T/src.raw"
fails_with "--tls-psk missing file" "$T/nope.psk" "$VDISK" serve --listen 127.0.0.1:0 --tls-psk "$T/nope.psk" "$T/src.raw"
fails_with "--max-connections 0" 'want a number' "$VDISK" serve --max-connections 0 "$T/src.raw"

# --- plain TCP: the warning, the URI with its address --------------------------------------
serve plain "$T/src.raw" -r
ok "plain: URI is nbd://127.0.0.1:PORT/" grep -Eqx 'nbd://127\.0\.0\.1:[0-9]+/' "$T/plain.uri"
ok "plain: the TCP warning says who can read it" grep -q \
    "warning: .*src.raw: served over TCP without TLS: anyone who can reach the port (every local user on 127.0.0.1, anyone on the network otherwise) can read it" \
    "$T/plain.log"
ok "plain: server stops cleanly" stop_server

# --- limits: connections and the handshake timeout -----------------------------------------
# limit on connections (the default handshake timeout, 10 s, is longer than this takes)
S=$T/lim.sock
"$VDISK" serve --socket "$S" --max-connections 2 "$T/src.raw" >/dev/null 2>"$T/lim.log" &
SPID=$!
at_exit "kill $SPID"
for _ in $(seq 100); do [ -S "$S" ] && break; sleep 0.05; done
$RAW hold "$S" 4 >"$T/h1" & H1=$!
$RAW hold "$S" 4 >"$T/h2" & H2=$!
for _ in $(seq 100); do [ "$(cat "$T/h1" "$T/h2")" = "greeted
greeted" ] && break; sleep 0.05; done
eq "limits: a third client over --max-connections 2 is refused" "$($RAW hold "$S" 0)" refused
ok "limits: ... and it is said" grep -q "connection refused: 2 clients already" "$T/lim.log"
wait $H1 $H2
eq "limits: the two held clients were served" "$(cat "$T/h1" "$T/h2" | tr '\n' ' ')" "greeted greeted "
eq "limits: once they are gone a real client gets in" "$(nbdinfo --size "nbd+unix:///?socket=$S" 2>&1)" 16777216
ok "limits: server stops cleanly" stop_server
# the handshake timeout: an idle client and one trickling bytes are dropped at 2 s
cp "$T/src.raw" "$T/to.raw"
S=$T/to.sock
"$VDISK" serve --socket "$S" --handshake-timeout 2 "$T/to.raw" >/dev/null 2>"$T/to.log" &
SPID=$!
at_exit "kill $SPID"
for _ in $(seq 100); do [ -S "$S" ] && break; sleep 0.05; done
r=$($RAW idle "$S" 6)
case $r in "closed after "[23].*) pass "limits: an idle client is dropped after the 2 s handshake timeout ($r)" ;;
*) fail "limits: idle client: $r" ;; esac
r=$($RAW trickle "$S" 6)
case $r in "closed after "[234].*) pass "limits: a client trickling bytes is dropped too ($r)" ;;
*) fail "limits: trickling client: $r" ;; esac
ok "limits: the timeout is said" grep -q "handshake timeout" "$T/to.log"
eq "limits: a real client still gets in" "$(nbdinfo --size "nbd+unix:///?socket=$S" 2>&1)" 16777216
ok "limits: server stops cleanly" stop_server

# --- another uid and the 0600 socket -------------------------------------------------------
# a directory anyone may enter, so only the socket's own mode stands between
cp "$T/src.raw" "$T/uid.raw"
chmod 600 "$T/uid.raw"
chmod 711 "$T"
mkdir -m 755 "$T/pub"
"$VDISK" serve --socket "$T/pub/s.sock" "$T/uid.raw" >/dev/null 2>"$T/uid.log" &
P2=$!
at_exit "kill $P2"
for _ in $(seq 100); do [ -S "$T/pub/s.sock" ] && break; sleep 0.05; done
eq "uid: the socket is 0600 root" "$(stat -c '%a %U' "$T/pub/s.sock")" "600 root"
fails "uid: nobody cannot read the 0600 image itself" setpriv --reuid nobody --regid nogroup --clear-groups \
    cat "$T/uid.raw"
fails_with "uid: nobody cannot reach it through the socket" 'ermission denied' \
    setpriv --reuid nobody --regid nogroup --clear-groups nbdinfo --size "nbd+unix:///?socket=$T/pub/s.sock"
ok "uid: root still can" nbdinfo --size "nbd+unix:///?socket=$T/pub/s.sock"
kill -TERM $P2 && wait $P2
finish
