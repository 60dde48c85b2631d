#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# A second reader of a LUKS payload for the tests, written from the dm-crypt
# spec, not from vdisk: decrypt IMAGE's payload
# with the volume key cryptsetup dumps (luksDump --dump-volume-key), sector by
# sector, with python3-cryptography (Debian).
#   luks-decrypt.py IMAGE KEYHEX OFFSET SECTOR CIPHER OUT
# CIPHER: aes-xts-plain64 or aes-cbc-essiv:sha256. The IV is the sector's
# offset in 512-byte units, whatever SECTOR is (LUKS2 leaves dm-crypt's
# iv_large_sectors off; tests/vm/tests/85-luks-dmcrypt.sh checks it on dm-crypt).
import hashlib
import struct
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

image, keyhex, offset, sector, cipher, out = sys.argv[1:7]
key = bytes.fromhex(keyhex)
offset, sector = int(offset), int(sector)
with open(image, "rb") as f:
    f.seek(offset)
    data = f.read()
res = bytearray()
essiv = None
if cipher == "aes-cbc-essiv:sha256":
    essiv = Cipher(algorithms.AES(hashlib.sha256(key).digest()), modes.ECB()).encryptor()
for n in range(len(data) // sector):
    iv = struct.pack("<Q", n * (sector // 512)) + bytes(8)
    blk = data[n * sector:(n + 1) * sector]
    if cipher == "aes-xts-plain64":
        c = Cipher(algorithms.AES(key), modes.XTS(iv)).decryptor()
    elif essiv:
        c = Cipher(algorithms.AES(key), modes.CBC(essiv.update(iv))).decryptor()
    else:
        sys.exit("unknown cipher " + cipher)
    res += c.update(blk) + c.finalize()
with open(out, "wb") as f:
    f.write(res)
