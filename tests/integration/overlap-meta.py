#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# The metadata byte ranges of an image file, parsed here independently of
# libvdisk, for the overlap tests:
#   overlap-meta.py ranges FMT IMAGE      print "OFF LEN WHAT" lines
#   overlap-meta.py hash IMAGE RANGES     sha256 of those ranges of IMAGE (the
#                                         qcow2 dirty/corrupt bits masked out)
import hashlib
import re
import struct
import sys


def be(fmt, b, off):
    return struct.unpack_from(">" + fmt, b, off)[0]


def le(fmt, b, off):
    return struct.unpack_from("<" + fmt, b, off)[0]


def qcow2(f):
    h = f[:4096]
    cb = be("I", h, 20)
    cs = 1 << cb
    l1_size, l1_off = be("I", h, 36), be("Q", h, 40)
    rt_off, rt_cl = be("Q", h, 48), be("I", h, 56)
    nsnap, snap_off = be("I", h, 60), be("Q", h, 64)
    out = [(0, cs, "header"), (l1_off, l1_size * 8, "L1"), (rt_off, rt_cl * cs, "reftable")]
    for i in range(rt_cl * cs // 8):
        e = be("Q", f, rt_off + 8 * i) & ~511
        if e and e + cs <= len(f):
            out.append((e, cs, "refblock %d" % i))
    l1s = [(l1_off, l1_size)]
    off = snap_off
    for i in range(nsnap):
        sl1, sl1n = be("Q", f, off), be("I", f, off + 8)
        idl, nl, extra = be("H", f, off + 12), be("H", f, off + 14), be("I", f, off + 36)
        out.append((sl1, sl1n * 8, "snapshot L1 %d" % i))
        l1s.append((sl1, sl1n))
        off += (40 + extra + idl + nl + 7) & ~7
    if nsnap:
        out.append((snap_off, off - snap_off, "snapshot table"))
    for lo, n in l1s:
        for i in range(n):
            e = be("Q", f, lo + 8 * i) & 0x00FFFFFFFFFFFE00
            if e and e + cs <= len(f):
                out.append((e, cs, "L2 %d" % i))
    return out


def vdi(f):
    data = le("I", f, 344)
    return [(0, data, "header and block map")]


def vpc(f):
    out = [(0, 512, "footer copy"), (len(f) - 512, 512, "footer")]
    if be("I", f, 60) == 2:  # fixed: only the footer
        return out[1:]
    dh = be("Q", f, 16)
    bat, n, bs = be("Q", f, dh + 16), be("I", f, dh + 28), be("I", f, dh + 32)
    out += [(dh, 1024, "dynamic header"), (bat, n * 4, "BAT")]
    bm = ((bs // 512 + 7) // 8 + 511) & ~511
    for i in range(n):
        s = be("I", f, bat + 4 * i)
        if s != 0xFFFFFFFF:
            out.append((s * 512, bm, "bitmap %d" % i))
    return out


def vhdx(f):
    # the headers change when a session starts (new write GUIDs): the region tables do not
    out = [(192 * 1024, 128 * 1024, "region tables")]
    rt = f[192 * 1024:192 * 1024 + 65536]
    for i in range(le("I", rt, 8)):
        e = 16 + 32 * i
        out.append((le("Q", rt, e + 16), le("I", rt, e + 24), "region %d" % i))
    return out


def vmdk(f):
    cap, gs = le("Q", f, 12), le("Q", f, 20)
    desc, descn = le("Q", f, 28), le("Q", f, 36)
    ngte, rgd, gd = le("I", f, 44), le("Q", f, 48), le("Q", f, 56)
    ngt = (cap // gs + ngte - 1) // ngte
    out = [(0, 512, "header"), (desc * 512, descn * 512, "descriptor")]
    for name, d in (("GD", gd), ("redundant GD", rgd)):
        if not d:
            continue
        out.append((d * 512, ngt * 4, name))
        for i in range(ngt):
            g = le("I", f, d * 512 + 4 * i)
            if g:
                out.append((g * 512, ngte * 4, "%s GT %d" % (name, i)))
    return out


def main():
    if sys.argv[1] == "ranges":
        f = open(sys.argv[3], "rb").read()
        for off, n, what in globals()[sys.argv[2]](f):
            print(off, n, what.replace(" ", "_"))
        return
    f = bytearray(open(sys.argv[2], "rb").read())
    # what a first write changes by design, before any data: not overwritten by data
    if f[:4] == b"QFI\xfb":
        f[79] &= ~3  # qcow2: the dirty and corrupt bits
    if f[64:68] == b"\x7f\x10\xda\xbe":
        f[408:424] = bytes(16)  # VDI: the modification UUID
    if f[:4] == b"KDMV":
        f = bytearray(re.sub(rb"\nCID=[0-9a-fA-F]{8}", b"\nCID=00000000", bytes(f), count=1))
    h = hashlib.sha256()
    for line in open(sys.argv[3]):
        off, n, _ = line.split()
        h.update(bytes(f[int(off):int(off) + int(n)]))
    print(h.hexdigest())


main()
