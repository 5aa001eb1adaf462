#!/usr/bin/env python3
"""TensorBoard benchmark, side by side in one run (part of `make bench-logger`):

- calling-thread cost of `add_scalar` through `labstats.tb.SummaryWriter`, tensorboardX's
  SummaryWriter and torch's (`torch.utils.tensorboard`);
- importing an event file of 1,000,000 scalars with `labstats import-tb` (until every point
  is in Redis) against TensorBoard's own EventAccumulator only reading it.

    python benchmarks/bench_tb.py [--calls 20000] [--points 1000000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import report
from bench_logger import RedisServer

import labstats
from labstats import tb


def per_call_us(writer, calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        writer.add_scalar("loss", 0.5, i)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--points", type=int, default=1_000_000)
    report.add_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.calls, args.points = 2_000, 20_000
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboardX import SummaryWriter as TbxWriter
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    with tempfile.TemporaryDirectory(prefix="labstats-bench-") as tmp:
        tmp = Path(tmp)
        server = RedisServer(str(tmp))
        try:
            shim = tb.SummaryWriter(tmp / "shim", url=server.url, capture_git=False, capture_freeze=False)
            t_shim = per_call_us(shim, args.calls)
            shim.close()
            tbx = TbxWriter(str(tmp / "tbx"))
            t_tbx = per_call_us(tbx, args.calls)
            tbx.close()
            torch_writer = TorchWriter(str(tmp / "torch"))
            t_torch = per_call_us(torch_writer, args.calls)
            torch_writer.close()

            logdir = tmp / "logs" / "big"
            start = time.perf_counter()
            with TbxWriter(str(logdir)) as writer:
                for i in range(args.points):
                    writer.add_scalar("loss", 1.0 / (i + 1), i)
            t_write = time.perf_counter() - start
            start = time.perf_counter()
            acc = ea.EventAccumulator(str(logdir), size_guidance={ea.SCALARS: 0})
            acc.Reload()
            read = len(acc.Scalars("loss"))
            t_read = time.perf_counter() - start
            start = time.perf_counter()
            (result,) = labstats.import_tb(tmp / "logs", url=server.url)
            t_import = time.perf_counter() - start
            stored = len(labstats.connect(server.url).run(result.run).series("loss"))
            assert stored == read == args.points, (stored, read)
        finally:
            server.stop()
    rows = [
        ("add_scalar, calling thread: labstats.tb", f"{t_shim:.2f} µs",
         f"{t_shim / t_tbx:.3f}× tensorboardX, {t_shim / t_torch:.3f}× torch (target ≤ 0.02×)"),
        ("  tensorboardX SummaryWriter", f"{t_tbx:.1f} µs", ""),
        ("  torch.utils.tensorboard SummaryWriter", f"{t_torch:.1f} µs", ""),
        (f"event file of {args.points:,} scalars: written by tensorboardX", f"{t_write:.1f} s", ""),
        ("  read by TensorBoard's EventAccumulator", f"{t_read:.1f} s",
         f"{args.points / t_read:,.0f} points/s"),
        ("  imported by labstats import-tb (read + into Redis)", f"{t_import:.1f} s",
         f"{args.points / t_import:,.0f} points/s, {t_import / t_read:.2f}× the read alone"),
    ]  # fmt: skip
    report.emit(args, "tb", report.table(["measure", "time", "note"], [list(r) for r in rows]))


if __name__ == "__main__":
    main()
