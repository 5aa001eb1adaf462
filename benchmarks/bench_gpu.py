"""What logging costs a GPU training loop: labstats against loss.item(), the original
synchronous design and torch's SummaryWriter, side by side, interleaved, as ratios to the
same loop logging nothing. Also the writer's tensor throughput: into files of the artifact
store (the default for tensors of 1 MiB and more) against Redis blobs, side by side.

    python benchmarks/bench_gpu.py                      # `make bench-gpu`; CPU when no GPU
    python benchmarks/bench_gpu.py --steps 200 --repeats 3 --redis-server /usr/bin/redis-server

On a CPU the loops are smaller (the ratios then say little about GPUs: there is no device
sync to avoid); the table says which device ran.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import redis
import report
import torch

import labstats
from labstats.capture import device
from labstats.write import tensorfiles

W_FLOATS = 1_000_000  # the watched tensor: 1M floats (4 MB) of the first layer's weight


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(binary: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
    )  # fmt: skip
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def new_stats(savedir: Path, url: str, **options) -> labstats.Stats:
    """A run whose tensor files go to a store in the benchmark's temporary folder."""
    return labstats.Stats(savedir, url=url, artifact_dir=savedir.parent / "store", capture_git=False,
                          handle_signals=False, **options)  # fmt: skip


def make_model(width: int, depth: int, dev: torch.device) -> torch.nn.Module:
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1]).to(dev)


class Loop:
    """One MLP, its optimizer and data: step() runs forward, backward and an SGD step."""

    def __init__(self, width: int, batch: int, depth: int, dev: torch.device) -> None:
        self.dev = dev
        self.model = make_model(width, depth, dev)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-4)
        self.x = torch.randn(batch, width, device=dev)
        self.y = torch.randn(batch, width, device=dev)
        self.w = self.model[0].weight.view(-1)[:W_FLOATS]  # a view: changed in place by the step
        self.bias = self.model[0].bias[:1024]

    def step(self) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize()


# ---- the variants: (name, setup(loop, ctx) -> per-step hook or None, teardown) -----------


def variants(url: str, tmp: Path, have_tb: bool):
    r = redis.Redis.from_url(url)

    def none(loop):
        return lambda step, loss: None, lambda: None

    def item(loop):
        return lambda step, loss: loss.item(), lambda: None

    def ls_log(loop):
        stats = new_stats(tmp / "log", url)
        return lambda step, loss: stats.log(step=step, loss=loss), stats.close

    def ls_watch(kind="value", every=1, files=True):
        def setup(loop):
            threshold = tensorfiles.DEFAULT_MIN_BYTES if files else 0
            stats = new_stats(tmp / "watch", url, tensor_file_bytes=threshold)
            stats.watch(loop.w, "w", kind=kind, every=every)

            def hook(step, loss):
                stats.log(step=step, loss=loss)
                stats.update(0, 1, 1, step)

            return hook, stats.close

        return setup

    def original(with_bias: bool):
        def setup(loop):
            key = f"orig:{time.time_ns()}"

            def hook(step, loss):
                value = {"loss": loss.item()}
                if with_bias:
                    value["bias"] = loop.bias.detach().cpu().tolist()
                r.zadd(key, {json.dumps([step, value]): step})

            return hook, lambda: None

        return setup

    def tb(with_hist: bool):
        def setup(loop):
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(tmp / f"tb-{time.time_ns()}"))

            def hook(step, loss):
                writer.add_scalar("loss", loss, step)
                if with_hist:
                    writer.add_histogram("w", loop.w, step)

            return hook, writer.close

        return setup

    found = [
        ("nothing", none),
        ("loss.item() only", item),
        ("labstats log(loss=loss)", ls_log),
        ("labstats watch(w) + update(), w = 1M floats", ls_watch()),
        ("labstats watch(w), as Redis blobs (tensor_file_bytes=0)", ls_watch(files=False)),
        ("labstats watch(w, every=10)", ls_watch(every=10)),
        ("labstats watch(w, kind='histogram')", ls_watch(kind="histogram")),
        ("original design: sync JSON ZADD of the loss", original(False)),
        ("original design: loss + a 1,024-float bias", original(True)),
    ]
    if have_tb:
        found += [("torch SummaryWriter add_scalar", tb(False)),
                  ("torch SummaryWriter add_scalar + add_histogram(w)", tb(True))]  # fmt: skip
    return found


