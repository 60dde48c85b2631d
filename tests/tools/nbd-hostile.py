#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# A hostile NBD client: speaks the wire protocol by hand to send what real
# clients never do, and checks the server's answers. Prints PASS:/FAIL:.
# Usage: nbd-hostile.py SOCKET SIZE
import os
import socket
import struct
import sys
import time

SOCK, SIZE = sys.argv[1], int(sys.argv[2])
PREFIX = sys.argv[3] + ": " if len(sys.argv) > 3 else ""  # names this run's checks
NBDMAGIC, IHAVEOPT, REPMAGIC = 0x4E42444D41474943, 0x49484156454F5054, 0x3E889045565A9
REQ, SIMPLE, STRUCT = 0x25609513, 0x67446698, 0x668E33EF
OPT_GO, OPT_SR, OPT_SET_META, OPT_ABORT = 7, 8, 10, 2
ERR_UNSUP, ERR_INVALID, ERR_UNKNOWN = (1 << 31) + 1, (1 << 31) + 3, (1 << 31) + 6
READ, WRITE, DISC, FLUSH, TRIM, CACHE, WZ, BS = range(8)
EINVAL, EPERM = 22, 1
fails = 0


def check(desc, cond, extra=""):
    global fails
    if cond:
        print("PASS: " + PREFIX + desc)
    else:
        fails += 1
        print("FAIL: %s%s %s" % (PREFIX, desc, extra))


def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(SOCK)
    return s


def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return b


def closed(s):
    """True when the server hangs up on us (EOF or reset) within the timeout."""
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def greet(s, cflags=3):
    magic, opt, flags = struct.unpack(">QQH", recvn(s, 18))
    assert magic == NBDMAGIC and opt == IHAVEOPT and flags & 1
    s.sendall(struct.pack(">I", cflags))


def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def opt_reply(s):
    magic, opt, typ, length = struct.unpack(">QIII", recvn(s, 20))
    assert magic == REPMAGIC, hex(magic)
    return opt, typ, recvn(s, length)


def go(s, name=b""):
    option(s, OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    while True:
        _, typ, data = opt_reply(s)
        if typ == 1:
            return 0
        if typ & (1 << 31):
            return typ


def ready(structured=False):
    s = conn()
    greet(s)
    if structured:
        option(s, OPT_SR)
        assert opt_reply(s)[1] == 1
        q = b"base:allocation"
        option(s, OPT_SET_META, struct.pack(">I", 0) + struct.pack(">I", 1) + struct.pack(">I", len(q)) + q)
        while opt_reply(s)[1] != 1:
            pass
    assert go(s) == 0
    return s


def request(s, typ, off, length, cookie=1, flags=0, payload=b""):
    s.sendall(struct.pack(">IHHQQI", REQ, flags, typ, cookie, off, length) + payload)


def simple_reply(s):
    magic, err, cookie = struct.unpack(">IIQ", recvn(s, 16))
    assert magic == SIMPLE, hex(magic)
    return err, cookie


def chunks(s):
    """All chunks of one structured reply: [(flags, type, cookie, payload)]."""
    out = []
    while True:
        magic, flags, typ, cookie, length = struct.unpack(">IHHQI", recvn(s, 20))
        if magic == SIMPLE - 0:  # not expected for structured reads
            raise AssertionError("simple reply")
        assert magic == STRUCT, hex(magic)
        out.append((flags, typ, cookie, recvn(s, length)))
        if flags & 1:
            return out


def other_client_ok(desc):
    try:
        s = ready()
        request(s, READ, 0, 512, cookie=77)
        err, cookie = simple_reply(s)
        recvn(s, 512)
        check(desc + ": another client is still served", err == 0 and cookie == 77)
        s.close()
    except Exception as e:  # noqa: BLE001
        check(desc + ": another client is still served", False, repr(e))


# --- handshake ----------------------------------------------------------
s = conn()
greet(s)
s.sendall(b"GARBAGE!" + b"\0" * 8)
check("bad option magic: disconnected", closed(s))
other_client_ok("bad option magic")

s = conn()
greet(s, cflags=0x80)
check("unknown client flags: disconnected", closed(s))

s = conn()
greet(s)
option(s, 99, b"xyz")
check("unknown option: NBD_REP_ERR_UNSUP", opt_reply(s)[1] == ERR_UNSUP)
option(s, OPT_SET_META, struct.pack(">II", 0, 0))
check("SET_META_CONTEXT before structured replies: ERR_INVALID", opt_reply(s)[1] == ERR_INVALID)
option(s, OPT_GO, struct.pack(">I", 1000) + b"ab" + struct.pack(">H", 0))
check("GO with a name longer than the data: ERR_INVALID", opt_reply(s)[1] == ERR_INVALID)
option(s, OPT_GO, struct.pack(">I", 4) + b"nope" + struct.pack(">H", 0))
check("GO for an unknown export: ERR_UNKNOWN", opt_reply(s)[1] == ERR_UNKNOWN)
check("GO for the default export after errors", go(s) == 0)
s.close()

s = conn()
greet(s)
s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 0x7FFFFFFF))
check("option with 2 GiB of data: disconnected", closed(s))
other_client_ok("oversized option")

