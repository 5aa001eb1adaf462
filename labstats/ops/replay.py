"""Replay spools whose process is gone: records logged while Redis was away.

    labstats replay                      # the spools this user's runs noted (its index)
    labstats replay ~/runs /data/exp     # and spool files, or folders searched for them

A spool still held by its process (the run goes on and will replay it itself) is left alone;
one that cannot be sent now (Redis away) is kept for the next try. Replaying is idempotent:
batches the server has already (by the run's stored batch number) are skipped.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from labstats.format.keys import Keys
from labstats.write import spool
from labstats.write.transport import RETRYABLE, apply_new

MAX_DEPTH = 6  # how deep folders are searched for spools


@dataclass
class Outcome:
    path: Path
    state: str  # replayed, busy, kept (Redis away), empty
    batches: int = 0
    detail: str = ""


def find(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Spool files: the given files, and those in .labstats-spool folders under given folders."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(_walk(path))
    return list(dict.fromkeys(found))


def _walk(root: Path) -> Iterator[Path]:
    base = len(root.parts)
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if here.name == ".labstats-spool":
            yield from (here / f for f in files if f.endswith(spool.SUFFIX))
        # Skip other hidden folders and stop at MAX_DEPTH (a home may hold big datasets).
        dirs[:] = [d for d in dirs if (d == ".labstats-spool" or not d.startswith(".")) and
                   len(here.parts) - base < MAX_DEPTH]  # fmt: skip


def replay_file(path: Path, client: redis.Redis, keys: Keys) -> Outcome:
    run_id = path.name.removesuffix(spool.SUFFIX)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - held (with its lock) until the end
    except FileNotFoundError:
        return Outcome(path, "empty")
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return Outcome(path, "busy", detail="its process still holds it")
        batches, end, size = spool.scan(path)
        try:
            sent = apply_new(client, keys.seq(run_id), batches)
        except (*RETRYABLE, redis.ResponseError) as exc:
            return Outcome(path, "kept", detail=f"{type(exc).__name__}: {exc}")
        path.unlink()
    detail = f"{size - end} bytes of a torn last frame dropped" if end < size else ""
    return Outcome(path, "replayed", sent, detail)


def replay(paths: Iterable[str | os.PathLike], client: redis.Redis, keys: Keys) -> list[Outcome]:
    files = list(dict.fromkeys([*find(paths), *spool.indexed()]))
    outcomes = [replay_file(path, client, keys) for path in files]
    spool.prune_index()
    return outcomes


def pending_runs() -> dict[str, Path]:
    """Run ids with records still waiting in a spool (from this user's index)."""
    return {p.name.removesuffix(spool.SUFFIX): p for p in spool.indexed()}
