#!/usr/bin/env python3
"""What the disk under a directory does with synced sequential writes (BENCHMARKS.md, "The disk").

Appends `--count` writes of `--size` bytes of random data to a file, each followed by fdatasync (as RocksDB's
write-ahead log does for an acknowledgement or a decided block), and prints the throughput, fsyncs per second and
the latency percentiles of one write plus its sync. `--background K` runs K writers at the same time, each writing
`--background-mib` MiB and syncing only at the end (or every MiB with `--background-sync-every-mib`), the way a
memtable flush writes a table file: it shows what a bulk write does to the small syncs' tail.

    python3 scripts/disk-fsync.py --dir /tmp --size 4096 --count 20000
    python3 scripts/disk-fsync.py --dir /tmp --size 4096 --count 15000 --background 4
"""

import argparse
import multiprocessing
import os
import time


def bulk(path: str, mib: int, sync_every: bool) -> None:
    chunk = os.urandom(1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for _ in range(mib):
            os.write(fd, chunk)
            if sync_every:
                os.fdatasync(fd)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="/tmp", help="directory on the disk to measure")
    p.add_argument("--size", type=int, default=4096, help="bytes per write")
    p.add_argument("--count", type=int, default=20000, help="writes, each followed by fdatasync")
    p.add_argument("--background", type=int, default=0, help="bulk writers running meanwhile")
    p.add_argument("--background-mib", type=int, default=256, help="MiB each bulk writer writes")
    p.add_argument("--background-sync-every-mib", action="store_true", help="bulk writers sync every MiB")
    a = p.parse_args()
    if a.size <= 0 or a.count <= 0 or a.background < 0 or a.background_mib <= 0:
        p.error("--size, --count and --background-mib must be positive, --background not negative")

    workers = [
        multiprocessing.Process(
            target=bulk,
            args=(os.path.join(a.dir, f"disk-fsync-bulk-{os.getpid()}-{i}"), a.background_mib,
                  a.background_sync_every_mib),
        )
        for i in range(a.background)
    ]
    for w in workers:
        w.start()
    buf = os.urandom(a.size)
    path = os.path.join(a.dir, f"disk-fsync-{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    lat = []
    start = time.perf_counter()
    try:
        for _ in range(a.count):
            t = time.perf_counter()
            os.write(fd, buf)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        total = time.perf_counter() - start
        os.close(fd)
        os.unlink(path)
        for w in workers:
            w.join()
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3

    print(
        f"{a.count} writes of {a.size} B with fdatasync, {a.background} bulk writers: "
        f"{a.count * a.size / total / 1e6:.1f} MB/s, {a.count / total:.0f} syncs/s, "
        f"p50 {pct(0.5):.3f} ms, p99 {pct(0.99):.3f} ms, p99.9 {pct(0.999):.3f} ms, max {lat[-1] * 1e3:.1f} ms, "
        f"over 50 ms: {sum(1 for x in lat if x > 0.05)}"
    )


if __name__ == "__main__":
    main()
