"""The lab's health in one read: what Prometheus' /metrics shows and the alerts check.

    health = collect({"gpu1": lab}, "/var/lib/labstats/status")
    health.sources["gpu1"].link_up        # True, False, or None (not a replica, not known)
    health.sources["gpu1"].box_age_s      # seconds since the box agent's latest sample
    health.stamps["backup"].ok_at         # the web box's last successful backup (unix s)
    [r.run_id for r in health.runs() if r.status == "stalled"]

``sources`` maps each source name to its store: a :class:`labstats.reader.Lab` (the web
box's replica of that training box), or anything with a ``lab`` attribute holding one (the
viewer's sources). Each source costs a few round trips, whatever the number of runs or
series: ROLE, INFO (when the Redis user may ask), the box agent's hash, the jobs hash, the
running runs' records and, for the points, each running run's series info. A source that
does not answer is reported (``reachable`` False, ``error``), never raised.

Replication lag in bytes needs the master's offset, which a replica does not know: it is not
given. What is given: the link state (ROLE), the seconds since the replica last heard from
its master (INFO replication, when allowed) and the age of the box agent's latest sample,
which is written on the master every few seconds and so tells how far behind the replica is
(at most its interval more than the true lag).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from labstats.format import run_record, series_info
from labstats.format.keys import AXIS_SERIES, run_owner
from labstats.reader import UNREACHABLE, Lab, Run, number

# Where the web box's jobs (backup, each box's pushes received) note their last success.
STATUS_DIR = "/var/lib/labstats/status"
# The web box's folders whose disks are reported (each disk once, by the first path on it).
WEB_DISK_PATHS = ("/", "/var/lib/labstats", "/var/lib/labstats-viewer")
# A running run's points are counted from its series info (one hash per run): a run with more
# series than this is not counted (its info would be a large read at every scrape).
MAX_SERIES_COUNTED = 5000
# Every training user may mark its own runs running (hostile records): a scrape reads at most
# this many of one owner's (the newest ids; unowned runs count as one owner), so one user's
# thousands of forged records neither slow every scrape nor crowd out the others' runs, and
# at most MAX_SERIES_READ series' infos of a source for the points (the rest not counted).
MAX_RUNNING_PER_OWNER = 100
MAX_SERIES_READ = 100_000
# A run id no logger makes (longer, or with control characters) is only a forged record's:
# left out, so a label of /metrics is never megabytes long nor holds a line break.
MAX_RUN_ID_CHARS = 512
# Bounds on what is read from files and fields others write.
MAX_STAMP_BYTES = 64 * 1024
MAX_DETAIL_CHARS = 500


@dataclass(frozen=True)
class Disk:
    path: str
    free_bytes: int
    total_bytes: int

    @property
    def used_ratio(self) -> float:
        """Share of the disk in use, 0 to 1 (0 for a disk of no size)."""
        return (self.total_bytes - self.free_bytes) / self.total_bytes if self.total_bytes > 0 else 0.0


@dataclass(frozen=True)
class Success:
    """A job's last success: when (unix seconds) and what it said."""

    job: str
    ok_at: float
    detail: str = ""


@dataclass(frozen=True)
class RunHealth:
    """A run whose record says running: its derived status (running, stalled or crashed: no
    heartbeat for too long), the age of its heartbeat and of its loop's last log()/update()
    call, and the points it stored (None: not counted)."""

    source: str
    run_id: str
    name: str
    owner: str | None
    status: str
    heartbeat_age_s: float
    last_call_age_s: float | None
    points: int | None


@dataclass
class SourceHealth:
    name: str
    reachable: bool = True
    error: str = ""
    link_up: bool | None = None  # the replica's link to its master (None: not a replica, or unknown)
    master_last_io_s: float | None = None  # INFO replication: seconds since the master was heard
    link_down_s: float | None = None  # INFO replication: seconds the link has been down
    used_memory_bytes: int | None = None  # INFO memory (None: this Redis user may not ask)
    box_at: float | None = None  # the box agent's latest sample (unix seconds, the box's clock)
    box_interval_s: float | None = None
    box_age_s: float | None = None
    box_disks: list[Disk] = field(default_factory=list)
    jobs: dict[str, Success] = field(default_factory=dict)  # the training box's ls:jobs
    runs: list[RunHealth] = field(default_factory=list)


