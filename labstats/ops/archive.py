"""Archive finished runs to Parquet files (labstats.read.archive_file), and put them back.

    labstats archive RUN...                  # these runs (finished or crashed ones only)
    labstats archive --due --older-than 30   # every run that ended over 30 days ago
    labstats archive --due --memory-above 8G # oldest ended runs until Redis uses under 8 GiB
    labstats unarchive RUN                   # back into Redis (the file is kept)

--due takes a run only when its stored status is finished or crashed, its end is a valid
past unix time, and its heartbeat is a valid time older than --older-than (and than the
minute after which a silent run reads as crashed): a run's record is written by its owner
(and, for runs logged before owners, by any training user of the time), and a live run
forged as finished is still writing its heartbeat.

A run's points go to one Parquet file, <archive dir>/<run id>.parquet (its layout is in
:mod:`labstats.read.archive_file`, which also reads it; the reader then reads the run from it).
The file is written to a temporary name, read back and checked against Redis (row counts and
the digest, computed from what Redis holds and from what the file holds), renamed, and only
then are the run's points, diff and package list deleted from Redis in one transaction
(which fails, changing nothing, if the run was written to meanwhile). What stays in Redis is
a stub: the run's record (with ``archived``, ``archived_at``, ``archive_digest`` and
``archive_bytes`` added) and its series info, so lists, filters and names work as before.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis

from labstats.config import LabstatsError
from labstats.format import keys, run_record
from labstats.read.archive_file import (
    FORMAT,
    META_KEY,
    ROW_GROUP_BYTES,
    ROW_GROUP_ROWS,
    ArchiveFile,
    Digest,
    as_list,
    path_for,
    pyarrow_modules,
    table_schema,
)
from labstats.read.points import RedisPoints
from labstats.reader import Lab, Run, number
from labstats.write.chunks import ChunkEncoder, SeriesState

STUB_FIELDS = ("archived", "archived_at", "archive_digest", "archive_bytes")  # added to the run record
READ_CHUNKS = 256  # chunks fetched per MGET while archiving


# ---- reading a run out of Redis --------------------------------------------------------------


@dataclass
class _Batch:
    """Points of one series, in idx order: idx, kind per point, and values by kind."""

    idx: np.ndarray
    kinds: np.ndarray  # S1
    values: dict[str, Any]  # "f"/"i"/"b": arrays of the points of that kind; "o": payloads

    @property
    def nbytes(self) -> int:
        size = self.idx.nbytes * 2
        return size + sum(sum(map(len, v)) if k == "o" else v.nbytes for k, v in self.values.items())


def redis_batches(lab: Lab, run_id: str, info: dict[str, Any], blobs: set[int]) -> Iterator[_Batch]:
    """A series' points from Redis in idx order, a few hundred chunks at a time (object
    values as their stored codec bytes, blobs joined; the blobs' numbers added to ``blobs``)."""
    points = RedisPoints(lab.redis, lab.keys, run_id, lab.artifacts)
    numbers = list(range(info["last_chunk"] + 1))
    groups = [numbers[i : i + READ_CHUNKS] for i in range(0, len(numbers), READ_CHUNKS)]
    if not info.get("monotonic", True):
        groups = [numbers]  # idx went back somewhere: sort the whole series at once
    for group in groups:
        idx_parts, kind_parts, value_parts = [], [], []
        for kind, idx, values in points.chunks(info["sid"], group, raw=True, blobs=blobs):
            idx_parts.append(idx)
            value_parts.append((kind, values))
            kind_parts.append(np.full(len(idx), kind.encode(), dtype="S1"))
        if not idx_parts:
            continue
        idx = np.concatenate(idx_parts)
        kinds = np.concatenate(kind_parts)
        order = np.argsort(idx, kind="stable") if len(idx) > 1 and not (np.diff(idx) >= 0).all() else None
        values: dict[str, Any] = {}
        positions = np.cumsum([0] + [len(p) for p in idx_parts])
        for kind in {k for k, _ in value_parts}:
            chosen = [(positions[n], part) for n, (k, part) in enumerate(value_parts) if k == kind]
            if kind == "o":
                values[kind] = [v for _, part in chosen for v in part]
            else:
                values[kind] = np.concatenate([part for _, part in chosen])
        if order is not None:
            idx, kinds, values = _reorder(idx, kinds, values, order)
        yield _Batch(idx, kinds, values)