def time_variant(loop: Loop, setup, steps: int) -> float:
    hook, teardown = setup(loop)
    loop.sync()
    started = time.perf_counter()
    for step in range(steps):
        loss = loop.step()
        hook(step, loss)
    loop.sync()
    took = time.perf_counter() - started
    teardown()  # flushes: outside the timed loop, before the next variant starts
    return took / steps * 1e3


def throughput(url: str, tmp: Path, dev: torch.device, files: bool, count: int = 100) -> float:
    """GB/s from logging 4 MB tensors until they are all stored: as files of the artifact
    store (the default for tensors of 1 MiB and more) or as blobs in Redis."""
    w = torch.randn(W_FLOATS, device=dev)
    stats = new_stats(tmp / "tput", url, tensor_file_bytes=tensorfiles.DEFAULT_MIN_BYTES if files else 0)
    started = time.perf_counter()
    for step in range(count):
        w[0] = step  # a new value each step: the store keeps a tensor that did not change once
        stats.log(step=step, w=w)
    assert stats.flush(300)
    took = time.perf_counter() - started
    stats.close()
    redis.Redis.from_url(url).flushall()
    shutil.rmtree(tmp / "store", ignore_errors=True)
    return count * w.numel() * 4 / took / 1e9


def ceilings(url: str, tmp: Path, count: int = 100) -> tuple[float, float]:
    """For scale, the same bytes without labstats: GB/s of redis-py SETs of 4 MB, and of
    one thread writing 4 MB files into the same file system."""
    data = np.random.default_rng(0).random(W_FLOATS, dtype=np.float32)
    client = redis.Redis.from_url(url)
    started = time.perf_counter()
    for i in range(count):
        data[0] = i
        client.set(f"ceiling:{i}", memoryview(data.view(np.uint8)))
    to_redis = count * data.nbytes / (time.perf_counter() - started) / 1e9
    client.flushall()
    folder = tmp / "ceiling"
    folder.mkdir()
    started = time.perf_counter()
    for i in range(count):
        data[0] = i
        data.tofile(folder / str(i))
    to_files = count * data.nbytes / (time.perf_counter() - started) / 1e9
    shutil.rmtree(folder)
    return to_redis, to_files


def call_costs(url: str, tmp: Path, dev: torch.device, n: int = 3000) -> None:
    """Microseconds one call costs the calling thread, the GPU idle (no training loop)."""
    loss = torch.tensor(0.5, device=dev)
    stats = new_stats(tmp / "calls", url)

    def per_call(label, f):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for i in range(n):
            f(i)
        print(f"{label}: {(time.perf_counter() - started) / n * 1e6:.1f} µs per call")

    per_call("loss.item()", lambda i: loss.item())
    per_call(f"labstats log(loss=loss), loss a {dev.type} scalar", lambda i: stats.log(step=i, loss=loss))
    per_call("labstats log(loss=0.5), a Python float", lambda i: stats.log(step=n + i, loss=0.5))
    stats.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="run the variants whose name contains this (and 'nothing')")
    parser.add_argument(
        "--sizes",
        choices=["both", "small", "large", "none"],
        default="both",
        help="the training loops to run ('none': only the throughput and per-call costs)",
    )
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    report.add_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats, args.sizes = 3, 1, "small"
    printed = io.StringIO()
    with contextlib.redirect_stdout(Tee(sys.stdout, printed)):
        measure(args)
    # A GPU's figures and a CPU's have their own sections: one never overwrites the other.
    section = "gpu-cuda" if torch.cuda.is_available() else "gpu-cpu"
    with contextlib.redirect_stdout(io.StringIO()):  # already printed as it ran
        output = ["```text", *printed.getvalue().strip().splitlines(), "```"]
        report.emit(args, section, ["<!-- run: no: what the benchmark printed -->", *output])
    if args.publish:
        print(f"published to docs/benchmarks.md ({section})")
    return 0


