#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# A raw NBD client for nbd-tls.sh: what libnbd will not do on purpose.
#   nbd-raw.py notls ADDR NAME     options in the clear against --tls=require:
#                                  prints each option's reply type; the export
#                                  name must not appear in any byte received
#   nbd-raw.py idle ADDR SECS      take the greeting, then send nothing: prints
#                                  after how many seconds the server hung up
#   nbd-raw.py trickle ADDR SECS   send a byte of the handshake every 0.2 s
#   nbd-raw.py hold ADDR SECS      connect, print whether a greeting came, hold
#   nbd-raw.py garbage ADDR        STARTTLS, then random bytes as the TLS handshake:
#                                  prints the STARTTLS reply type and whether the
#                                  server hung up
# ADDR is a Unix socket path or HOST:PORT.
import socket
import struct
import sys
import time

MAGIC, IHAVEOPT, REPLY_MAGIC = 0x4E42444D41474943, 0x49484156454F5054, 0x3E889045565A9


def connect(addr):
    if addr.startswith("/"):
        s = socket.socket(socket.AF_UNIX)
        s.connect(addr)
    else:
        host, port = addr.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    return s


def read_n(s, n):
    buf = b""
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise EOFError
        buf += b
    return buf


def greeting(s):
    magic, opt, flags = struct.unpack(">QQH", read_n(s, 18))
    assert magic == MAGIC and opt == IHAVEOPT, "bad greeting"
    return flags


def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def reply(s):
    magic, opt, rtype, length = struct.unpack(">QIII", read_n(s, 20))
    assert magic == REPLY_MAGIC, "bad reply magic"
    return opt, rtype, read_n(s, length)


def notls(addr, name):
    s = connect(addr)
    seen = b""
    greeting(s)
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    name_b = name.encode()
    go = struct.pack(">I", len(name_b)) + name_b + struct.pack(">H", 0)
    meta = struct.pack(">I", len(name_b)) + name_b + struct.pack(">I", 0)
    for label, opt, data in (("LIST", 3, b""), ("INFO", 6, go), ("GO", 7, go),
                             ("STRUCTURED_REPLY", 8, b""), ("LIST_META_CONTEXT", 9, meta)):
        option(s, opt, data)
        _, rtype, payload = reply(s)
        seen += payload
        print(f"{label} 0x{rtype:08x}")
    option(s, 1, name_b)  # EXPORT_NAME: no error reply exists, the server must hang up
    try:
        seen += read_n(s, 10)
        print("EXPORT_NAME served")
    except (EOFError, ConnectionResetError):
        print("EXPORT_NAME closed")
    print("leaked" if name_b in seen else "not leaked")


def idle(addr, secs):
    s = connect(addr)
    greeting(s)
    t0 = time.monotonic()
    s.settimeout(float(secs))
    try:
        while s.recv(1):
            pass
    except socket.timeout:
        print("still open")
        return
    except ConnectionResetError:
        pass
    print(f"closed after {time.monotonic() - t0:.1f}")


def trickle(addr, secs):
    s = connect(addr)
    greeting(s)
    t0 = time.monotonic()
    s.sendall(struct.pack(">I", 3) + struct.pack(">QII", IHAVEOPT, 99, 60000))
    try:
        for _ in range(int(float(secs) / 0.2)):  # the option's data, a byte at a time
            s.send(b"\0")
            time.sleep(0.2)
    except (BrokenPipeError, ConnectionResetError):
        print(f"closed after {time.monotonic() - t0:.1f}")
        return
    print("still open")


def hold(addr, secs):
    s = connect(addr)
    s.settimeout(2)
    try:
        greeting(s)
        print("greeted", flush=True)
    except (EOFError, ConnectionResetError, socket.timeout):
        print("refused", flush=True)
    time.sleep(float(secs))


def garbage(addr):
    import os
    s = connect(addr)
    greeting(s)
    s.sendall(struct.pack(">I", 3))
    option(s, 5)  # STARTTLS
    _, rtype, _ = reply(s)
    print(f"STARTTLS 0x{rtype:08x}")
    s.settimeout(10)
    try:
        s.sendall(b"\x16\x03\x01\x00\x10" + os.urandom(4096))
        while s.recv(4096):
            pass
        print("closed")
    except (ConnectionResetError, BrokenPipeError):
        print("closed")
    except socket.timeout:
        print("still open")


{"garbage": garbage, "notls": notls, "idle": idle, "trickle": trickle, "hold": hold}[sys.argv[1]](*sys.argv[2:])
