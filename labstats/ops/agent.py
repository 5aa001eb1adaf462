"""The box agent: a training box's GPUs, CPU, memory and disks in its Redis master, run or not.

    python -m labstats.ops.agent --source gpu1 [--interval 10] [--history-hours 24]
                                 [--disk /home --disk /var/lib/labstats/artifacts ...]

The box_agent role runs it as a service of its own (``labstats-agent``, its own system user
and Redis user ``agent``), with the Redis URL in the file ``$LABSTATS_CONFIG`` names. Every
``interval`` seconds it writes (labstats.format.keys; the web box reads them through its replica):

- ``ls:box:<source>``: a hash of the latest sample: ``at`` (unix seconds), ``interval``,
  ``host``, ``agent_version`` and ``state``, a JSON object: the box's CPU and memory, the free
  and total bytes of each ``--disk``, what NVML and amdsmi say (``gpu_status``), each GPU
  (NVIDIA's, then AMD's where amdsmi is installed) with its use,
  memory, power, temperature and the processes on it: their pid, user and the run each
  belongs to (the run whose process is the GPU process or one of its parents); and the
  ``runs`` running on this box (record ``host`` this host's name, heartbeat fresh, process alive).
- ``ls:box:<source>:history``: a stream of the same as flat numbers (``cpu_percent``,
  ``gpu0_util_percent``, ``disk0_free_bytes``...), capped at ``--history-hours`` of samples.

Both keys expire a week after the last sample (a retired box's state leaves by itself).
The sampling is the runs' own (labstats.capture.system's GPU and host parts). Faults:

- Redis away (restarted, refusing): sampling goes on, one warning per outage and one line
  when it is back; the samples of up to an hour away are written then (no gap in the history).
- An NVML or amdsmi error: that library's GPUs stop with one warning, and ``gpu_status`` says
  why; the rest goes on.
- SIGTERM or SIGINT: the agent ends after the sample it is taking, with status 0.
- A bad argument or config: status 78 (EX_CONFIG), which its unit does not restart.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pwd
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil
import redis

import labstats
from labstats import config as cfg
from labstats.capture import system
from labstats.format import run_record
from labstats.format.keys import DEFAULT_PREFIX, Keys, run_owner
from labstats.format.run_record import number
from labstats.read.run_index import RunIndex
from labstats.reader import STALE_AFTER, short

log = logging.getLogger("labstats.agent")

DEFAULT_INTERVAL = 10.0
MIN_INTERVAL, MAX_INTERVAL = 5.0, 300.0  # the box_agent role checks the same bounds
DEFAULT_HISTORY_HOURS = 24.0
MAX_HISTORY_HOURS = 168.0
DEFAULT_DISKS = ("/home", "/var/lib/labstats/artifacts", "/var/lib/labstats/archive", "/")
KEEP_AFTER_LAST = 7 * 86400  # seconds both keys outlive the last sample
PENDING_SECONDS = 3600.0  # samples taken while Redis is away that are kept to write when back
FIRST_SAMPLE_AFTER = 1.0  # seconds: the CPU share is measured over this first span
EX_CONFIG = 78  # sysexits.h: a bad argument or config (its unit does not restart it)
MAX_PARENTS = 64  # how far up a GPU process's parents are looked for a run's process

# Errors that mean Redis is away or refusing for now: the agent waits for it, never ends.
REDIS_AWAY = (redis.RedisError, OSError)

GPU_FIELDS = ("util_percent", "memory_used_bytes", "memory_total_bytes", "power_watts", "temperature_celsius")
GPU_INT_FIELDS = ("memory_used_bytes", "memory_total_bytes")
GPU_HISTORY = ("util_percent", "memory_used_bytes", "temperature_celsius", "power_watts")


class BoxSampler:
    """One sample of the box: the GPU and host parts of the runs' sampler, the disks'
    totals beside their free space, and which user and run each GPU process belongs to."""

    def __init__(self, disks: Iterable[str | os.PathLike], nvml: Any = None, amdsmi: Any = None) -> None:
        self.gpu_parts = system.gpu_parts(nvml, amdsmi)
        self.gpus, self.amd_gpus = self.gpu_parts
        # The agent's own process as "the tree": the part samples the box beside it.
        self.host = system.HostPart(os.getpid(), {})
        self.disks = [Path(d) for d in disks]
        self.names: list[str] = []
        self.uuids: list[str] = []
        self.lists_processes: list[bool] = []  # per GPU: whether its driver lists the processes
        self.cpu_count = os.cpu_count() or 0
        self.memory_total = 0
        self.host_status = ""
        self._users: dict[int, str] = {}  # uid -> name: the passwd database is read once per user

    def start(self) -> None:
        """Find the GPUs and set the CPU baseline; each part says why when it cannot start."""
        self.host.start()
        if self.host.active:
            self.memory_total = int(psutil.virtual_memory().total)
            self.cpu_count = psutil.cpu_count() or self.cpu_count
        else:
            self.host_status = self.host.status
            log.warning("labstats-agent: %s", self.host_status)
        system.start_gpus(self.gpu_parts)
        for part in self.gpu_parts:  # indexed as the GPUs are numbered: NVIDIA's, then AMD's
            # The agent is no run: the part's "used by the run" read is replaced by the list of
            # processes on each GPU (the same library call), read below.
            self.lists_processes += ["used_by_run" in fields for fields in part.fields]
            part.fields = [tuple(f for f in fields if f != "used_by_run") for fields in part.fields]
            self.names += [part.name(handle) for handle in part.handles]
            self.uuids += [part.uuid(handle) for handle in part.handles]
        log.info("labstats-agent: %s", system.gpu_status(self.gpu_parts))

    def stop(self) -> None:
        for part in self.gpu_parts:
            part.shutdown()

    def sample(self, run_pids: Mapping[int, str]) -> dict[str, Any]:
        """The box's state as the contract of ``ls:box:<source>`` has it (``runs`` excepted:
        the caller adds them). ``run_pids``: the process id of each run running here."""
        values: dict[str, Any] = {}
        if self.host.active:
            try:
                self.host.sample(values)
            except Exception as exc:  # psutil failing mid-way: the GPUs and disks go on
                self.host.active = False
                self.host_status = f"CPU and memory metrics stopped ({short(exc)})"
                log.warning("labstats-agent: %s", self.host_status, exc_info=exc)
        state: dict[str, Any] = {
            "cpu_percent": values.get(system.PREFIX + "cpu_percent"),
            "cpu_count": self.cpu_count,
            "memory_used_bytes": _int(values.get(system.PREFIX + "memory_used_bytes")),
            "memory_total_bytes": self.memory_total or None,
            "memory_available_bytes": _int(values.get(system.PREFIX + "memory_available_bytes")),
            "disks": self._disks(),
            "gpu_status": "",
            "gpus": [],
        }
        if self.host_status:
            state["host_status"] = self.host_status
        for part in self.gpu_parts:
            if not part.active:
                continue
            try:
                state["gpus"] += self._gpus(part, run_pids)
            except Exception as exc:  # a library's error: a GPU fell off the bus, the driver reloaded
                status = part.stop_on_error(exc)
                log.warning("labstats-agent: %s; the other box metrics go on", status)
        state["gpu_status"] = system.gpu_status(self.gpu_parts)
        return state

    def _gpus(self, part: system.VendorGpus, run_pids: Mapping[int, str]) -> list[dict[str, Any]]:
        """One library's GPUs: all of them, or an error when a read fails."""
        values: dict[str, Any] = {}
        part.sample(set(), values)
        memo = dict(run_pids)
        users: dict[int, str] = {}  # one process on many GPUs is looked up once
        found = []
        for index, handle in enumerate(part.handles, start=part.first_index):
            gpu: dict[str, Any] = {"index": index, "name": self.names[index], "uuid": self.uuids[index]}
            for field in GPU_FIELDS:
                value = values.get(system.gpu_series(index, field))
                gpu[field] = _int(value) if field in GPU_INT_FIELDS else value
            pids = part.process_pids(handle) if self.lists_processes[index] else None
            gpu["processes"] = [
                {"pid": pid, "user": self._user(pid, users), "run": self._run_of(pid, memo)}
                for pid in dict.fromkeys(pids or ())  # each pid once
            ]
            found.append(gpu)
        return found

    def _run_of(self, pid: int, memo: dict[int, str | None]) -> str | None:
        """The run whose process is ``pid`` or one of its parents (DataLoader workers, a
        launcher's children); ``memo`` holds the runs' pids and what was found already."""
        chain = []
        current: int | None = pid
        while current and current not in memo and len(chain) < MAX_PARENTS:
            chain.append(current)
            try:
                current = psutil.Process(current).ppid()
            except (psutil.Error, OSError):  # ended, or in another pid namespace
                current = None
        run = memo.get(current) if current else None
        for seen in chain:
            memo[seen] = run
        return run

    def _user(self, pid: int, seen: dict[int, str]) -> str:
        """Who runs ``pid`` ("" when it ended, the uid when the passwd database has no name);
        ``seen``: this sample's answers so far."""
        if pid in seen:
            return seen[pid]
        try:
            uid = psutil.Process(pid).uids().real
        except (psutil.Error, OSError):
            seen[pid] = ""
            return ""
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._users[uid] = str(uid)
        seen[pid] = self._users[uid]
        return seen[pid]

    def _disks(self) -> list[dict[str, Any]]:
        """Each watched folder's disk, in the order given (the history's disk<i> is the i-th).
        A folder not made yet (the archive before its first run) is on its nearest parent's."""
        found = []
        for path in self.disks:
            for place in (path, *path.parents):
                try:  # one statvfs gives both
                    usage = psutil.disk_usage(str(place))
                except OSError:
                    continue
                found.append(
                    {"path": str(path), "free_bytes": int(usage.free), "total_bytes": int(usage.total)}
                )
                break
        return found