s = conn()
greet(s)
option(s, OPT_ABORT)
check("ABORT acknowledged", opt_reply(s)[1] == 1)
check("ABORT: disconnected", closed(s))

# a client that stops mid-handshake, and one that never speaks
idle = [conn() for _ in range(8)]
s = conn()
greet(s)
s.sendall(struct.pack(">Q", IHAVEOPT)[:5])
s.close()
other_client_ok("idle and truncated handshakes")

# --- transmission, simple replies ---------------------------------------
s = ready()
request(s, READ, SIZE, 512, cookie=10)
check("read at the end: EINVAL", simple_reply(s) == (EINVAL, 10))
request(s, READ, SIZE - 512, 1024, cookie=11)
check("read across the end: EINVAL", simple_reply(s) == (EINVAL, 11))
request(s, READ, (1 << 64) - 512, 1024, cookie=12)
check("read with offset+length overflowing 64 bits: EINVAL", simple_reply(s) == (EINVAL, 12))
request(s, READ, 0, 0xFFFFFFFF, cookie=13)
check("read of 4 GiB: EINVAL", simple_reply(s) == (EINVAL, 13))
request(s, WRITE, SIZE - 4096, 8192, cookie=14, payload=b"\xee" * 8192)
check("write across the end (payload sent): EINVAL", simple_reply(s) == (EINVAL, 14))
request(s, WZ, SIZE, 4096, cookie=15)
check("write zeroes past the end: EINVAL", simple_reply(s) == (EINVAL, 15))
request(s, TRIM, 0, SIZE + 1, cookie=16)
check("trim past the end: EINVAL", simple_reply(s) == (EINVAL, 16))
request(s, 99, 0, 512, cookie=17)
check("unknown command: EINVAL", simple_reply(s) == (EINVAL, 17))
request(s, READ, 0, 512, cookie=18, flags=0x8000)
check("unknown command flag: EINVAL", simple_reply(s) == (EINVAL, 18))
request(s, BS, 0, 512, cookie=19)
check("block status without a context: EINVAL", simple_reply(s) == (EINVAL, 19))
# the stream is still in step: write and read back
data = os.urandom(4096)
request(s, WRITE, 8192, 4096, cookie=20, flags=1, payload=data)
check("FUA write after errors", simple_reply(s) == (0, 20))
request(s, READ, 8192, 4096, cookie=21)
r = simple_reply(s)
check("read back after errors", r == (0, 21) and recvn(s, 4096) == data)
request(s, FLUSH, 0, 0, cookie=22)
request(s, CACHE, 0, 1 << 20, cookie=23)
check("flush and cache", sorted([simple_reply(s), simple_reply(s)]) == [(0, 22), (0, 23)])
# pipelined: 32 requests in one send, replies may come in any order
msg = b"".join(struct.pack(">IHHQQI", REQ, 0, READ, 1000 + i, (i * 7919 % 256) * 4096, 4096) for i in range(32))
s.sendall(msg)
got = set()
for _ in range(32):
    err, cookie = simple_reply(s)
    recvn(s, 4096)
    got.add((err, cookie))
