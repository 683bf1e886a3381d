#!/usr/bin/env python3
"""Writes v1/: a queue directory in spillway's first on-disk format (the
queue code before the `queue` branch was merged, commit 71e6f68^1, files
src/queue/{segment,meta}.rs), from that code's format description:

record  = header (24 bytes) + payload, little-endian:
          0..2 "SW" | 2 version=1 | 3 flags=0 | 4..8 payload len u32 |
          8..16 samples u64 | 16..20 crc32(payload) | 20..24 crc32(bytes 0..20)
segment = <logical offset of its first byte, 16 lowercase hex digits>.seg
cursor  = "SWCR" | version=1 | 3 zero bytes | offset u64 | crc32(bytes 0..16)

crc32 is CRC-32/ISO-HDLC (zlib's, crc32fast's). Five records, payload
"v1 record <k> " repeated k+1 times, samples 10*(k+1); records 0..3 in the
first segment, 3..5 in the second; the cursor stands after record 0 (it
was acknowledged), so records 1..5 are pending.

Run from this directory: python3 gen_v1.py
"""
import os
import struct
import zlib


def record(payload, samples):
    head = b"SW" + bytes([1, 0]) + struct.pack("<IQI", len(payload), samples, zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head))


def main():
    os.makedirs("v1", exist_ok=True)
    for name in os.listdir("v1"):
        os.remove(os.path.join("v1", name))
    records = [(("v1 record %d " % k).encode() * (k + 1), 10 * (k + 1)) for k in range(5)]
    segments = [records[:3], records[3:]]
    offset = 0
    ids = []
    for seg in segments:
        data = b""
        for payload, samples in seg:
            ids.append(offset + len(data))
            data += record(payload, samples) + payload
        with open(os.path.join("v1", "%016x.seg" % offset), "wb") as f:
            f.write(data)
        offset += len(data)
    cursor = b"SWCR" + bytes([1, 0, 0, 0]) + struct.pack("<Q", ids[1])
    with open(os.path.join("v1", "cursor"), "wb") as f:
        f.write(cursor + struct.pack("<I", zlib.crc32(cursor)))


main()