def history_fields(state: Mapping[str, Any]) -> dict[str, float | int]:
    """A state's flat numbers for the history stream (the ones it has)."""
    fields: dict[str, Any] = {"cpu_percent": state.get("cpu_percent"),
                              "memory_used_bytes": state.get("memory_used_bytes")}  # fmt: skip
    for gpu in state.get("gpus", []):
        for name in GPU_HISTORY:
            fields[f"gpu{gpu['index']}_{name}"] = gpu.get(name)
    for index, disk in enumerate(state.get("disks", [])):
        fields[f"disk{index}_free_bytes"] = disk.get("free_bytes")
    return {name: value for name, value in fields.items() if value is not None}


def running_on_box(client: redis.Redis, keys: Keys, host: str, now: float,
                   alive: Callable[[int], bool] = psutil.pid_exists) -> dict[int, str]:  # fmt: skip
    """The runs running on this box, by their process id: stored as running, logged on this
    host (the record's ``host``), heartbeat fresher than the readers' crash limit, process alive."""
    ids = RunIndex(client, keys).candidates(None, None, run_record.RUNNING)
    if not ids:
        return {}
    pipe = client.pipeline(transaction=False)
    for run_id in ids:
        pipe.hmget(keys.run(run_id), "status", "host", "pid", "heartbeat", "started")
    found: dict[int, str] = {}
    for run_id, (status, run_host, pid, heartbeat, started) in zip(ids, pipe.execute(), strict=True):
        if (
            status != run_record.RUNNING.encode()
            or run_host is None
            or run_host.decode("utf-8", "replace") != host
        ):
            continue
        beat = number(heartbeat) or number(started) or 0.0
        process = number(pid)
        if now - beat > STALE_AFTER or process is None or process <= 0 or process != int(process):
            continue
        if alive(int(process)) and _runs_as_owner(int(process), run_id):
            found[int(process)] = run_id
    return found


