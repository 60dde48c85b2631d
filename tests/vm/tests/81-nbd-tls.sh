#!/bin/bash
# SPDX-License-Identifier: MIT
# The kernel's NBD client over TLS: nbd-client -x (its TLS proxy) on vdisk
# serve --tls=require with certtool-made certificates; mkfs, mount, write,
# umount, disconnect, e2fsck and compare on the image. A plain client is
# refused. About 20 s.
. /vm/lib.sh
[ -x "$VDISK" ] || { fail "no vdisk utility in the VM"; finish; }
command -v nbd-client >/dev/null && command -v certtool >/dev/null ||
    { fail "nbd-client or certtool not in the VM (tests/vm/run add_bin)"; finish; }
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up # the guest boots with lo down
mkdir -p certs m
printf 'cn = vm CA\nca\ncert_signing_key\nexpiration_days = 2\n' >ca.info
printf 'cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n' >srv.info
certtool --generate-privkey --key-type ecdsa --outfile ca-key.pem >/dev/null 2>&1
certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info --outfile certs/ca-cert.pem >/dev/null 2>&1
certtool --generate-privkey --key-type ecdsa --outfile certs/server-key.pem >/dev/null 2>&1
certtool --generate-certificate --load-ca-certificate certs/ca-cert.pem --load-ca-privkey ca-key.pem \
    --load-privkey certs/server-key.pem --template srv.info --outfile certs/server-cert.pem >/dev/null 2>&1
[ -s certs/server-cert.pem ] && pass "certificates made" || fail "certtool made no certificate"

truncate -s 64M img.raw
$VDISK serve --listen 127.0.0.1:10811 --tls-certs certs img.raw >uri 2>log &
SPID=$!
at_exit "kill $SPID"
for _ in $(seq 100); do [ -s uri ] && break; sleep 0.1; done
eq "serve prints nbds://" "$(cat uri)" "nbds://127.0.0.1:10811/"
dev=
for n in 5 6 7 8; do [ -e /sys/block/nbd$n/pid ] || { dev=/dev/nbd$n; break; }; done
[ -n "$dev" ] || { fail "no free /dev/nbdN"; finish; }
fails_with "a plain nbd-client is refused: TLS required" '[Tt][Ll][Ss]' timeout 20 nbd-client 127.0.0.1 10811 $dev -N ''
ok "nbd-client -x connects over TLS" timeout 20 nbd-client 127.0.0.1 10811 $dev -N '' -x \
    -A certs/ca-cert.pem -H localhost
[ -e /sys/block/${dev#/dev/}/pid ] || { fail "$dev not connected: $(cat log)"; finish; }
at_exit "nbd-client -d $dev"
eq "$dev has the image's size" "$(blockdev --getsize64 $dev)" $((64 << 20))
ok "mkfs.ext4 over TLS" mkfs.ext4 -q -F $dev
ok "mount" mount $dev m
dd if=/dev/urandom of=pattern bs=1M count=4 status=none
ok "write a file" cp pattern m/f
ok "umount" umount m
ok "raw write at 48 MiB" dd if=pattern of=$dev bs=1M seek=48 oflag=direct status=none
ok "disconnect" nbd-client -d $dev
kill -TERM $SPID && wait $SPID && pass "server stops cleanly" || fail "server exit"
ok "e2fsck -fn on the image" e2fsck -fn img.raw
ok "the raw write is in the image" cmp -n $((4 << 20)) -i 0:$((48 << 20)) pattern img.raw
finish
