#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Change bytes of a VHDX image and fix the CRC-32C of its headers and region tables.

vhdx-poke.py IMG [OFF=FMT:VALUE ...] [--keep-crc]
  FMT: a struct format for one value (<I, <Q, <H, B); OFF may be hex (0x...).
"""
import struct
import sys

TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    TABLE.append(c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


args = sys.argv[1:]
img = args.pop(0)
keep = "--keep-crc" in args
f = open(img, "r+b")
for a in args:
    if a == "--keep-crc":
        continue
    off, rest = a.split("=", 1)
    fmt, val = rest.split(":", 1)
    f.seek(int(off, 0))
    f.write(struct.pack(fmt, int(val, 0)))
if not keep:
    for off, size, sig in ((0x10000, 4096, b"head"), (0x20000, 4096, b"head"),
                           (0x30000, 65536, b"regi"), (0x40000, 65536, b"regi")):
        f.seek(off)
        b = bytearray(f.read(size))
        if b[:4] != sig:
            continue
        b[4:8] = b"\0\0\0\0"
        b[4:8] = struct.pack("<I", crc32c(bytes(b)))
        f.seek(off)
        f.write(b)
f.close()
