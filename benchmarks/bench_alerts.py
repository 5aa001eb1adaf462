#!/usr/bin/env python3
"""Alerts benchmark: how long after a run crashes, stalls, writes a NaN or logs again the
alerts service's message reaches a channel.

    python benchmarks/bench_alerts.py [--each 3] [--publish]

Everything is real and local: a redis-server on loopback, the service as its own process
(``python -m labstats.ops.alerts`` over a TOML config, as the role runs it) whose channel
is a JSON webhook (Apprise's json://) to an HTTP receiver started here, and runs that log
through the real logger in processes of their own. Short thresholds keep it quick: checks
every 0.5 s, stalled after 2 s, crashed 14 s after the last heartbeat (the writer beats
every 10 s, so a live run is never read as crashed). ``--each`` runs of each kind at once:

- crashed: a run that goes on logging is killed (SIGKILL); from the kill to the message;
- stalled: a run's loop stops calling log(); from its last call to the message;
- resolved: the stalled run logs again; from its first call to the "resolved" message;
- NaN: a run logs a NaN; from its log() call to the message.

A delay is the threshold (none for NaN) plus up to one check interval, plus the time the
service's check and the channel's post take.
"""

from __future__ import annotations

import argparse
import http.server
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import report
from bench_logger import RedisServer

INTERVAL, STALL_AFTER, STALE_AFTER = 0.5, 2.0, 14.0

# A run: logs through the real logger; prints a line when something to time has happened.
RUN = """
import sys, threading, time, labstats
kind, name, folder, url = sys.argv[1:5]
stats = labstats.Stats(folder, url=url, name=name, flush_interval=0.05, system_metrics=False,
                       console=False, capture_git=False, capture_freeze=False)
for i in range(10):
    stats.log(step=i, loss=1.0 / (i + 1))
stats.flush()
def keep_logging():
    while True:
        stats.log(tick=1.0)
        time.sleep(0.2)
if kind == "stall":
    print("quiet", time.time(), flush=True)
    sys.stdin.readline()
    went = time.time()
    stats.log(step=10, loss=0.1)
    print("again", went, flush=True)
elif kind == "nan":
    time.sleep(1.0)
    logged = time.time()
    stats.log(step=10, loss=float("nan"))
    stats.flush()
    print("nan", logged, flush=True)
else:
    print("ready", time.time(), flush=True)
keep_logging()
"""


class Receiver:
    """A JSON webhook: keeps (arrival, title) of each post."""

    def __init__(self) -> None:
        posts = self.posts = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                posts.append((time.time(), json.loads(body)["title"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def arrived(self, title: str) -> float | None:
        return next((at for at, t in list(self.posts) if t == title), None)

    def wait(self, title: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while (at := self.arrived(title)) is None:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"bench_alerts: no {title!r} in {timeout:g} s; got {[t for _, t in self.posts]}"
                )
            time.sleep(0.02)
        return at


def start_service(tmp: Path, url: str, port: int) -> subprocess.Popen:
    state = tmp / "alerts.sqlite"
    lines = [
        f"interval = {INTERVAL}",
        f"stall_after = {STALL_AFTER}",
        f"stale_after = {STALE_AFTER}",
        f"state_file = {json.dumps(str(state))}",
        f"channels = {json.dumps([f'json://127.0.0.1:{port}/'])}",
        "[[sources]]",
        'name = "box1"',
        f"url = {json.dumps(url)}",
        "[lab]",  # this machine's disks are what they are: never told about
        f"status_dir = {json.dumps(str(tmp / 'status'))}",
        "disk_percent = 100",
    ]
    config = tmp / "alerts.toml"
    config.write_text("\n".join(lines) + "\n")
    service = subprocess.Popen([sys.executable, "-m", "labstats.ops.alerts", "--config", str(config)],
                               stderr=(tmp / "alerts.log").open("w"))  # fmt: skip
    deadline = time.monotonic() + 30
    while not state.exists():
        if time.monotonic() > deadline or service.poll() is not None:
            raise SystemExit(f"bench_alerts: the service did not start: {(tmp / 'alerts.log').read_text()}")
        time.sleep(0.05)
    return service


def start_run(tmp: Path, url: str, kind: str, name: str) -> subprocess.Popen:
    cmd = [sys.executable, "-c", RUN, kind, name, str(tmp / "runs" / name), url]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def said(proc: subprocess.Popen, word: str) -> float:
    """The time a run printed with ``word`` (it waits for that line)."""
    line = proc.stdout.readline().split()
    if not line or line[0] != word:
        raise SystemExit(f"bench_alerts: a run said {line!r}, not {word!r}")
    return float(line[1])


def measure(tmp: Path, url: str, each: int, receiver: Receiver) -> dict[str, list[float]]:
    delays: dict[str, list[float]] = {"crashed": [], "stalled": [], "resolved": [], "NaN": []}
    runs = {f"{kind}{k}": (kind, start_run(tmp, url, kind, f"{kind}{k}"))
            for k in range(each) for kind in ("crash", "stall", "nan")}  # fmt: skip
    try:
        killed, quiet, nan = {}, {}, {}
        for name, (kind, proc) in runs.items():
            if kind == "crash":
                said(proc, "ready")
                proc.send_signal(signal.SIGKILL)
                killed[name] = time.time()
            elif kind == "stall":
                quiet[name] = said(proc, "quiet")
            else:
                nan[name] = said(proc, "nan")
        for name, at in quiet.items():
            delays["stalled"].append(receiver.wait(f"stalled: {name}", 30) - at)
        for name in quiet:
            runs[name][1].stdin.write("go\n")
            runs[name][1].stdin.flush()
            again = said(runs[name][1], "again")
            delays["resolved"].append(receiver.wait(f"resolved: stalled · {name}", 30) - again)
        for name, at in nan.items():
            delays["NaN"].append(receiver.wait(f"NaN or infinity: {name}", 30) - at)
        for name, at in killed.items():
            delays["crashed"].append(receiver.wait(f"crashed: {name}", STALE_AFTER + 30) - at)
    finally:
        for _, proc in runs.values():
            proc.kill()
            proc.wait()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--each", type=int, default=3, help="runs of each kind, at once")
    report.add_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.each = 1
    receiver = Receiver()
    with tempfile.TemporaryDirectory(prefix="labstats-bench-alerts-") as folder:
        tmp = Path(folder)
        server = RedisServer(folder)
        service = start_service(tmp, server.url, receiver.port)
        try:
            delays = measure(tmp, server.url, args.each, receiver)
        finally:
            service.send_signal(signal.SIGTERM)
            service.wait(15)
            server.stop()
            receiver.server.shutdown()
    thresholds = {
        "crashed": f"stale_after {STALE_AFTER:g} s",
        "stalled": f"stall_after {STALL_AFTER:g} s",
        "resolved": "-",
        "NaN": "-",
    }
    after = {
        "crashed": "SIGKILL",
        "stalled": "the loop's last log()",
        "resolved": "its next log()",
        "NaN": "the log() of the NaN",
    }
    rows = [
        [kind, after[kind], thresholds[kind], f"{statistics.median(v):.2f} s", f"{max(v):.2f} s", str(len(v))]
        for kind, v in delays.items()
    ]
    lines = [
        f"the service checks every {INTERVAL:g} s; one JSON webhook on loopback; "
        f"{args.each} runs of each kind at once",
        "",
        *report.table(["message", "counted from", "threshold", "delay, median", "slowest", "runs"], rows),
    ]
    report.emit(args, "alerts", ["<!-- run: no: what the benchmark printed -->", "```text", *lines, "```"])


if __name__ == "__main__":
    main()
