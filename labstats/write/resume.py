"""Continue a run that crashed or was stopped: ``Stats(name=..., resume=True)``.

The run keeps its id; the writer goes on where the run's last batch left it: its series
numbers and chunk numbers, its blob numbers, its batch number (the resend check). Each series
starts a new chunk, so nothing written before is rewritten. The run's record lists when it
was resumed and after which idx, so a reader can show the gap.

A run is resumed only by its owner (the Redis user that logged it) and only when its process
is gone: its status says it ended, or it was logged on this host by a process that no longer
exists, or its heartbeat is older than the readers' limit for a dead run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from labstats.format import run_record, series_info
from labstats.format.keys import Keys, run_owner
from labstats.write.chunks import cmd
from labstats.write.spool import Command, Spool
from labstats.write.transport import apply_new

log = logging.getLogger("labstats")

# A run whose heartbeat is this old is dead for every reader (reader.Lab's stale limit).
DEAD_AFTER = 60.0
MAX_RESUMES_KEPT = 1000  # the record's list of resumes stays bounded


class ResumeError(RuntimeError):
    """The run cannot be resumed; the message says why and what to do."""


@dataclass
class Resumable:
    """What the writer needs to go on with an earlier run."""

    run_id: str
    name: str
    status: str
    series: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> info
    seq: int = 0  # the last batch applied
    blobs: int = 0  # the next blob number
    last_idx: int = -1  # the highest idx of any series
    resumes: list[dict[str, Any]] = field(default_factory=list)


def find(
    client: redis.Redis,
    keys: Keys,
    name: str,
    owner: str | None,
    spool_of: Callable[[str], Path] | None = None,
    open_here: Callable[[str], bool] = lambda run_id: False,
) -> Resumable | None:
    """The run named ``name`` that ``owner`` may resume, None if no run has that name.
    Raises ResumeError when it exists but cannot be resumed. What the run's last process left
    in its spool (``spool_of(run_id)``; Redis was away when it ended) is stored first.
    ``open_here(run_id)``: whether this process still logs that run (its own earlier Stats)."""
    run_id = client.hget(keys.names, name)
    if run_id is None:
        return None
    run_id = run_id.decode()
    if run_owner(run_id) != owner:
        raise ResumeError(
            f"run {name!r} ({run_id}) belongs to {run_owner(run_id) or 'nobody'}, not to "
            f"{owner or 'this unowned connection'}: only its owner can resume it"
        )
    meta = run_record.decode(client.hgetall(keys.run(run_id)))
    if not meta:
        raise ResumeError(f"run {name!r} ({run_id}) has no record left (purged?): it cannot be resumed")
    if open_here(run_id) or (str(meta.get("status")) == run_record.RUNNING and _alive(meta)):
        raise ResumeError(
            f"run {name!r} ({run_id}) is still running (pid {meta.get('pid')} on {meta.get('host')}, "
            f"heartbeat {time.time() - _or_zero(meta.get('heartbeat')):.0f} s ago): stop it first, or "
            f"wait until its heartbeat is {DEAD_AFTER:.0f} s old if its process is gone"
        )
    if spool_of is not None and _store_spool(client, keys, run_id, spool_of(run_id)):
        meta = run_record.decode(client.hgetall(keys.run(run_id)))  # its end may have been in it
    if meta.get("archived"):
        raise ResumeError(f"run {name!r} ({run_id}) is archived: its points are in a Parquet file now")
    status = str(meta.get("status", run_record.RUNNING))
    found = Resumable(run_id, name, status)
    for series_name, raw in client.hgetall(keys.series(run_id)).items():
        info = series_info.decode(raw)
        if "error" in info:
            problem = info["error"]
            raise ResumeError(f"run {run_id}: series {series_name!r} has an unreadable info ({problem})")
        found.series[series_name.decode()] = info
        if isinstance(info.get("last_idx"), int):
            found.last_idx = max(found.last_idx, info["last_idx"])
    if sorted(info["sid"] for info in found.series.values()) != list(range(len(found.series))):
        raise ResumeError(f"run {run_id}: its series numbers have gaps; it cannot be resumed safely")
    found.seq = int(client.get(keys.seq(run_id)) or 0)
    found.blobs = _next_blob(client, keys, run_id, meta)
    resumes = meta.get("resumes")
    found.resumes = [r for r in resumes if isinstance(r, dict)] if isinstance(resumes, list) else []
    return found


def record_commands(keys: Keys, found: Resumable, owner: str | None, meta: dict[str, Any]) -> list[Command]:
    """The commands that mark the run running again and note this resume (for the writer)."""
    now = time.time()
    resumes = [*found.resumes, {"at": round(now, 3), "after_idx": found.last_idx,
                                "host": meta.get("host"), "pid": meta.get("pid")}]  # fmt: skip
    fields = {"status": run_record.RUNNING, "heartbeat": f"{now:.3f}",
              "resumes": json.dumps(resumes[-MAX_RESUMES_KEPT:])}  # fmt: skip
    fields.update({k: v for k, v in meta.items() if k in ("host", "pid", "python")})
    commands = [
        cmd("HSET", keys.run(found.run_id), *[x for item in fields.items() for x in item]),
        cmd("HDEL", keys.run(found.run_id), "ended", "reason", "last_call", "call_interval"),
    ]
    if found.status != run_record.RUNNING:
        commands.append(cmd("SMOVE", keys.status_index(owner, found.status),
                         keys.status_index(owner, run_record.RUNNING), found.run_id))  # fmt: skip
    return commands


def _store_spool(client: redis.Redis, keys: Keys, run_id: str, path: Path) -> int:
    """Store what the run's last process spooled (as `labstats replay` would); how many batches."""
    if not path.exists():
        return 0
    spool = Spool(path)
    sent = apply_new(client, keys.seq(run_id), list(spool.batches()))
    spool.clear()
    log.warning("labstats: run %s: %d batches its last process had spooled are stored", run_id, sent)
    return sent


def _alive(meta: dict[str, Any]) -> bool:
    """Whether the run's process may still live: on this host, whether its pid exists; on
    another, whether its heartbeat is fresh."""
    pid = int(_or_zero(meta.get("pid")))
    if meta.get("host") == socket.gethostname() and pid > 0:
        if pid == os.getpid():
            return False  # this process: open_here says whether it still logs the run
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # another user's process with that pid
        return True
    return time.time() - _or_zero(meta.get("heartbeat")) < DEAD_AFTER


def _next_blob(client: redis.Redis, keys: Keys, run_id: str, meta: dict[str, Any]) -> int:
    """One past the highest blob number the run has: the encoder notes its count in the
    record; a run from before that is scanned for its blob keys."""
    noted = meta.get("blobs")
    if isinstance(noted, str) and noted.isdigit():
        return int(noted)
    prefix = keys.blob(run_id, 0)[:-1]
    highest = -1
    for key in client.scan_iter(match=prefix.replace("[", "\\[") + "*", count=10_000):
        tail = key.decode()[len(prefix) :]
        if tail.isdigit():
            highest = max(highest, int(tail))
    return highest + 1


def _or_zero(value: Any) -> float:
    """A record's numeric field, 0 when it is not a number (its owner writes it)."""
    return run_record.number(value) or 0.0
