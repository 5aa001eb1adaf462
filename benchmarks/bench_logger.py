#!/usr/bin/env python3
"""Logger benchmark: labstats against the original synchronous design and tensorboardX,
side by side in one run, each against its own fresh redis-server (or event file).

    make bench-logger            # or: python benchmarks/bench_logger.py [--quick]
    python benchmarks/bench_logger.py --baseline 47045b9   # beside another commit (baseline.py)

"original" re-creates the seed design as its issue describes it: one synchronous ZADD per
watched object per step into a sorted set per experiment, member = JSON
{"epoch", "step", "data"} (tensors as JSON lists), score = idx.
Prints a table; figures vary with the machine and its load (2 noisy cores here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline
import report

sys.path.insert(0, baseline.package_root())


class RedisServer:
    def __init__(self, workdir: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)

    def memory(self, pattern: str) -> int:
        keys = self.client.scan_iter(pattern, count=1000)
        return sum(self.client.memory_usage(k, samples=0) or 0 for k in keys)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


class Original:
    """The seed design: synchronous, JSON, one round trip per watched object per step."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.r, self.name, self.watched = client, name, {}

    def watch(self, obj, name):
        self.watched[name] = obj

    def update(self, epoch, set_size, batch_size, step):
        idx = epoch * set_size + step * batch_size
        for name, obj in self.watched.items():
            self.write_immediate(obj() if callable(obj) else obj, name, epoch, step, idx)

    def write_immediate(self, obj, name, epoch, step, idx):
        data = obj.tolist() if isinstance(obj, np.ndarray) else obj
        member = json.dumps({"epoch": epoch, "step": step, "data": data})
        self.r.zadd(f"experiment:{self.name}:{name}", {member: idx})


# Float32 tensors whose stored size is measured (4 KiB to 16 MiB); the calling thread is
# timed at two of them (the original design's JSON of 16 MiB would take minutes).
TENSOR_BYTES = (4 << 10, 64 << 10, 400 << 10, 1 << 20, 4 << 20, 16 << 20)
CALL_TIMED = (4 << 10, 400 << 10)


