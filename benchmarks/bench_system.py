#!/usr/bin/env python3
"""System metrics benchmark: what one sample of the GPUs, the run's process tree and the box
costs the sampler's thread (labstats.capture.system), against the budget of ≤ 5 ms per sample
and ≤ 0.1 % of a core at the default 10 s.

    python benchmarks/bench_system.py [--samples N] [--real-nvml] [--publish]

This process starts 16 real child processes (sleeping Pythons, as DataLoader workers wait)
and samples them with 8 GPUs answered by an in-process stand-in offering pynvml's calls
(``--real-nvml``: the installed pynvml and this box's GPUs instead). Printed: the wall and CPU
time of one sample on the calling thread (median and 95th percentile of ``--samples``), the
sampler thread itself run at a short interval (this process's CPU time per sample), and
what that is as a share of one core at the 10 s default. The cost of listing the children
grows with the processes on the box (psutil reads every /proc/<pid>/stat to find parents):
their count is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import report

from labstats.capture import system

GPUS = 8
CHILDREN = 16
BUDGET_MS = 5.0
BUDGET_CORE_PERCENT = 0.1


class StandInNvml:
    """pynvml's calls that the sampler makes, answered at once for ``gpus`` GPUs (each with
    two processes on it, one of them a child of this process)."""

    NVML_TEMPERATURE_GPU = 0
    NVML_ERROR_NOT_SUPPORTED = 3

    def __init__(self, gpus: int, pids: list[int]) -> None:
        self.gpus = gpus
        self.running = [SimpleNamespace(pid=pid, usedGpuMemory=2**30) for pid in (1, *pids[:1])]

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlSystemGetDriverVersion(self) -> str:
        return "stand-in"

    def nvmlDeviceGetCount(self) -> int:
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=97, memory=40)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(used=60 * 2**30, total=80 * 2**30, free=20 * 2**30)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 650_000

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 71

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return self.running


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(args: argparse.Namespace, children: list[subprocess.Popen]) -> list[str]:
    pids = [child.pid for child in children]
    nvml = None if args.real_nvml else StandInNvml(GPUS, pids)
    received: list[int] = []
    here = Path(__file__).resolve().parent
    sampler = system.SystemSampler(lambda idx, values: received.append(len(values)), 10.0,
                                   paths={"spool": here, "artifacts": here}, nvml=nvml)  # fmt: skip
    sampler.prepare()  # what the thread does first, here on the calling thread
    if not sampler.gpus.active:
        raise SystemExit(f"bench_system: {sampler.gpus.status}")
    for _ in range(3):  # the children's CPU baselines, the caches warm
        sampler.sample_once()
    wall, cpu = [], []
    for _ in range(args.samples):
        w, c = time.perf_counter(), time.thread_time()
        sampler.sample_once()
        cpu.append((time.thread_time() - c) * 1e3)
        wall.append((time.perf_counter() - w) * 1e3)
    sampler.gpus.shutdown()
    values = received[-1]
    tree = sampler.host.processes

    # The thread itself, at a short interval: this process's CPU time per sample (the
    # training thread here only sleeps), waking and sending included.
    thread = system.SystemSampler(lambda idx, values: received.append(len(values)), args.interval,
                                  paths={"spool": here, "artifacts": here}, nvml=nvml)  # fmt: skip
    before, cpu_before = len(received), time.process_time()
    thread.start()
    time.sleep(args.seconds)
    thread.stop()
    thread.join(5)
    thread_samples = len(received) - before
    thread_ms = (time.process_time() - cpu_before) * 1e3 / max(1, thread_samples)

    cpu_med = statistics.median(cpu)
    # The thread's own figure is the higher one (a sample after a sleep finds its caches cold).
    core_percent = max(cpu_med, thread_ms) / (system.DEFAULT_INTERVAL * 1e3) * 100
    gpus = f"{GPUS} stand-in GPUs" if nvml else f"{len(sampler.gpus.handles)} GPUs through NVML"
    procs = sum(1 for name in os.listdir("/proc") if name.isdigit()) if os.path.isdir("/proc") else "?"
    lines = [
        f"{gpus}, {len(tree)} processes in the run's tree ({len(tree) - 1} children), "
        f"{procs} processes on the box, {values} values per sample; {args.samples} samples",
        "",
        *report.table(
            ["measure", "median", "95th percentile", "budget"],
            [
                [
                    "one sample, wall",
                    f"{statistics.median(wall):.2f} ms",
                    f"{percentile(wall, 0.95):.2f} ms",
                    f"≤ {BUDGET_MS:g} ms",
                ],
                ["one sample, CPU of its thread", f"{cpu_med:.2f} ms", f"{percentile(cpu, 0.95):.2f} ms", ""],
                [
                    f"the thread at {args.interval:g} s for {args.seconds:g} s ({thread_samples} samples), "
                    "process CPU per sample",
                    f"{thread_ms:.2f} ms",
                    "",
                    "",
                ],
                [
                    "share of one core at the 10 s default (the higher CPU figure)",
                    f"{core_percent:.3f} %",
                    "",
                    f"≤ {BUDGET_CORE_PERCENT:g} %",
                ],
            ],
        ),
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--interval", type=float, default=0.05, help="the thread's interval for its own row")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the thread runs for its row")
    parser.add_argument(
        "--real-nvml", action="store_true", help="this box's GPUs through the installed pynvml"
    )
    report.add_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.samples, args.seconds = 20, 0.5
    sleeper = "import sys, time; sys.stdin.read()"  # waits until its stdin closes
    children = [
        subprocess.Popen([sys.executable, "-c", sleeper], stdin=subprocess.PIPE) for _ in range(CHILDREN)
    ]
    try:
        time.sleep(0.5)  # the children's interpreters up, as workers are once a loop runs
        lines = measure(args, children)
    finally:
        for child in children:
            child.stdin.close()
        for child in children:
            child.wait(10)
    section = "system-gpu" if args.real_nvml else "system"
    report.emit(args, section, ["<!-- run: no: what the benchmark printed -->", "```text", *lines, "```"])


if __name__ == "__main__":
    main()
