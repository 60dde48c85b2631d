#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write VHDX log entries into an image by hand (MS-VHDX 2.3), for the log tests.

vhdx-mklog.py IMG [--guid same|new] ENTRY...
  ENTRY: POS:SEQ:TAIL:DESC[+DESC...][:torn]   (POS, TAIL: byte offsets in the log)
  DESC:  d@OFF=BYTE       a data descriptor: the 4 KiB page at file offset OFF filled with BYTE
         p@OFF=FILE@AT    a data descriptor: 4 KiB page copied from FILE at AT, for OFF
         z@OFF=LEN        a zero descriptor
  torn:  the entry's checksum is wrong (a write that never completed)
The header (both copies, sequence number raised) gets the log GUID; --guid new
makes a new one (entries written before with the old one become stale).
"""
import os
import struct
import sys
import uuid

POLY = 0x82F63B78
TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ POLY if c & 1 else c >> 1
    TABLE.append(c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def with_crc(buf, at=4):
    buf[at:at + 4] = b"\0\0\0\0"
    buf[at:at + 4] = struct.pack("<I", crc32c(bytes(buf)))
    return buf


def main():
    args = sys.argv[1:]
    img = args.pop(0)
    newguid = False
    if args and args[0] == "--guid":
        newguid = args[1] == "new"
        args = args[2:]
    f = open(img, "r+b")
    hdrs = []
    for off in (64 * 1024, 128 * 1024):
        f.seek(off)
        hdrs.append(bytearray(f.read(4096)))
    cur = max((h for h in hdrs if h[:4] == b"head"), key=lambda h: struct.unpack_from("<Q", h, 8)[0])
    seq = struct.unpack_from("<Q", cur, 8)[0]
    guid = cur[48:64]
    if newguid or guid == bytes(16):
        guid = uuid.uuid4().bytes_le
    log_len, log_off = struct.unpack_from("<IQ", cur, 68)
    size = os.fstat(f.fileno()).st_size
    for spec in args:
        parts = spec.split(":")
        pos, eseq, tail = int(parts[0], 0), int(parts[1], 0), int(parts[2], 0)
        descs = parts[3].split("+") if parts[3] else []
        torn = len(parts) > 4 and parts[4] == "torn"
        data = [d for d in descs if d[0] in "dp"]
        nsect = (64 + 32 * len(descs) + 4095) // 4096
        length = (nsect + len(data)) * 4096
        e = bytearray(length)
        struct.pack_into("<4sIIIQII16sQQ", e, 0, b"loge", 0, length, tail, eseq, len(descs), 0,
                         bytes(guid), size, size)
        k = 0
        for i, d in enumerate(descs):
            kind, rest = d[0], d[2:]
            off, val = rest.split("=", 1)
            off = int(off, 0)
            at = 64 + 32 * i
            if kind == "z":
                struct.pack_into("<4sIQQQ", e, at, b"zero", 0, int(val, 0), off, eseq)
                continue
            if kind == "d":
                page = bytes([int(val, 0)]) * 4096
            else:
                src, where = val.split("@")
                with open(src, "rb") as g:
                    g.seek(int(where, 0))
                    page = g.read(4096).ljust(4096, b"\0")
            struct.pack_into("<4s4s8sQQ", e, at, b"desc", page[4092:], page[:8], off, eseq)
            s = (nsect + k) * 4096
            e[s:s + 4] = b"data"
            struct.pack_into("<I", e, s + 4, eseq >> 32)
            e[s + 8:s + 4092] = page[8:4092]
            struct.pack_into("<I", e, s + 4092, eseq & 0xFFFFFFFF)
            k += 1
        with_crc(e)
        if torn:
            e[4] ^= 0xFF
        for i in range(0, length, 4096):  # entries may wrap at the end of the log
            f.seek(log_off + (pos + i) % log_len)
            f.write(e[i:i + 4096])
    for n, off in enumerate((64 * 1024, 128 * 1024)):
        h = bytearray(cur)
        h[48:64] = guid
        struct.pack_into("<Q", h, 8, seq + 1 + n)
        f.seek(off)
        f.write(with_crc(h))
    f.close()


main()
