"""The newest points of each running run's numeric series, read cheaply check after check: of
each series only the bytes appended since the last check (GETRANGE of its open chunk, whole
chunks for those begun since). Gives each series' newest point (for the user rules) and the
first NaN or infinity of each float series."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from labstats.format import chunk
from labstats.ops.alert_messages import number_text
from labstats.reader import Lab

FIRST_READ_CHUNKS = 64  # of a series first seen mid-run (a restart): its newest chunks only
MAX_CHUNKS_BEHIND = 256  # of a series written faster than that between two checks: the newest
MAX_READ_BYTES = 2 * chunk.CHUNK_BYTES  # of one chunk a check: a writer's chunk is one CHUNK_BYTES
READS_PER_RUN = 20_000  # chunks of one run read a check
READS_AT_ONCE = 256  # chunks in memory at once (8 MiB)


@dataclass
class _Cursor:
    """Where the last check stopped reading one series: its chunk, the byte offset in it and
    the chunk's kind."""

    sid: int
    chunk: int
    offset: int
    kind: bytes


class SeriesTails:
    """Where each series was last read, and its newest point, per (source, run, series)."""

    def __init__(self) -> None:
        self.cursors: dict[tuple[str, str, str], _Cursor] = {}
        self.latest: dict[tuple[str, str, str], tuple[int, float]] = {}

    def newest(self, source: str, run_id: str, name: str) -> tuple[int, float] | None:
        """The series' newest point read so far: (step, value), or None."""
        return self.latest.get((source, run_id, name))

    def forget(self, source: str, run_id: str) -> None:
        """Drop what is kept of a run that ended or is gone."""
        for store in (self.cursors, self.latest):
            for key in [k for k in store if k[0] == source and k[1] == run_id]:
                del store[key]

    def read_new(self, source: str, lab: Lab, infos: dict[str, dict[str, dict[str, Any]]]) -> dict:
        """Read each numeric series' bytes appended since the last check (GETRANGE of its open
        chunk, whole chunks for those begun since) of the runs of ``infos`` (run id -> its
        series infos); keep each one's newest point (for the user rules) and return, per run
        id, (series, step, value) of the float series that got a NaN or infinity.

        Bounded whatever a run's keys say: at most MAX_CHUNKS_BEHIND chunks of a series (the
        newest), at most a chunk's size of each, READS_PER_RUN chunks of a run a check (the
        rest the next check), READS_AT_ONCE in memory at once (one round trip each)."""
        plans = [
            plan for run_id, run_infos in infos.items() for plan in self._plan(source, run_id, run_infos)
        ]
        bad: dict[str, list] = {}
        batch: list = []
        reads = 0
        for plan in plans:
            batch.append(plan)
            reads += len(plan[3])
            if reads >= READS_AT_ONCE or plan is plans[-1]:
                for run_id, found in self._read(source, lab, batch):
                    bad.setdefault(run_id, []).append(found)
                batch, reads = [], 0
        return bad

    def _plan(self, source: str, run_id: str, infos: dict[str, dict[str, Any]]) -> list:
        """(run id, series, cursor, chunk numbers) of each series of the run to read."""
        plans = []
        budget = READS_PER_RUN
        for name, info in infos.items():
            if "error" in info or info.get("kind") not in chunk.NUMERIC_KINDS or name.startswith("_"):
                continue
            cur = self.cursors.get((source, run_id, name))
            if cur is None or cur.sid != info["sid"]:
                cur = _Cursor(info["sid"], max(0, info["last_chunk"] - FIRST_READ_CHUNKS + 1), 0, b"")
            if cur.chunk > info["last_chunk"]:
                continue
            if cur.chunk < info["last_chunk"] - MAX_CHUNKS_BEHIND + 1:  # far behind: the newest only
                cur = _Cursor(cur.sid, info["last_chunk"] - MAX_CHUNKS_BEHIND + 1, 0, b"")
            numbers = range(cur.chunk, info["last_chunk"] + 1)
            if len(numbers) > budget:
                continue
            budget -= len(numbers)
            plans.append((run_id, name, cur, numbers))
        return plans

    def _read(self, source: str, lab: Lab, plans: list) -> list:
        pipe = lab.redis.pipeline(transaction=False)
        for run_id, _, cur, numbers in plans:
            for n in numbers:
                start = cur.offset if n == cur.chunk else 0
                pipe.getrange(lab.keys.chunk(run_id, cur.sid, n), start, start + MAX_READ_BYTES - 1)
        results = iter(pipe.execute())
        bad = []
        for run_id, name, cur, numbers in plans:
            first_bad = None
            for n in numbers:
                data = next(results) or b""
                start = cur.offset if n == cur.chunk else 0
                kind = cur.kind if start else data[:1]
                body = data if start else data[1:]
                dtype = chunk.RECORD_DTYPES.get(kind)
                if dtype is None:  # an object chunk (the series' kind changed): nothing to scan
                    cur.chunk, cur.offset, cur.kind = n, start + len(data), kind
                    continue
                count = len(body) // dtype.itemsize
                records = np.frombuffer(body, dtype=dtype, count=count)
                cur.chunk, cur.offset, cur.kind = (
                    n,
                    start + (0 if start else 1) + count * dtype.itemsize,
                    kind,
                )
                if not count:
                    continue
                self.latest[(source, run_id, name)] = (int(records["idx"][-1]), float(records["value"][-1]))
                if kind == chunk.KIND_FLOAT and first_bad is None:
                    where = np.flatnonzero(~np.isfinite(records["value"]))
                    if len(where):
                        first_bad = (int(records["idx"][where[0]]), float(records["value"][where[0]]))
            self.cursors[(source, run_id, name)] = cur
            if first_bad is not None:
                bad.append((run_id, (name, first_bad[0], number_text(first_bad[1]))))
        return bad
