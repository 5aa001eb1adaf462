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

``--part agent`` (also run by default, into a section of its own): the box agent
(labstats.ops.agent) beside it. A run logged through the real logger to a real
redis-server runs in a process of its own (not the agent's child, as on a box) with 16
sleeping workers; the same 8 stand-in GPUs list one of them. Printed: the agent's sample
alone and its whole step (finding the running runs in Redis, the sample, HSET/XADD/EXPIRE
to Redis), and beside them the run sampler's sample of that run's tree, measured in the
same run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import report
from bench_logger import RedisServer

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


def sampler_part(args: argparse.Namespace) -> None:
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


# The agent part's run: logged through the real logger, with 16 sleeping workers, calling
# log() every second so its heartbeat stays fresh.
AGENT_RUN = f"""
import os, subprocess, sys, time, labstats
stats = labstats.Stats(sys.argv[1], url=sys.argv[2], name="bench-agent", system_metrics=False,
                       console=False, capture_git=False, capture_freeze=False)
stats.log(step=0, loss=1.0)
stats.flush()
sleep = [sys.executable, "-c", "import time; time.sleep(3600)"]
workers = [subprocess.Popen(sleep) for _ in range({CHILDREN})]
with open(sys.argv[3] + ".part", "w") as out:
    out.write(" ".join([stats.run_id, *(str(w.pid) for w in workers)]))
os.rename(sys.argv[3] + ".part", sys.argv[3])
while True:
    stats.log(tick=1.0)
    time.sleep(1)
"""


def timed(call, samples: int) -> tuple[list[float], list[float]]:
    """Wall and thread-CPU milliseconds of each of ``samples`` calls."""
    wall, cpu = [], []
    for _ in range(samples):
        w, c = time.perf_counter(), time.thread_time()
        call()
        cpu.append((time.thread_time() - c) * 1e3)
        wall.append((time.perf_counter() - w) * 1e3)
    return wall, cpu


def measure_agent(
    args: argparse.Namespace, client, run_pid: int, run_id: str, workers: list[int]
) -> list[str]:
    from labstats.ops import agent

    here = Path(__file__).resolve().parent
    # The baseline: the run sampler over the same run's tree, as a run with system_metrics.
    paths = {"spool": here, "artifacts": here}
    run_sampler = system.SystemSampler(lambda idx, values: None, 10.0, paths=paths,
                                       nvml=StandInNvml(GPUS, workers), pid=run_pid)  # fmt: skip
    run_sampler.prepare()
    for _ in range(3):
        run_sampler.sample_once()
    run_wall, run_cpu = timed(run_sampler.sample_once, args.samples)
    run_sampler.gpus.shutdown()

    sampler = agent.BoxSampler(agent.DEFAULT_DISKS, StandInNvml(GPUS, workers))
    box = agent.BoxAgent(client, "bench", sampler, interval=10.0)
    sampler.start()
    for _ in range(3):  # the CPU baselines, the caches warm
        state = box.step()
    if state["runs"] != [run_id] or not any(p["run"] == run_id for p in state["gpus"][0]["processes"]):
        raise SystemExit(f"bench_system: the agent did not find the run: {state['runs']}")
    pids = dict(box.run_pids)
    sample_wall, sample_cpu = timed(lambda: sampler.sample(pids), args.samples)
    step_wall, step_cpu = timed(box.step, args.samples)
    sampler.stop()
    written = client.xlen(box.keys.box("bench") + ":history")

    med = statistics.median
    base = med(run_cpu)
    rows = [
        ["the run sampler: one sample of the run's tree (baseline)", f"{med(run_wall):.2f} ms",
         f"{base:.2f} ms", f"{percentile(run_cpu, 0.95):.2f} ms", "1.00"],
        ["the agent: one sample", f"{med(sample_wall):.2f} ms", f"{med(sample_cpu):.2f} ms",
         f"{percentile(sample_cpu, 0.95):.2f} ms", f"{med(sample_cpu) / base:.2f}"],
        ["the agent: one step (find runs + sample + write)", f"{med(step_wall):.2f} ms",
         f"{med(step_cpu):.2f} ms", f"{percentile(step_cpu, 0.95):.2f} ms", f"{med(step_cpu) / base:.2f}"],
    ]  # fmt: skip
    core = med(step_cpu) / (agent.DEFAULT_INTERVAL * 1e3) * 100
    procs = sum(1 for name in os.listdir("/proc") if name.isdigit()) if os.path.isdir("/proc") else "?"
    return [
        f"{GPUS} stand-in GPUs (each lists a worker of the run and pid 1), 1 run logged through the logger "
        f"with {len(workers)} workers, {len(agent.DEFAULT_DISKS)} disks, {procs} processes on the box; "
        f"{args.samples} calls each, {written} history entries in Redis",
        "",
        *report.table(["measure", "wall, median", "CPU, median", "CPU, 95th pct", "CPU × baseline"], rows),
        "",
        f"The agent's step at its {agent.DEFAULT_INTERVAL:g} s default: {core:.3f} % of one core.",
    ]


def agent_part(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="labstats-bench-agent-") as tmp:
        server = RedisServer(tmp)
        ready = Path(tmp) / "workers"
        # Started through a shell that leaves at once: the run is not the agent's child.
        cmd = [sys.executable, "-c", AGENT_RUN, str(Path(tmp) / "run"), server.url, str(ready)]
        started = subprocess.run(["sh", "-c", shlex.join(cmd) + " >/dev/null 2>&1 </dev/null & echo $!"],
                                 capture_output=True, text=True, check=True)  # fmt: skip
        run_pid, workers = int(started.stdout), []
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                if time.monotonic() > deadline:
                    raise SystemExit("bench_system: the agent part's run did not start")
                time.sleep(0.1)
            run_id, *pids = ready.read_text().split()
            workers = [int(p) for p in pids]
            time.sleep(0.5)  # the workers' interpreters up
            lines = measure_agent(args, server.client, run_pid, run_id, workers)
        finally:
            for pid in [*workers, run_pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            server.stop()
    report.emit(
        args, "system-agent", ["<!-- run: no: what the benchmark printed -->", "```text", *lines, "```"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--interval", type=float, default=0.05, help="the thread's interval for its own row")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the thread runs for its row")
    parser.add_argument(
        "--real-nvml", action="store_true", help="this box's GPUs through the installed pynvml"
    )
    parser.add_argument("--part", choices=("all", "sampler", "agent"), default="all",
                        help="the run sampler, the box agent beside it, or both (two sections)")  # fmt: skip
    report.add_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.samples, args.seconds = 20, 0.5
    if args.part in ("all", "sampler"):
        sampler_part(args)
    if args.part in ("all", "agent"):
        if args.real_nvml:
            raise SystemExit("bench_system: the agent part uses the stand-in GPUs only")
        agent_part(args)


if __name__ == "__main__":
    main()
