#!/usr/bin/env python3
"""Viewer benchmark: server time and bytes of a run page with 10 series × 1,000,000 points.

    make bench-viewer            # or: python benchmarks/bench_viewer.py [--points N]

A page is its HTML plus one data request per chart (what a browser fetches). Side by side:
the same series shipped at full resolution as JSON (what a viewer without downsampling
would send). Times are server-side (Flask's WSGI test client, no network), against a real
redis-server on loopback.
"""

from __future__ import annotations

import argparse
import json
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
from labstats.viewer import create_app
from labstats.viewer.sources import Source

SERIES = 10


def timed(client, url: str) -> tuple[float, int]:
    start = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, (url, response.status_code)
    return elapsed, len(response.data)


def page_load(client, run_id: str, names: list[str]) -> tuple[float, int]:
    total_time, total_bytes = timed(client, f"/runs/local/{run_id}")
    for name in names:
        t, b = timed(client, f"/api/runs/local/{run_id}/series/{name}?columns=1")
        total_time += t
        total_bytes += b
    return total_time, total_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000, help="points per series")
    parser.add_argument("--repeat", type=int, default=5)
    report.add_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.points, args.repeat = 20_000, 2
    mid = args.points // 2
    with tempfile.TemporaryDirectory(prefix="labstats-bench-") as tmp:
        server = RedisServer(tmp)
        try:
            rng = np.random.default_rng(0)
            names = [f"metric_{k}" for k in range(SERIES)]
            start = time.perf_counter()
            with labstats.Stats(Path(tmp) / "long", url=server.url, capture_git=False) as stats:
                walk = np.cumsum(rng.standard_normal((args.points, SERIES)), axis=0)
                for i in range(args.points):
                    stats.log(i, **dict(zip(names, walk[i].tolist(), strict=True)))
            print(f"logged {SERIES} × {args.points:,} points in {time.perf_counter() - start:.1f} s")
            run_id = stats.run_id
            client = create_app({"local": Source("local", server.url)}).test_client()

            cold = page_load(client, run_id, names)
            warm = [page_load(client, run_id, names) for _ in range(args.repeat)]
            full = [timed(client, f"/api/runs/local/{run_id}/series/{names[0]}?max_points=100000&columns=1")]
            window = [
                timed(
                    client,
                    f"/api/runs/local/{run_id}/series/{names[0]}?start={mid}&stop={mid + 1999}&columns=1",
                )
                for _ in range(args.repeat)
            ]
            naive = []
            for _ in range(2):
                t0 = time.perf_counter()
                s = labstats.connect(server.url).run(run_id).series(names[0])
                body = {"idx": s.idx.tolist(), "values": s.values.tolist()}
                payload = json.dumps(body)
                naive.append((time.perf_counter() - t0, len(payload)))
        finally:
            server.stop()

    median = statistics.median(t for t, _ in warm)
    rows = [
        (
            "run page, 10 charts (HTML + 10 data requests), first",
            f"{cold[0] * 1e3:.0f} ms",
            f"{cold[1] / 1e3:.0f} kB",
        ),
        ("run page, 10 charts, median of repeats", f"{median * 1e3:.0f} ms", f"{warm[0][1] / 1e3:.0f} kB"),
        (
            f"one chart's overview (≤ 2,000 points of {args.points:,})",
            f"{(median / SERIES) * 1e3:.0f} ms",
            "",
        ),
        (
            "zoomed window, 2,000 points at full resolution",
            f"{statistics.median(t for t, _ in window) * 1e3:.1f} ms",
            f"{window[0][1] / 1e3:.0f} kB",
        ),
        (
            "whole series, max_points=100,000 (summaries suffice)",
            f"{full[0][0] * 1e3:.0f} ms",
            f"{full[0][1] / 1e3:.0f} kB",
        ),
        (
            "baseline: one series shipped whole as JSON",
            f"{min(t for t, _ in naive) * 1e3:.0f} ms",
            f"{naive[0][1] / 1e6:.1f} MB",
        ),
        (
            "baseline: 10 series shipped whole (× 10)",
            f"{min(t for t, _ in naive) * SERIES * 1e3:.0f} ms",
            f"{naive[0][1] * SERIES / 1e6:.0f} MB",
        ),
    ]
    summary = (
        f"`make bench-viewer`: a run page with {SERIES} series × {args.points:,} points in {rows[0][1]} "
        f"(cold) / {rows[1][1]} (warm) of server time and {rows[0][2]}, against {rows[6][1]} and "
        f"{rows[6][2]} when every point is shipped."
    )
    report.emit(
        args, "viewer", report.table(["measure", "server time", "bytes"], [list(r) for r in rows]), summary
    )


if __name__ == "__main__":
    main()
