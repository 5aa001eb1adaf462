#!/usr/bin/env python3
"""Viewer benchmark, the lab's history: the runs list with 10,000 runs in the store, and a
compare page of 20 runs (part of `make bench-viewer`).

    python benchmarks/bench_viewer_list.py [--runs 10000]

Every run is logged by labstats.Stats (a config of three keys, two series of 20 points),
against a real redis-server on loopback. Server time through Flask's test client (no
network), median of 5: the runs page (a page of 50 runs, with the metric columns read from
each listed run's series and the config columns that differ), the same list as JSON, a
name filter, and the compare page of 20 runs (HTML, and with its 40 chart data requests).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import report
from bench_logger import RedisServer
from bench_viewer import timed

import labstats
from labstats.viewer import charts, create_app
from labstats.viewer.sources import Source


def median_ms(client, url: str, repeat: int = 5) -> tuple[float, int]:
    runs = [timed(client, url) for _ in range(repeat)]
    return statistics.median(t for t, _ in runs) * 1e3, runs[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    report.add_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.runs = 100
    with tempfile.TemporaryDirectory(prefix="labstats-bench-") as tmp:
        server = RedisServer(tmp)
        try:
            start = time.perf_counter()
            ids = []
            for k in range(args.runs):
                config = {"lr": 10.0 ** -(k % 4), "seed": k, "model": "mlp"}
                quiet = {"capture_git": False, "capture_freeze": False, "handle_signals": False}
                path = Path(tmp) / f"run-{k:05d}"
                with labstats.Stats(
                    path, url=server.url, config=config, flush_interval=0.01, **quiet
                ) as stats:
                    for i in range(20):
                        stats.log(step=i, loss=1.0 / (i + 1) + k * 1e-4, acc=i / 20)
                ids.append(stats.run_id)
            print(f"logged {args.runs:,} runs in {time.perf_counter() - start:.0f} s")
            client = create_app({"local": Source("local", server.url)}).test_client()
            page = median_ms(client, "/")
            api = median_ms(client, "/api/runs?limit=200")
            big_page = median_ms(client, "/?limit=200")
            filtered = median_ms(client, "/?q=run-0999")
            refs = "&".join(f"run=local/{i}" for i in ids[:20])
            compare = median_ms(client, f"/compare?{refs}")
            data_urls = [charts.series_url("local", i, name) for i in ids[:20] for name in ("acc", "loss")]
            start = time.perf_counter()
            for url in data_urls:
                timed(client, url)
            compare_data = (time.perf_counter() - start) * 1e3
        finally:
            server.stop()
    rows = [
        (f"runs page, 50 of {args.runs:,} runs, metric and config columns", f"{page[0]:.0f} ms",
         f"{page[1] / 1e3:.0f} kB", "target ≤ 200 ms"),
        ("runs page of 200 runs", f"{big_page[0]:.0f} ms", f"{big_page[1] / 1e3:.0f} kB", ""),
        ("200 runs as JSON (/api/runs?limit=200)", f"{api[0]:.0f} ms", f"{api[1] / 1e3:.0f} kB", ""),
        ("runs page, name filter (run-0999*)", f"{filtered[0]:.0f} ms", f"{filtered[1] / 1e3:.0f} kB", ""),
        ("compare page of 20 runs (HTML)", f"{compare[0]:.0f} ms", f"{compare[1] / 1e3:.0f} kB", ""),
        ("  + its 40 chart data requests", f"{compare_data:.0f} ms", "", ""),
    ]  # fmt: skip
    report.emit(
        args,
        "viewer-list",
        report.table(["measure", "server time", "bytes", "note"], [list(r) for r in rows]),
    )


if __name__ == "__main__":
    main()