@dataclass
class LabHealth:
    at: float
    sources: dict[str, SourceHealth]
    web_disks: list[Disk]
    stamps: dict[str, Success]  # the web box's jobs' last successes (status_dir)
    problems: list[str] = field(default_factory=list)  # what could not be read, in words

    def runs(self) -> list[RunHealth]:
        """Every source's runs whose record says running."""
        return [run for source in self.sources.values() for run in source.runs]


def collect(
    sources: Mapping[str, Any],
    status_dir: str | os.PathLike | None = STATUS_DIR,
    *,
    disk_paths: Iterable[str] = WEB_DISK_PATHS,
    now: float | None = None,
) -> LabHealth:
    """The lab's state now (see the module's docstring). ``status_dir`` None: no stamps read."""
    now = time.time() if now is None else now
    problems: list[str] = []
    found = {name: source_health(name, getattr(src, "lab", src), now) for name, src in sources.items()}
    for name, health in found.items():
        if not health.reachable:
            problems.append(f"source {name}: {health.error}")
    stamps = read_stamps(status_dir, problems) if status_dir is not None else {}
    return LabHealth(now, found, disks(disk_paths), stamps, problems)


def source_health(name: str, lab: Lab, now: float) -> SourceHealth:
    health = SourceHealth(name)
    try:
        health.link_up = _link_up(lab)
        _read_info(lab.redis, health)
        _read_box(lab, name, health, now)
        health.jobs = _read_jobs(lab)
        health.runs = _read_runs(lab, name)
    except (*UNREACHABLE, redis.RedisError) as exc:
        health.reachable = False
        health.error = f"{type(exc).__name__}: {exc}"[:MAX_DETAIL_CHARS]
    return health


def _link_up(lab: Lab) -> bool | None:
    state = lab.link_state()
    return None if state is None else state == "up"


def _read_info(client: redis.Redis, health: SourceHealth) -> None:
    """Memory and replication details from INFO, where this Redis user may ask for them (the
    viewer's ACL may not allow it: then they stay unknown)."""
    try:
        info = client.info("memory") | client.info("replication")
    except redis.exceptions.NoPermissionError:
        return
    health.used_memory_bytes = _int(info.get("used_memory"))
    if info.get("role") == "slave":
        health.master_last_io_s = _finite(info.get("master_last_io_seconds_ago"))
        if info.get("master_link_status") != "up":
            health.link_down_s = _finite(info.get("master_link_down_since_seconds"))
            if health.master_last_io_s is not None and health.master_last_io_s < 0:
                health.master_last_io_s = None  # -1: never heard since the link went down


def _read_box(lab: Lab, name: str, health: SourceHealth, now: float) -> None:
    raw = lab.redis.hgetall(lab.keys.box(name))
    if not raw:
        return
    fields = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in raw.items()}
    health.box_at = _finite(fields.get("at"))
    health.box_interval_s = _finite(fields.get("interval"))
    if health.box_at is not None:
        health.box_age_s = max(0.0, now - health.box_at)
    try:
        state = json.loads(fields.get("state", "{}"))
    except (ValueError, RecursionError):
        return
    found = state.get("disks") if isinstance(state, dict) else None
    for disk in found if isinstance(found, list) else []:
        if not isinstance(disk, dict):
            continue
        free, total = _int(disk.get("free_bytes")), _int(disk.get("total_bytes"))
        if isinstance(disk.get("path"), str) and free is not None and total is not None:
            health.box_disks.append(Disk(disk["path"][:256], free, total))


def _read_jobs(lab: Lab) -> dict[str, Success]:
    jobs = {}
    for raw_job, raw in lab.redis.hgetall(lab.keys.jobs).items():
        job = raw_job.decode("utf-8", "replace")[:64]
        success = _success(job, raw)
        if success is not None:
            jobs[job] = success
    return jobs


