#!/usr/bin/env python3
"""Archive tier benchmark: Redis memory freed by archiving, and windows read from either tier.

    make bench-archive          # or: python benchmarks/bench_archive.py [--points N]

One run with a 1,000,000-point float series, a 1,000,000-point int series and 200 small
tensors (64×64 float32) is logged into a real redis-server on loopback, then archived. Printed:
Redis memory before and after (INFO used_memory), the Parquet file's size, the time to
archive, and the time to read a 1,000-point window (median of 50 random windows, each on a
new file handle for the cold case and on the open one for the warm case) from Redis and from
the archive, side by side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import report
from bench_logger import RedisServer

import labstats
from labstats.ops import archive
from labstats.reader import Lab


def window_times(read, starts) -> float:
    times = []
    for start in starts:
        t = time.perf_counter()
        s = read(int(start))
        times.append(time.perf_counter() - t)
        assert len(s) == 1000, len(s)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    report.add_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.points = 20_000
    n = args.points
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(tmp)
        try:
            lab = labstats.connect(server.url)
            rng = np.random.default_rng(0)
            t = time.perf_counter()
            with labstats.Stats(Path(tmp) / "big", url=server.url, flush_interval=0.2) as stats:
                for step in range(n):
                    values = {"loss": float(step) * 0.5, "tokens": step * 3}
                    if step % (n // 200) == 0:
                        values["w"] = rng.normal(size=(64, 64)).astype(np.float32)
                    stats.log(step=step, **values)
            logged = time.perf_counter() - t
            used_before = int(server.client.info("memory")["used_memory"])
            run = lab.run("big")
            starts = rng.integers(0, n - 1000, size=50)
            redis_ms = window_times(lambda s: run.series("loss", s, s + 999), starts)

            t = time.perf_counter()
            done = archive.archive(lab, run, Path(tmp) / "archive")
            archive_s = time.perf_counter() - t
            used_after = int(server.client.info("memory")["used_memory"])

            warm = Lab(server.client, archive_dir=Path(tmp) / "archive")
            archived = warm.run("big")
            warm_ms = window_times(lambda s: archived.series("loss", s, s + 999), starts)

            def cold(start: int):
                fresh = Lab(server.client, archive_dir=Path(tmp) / "archive")
                return fresh.run("big").series("loss", start, start + 999)

            cold_ms = window_times(cold, starts)
            t = time.perf_counter()
            whole = archived.series("loss")
            whole_ms = (time.perf_counter() - t) * 1000
            assert len(whole) == n
        finally:
            server.proc.terminate()
    mib = 2**20
    rows = [
        [f"run: 2 series × {n:,} points + 200 tensors of 64×64 float32, logged", f"{logged:.1f} s"],
        ["Redis used_memory before archiving", f"{used_before / mib:.1f} MiB"],
        ["Redis used_memory after archiving", f"{used_after / mib:.1f} MiB (freed "
         f"{(used_before - used_after) / mib:.1f} MiB; the run's keys: "
         f"{(done.redis_bytes_freed or 0) / mib:.1f} MiB)"],
        ["Parquet file (zstd)",
         f"{done.file_bytes / mib:.1f} MiB, {done.rows:,} rows, archived in {archive_s:.1f} s"],
        [f"1,000-point window of {n:,} (median of 50 random windows): from Redis", f"{redis_ms:.2f} ms"],
        ["  from the archive, file open", f"{warm_ms:.2f} ms ({warm_ms / redis_ms:.1f}× Redis)"],
        ["  from the archive, file opened anew", f"{cold_ms:.2f} ms ({cold_ms / redis_ms:.1f}× Redis)"],
        ["whole series from the archive", f"{whole_ms:.0f} ms"],
    ]  # fmt: skip
    report.emit(args, "archive", report.table(["measure", "figure"], rows))


if __name__ == "__main__":
    main()
