#!/usr/bin/env python3
"""Prints client-id prefixes for ringmq-bench whose publisher `<prefix>-p0`
and subscriber `<prefix>-s0` land on the same shard, or on different ones
(the hash of ringmq::shard::owner_of).

    python3 perf/owner.py same 2     # -> a prefix, 2 shards
    python3 perf/owner.py cross 2
"""
import sys

M = (1 << 64) - 1


def owner(cid: str, n: int) -> int:
    h = 0xCBF29CE484222325
    for b in cid.encode():
        h ^= b
        h = (h * 0x100000001B3) & M
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M
    h ^= h >> 33
    return h % n


def main() -> None:
    want, n = sys.argv[1], int(sys.argv[2])
    tag = sys.argv[3] if len(sys.argv) > 3 else "lat"
    for i in range(10_000):
        p = f"{tag}{i}"
        same = owner(p + "-p0", n) == owner(p + "-s0", n)
        if same == (want == "same"):
            print(p)
            return
    sys.exit("no prefix found")


main()