def _runs_as_owner(pid: int, run_id: str) -> bool:
    """Whether the process may be the run's: a run whose owner is an account on this box is
    only ever that account's process. Its record is its owner's to write (hostile input): it
    could name another user's process, or pid 1, whose every child on a GPU would then be
    shown as the forger's run. An owner with no account here (runs logged from elsewhere, as
    in tests) is taken at its word, as is an unowned run (no training user may write one)."""
    owner = run_owner(run_id)
    if owner is None:
        return True
    try:
        uid = pwd.getpwnam(owner).pw_uid
    except KeyError:
        return True
    try:
        return psutil.Process(pid).uids().real == uid
    except (psutil.Error, OSError):
        return False


class BoxAgent:
    """Samples the box and writes each sample to ``ls:box:<source>`` and its history."""

    def __init__(
        self,
        client: redis.Redis,
        source: str,
        sampler: BoxSampler,
        *,
        prefix: str = DEFAULT_PREFIX,
        interval: float = DEFAULT_INTERVAL,
        history_hours: float = DEFAULT_HISTORY_HOURS,
        hostname: str | None = None,
    ) -> None:
        self.client, self.source, self.sampler = client, source, sampler
        self.keys = Keys(prefix)
        self.interval = float(interval)
        self.hostname = hostname or socket.gethostname()
        self.history_max = math.ceil(history_hours * 3600 / self.interval)
        # Samples not yet in the history (Redis away): unix ms -> fields, the oldest dropped.
        self.pending: deque[tuple[int, dict[str, Any]]] = deque(
            maxlen=min(self.history_max, math.ceil(PENDING_SECONDS / self.interval))
        )
        self.run_pids: dict[int, str] = {}  # the runs found at the last look (kept while Redis is away)
        self.away_since: float | None = None
        self.samples = 0  # samples taken
        self.written = 0  # samples written
        self._unexpected: set[str] = set()  # errors of the agent itself, each logged once

    def step(self) -> dict[str, Any]:
        """Take one sample and write it (with what waited while Redis was away); returns the state."""
        now = time.time()
        reachable = self._look_for_runs(now)
        state = self.sampler.sample(self.run_pids)
        state["runs"] = sorted(set(self.run_pids.values()))
        self.samples += 1
        fields = history_fields(state)
        if fields:
            self.pending.append((int(now * 1000), fields))
        if reachable:
            try:
                self._write(now, state)
            except REDIS_AWAY as exc:
                self._away(exc)
            else:
                self._back()
        return state

    def run(self, stop: threading.Event) -> None:
        """Sample every ``interval`` seconds until ``stop`` is set (SIGTERM)."""
        self.sampler.start()
        try:
            due = time.monotonic() + min(FIRST_SAMPLE_AFTER, self.interval)
            while not stop.wait(max(0.0, due - time.monotonic())):
                try:
                    self.step()
                except Exception as exc:  # a bug of the agent: logged once, the next sample tries again
                    self._unexpected_error(exc)
                due += self.interval
                if due < time.monotonic():  # a sample took longer than the interval: no burst
                    due = time.monotonic() + self.interval
        finally:
            self.sampler.stop()

    def _look_for_runs(self, now: float) -> bool:
        """Refresh the runs on this box; False when Redis cannot be reached (then the
        runs found last time stand, and no write is tried)."""
        try:
            self.run_pids = running_on_box(self.client, self.keys, self.hostname, now)
        except REDIS_AWAY as exc:
            self._away(exc)
            return False
        return True

    def _write(self, now: float, state: dict[str, Any]) -> None:
        box, history = self.keys.box(self.source), self.keys.box_history(self.source)
        latest = {"at": f"{now:.3f}", "interval": f"{self.interval:g}", "host": self.hostname,
                  "agent_version": labstats.__version__, "state": json.dumps(state)}  # fmt: skip
        entries = list(self.pending)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(box, mapping=latest)
        for at_ms, fields in entries:
            # Its own time as the entry's id, so samples written late sit where they were taken.
            pipe.xadd(history, fields, id=f"{at_ms}-*", maxlen=self.history_max, approximate=True)
        pipe.expire(box, KEEP_AFTER_LAST)
        pipe.expire(history, KEEP_AFTER_LAST)
        results = pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, redis.ResponseError) and "equal or smaller" not in str(result):
                raise result
            # "equal or smaller": the clock went back past the last entry: that sample is left out.
        self.pending.clear()
        self.written += 1

    def _away(self, exc: BaseException) -> None:
        if self.away_since is None:
            self.away_since = time.monotonic()
            log.warning(
                "labstats-agent: Redis is away or refuses (%s); sampling goes on, and the samples "
                "of up to %.0f minutes are written when it is back",
                short(exc),
                self.pending.maxlen * self.interval / 60,
            )

    def _back(self) -> None:
        if self.away_since is not None:
            log.warning("labstats-agent: Redis is back after %.0f s", time.monotonic() - self.away_since)
            self.away_since = None

    def _unexpected_error(self, exc: Exception) -> None:
        what = f"{type(exc).__name__}: {exc}"
        if what not in self._unexpected:
            self._unexpected.add(what)
            log.exception("labstats-agent: a sample failed (logged once; the next sample tries again)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m labstats.ops.agent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--source", required=True, help="this box's source name (the web box's name for it)")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL,
                        help=f"seconds between samples ({MIN_INTERVAL:g} to {MAX_INTERVAL:g})")  # fmt: skip
    parser.add_argument("--history-hours", type=float, default=DEFAULT_HISTORY_HOURS,
                        help=f"hours of samples the history keeps (up to {MAX_HISTORY_HOURS:g})")  # fmt: skip
    parser.add_argument("--disk", action="append", dest="disks", metavar="PATH",
                        help="a folder whose disk is watched (again for more); default: "
                        + ", ".join(DEFAULT_DISKS))  # fmt: skip
    parser.add_argument(
        "--url", help="Redis URL (default: as labstats.config finds it, $LABSTATS_CONFIG first)"
    )
    parser.add_argument("--prefix", default=None, help="key prefix (default: the config's, else ls)")
    args = parser.parse_args(argv)
    problems = []
    if not cfg.SOURCE_NAME.match(args.source):
        problems.append(f"--source {args.source!r} is not a source name (letters, digits, _ . -; 64 at most)")
    if not MIN_INTERVAL <= args.interval <= MAX_INTERVAL:
        problems.append(
            f"--interval must be {MIN_INTERVAL:g} to {MAX_INTERVAL:g} seconds, not {args.interval:g}"
        )
    if not 0 < args.history_hours <= MAX_HISTORY_HOURS:
        problems.append(
            f"--history-hours must be over 0 and at most {MAX_HISTORY_HOURS:g}, not {args.history_hours:g}"
        )
    if problems:
        parser.exit(EX_CONFIG, "".join(f"labstats-agent: {p}\n" for p in problems))
    return args


def main(argv: list[str] | None = None, nvml: Any = None, amdsmi: Any = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        settings = cfg.resolve(args.url, args.prefix)
        client = cfg.client(settings, timeout=min(5.0, args.interval / 2))
    except (cfg.LabstatsError, ValueError) as exc:  # no config, or a URL redis-py cannot parse
        print(f"labstats-agent: {exc}", file=sys.stderr)
        return EX_CONFIG
    sampler = BoxSampler(args.disks or DEFAULT_DISKS, nvml, amdsmi)
    agent = BoxAgent(client, args.source, sampler, prefix=settings.prefix, interval=args.interval,
                     history_hours=args.history_hours)  # fmt: skip
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("labstats-agent: box %s (%s) every %g s into %s as %s", args.source, agent.hostname,
             args.interval, agent.keys.box(args.source), cfg.redacted(settings.url))  # fmt: skip
    agent.run(stop)
    log.info("labstats-agent: stopped after %d samples (%d written)", agent.samples, agent.written)
    return 0


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


if __name__ == "__main__":
    sys.exit(main())