check("32 pipelined reads all answered", got == {(0, 1000 + i) for i in range(32)})
request(s, DISC, 0, 0)
check("DISC: server closes", closed(s))

# garbage in transmission
s = ready()
s.sendall(b"\xde\xad\xbe\xef" * 7)
check("bad request magic: disconnected", closed(s))
other_client_ok("bad request magic")

# truncated request header, then gone
s = ready()
s.sendall(struct.pack(">IHHQ", REQ, 0, READ, 5))
s.close()
other_client_ok("truncated request")

# disconnect in the middle of a write's payload: nothing of it lands
s = ready()
request(s, READ, 65536, 4096, cookie=1)
simple_reply(s)
before = recvn(s, 4096)
s.sendall(struct.pack(">IHHQQI", REQ, 0, WRITE, 2, 65536, 1 << 20) + b"\x55" * 300000)
s.close()
time.sleep(0.2)
s = ready()
request(s, READ, 65536, 4096, cookie=3)
r = simple_reply(s)
check("write cut off mid-payload left the disk alone", r == (0, 3) and recvn(s, 4096) == before)
s.close()

# oversized write: refused, and its payload stepped over
s = ready()
big = (32 << 20) + 4096
s.sendall(struct.pack(">IHHQQI", REQ, 0, WRITE, 40, 0, big))
s.sendall(b"\0" * big)
check("write larger than the maximum payload: EINVAL", simple_reply(s) == (EINVAL, 40))
request(s, READ, 0, 512, cookie=41)
check("stream in step after the oversized write", simple_reply(s) == (0, 41))
recvn(s, 512)
s.close()

# --- structured replies -------------------------------------------------
s = ready(structured=True)
request(s, READ, SIZE, 512, cookie=50)
c = chunks(s)
check("structured read past the end: one error chunk, EINVAL",
      len(c) == 1 and c[0][1] == (1 << 15) + 1 and struct.unpack(">I", c[0][3][:4])[0] == EINVAL)
# the last MiB of the disk is a hole (the test left it untouched)
request(s, READ, SIZE - (1 << 20), 1 << 20, cookie=51)
c = chunks(s)
check("sparse read: hole sent as NBD_REPLY_TYPE_OFFSET_HOLE",
      any(t == 2 for _, t, _, _ in c) and all(ck == 51 for _, _, ck, _ in c), repr([(f, t) for f, t, _, _ in c]))
request(s, READ, SIZE - (1 << 20), 1 << 20, cookie=52, flags=4)  # DF
c = chunks(s)
check("DF read: a single data chunk", len(c) == 1 and c[0][1] == 1 and len(c[0][3]) == 8 + (1 << 20))
request(s, BS, 0, SIZE, cookie=53)
c = chunks(s)
ok = len(c) == 1 and c[0][1] == 5 and struct.unpack(">I", c[0][3][:4])[0] == 1
descs = [struct.unpack(">II", c[0][3][i:i + 8]) for i in range(4, len(c[0][3]), 8)] if ok else []
check("block status: descriptors cover the request", ok and sum(d[0] for d in descs) >= SIZE - 0)
request(s, BS, SIZE - 512, 1024, cookie=54)
c = chunks(s)
check("block status past the end: EINVAL", c[0][1] == (1 << 15) + 1)
request(s, WZ, 0, 4096, cookie=55, flags=0x10 | 0x2)  # FAST_ZERO | NO_HOLE
c = simple_or = None
magic = struct.unpack(">I", recvn(s, 4))[0]
rest = recvn(s, 12 if magic == SIMPLE else 16)
check("fast zero: answered (0 or ENOTSUP)", magic in (SIMPLE, STRUCT))
if magic == STRUCT:
    recvn(s, struct.unpack(">I", rest[-4:])[0])
s.close()

for i in idle:
    i.close()
other_client_ok("end")
sys.exit(1 if fails else 0)