def _kib(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"


def per_call_us(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n * 1e6


def bench(quick: bool) -> tuple[list[tuple[str, str, str, str, str]], dict[str, float]]:
    # Imported here: with --baseline, this process only starts the measuring ones, and the
    # work tree's labstats need not even import (the measured commits are worktrees).
    import labstats

    n_calls = 5_000 if quick else 20_000
    n_points = 200_000 if quick else 1_000_000
    tmp = tempfile.mkdtemp(prefix="labstats-bench-")
    rows, fig = [], {}
    servers = {k: RedisServer(tmp) for k in ("labstats", "original")}
    from tensorboardX import SummaryWriter

    try:
        lab_url, orig = servers["labstats"].url, servers["original"]
        os.environ["LABSTATS_URL"] = lab_url
        stats = labstats.Stats(Path(tmp) / "bench", capture_git=False)
        original = Original(orig.client, "bench")
        tbx = SummaryWriter(str(Path(tmp) / "tbx"))

        # 1. Calling-thread cost of one scalar.
        t_ls = per_call_us(lambda i: stats.log(step=i, loss=0.5), n_calls)
        stats.flush(60)
        t_orig = per_call_us(lambda i: original.write_immediate(0.5, "loss", 0, i, i), n_calls)
        t_tbx = per_call_us(lambda i: tbx.add_scalar("loss", 0.5, i), n_calls)
        rows.append(
            (
                "calling thread, 1 scalar",
                f"{t_ls:.2f} µs",
                f"{t_orig:.1f} µs",
                f"{t_tbx:.1f} µs",
                f"{t_ls / t_tbx:.3f}× tbX (target ≤ 0.02×)",
            )
        )

        fig.update(t_ls=t_ls, t_orig=t_orig, t_tbx=t_tbx)

        # 2. One update of 10 watched scalars.
        values = {f"m{k}": float(k) for k in range(10)}
        for name in values:
            stats.watch(lambda name=name: values[name], name)
            original.watch(lambda name=name: values[name], name)
        t_ls10 = per_call_us(lambda i: stats.update(0, 10**9, 1, i), n_calls // 2)
        stats.flush(60)
        t_orig10 = per_call_us(lambda i: original.update(0, 10**9, 1, i), n_calls // 2)

        def tbx_update(i):
            for name, v in values.items():
                tbx.add_scalar(name, v, i)

        t_tbx10 = per_call_us(tbx_update, n_calls // 2)
        rows.append(
            (
                "calling thread, update of 10 scalars",
                f"{t_ls10:.2f} µs",
                f"{t_orig10:.1f} µs",
                f"{t_tbx10:.1f} µs",
                f"{t_ls10 / t_tbx10:.3f}× tbX",
            )
        )
        fig.update(t_ls10=t_ls10, t_tbx10=t_tbx10)
        for name in values:
            stats.unwatch(name)
            original.watched.pop(name)
        stats.close()

        # 3. Sustained points/s, end to end (until in Redis), and Redis bytes per point.
        sustained = labstats.Stats(Path(tmp) / "sustained", capture_git=False)
        start = time.perf_counter()
        for i in range(n_points):
            sustained.log(step=i, loss=i * 1e-3)
        sustained.flush(300)
        ls_rate = n_points / (time.perf_counter() - start)
        sustained.close()
        run_id = labstats.connect(lab_url).run("sustained").id
        ls_bytes = servers["labstats"].memory(f"ls:run:{run_id}:s:*") / n_points

        orig_n = min(n_points, 100_000)
        start = time.perf_counter()
        pipe_free = Original(orig.client, "sustained")
        for i in range(orig_n):
            pipe_free.write_immediate(i * 1e-3, "loss", 0, i, i)
        orig_rate = orig_n / (time.perf_counter() - start)
        orig_bytes = orig.memory("experiment:sustained:*") / orig_n

        tb_dir = Path(tmp) / "tbx-sustained"
        tbw = SummaryWriter(str(tb_dir))
        start = time.perf_counter()
        for i in range(orig_n):
            tbw.add_scalar("loss", i * 1e-3, i)
        tbw.close()
        tbx_rate = orig_n / (time.perf_counter() - start)
        tbx_bytes = sum(f.stat().st_size for f in tb_dir.rglob("*") if f.is_file()) / orig_n
        rows.append(
            (
                "sustained points/s (one process)",
                f"{ls_rate:,.0f}",
                f"{orig_rate:,.0f}",
                f"{tbx_rate:,.0f}",
                "target ≥ 100,000",
            )
        )
        rows.append(
            (
                "storage bytes per scalar point",
                f"{ls_bytes:.1f}",
                f"{orig_bytes:.1f}",
                f"{tbx_bytes:.1f} (file)",
                "Redis MEMORY USAGE; target ≤ 40",
            )
        )

        fig.update(rate=ls_rate, bytes=ls_bytes, orig_bytes=orig_bytes, points=n_points)

        # 4. Window read: 1,000 points out of the long series.
        lab = labstats.connect(lab_url)
        run = lab.run("sustained")
        mid = n_points // 2
        reps = 50
        start = time.perf_counter()
        for _ in range(reps):
            window = run.series("loss", mid, mid + 999)
        t_win = (time.perf_counter() - start) / reps * 1e3
        assert len(window) == 1000
        start = time.perf_counter()
        for _ in range(reps):
            members = orig.client.zrangebyscore("experiment:sustained:loss", mid % orig_n, mid % orig_n + 999)
            [json.loads(m)["data"] for m in members]
        t_win_orig = (time.perf_counter() - start) / reps * 1e3
        rows.append(
            (
                f"read 1,000 of {n_points:,} points",
                f"{t_win:.2f} ms",
                f"{t_win_orig:.2f} ms (of {orig_n:,})",
                "n/a (no index: read the whole file)",
                "target ≤ 5 ms",
            )
        )

        fig["window"] = t_win

        # 5. Tensors: calling-thread cost per update (two sizes), and stored bytes against raw
        # bytes from 4 KiB to 16 MiB: Redis memory plus the run's files in the artifact store.
        sizes = (4 << 10, 400 << 10, 1 << 20) if quick else TENSOR_BYTES
        for nbytes in sizes:
            size = nbytes // 4
            tensor = np.random.default_rng(0).standard_normal(size).astype(np.float32)
            # Stored bytes: a different tensor each step (the store keeps equal files once).
            steps = max(2, min(20 if quick else 200, (32 << 20) // nbytes))
            files = Path(tmp) / f"artifacts{size}"
            ts = labstats.Stats(Path(tmp) / f"tensor{size}", capture_git=False, artifact_dir=files)
            for i in range(steps):
                ts.log(step=i, w=tensor + np.float32(i))
            ts.close()
            tid = lab.run(f"tensor{size}").id
            in_files = sum(f.stat().st_size for f in files.rglob("*") if f.is_file())
            stored = (servers["labstats"].memory(f"ls:run:{tid}:[sb]:*") + in_files) / steps
            fig[f"tensor{nbytes}"] = stored / tensor.nbytes
            if nbytes in CALL_TIMED:
                reps = 200 if nbytes < 64 << 10 else 20
                ts = labstats.Stats(Path(tmp) / f"timed{size}", capture_git=False, artifact_dir=files)
                t_ls_t = per_call_us(lambda i, t=tensor, s=ts: s.log(step=i, w=t), reps)
                ts.close()
                key = f"w{size}"
                t_orig_t = per_call_us(
                    lambda i, t=tensor, k=key: original.write_immediate(t, k, 0, i, i), reps
                )
                t_tbx_t = per_call_us(lambda i, t=tensor, k=key: tbx.add_histogram(k, t, i), reps)
                rows.append(
                    (
                        f"float32 tensor of {_kib(nbytes)} ({size:,} values): calling thread",
                        f"{t_ls_t / 1e3:.3f} ms",
                        f"{t_orig_t / 1e3:.2f} ms",
                        f"{t_tbx_t / 1e3:.2f} ms (histogram)",
                        "",
                    )
                )
                fig[f"tensor_call{nbytes}"] = t_ls_t
            rows.append(
                (
                    f"float32 tensor of {_kib(nbytes)}: bytes stored / raw",
                    f"{stored / tensor.nbytes:.3f}×",
                    "",
                    "",
                    "Redis + files; target ≤ 1.05×",
                )
            )
        tbx.close()
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows, fig


def measure(args: argparse.Namespace) -> dict:
    """The table's rows, the summary's figures and the figures compared with a baseline."""
    rows, f = bench(args.quick)
    compare = [
        ["calling thread, 1 scalar", f["t_ls"], "µs"],
        ["sustained points/s", f["rate"], "/s"],
        ["  1 scalar against tensorboardX add_scalar", f["t_ls"] / f["t_tbx"], "×"],
        ["calling thread, update of 10 scalars", f["t_ls10"], "µs"],
        ["storage bytes per scalar point", f["bytes"], "B"],
        ["read 1,000 points", f["window"], "ms"],
    ]
    compare += [
        [f"float32 tensor of {_kib(n)}: calling thread", f[f"tensor_call{n}"], "µs"] for n in CALL_TIMED
    ]
    compare += [
        [f"float32 tensor of {_kib(n)}: bytes stored / raw", f[f"tensor{n}"], "×"]
        for n in TENSOR_BYTES
        if f"tensor{n}" in f
    ]
    return {"rows": [list(r) for r in rows], "fig": f, "compare": compare}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    report.add_options(parser)
    baseline.add_options(parser)
    args = parser.parse_args()
    current, base = baseline.side_by_side(args, measure)
    f = current["fig"]
    sizes = [n for n in TENSOR_BYTES if f"tensor{n}" in f]
    ratios = [f[f"tensor{n}"] for n in sizes]
    header = ["measure", "labstats", "original (sync JSON)", "tensorboardX", "note"]
    summary = (
        f"`make bench-logger`: {f['t_ls']:.2f} µs per logged scalar on the training thread, "
        f"{f['t_ls'] / f['t_tbx']:.3f}× tensorboardX's `add_scalar` ({f['t_tbx']:.0f} µs; the original "
        f"synchronous design: {f['t_orig']:.0f} µs), {f['rate']:,.0f} points/s sustained into Redis from one "
        f"process, {f['bytes']:.1f} bytes of Redis memory per scalar point "
        f"(original: {f['orig_bytes']:.0f}), "
        f"a 1,000-point window of a {f['points']:,}-point series in {f['window']:.2f} ms, float32 tensors "
        f"from {_kib(sizes[0])} to {_kib(sizes[-1])} stored at {min(ratios):.3f}× to {max(ratios):.3f}× "
        "their raw size."
    )
    lines = report.table(header, current["rows"])
    this = current.get("commit") or "this checkout"
    if base is not None:
        summary += f" ({this} against {base['commit']}: {baseline.summary_ratios(current, base, 3)}.)"
        lines += ["", f"Against commit {base['commit']}, measured in the same run:", "",
                  *baseline.ratio_table(current, base, this)]  # fmt: skip
    report.emit(args, "logger", lines, summary, current.get("commit"), base and base["commit"])


if __name__ == "__main__":
    main()
