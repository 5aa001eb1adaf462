#!/usr/bin/env python3
"""Sharing benchmark: what a notebook, a one-file export and a /metrics scrape weigh.

    python benchmarks/bench_share.py [--points 20000] [--publish]

Runs are logged through the real logger into a real redis-server on loopback: 5 runs, each
10 scalar series of ``--points`` points, a 3×4 weight tensor at 30 steps and a 128×128
picture at 3 steps. Then, each printed as a table:

- the notebook: roles/jupyter/files/labstats-example.ipynb executed by nbclient in a fresh
  kernel as it is (``lp.notebook()`` once, ``lp.show()`` per chart), and beside it the old
  way made from the same cells (Bokeh's ``output_notebook(INLINE)`` and ``show``): the saved
  .ipynb and nbconvert's HTML of it, against the target of a saved notebook ≤ 1 MB;
- one-file exports (labstats.export, and the viewer's report export): one run, a comparison
  of the 5 runs (10 charts; target ≤ 2 MB), a report of 5 panels (chart, compare, media,
  table, hparams); bytes, and the median time of 5 through Flask's test client;
- /metrics: 4 sources (the same Redis) × 20 running runs (open Stats, 200 series each):
  the median and slowest of 30 scrapes and the page's size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numpy as np
import report
from bench_logger import RedisServer

import labstats
from labstats import export

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "roles/jupyter/files/labstats-example.ipynb"
RUNS, SERIES = 5, 10
NOTEBOOK_TARGET = 1_000_000
COMPARE_TARGET = 2_000_000
QUIET = {"capture_git": False, "capture_freeze": False, "handle_signals": False, "console": False}
REPORT = """# Bench

```labstats
chart run={run} series=loss,acc
compare metric=loss,acc color=lr split=opt agg=mean
media run={run} name=samples
table columns=name,status,config:lr,loss,loss:min limit=20
hparams metric=loss
```
"""


def log_runs(tmp: Path, url: str, points: int) -> list[str]:
    ids = []
    for k in range(RUNS):
        config = {"lr": 0.1 * (k % 3 + 1), "seed": k, "opt": "adam" if k % 2 else "sgd"}
        with labstats.Stats(tmp / f"run{k}", url=url, name=f"run{k}", config=config, **QUIET) as stats:
            for i in range(points):
                x = i / points
                values = {"loss": float(np.exp(-3 * x) + 0.05 * np.sin(i / 50) + k * 0.1), "acc": x}
                values.update(
                    {f"metric{j}": float(np.cos(i / (100 + j)) * (k + 1)) for j in range(SERIES - 2)}
                )
                stats.log(step=i, **values)
            for i in range(30):
                stats.log(step=i * points // 30, weights=np.full((3, 4), i, dtype=np.float32))
            ramp = np.linspace(0, 255, 128, dtype=np.uint8)
            for n, step in enumerate((0, points // 2, points - 1)):
                picture = np.stack(
                    [np.add.outer(ramp, ramp) // 2, np.tile(ramp, (128, 1)), np.full((128, 128), n * 80)], -1
                )
                stats.image("samples", picture.astype(np.uint8), step=step)
        ids.append(stats.run_id)
    return ids


# ---- the notebook -----------------------------------------------------------------------------


def old_way(nb):
    """The same notebook as it showed charts before lp.notebook(): Bokeh's own inline output."""
    import copy

    old = copy.deepcopy(nb)
    for cell in old.cells:
        if cell.cell_type != "code":
            continue
        text = cell.source.replace(
            "lp.notebook()",
            "from bokeh.io import output_notebook, show\nfrom bokeh.resources import INLINE\n\n"
            "output_notebook(INLINE, hide_banner=True)",
        )
        cell.source = text.replace("lp.show(", "show(")
    return old