def _read_runs(lab: Lab, source: str) -> list[RunHealth]:
    """The runs whose record says running (the running index), with their derived status."""
    ids = newest_per_owner(lab.index.candidates(None, None, run_record.RUNNING))
    if not ids:
        return []
    pipe = lab.redis.pipeline(transaction=False)
    for run_id in ids:
        pipe.hgetall(lab.keys.run(run_id))
        pipe.hlen(lab.keys.series(run_id))
    replies = pipe.execute()
    runs = [
        (Run(lab, run_id, run_record.decode(raw)), length)
        for run_id, raw, length in zip(ids, replies[::2], replies[1::2], strict=True)
        if raw
    ]
    runs = [(run, length) for run, length in runs if run.meta.get("status") == run_record.RUNNING]
    counted, budget = [], MAX_SERIES_READ
    for run, length in runs:
        if length <= min(MAX_SERIES_COUNTED, budget):
            counted.append(run)
            budget -= length
    pipe = lab.redis.pipeline(transaction=False)
    for run in counted:
        pipe.hgetall(lab.keys.series(run.id))
    points = {run.id: _points(infos) for run, infos in zip(counted, pipe.execute(), strict=True)}
    now = time.time()
    out = []
    for run, _ in runs:
        last_call = number(run.meta.get("last_call"))
        out.append(
            RunHealth(
                source=source,
                run_id=run.id,
                name=str(run.name)[:200],
                owner=run.owner,
                status=run.status,
                heartbeat_age_s=max(0.0, run.heartbeat_age),
                last_call_age_s=None if last_call is None else max(0.0, now - last_call),
                points=points.get(run.id),
            )
        )
    return out


def newest_per_owner(ids: list[str], limit: int | None = None) -> list[str]:
    """At most ``limit`` (MAX_RUNNING_PER_OWNER) ids of each owner: the newest (an id holds its start time
    after the owner's name), in the order given; ids no logger makes left out."""
    by_owner: dict[str | None, list[str]] = {}
    for run_id in ids:
        if len(run_id) > MAX_RUN_ID_CHARS or not run_id.isprintable():
            continue
        by_owner.setdefault(run_owner(run_id), []).append(run_id)
    kept = {i for owned in by_owner.values() for i in sorted(owned)[-(limit or MAX_RUNNING_PER_OWNER) :]}
    return [run_id for run_id in ids if run_id in kept]


def _points(infos: dict[bytes, bytes]) -> int:
    """Points a run stored: its series' counts, the internal axes left out."""
    total = 0
    for name, raw in infos.items():
        if name.decode("utf-8", "replace") not in AXIS_SERIES:
            total += max(0, series_info.decode(raw)["count"])
    return total


def read_stamps(status_dir: str | os.PathLike, problems: list[str] | None = None) -> dict[str, Success]:
    """{job: its last success} from the stamp files ``<job>.json`` of ``status_dir``
    ({"ok_at": unix seconds, "detail": text}); an empty one (no success yet) is left out, and
    one that cannot be read is named in ``problems`` and left out."""
    stamps: dict[str, Success] = {}
    folder = Path(status_dir)
    try:
        files = sorted(folder.glob("*.json"))
    except OSError as exc:
        if problems is not None:
            problems.append(f"{folder}: {exc}")
        return stamps
    for path in files:
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_STAMP_BYTES)
        except OSError as exc:
            if problems is not None:
                problems.append(f"{path}: {exc.strerror or exc}")
            continue
        if not raw.strip():
            continue  # made by its role, no success yet (or being written this instant)
        success = _success(path.stem, raw)
        if success is None:
            if problems is not None:
                problems.append(f"{path}: not a stamp (JSON with a number ok_at)")
            continue
        stamps[path.stem] = success
    return stamps


def disks(paths: Iterable[str]) -> list[Disk]:
    """Free and total bytes of the disks these paths are on (each disk once, by the first of
    its paths that exists)."""
    seen, out = set(), []
    for path in paths:
        try:
            device = os.stat(path).st_dev
            usage = shutil.disk_usage(path)
        except OSError:
            continue
        if device not in seen:
            seen.add(device)
            out.append(Disk(path, usage.free, usage.total))
    return out


def _success(job: str, raw: bytes | str) -> Success | None:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    ok_at = _finite(data.get("ok_at"))
    if ok_at is None:
        return None
    detail = data.get("detail", "")
    return Success(job, ok_at, (detail if isinstance(detail, str) else str(detail))[:MAX_DETAIL_CHARS])


def _finite(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _int(value: Any) -> int | None:
    out = _finite(value)
    return int(out) if out is not None else None