class Tee(io.TextIOBase):
    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)


def measure(args: argparse.Namespace) -> None:
    gpu = torch.cuda.is_available()
    dev = torch.device("cuda" if gpu else "cpu")
    steps = args.steps or (200 if gpu else 20)
    sizes = [
        ("small MLP (1024 wide, batch 256)", 1024, 256),
        ("large MLP (4096 wide, batch 1024)", 4096, 1024),
    ]
    if not gpu:
        sizes = [
            ("small MLP (1024 wide, batch 16)", 1024, 16),
            ("large MLP (2048 wide, batch 256)", 2048, 256),
        ]
    try:
        import tensorboard  # noqa: F401

        have_tb = True
    except ImportError:
        have_tb = False
    name = torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {name}; torch {torch.__version__}; {steps} steps, median of {args.repeats}, interleaved")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        proc, url = start_redis(args.redis_server, tmp)
        try:
            results: dict[str, dict[str, list[float]]] = {}
            chosen = {"both": sizes, "small": sizes[:1], "large": sizes[1:], "none": []}[args.sizes]
            for label, width, batch in chosen:
                loop = Loop(width, batch, depth=4, dev=dev)
                found = variants(url, tmp, have_tb)
                if args.only:
                    found = [(v, f) for v, f in found if v == "nothing" or args.only in v]
                for _, setup in found:  # warm-up: kernels, allocators, connections
                    time_variant(loop, setup, max(5, steps // 10))
                times: dict[str, list[float]] = {v: [] for v, _ in found}
                for _ in range(args.repeats):
                    for variant, setup in found:
                        times[variant].append(time_variant(loop, setup, steps))
                results[label] = times
                redis.Redis.from_url(url).flushall()
            if results:
                header = "| what is logged each step | " + " | ".join(label for label in results) + " |"
                print()
                print(header)
                print("|---" * (len(results) + 1) + "|")
                for variant in next(iter(results.values())):
                    cells = []
                    for times in results.values():
                        base = statistics.median(times["nothing"])
                        ms = statistics.median(times[variant])
                        first = variant == "nothing"
                        cells.append(f"{ms:.2f} ms/step (1.00×)" if first else f"{ms / base:.2f}×")
                    print(f"| {variant} | " + " | ".join(cells) + " |")
                print()
            if not args.only:
                print(f"writer throughput, {dev.type} tensors of 4 MB, 100 a try, best of 3 interleaved:")
                tries = [(throughput(url, tmp, dev, files=False), throughput(url, tmp, dev, files=True))
                         for _ in range(3)]  # fmt: skip
                into_redis, into_files = (max(rates) for rates in zip(*tries, strict=True))
                print(f"  into Redis as blobs (tensor_file_bytes=0): {into_redis:.2f} GB/s (1.00×)")
                print(f"  into files of the artifact store (the default): {into_files:.2f} GB/s "
                      f"({into_files / into_redis:.2f}×)")  # fmt: skip
                to_redis, to_files = ceilings(url, tmp)
                print(f"  for scale, without labstats: redis-py SET {to_redis:.2f} GB/s, "
                      f"one thread writing files {to_files:.2f} GB/s")  # fmt: skip
            call_costs(url, tmp, dev)
            pool = device.pool()
            print(f"training thread waited for pinned memory: {pool.waited:.2f} s in all")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    sys.exit(main())
