#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# partitions-compare.py SFDISK_JSON VDISK_JSON: does `vdisk info --json` list the partition
# table `sfdisk -J` reads (label, id, and per partition: number, start, size, type, uuid,
# name, bootable)? Prints the differences, exits 1 if any.
import json
import re
import sys

sf = json.load(open(sys.argv[1]))["partitiontable"]
vd = json.load(open(sys.argv[2]))
diffs = []


def same(what, a, b):
    if a != b:
        diffs.append(f"{what}: sfdisk {a!r}, vdisk {b!r}")


same("label", sf["label"], vd.get("partition_table"))
same("id", sf["id"].lower(), vd.get("partition_table_id", "").lower())
ss = sf.get("sectorsize", 512)
mine = {p["number"]: p for p in vd.get("partitions", [])}
theirs = {}
for p in sf.get("partitions", []):
    theirs[int(re.search(r"(\d+)$", p["node"]).group(1))] = p
same("partition numbers", sorted(theirs), sorted(mine))
for n, p in theirs.items():
    m = mine.get(n)
    if not m:
        continue
    same(f"{n} start", p["start"] * ss, m["start"])
    same(f"{n} size", p["size"] * ss, m["size"])
    same(f"{n} type", p["type"].lower(), m["type"].lower())
    same(f"{n} uuid", p.get("uuid", "").lower(), m["uuid"].lower())
    same(f"{n} name", p.get("name", ""), m["name"])
    same(f"{n} bootable", bool(p.get("bootable", False)), m["bootable"])
for d in diffs:
    print(d)
sys.exit(1 if diffs else 0)
