#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Seeds for the NBD server fuzz target: what clients send, from the protocol
# (the NBD project's doc/proto.md): fixed newstyle option haggling, then
# transmission requests. Usage: nbd-seeds.py DIR
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054
REQ = 0x25609513


def opt(n, data=b""):
    return struct.pack(">QII", IHAVEOPT, n, len(data)) + data


def name(s):
    return struct.pack(">I", len(s)) + s


def req(typ, off=0, length=0, flags=0, cookie=1, payload=b""):
    return struct.pack(">IHHQQI", REQ, flags, typ, cookie, off, length) + payload


CLIENT = struct.pack(">I", 3)  # FIXED_NEWSTYLE | NO_ZEROES
meta = name(b"") + struct.pack(">I", 1) + name(b"base:allocation")
go = opt(7, name(b"") + struct.pack(">HH", 1, 3))  # GO, asking for NBD_INFO_BLOCK_SIZE
rw = (req(1, 4096, 4096, payload=b"\x5a" * 4096) + req(0, 0, 8192, cookie=2)
      + req(1, 1000, 100, flags=1, cookie=3, payload=b"\x01" * 100) + req(3, cookie=4)
      + req(4, 65536, 65536, cookie=5) + req(6, 131072, 8192, flags=2, cookie=6)
      + req(7, 0, 1 << 20, cookie=7) + req(5, 0, 4096, cookie=8) + req(0, 4096, 512, flags=4, cookie=9)
      + req(2))
seeds = {
    "structured": CLIENT + opt(8) + opt(10, meta) + go + rw,
    "simple": CLIENT + go + rw,
    "export-name": struct.pack(">I", 1) + opt(1, b"") + rw,
    "list-info": CLIENT + opt(3) + opt(6, name(b"") + struct.pack(">H", 0)) + opt(9, meta) + opt(2),
    "bad-requests": CLIENT + opt(8) + go + req(0, 1 << 40, 4096) + req(1, 0, 1 << 30)
    + req(9, 0, 0) + req(0, 0, 0, flags=0xffff),
    "extended": CLIENT + opt(11) + opt(8) + opt(5) + go + req(0, 0, 512) + req(2),
}
os.makedirs(sys.argv[1], exist_ok=True)
for k, v in seeds.items():
    with open(os.path.join(sys.argv[1], k), "wb") as f:
        f.write(v)
