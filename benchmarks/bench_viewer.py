#!/usr/bin/env python3
"""Viewer benchmark: server time and bytes of a run page with 10 series × 1,000,000 points;
the explorer over 200 runs × 10,000 points; the runs table sorted and filtered over 10,000 runs.

    make bench-viewer            # or: python benchmarks/bench_viewer.py [--points N] [--part explorer]

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
PARTS = ("page", "explorer", "table")


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
    parser.add_argument("--part", choices=PARTS, action="append", help="only these parts (default: all)")
    report.add_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.points, args.repeat = 20_000, 2
    parts = args.part or PARTS
    if "page" in parts:
        run_page(args)
    if "explorer" in parts:
        explorer(args)
    if "table" in parts:
        sorted_table(args)


def run_page(args) -> None:
    """A run page with 10 series × args.points points (the "viewer" table)."""
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


QUIET = {"capture_git": False, "capture_freeze": False, "handle_signals": False}


def median_of(client, url: str, repeat: int) -> tuple[float, int]:
    runs = [timed(client, url) for _ in range(repeat)]
    return statistics.median(t for t, _ in runs), runs[0][1]


def explorer(args) -> None:
    """The explorer over a sweep of 200 runs (5 lr × 4 optimisers × 10 seeds) of 10,000 points
    each: split by optimiser, coloured by lr, mean ± std over the seeds (the "viewer-explorer"
    table). First: a fresh process's first view (every run read and reduced, the chart
    template built); cold: a fresh app (every run read again); warm: ended runs' reductions kept."""
    runs, points = (20, 500) if args.quick else (200, 10_000)
    lrs, opts = (0.1, 0.03, 0.01, 0.003, 0.001), ("adam", "sgd", "rmsprop", "lamb")
    with tempfile.TemporaryDirectory(prefix="labstats-bench-") as tmp:
        server = RedisServer(tmp)
        try:
            rng = np.random.default_rng(0)
            start = time.perf_counter()
            for k in range(runs):
                config = {"lr": lrs[k % 5], "opt": opts[k // 5 % 4], "seed": k // 20}
                noise = rng.standard_normal(points) * 0.05
                with labstats.Stats(Path(tmp) / f"r{k}", url=server.url, config=config, flush_interval=0.05,
                                    **QUIET) as stats:  # fmt: skip
                    for i in range(points):
                        stats.log(step=i, loss=1.0 / (1 + i * config["lr"]) + noise[i])
            print(f"logged {runs} runs × {points:,} points in {time.perf_counter() - start:.1f} s")
            view = "/explorer/view?metric=loss&split=opt&color=lr&agg=mean"
            first = timed(create_app({"local": Source("local", server.url)}).test_client(), view)
            client = create_app({"local": Source("local", server.url)}).test_client()
            cold = timed(client, view)
            warm = median_of(client, view, args.repeat)
            median = median_of(
                client, "/explorer/view?metric=loss&split=opt&color=lr&agg=median", args.repeat
            )
            page = median_of(
                client, "/explorer?metric=loss&split=opt&color=lr&agg=mean&smooth=0.6", args.repeat
            )
            each = median_of(client, "/explorer/view?metric=loss&color=lr&agg=none", args.repeat)
        finally:
            server.stop()
    ms = lambda t: f"{t * 1e3:.0f} ms"  # noqa: E731
    kb = lambda b: f"{b / 1e3:.0f} kB"  # noqa: E731
    what = f"{runs} runs × {points:,} points"
    rows = [
        [f"view, {what}: split by opt, colour by lr, mean ± std; a fresh process's first", ms(first[0]),
         kb(first[1]), "target ≤ 1 s"],
        ["  the same, a fresh app (every run read again)", ms(cold[0]), kb(cold[1]), "target ≤ 1 s"],
        ["  the same, median of repeats (ended runs' reductions kept)", ms(warm[0]), kb(warm[1]), ""],
        ["median with a min–max band, median of repeats", ms(median[0]), kb(median[1]), ""],
        ["the page (HTML with its first view), smoothing 0.6", ms(page[0]), kb(page[1]), ""],
        [f"each run drawn ({runs} lines, one multi-line)", ms(each[0]), kb(each[1]), ""],
    ]  # fmt: skip
    report.emit(args, "viewer-explorer", report.table(["measure", "server time", "bytes", "note"], rows))


def sorted_table(args) -> None:
    """The runs table over 10,000 runs: sorted by a metric, filtered by an expression, grouped,
    with its config columns and group-by choices over every filtered run (the "viewer-table"
    table). First: a fresh app's first page (every run's record read); then median of repeats."""
    runs = 200 if args.quick else 10_000
    with tempfile.TemporaryDirectory(prefix="labstats-bench-") as tmp:
        server = RedisServer(tmp)
        try:
            start = time.perf_counter()
            for k in range(runs):
                config = {"lr": 10.0 ** -(k % 4), "seed": k, "model": "mlp"}
                path = Path(tmp) / f"run-{k:05d}"
                with labstats.Stats(
                    path, url=server.url, config=config, flush_interval=0.01, **QUIET
                ) as stats:
                    for i in range(20):
                        stats.log(step=i, loss=1.0 / (i + 1) + k * 1e-4, acc=i / 20)
            print(f"logged {runs:,} runs in {time.perf_counter() - start:.1f} s")
            client = create_app({"local": Source("local", server.url)}).test_client()
            first = timed(client, "/")
            urls = {
                "plain": "/",
                "sorted": "/?sort=metric:loss:last",
                "last page": f"/?sort=metric:loss:last&page={runs // 50}",
                "filtered": "/?filter=lr+%3C+0.05+and+loss.min+%3C+0.5&sort=metric:loss:min&order=desc",
                "grouped": "/?group=config:lr&sort=metric:loss:last",
                "json": "/api/runs?sort=metric:loss:last&filter=lr+%3C+0.05&limit=50",
            }
            found = {name: median_of(client, url, args.repeat) for name, url in urls.items()}
        finally:
            server.stop()
    ms = lambda t: f"{t * 1e3:.0f} ms"  # noqa: E731
    kb = lambda b: f"{b / 1e3:.0f} kB"  # noqa: E731
    rows = [
        [f"runs page, 50 of {runs:,}, a fresh app's first (every record read)", ms(first[0]), kb(first[1])],
        ["  the same, median of repeats (config columns over every run)", *map_pair(found["plain"], ms, kb)],
        ["sorted by loss (last), page 1", *map_pair(found["sorted"], ms, kb)],
        [f"sorted by loss (last), page {runs // 50} (the last)", *map_pair(found["last page"], ms, kb)],
        ["filter lr < 0.05 and loss.min < 0.5, by loss (min) desc", *map_pair(found["filtered"], ms, kb)],
        ["grouped by lr, sorted by loss (last)", *map_pair(found["grouped"], ms, kb)],
        ["the same filter and sort as JSON (/api/runs)", *map_pair(found["json"], ms, kb)],
    ]  # fmt: skip
    report.emit(args, "viewer-table", report.table(["measure", "server time", "bytes"], rows))


def map_pair(pair: tuple[float, int], ms, kb) -> list[str]:
    return [ms(pair[0]), kb(pair[1])]


if __name__ == "__main__":
    main()