def notebook_sizes(tmp: Path, url: str) -> list[str]:
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    os.environ["LABSTATS_URL"] = url  # labstats.connect() in the kernel finds it
    nb = nbformat.read(NOTEBOOK, as_version=4)
    rows, sizes = [], {}
    for label, variant in (
        ("old: output_notebook(INLINE) + show", old_way(nb)),
        ("new: lp.notebook() + lp.show", nb),
    ):
        start = time.perf_counter()
        NotebookClient(
            variant, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp)}}
        ).execute()
        took = time.perf_counter() - start
        errors = [o for c in variant.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            raise SystemExit(
                f"bench_share: the notebook failed ({label}): {errors[0].ename}: {errors[0].evalue}"
            )
        saved = len(nbformat.writes(variant).encode())
        html = len(HTMLExporter().from_notebook_node(variant)[0].encode())
        sizes[label] = (saved, html)
        rows.append([label, f"{saved / 1e6:.2f} MB", f"{html / 1e6:.2f} MB", f"{took:.1f} s"])
    (old_saved, old_html), (new_saved, new_html) = sizes.values()
    rows.append(["new × old", f"{new_saved / old_saved:.2f}", f"{new_html / old_html:.2f}", ""])
    rows.append(["target", f"≤ {NOTEBOOK_TARGET / 1e6:g} MB", "", ""])
    return [
        f"{NOTEBOOK.relative_to(ROOT)} executed by nbclient over {RUNS} runs; sizes in bytes / 10^6",
        "",
        *report.table(["notebook", "saved .ipynb", "nbconvert HTML", "executed in"], rows),
    ]


# ---- one-file exports -------------------------------------------------------------------------


def median_get(client, path: str, repeat: int = 5) -> tuple[float, int]:
    client.get(path)
    times, size = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise SystemExit(f"bench_share: {path} answered {response.status_code}")
        size = len(response.data)
    return statistics.median(times) * 1e3, size


def export_sizes(url: str, ids: list[str]) -> list[str]:
    from labstats.viewer import create_app
    from labstats.viewer.sources import Source

    lab = labstats.connect(url)
    runs = [lab.run(i) for i in ids]
    rows = []
    makers = {
        "one run": lambda: export.run_html(runs[0]),
        f"a comparison of {RUNS} runs, {SERIES} charts": lambda: export.compare_html(runs),
    }
    for label, make in makers.items():
        times = []
        for _ in range(5):
            start = time.perf_counter()
            html = make()
            times.append(time.perf_counter() - start)
        rows.append([label, f"{len(html.encode()) / 1e6:.2f} MB", f"{statistics.median(times) * 1e3:.0f} ms"])
    client = create_app({"local": Source("local", url)}).test_client()
    made = client.post("/reports", data={"title": "Bench", "body": REPORT.format(run=f"local/{ids[0]}")})
    page = made.headers["Location"]
    for label, path in (
        ("a report of 5 panels: its page", page),
        ("a report of 5 panels: export", page + "/export.html"),
    ):
        ms, size = median_get(client, path)
        rows.append([label, f"{size / 1e6:.2f} MB", f"{ms:.0f} ms"])
    return rows


# ---- /metrics ---------------------------------------------------------------------------------


def metrics_scrape(tmp: Path, url: str, scrapes: int, running: int, series: int) -> list[str]:
    from labstats.viewer import create_app
    from labstats.viewer.sources import Source

    open_runs = []
    try:
        for k in range(running):
            stats = labstats.Stats(tmp / f"live{k}", url=url, name=f"live{k}", **QUIET)
            stats.log(step=0, **{f"s{j}": float(j) for j in range(series)})
            stats.flush()
            open_runs.append(stats)
        sources = {f"box{n}": Source(f"box{n}", url) for n in range(4)}
        client = create_app(sources).test_client()
        client.get("/metrics")
        times = []
        for _ in range(scrapes):
            start = time.perf_counter()
            response = client.get("/metrics")
            times.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise SystemExit(f"bench_share: /metrics answered {response.status_code}")
        body = response.data.decode()
        running_lines = sum(1 for line in body.splitlines() if line.startswith("labstats_run_heartbeat_age"))
    finally:
        for stats in open_runs:
            stats.close()
    return [
        f"/metrics over 4 sources × {running} running runs ({series} series each, open Stats), "
        f"{scrapes} scrapes through Flask's test client; {running_lines} run heartbeat lines",
        "",
        *report.table(
            ["measure", "value"],
            [
                ["one scrape, median", f"{statistics.median(times) * 1e3:.0f} ms"],
                ["one scrape, slowest", f"{max(times) * 1e3:.0f} ms"],
                ["the page", f"{len(response.data) / 1e3:.1f} kB"],
            ],
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20_000, help="points per scalar series of each run")
    parser.add_argument("--scrapes", type=int, default=30)
    report.add_options(parser)
    args = parser.parse_args()
    running, series = 20, 200
    if args.quick:
        args.points, args.scrapes, running, series = 300, 3, 4, 20
    with tempfile.TemporaryDirectory(prefix="labstats-bench-share-") as folder:
        tmp = Path(folder)
        os.environ.update(LABSTATS_STATE_DIR=str(tmp / "state"), LABSTATS_ARTIFACT_DIR=str(tmp / "artifacts"))
        server = RedisServer(folder)
        try:
            ids = log_runs(tmp, server.url, args.points)
            notebook = notebook_sizes(tmp, server.url)
            exports = export_sizes(server.url, ids)
            metrics = metrics_scrape(tmp, server.url, args.scrapes, running, series)
        finally:
            server.stop()
    lines = [
        f"{RUNS} runs logged through the logger, each {SERIES} series × {args.points:,} points, "
        "a weight tensor at 30 steps, a 128×128 picture at 3 steps",
        "",
        *notebook,
        "",
        *report.table(["one-file export", "size", "made in, median of 5"], exports),
        f"target: a comparison ≤ {COMPARE_TARGET / 1e6:g} MB",
        "",
        *metrics,
    ]
    report.emit(args, "share", ["<!-- run: no: what the benchmark printed -->", "```text", *lines, "```"])


if __name__ == "__main__":
    main()
