#!/usr/bin/env python3
"""Viewer benchmark: a run page showing large tensors, reduced for the screen against sent whole.

    python benchmarks/bench_viewer_tensor.py     # the third part of `make bench-viewer`

One run logs a 1-D tensor of 1,000,000 floats and a 4096×4096 float32 weight (as files of
the artifact store). Its run page is fetched through Flask's WSGI test client (server time,
no network) twice: as the viewer draws it (a long 1-D tensor as the min and max of 2,000
buckets, a heat-map over 1,024 a side as block means) and, side by side, with the limits
lifted, which is what a viewer sending every element does.
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
from labstats.viewer import charts, create_app
from labstats.viewer.sources import Source

REPEAT = 3


def page(client, url: str) -> tuple[float, int]:
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code)
        assert b'class="chart-spec"' in response.data, "the tensor was not drawn"
    return statistics.median(times), len(response.data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    report.add_options(parser)
    args = parser.parse_args()
    length, side = (20_000, 1100) if args.quick else (1_000_000, 4096)  # quick: just over the limits
    rng = np.random.default_rng(0)
    tensors = {
        f"1-D tensor, {length:,} float32": rng.standard_normal(length).astype(np.float32),
        f"{side}×{side} float32 heat-map": rng.standard_normal((side, side)).astype(np.float32),
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="labstats-bench-") as tmp:
        server = RedisServer(tmp)
        try:
            store = Path(tmp) / "artifacts"
            client = create_app({"local": Source("local", server.url, artifact_dir=str(store))}).test_client()
            for label, value in tensors.items():
                with labstats.Stats(Path(tmp) / "tensor", url=server.url, capture_git=False,
                                    artifact_dir=store) as stats:  # fmt: skip
                    stats.log(0, w=value)
                url = f"/runs/local/{stats.run_id}"
                reduced = page(client, url)
                limits = charts.MAX_LINE_BUCKETS, charts.MAX_IMAGE_SIDE
                charts.MAX_LINE_BUCKETS = charts.MAX_IMAGE_SIDE = 1 << 40  # what sending it whole costs
                try:
                    whole = page(client, url)
                finally:
                    charts.MAX_LINE_BUCKETS, charts.MAX_IMAGE_SIDE = limits
                rows.append((label, reduced, whole))
        finally:
            server.stop()
    header = ["run page showing", "reduced: time", "bytes", "sent whole: time", "bytes"]
    cells = [[label, f"{t * 1e3:.0f} ms", f"{b / 1e6:.2f} MB", f"{tw * 1e3:.0f} ms", f"{bw / 1e6:.1f} MB"]
             for label, (t, b), (tw, bw) in rows]  # fmt: skip
    report.emit(args, "viewer-tensor", report.table(header, cells))


if __name__ == "__main__":
    main()