def _reorder(idx: np.ndarray, kinds: np.ndarray, values: dict[str, Any], order: np.ndarray):
    """Points put in ``order``; values by kind follow their points."""
    new_kinds = kinds[order]
    new_values: dict[str, Any] = {}
    for kind, column in values.items():
        mine = np.flatnonzero(kinds == kind.encode())  # where this kind's values sit, in old order
        rank = np.empty(len(kinds), dtype=np.int64)
        rank[mine] = np.arange(len(mine))
        picked = rank[order[new_kinds == kind.encode()]]
        new_values[kind] = [column[i] for i in picked] if kind == "o" else column[picked]
    return idx[order], new_kinds, new_values


def _split(batch: _Batch) -> Iterator[_Batch]:
    """A batch cut into row-group sized pieces (by rows and by bytes)."""
    n = len(batch.idx)
    if n <= ROW_GROUP_ROWS and batch.nbytes <= ROW_GROUP_BYTES:
        yield batch
        return
    sizes = np.full(n, 17, dtype=np.int64)
    if "o" in batch.values:
        sizes[batch.kinds == b"o"] += np.array([len(p) for p in batch.values["o"]], dtype=np.int64)
    start = 0
    while start < n:
        cum = np.cumsum(sizes[start : start + ROW_GROUP_ROWS])
        stop = start + max(1, int(np.searchsorted(cum, ROW_GROUP_BYTES, side="right")))
        yield _slice(batch, start, stop)
        start = stop


def _slice(batch: _Batch, start: int, stop: int) -> _Batch:
    values = {}
    for kind, column in batch.values.items():
        before = int(np.count_nonzero(batch.kinds[:start] == kind.encode()))
        inside = int(np.count_nonzero(batch.kinds[start:stop] == kind.encode()))
        values[kind] = column[before : before + inside]
    return _Batch(batch.idx[start:stop], batch.kinds[start:stop], values)


# ---- writing ----------------------------------------------------------------------------------


def _table(pa, name: str, batch: _Batch):
    n = len(batch.idx)
    columns = {"series": pa.array([name] * n, pa.string()), "idx": pa.array(batch.idx, pa.int64()),
               "kind": pa.array(batch.kinds.astype("U1"), pa.string())}  # fmt: skip
    for kind, typ in (("f", pa.float64()), ("i", pa.int64()), ("b", pa.bool_()), ("o", pa.large_binary())):
        mask = batch.kinds == kind.encode()
        if kind not in batch.values or not mask.any():
            columns[kind] = pa.nulls(n, typ)
        elif mask.all() and kind != "o":
            columns[kind] = pa.array(batch.values[kind], typ)  # the common case: one column, no list
        else:
            full: list[Any] = [None] * n
            for pos, value in zip(np.flatnonzero(mask).tolist(), as_list(batch.values[kind]), strict=True):
                full[pos] = value
            columns[kind] = pa.array(full, typ)
    return pa.table(columns, schema=table_schema(pa))


def _raw_hash(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {
        k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape") for k, v in raw.items()
    }


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


@dataclass
class Archived:
    run: str
    path: Path
    rows: int
    file_bytes: int
    digest: str
    redis_bytes_freed: int | None = None


def archive(lab: Lab, run: Run, directory: str | Path, *, force: bool = False) -> Archived:
    """Write ``run`` to its Parquet file, verify it against Redis, then replace its points in
    Redis with a stub. Refuses a run that is still running (unless ``force``)."""
    pa, pq = pyarrow_modules()
    if run.archived:
        raise LabstatsError(f"run {run.name!r} is archived already")
    stored = run.meta.get("status", run_record.RUNNING)
    if stored == run_record.RUNNING and not force:
        raise LabstatsError(
            f"run {run.name!r} is {run.status} by its heartbeat but never said it ended; "
            "archive it once it is over (--force if you know its process is gone)"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = path_for(directory, run.id)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    r, k = lab.redis, lab.keys
    watched = [k.series(run.id), k.seq(run.id), k.run(run.id)]
    with r.pipeline(transaction=True) as pipe:
        pipe.watch(*watched)  # any write to the run from here on makes the final EXEC fail
        series_raw = pipe.hgetall(k.series(run.id))
        infos = {name.decode("utf-8", "surrogateescape"): json.loads(v) for name, v in series_raw.items()}
        digest = Digest()
        index: dict[str, dict[str, Any]] = {}
        blobs: set[int] = set()
        group = 0
        try:
            with pq.ParquetWriter(tmp, table_schema(pa), compression="zstd") as writer:
                for name in sorted(infos):
                    info = infos[name]
                    entry = index[name] = {"kinds": [], "groups": []}
                    digest.start(name)
                    for batch in redis_batches(lab, run.id, info, blobs):
                        digest.add(name, batch.idx, batch.kinds, batch.values)
                        for piece in _split(batch):
                            writer.write_table(_table(pa, name, piece), row_group_size=len(piece.idx))
                            entry["groups"].append(  # number, lowest and highest idx, rows, last kind
                                [group, int(piece.idx.min()), int(piece.idx.max()), len(piece.idx),
                                 piece.kinds[-1].decode()]
                            )  # fmt: skip
                            group += 1
                        entry["kinds"] = sorted(set(entry["kinds"]) | set(batch.values))
                    found = digest.counts()[name]
                    if found != info["count"]:
                        raise LabstatsError(
                            f"run {run.name!r}: series {name!r} has {found} "
                            f"points in Redis but its info says {info['count']}; not archived"
                        )
                meta = {
                    "format": FORMAT,
                    "schema": keys.SCHEMA_VERSION,
                    "run_id": run.id,
                    "run": _raw_hash(pipe.hgetall(k.run(run.id))),
                    "series": {
                        n: json.loads(series_raw[n.encode("utf-8", "surrogateescape")]) for n in infos
                    },
                    "index": index,
                    "diff": _b64(pipe.get(k.diff(run.id))),
                    "freeze": _b64(pipe.get(k.freeze(run.id))),
                    "seq": (pipe.get(k.seq(run.id)) or b"0").decode(),
                    "rows": sum(digest.counts().values()),
                    "digest": digest.hexdigest(),
                }
                writer.add_key_value_metadata({META_KEY: json.dumps(meta)})
            os.chmod(tmp, 0o644)
            checked = ArchiveFile(tmp)
            if checked.digest() != meta["digest"] or checked.counts() != digest.counts():
                raise LabstatsError(f"run {run.name!r}: the archive file read back differs; not archived")
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        doomed = _point_keys(lab, run.id, infos, blobs)
        before = _memory(r, doomed)
        pipe.multi()
        pipe.hset(
            k.run(run.id),
            mapping={
                "archived": final.name,
                "archived_at": repr(time.time()),
                "archive_digest": meta["digest"],
                "archive_bytes": final.stat().st_size,
            },
        )
        for i in range(0, len(doomed), 1000):
            pipe.delete(*doomed[i : i + 1000])
        try:
            pipe.execute()
        except redis.WatchError:
            raise LabstatsError(
                f"run {run.name!r} was written to while it was archived; its keys are kept "
                f"(the file {final} is complete but not used: archive it again)"
            ) from None
        except redis.ResponseError as exc:  # NOPERM: a user that may not delete (a training account)
            raise LabstatsError(
                f"Redis refused to replace run {run.name!r}'s points with the stub ({exc}); nothing "
                "changed in Redis. Archive as a user that may (the archiver user on a training box)"
            ) from None
    return Archived(run.name, final, meta["rows"], final.stat().st_size, meta["digest"], before)


def points_digest(lab: Lab, run_id: str) -> str:
    """The archive digest of a run's points as they are in Redis (what ``archive_digest``
    of an archived run must equal)."""
    digest = Digest()
    for raw_name, raw_info in lab.redis.hgetall(lab.keys.series(run_id)).items():
        name = raw_name.decode("utf-8", "surrogateescape")
        digest.start(name)
        for batch in redis_batches(lab, run_id, json.loads(raw_info), set()):
            digest.add(name, batch.idx, batch.kinds, batch.values)
    return digest.hexdigest()


def _point_keys(lab: Lab, run_id: str, infos: dict[str, dict], blobs: set[int]) -> list[str]:
    k = lab.keys
    keys = [k.diff(run_id), k.freeze(run_id)]
    for info in infos.values():
        sid = info["sid"]
        keys += [k.chunk(run_id, sid, n) for n in range(info["last_chunk"] + 1)]
        keys += [k.chunk_lo(run_id, sid), k.chunk_hi(run_id, sid), k.chunk_summary(run_id, sid)]
    keys += [k.blob(run_id, n) for n in sorted(blobs)]
    return keys


def _memory(client: redis.Redis, keys: list[str]) -> int | None:
    """Bytes the keys take in Redis (MEMORY USAGE), or None when this user may not ask."""
    try:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
        return sum(n or 0 for n in pipe.execute())
    except redis.ResponseError:
        return None


def unarchive(lab: Lab, run: Run, directory: str | Path) -> int:
    """Put an archived run's points back into Redis (chunks, indexes, blobs, diff, package
    list) and drop the stub's archive fields. The file is kept. Returns the points restored."""
    if not run.archived:
        raise LabstatsError(f"run {run.name!r} is not archived")
    archived = ArchiveFile(path_for(directory, run.id))
    meta = archived.meta
    if meta["run_id"] != run.id:
        raise LabstatsError(f"{archived.path} holds run {meta['run_id']}, not {run.id}")
    client, keys = lab.redis, lab.keys
    # Leftovers of an interrupted unarchive would be appended to: start from none.
    leftovers = [*client.scan_iter(f"{keys.run(run.id)}:s:*", count=1000),
                 *client.scan_iter(f"{keys.run(run.id)}:b:*", count=1000)]  # fmt: skip
    for i in range(0, len(leftovers), 1000):
        client.delete(*leftovers[i : i + 1000])
    encoder = ChunkEncoder(keys, run.id)
    for name, info in meta["series"].items():
        encoder.series[name] = SeriesState(int(info["sid"]), name)
        encoder.series[name].hint = info.get("hint")
    restored = 0
    for name, info in meta["series"].items():
        batches = (
            [(i, name, next(values[kind])) for i, kind in zip(idx.tolist(), kinds, strict=True)]
            for idx, kinds, values in archived.groups(name)
        )
        if not info.get("monotonic", True):
            batches = [_latest_last([p for batch in batches for p in batch], info.get("last_idx"))]
        for points in batches:
            restored += len(points)
            pipe = client.pipeline(transaction=False)
            for command in encoder.encode(points):
                pipe.execute_command(*command)
            pipe.execute()
    if restored != meta["rows"]:
        raise LabstatsError(f"{archived.path}: {restored} points read, the file says {meta['rows']}")
    # Last, in one step: the run reads from Redis again.
    pipe = client.pipeline(transaction=True)
    for key, target in (("diff", keys.diff(run.id)), ("freeze", keys.freeze(run.id))):
        if meta.get(key) is not None:
            pipe.set(target, base64.b64decode(meta[key]))
    pipe.hdel(keys.run(run.id), *STUB_FIELDS)
    pipe.execute()
    return restored


def _latest_last(points: list[tuple[int, str, Any]], last_idx: int | None) -> list[tuple[int, str, Any]]:
    """Points of a series whose idx went back, in idx order, with the one logged last moved
    to the end (it is the last at its idx): it is the series' latest point again, and reads
    stay in the same order."""
    at = [n for n, p in enumerate(points) if p[0] == last_idx]
    return points if not at else points[: at[-1]] + points[at[-1] + 1 :] + [points[at[-1]]]


def due(lab: Lab, older_than_days: float | None, memory_above: int | None) -> list[Run]:
    """Runs to archive: ended (see :func:`is_over`) and not archived; with ``older_than_days``,
    those that ended and were last written to longer ago; with ``memory_above``, the oldest
    first, as many as it takes (by their points' size) to bring Redis under that many bytes."""
    now = time.time()
    age = None if older_than_days is None else older_than_days * 86400
    ended = [run for run in lab.runs(limit=None) if not run.archived and is_over(run, now)]
    ended.sort(key=lambda run: number(run.meta.get("ended")) or 0.0)
    chosen: list[Run] = []
    if age is not None:
        chosen = [run for run in ended if is_over(run, now, age)]
    if memory_above is not None:
        used = int(lab.redis.info("memory")["used_memory"])
        for run in ended:
            if used <= memory_above:
                break
            if run not in chosen:
                chosen.append(run)
            used -= _run_bytes(lab, run)
    return chosen


def is_over(run: Run, now: float, age: float = 0.0) -> bool:
    """Whether the nightly job may take ``run``: its stored status is finished or crashed, its
    ``ended`` is a finite unix time in the past, and its heartbeat (every batch the writer
    sends renews it) is a valid time at least ``age`` seconds old, and old enough that the
    run no longer reads as running. A record is its owner's to write (and a run from before
    owners anyone's of the time): a live run forged as ``status finished, ended not-a-number``
    keeps its fresh heartbeat, so it is not taken (an unparsable end counted as 0 before, and
    the run lost its later points)."""
    if run.meta.get("status") not in (run_record.FINISHED, run_record.CRASHED):
        return False
    ended = number(run.meta.get("ended"))
    if ended is None or ended > now or now - ended < age:
        return False
    heartbeat = number(run.meta.get("heartbeat", run.meta.get("started")))
    if heartbeat is None or heartbeat > now:
        return False
    return now - heartbeat >= max(age, run.lab.stale_after)


def _run_bytes(lab: Lab, run: Run) -> int:
    infos = {n: i for n, i in run.series_info().items() if "error" not in i}
    return _memory(lab.redis, _point_keys(lab, run.id, infos, set())) or 0
