"""Archive finished runs to Parquet, and read them back through the same reader API.

    labstats archive RUN...                  # these runs (finished or crashed ones only)
    labstats archive --due --older-than 30   # every run that ended over 30 days ago
    labstats archive --due --memory-above 8G # oldest ended runs until Redis uses under 8 GiB
    labstats unarchive RUN                   # back into Redis (the file is kept)

--due takes a run only when its stored status is finished or crashed, its end is a valid
past unix time, and its heartbeat is a valid time older than --older-than (and than the
minute after which a silent run reads as crashed): a run's record is written by its owner
(and, for runs logged before owners, by any training user of the time), and a live run
forged as finished is still writing its heartbeat.

A run's points go to one Parquet file, <archive dir>/<run id>.parquet (zstd), one row per
point: series, idx, kind (f, i, b or o) and the value in the column of its kind: f (float64),
i (int64), b (bool) or o (binary: the labstats codec's bytes of a text, list, dict, array or
tensor). Rows of a series are in idx order (the order the reader gives). Any Parquet engine
reads them (pandas, DuckDB, Spark); the file's metadata ("labstats.archive", JSON) also holds
the run's record, its series info, its git diff and package list, an index of row groups per
series, and a digest of every point.

The file is written to a temporary name, read back and checked against Redis (row counts and
the digest, computed from what Redis holds and from what the file holds), renamed, and only
then are the run's points, diff and package list deleted from Redis in one transaction
(which fails, changing nothing, if the run was written to meanwhile). What stays in Redis is
a stub: the run's record (with ``archived``, ``archived_at``, ``archive_digest`` and
``archive_bytes`` added) and its series info, so lists, filters and names work as before.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import redis

from labstats import codec, schema, tensorfiles
from labstats.chunks import ChunkEncoder, SeriesState
from labstats.config import LabstatsError
from labstats.reader import number
from labstats.snapshot import Encoded
from labstats.store import ArtifactStore

if TYPE_CHECKING:
    from labstats.reader import Lab, Run, Series

FORMAT = 1
META_KEY = b"labstats.archive"
SUFFIX = ".parquet"
ROW_GROUP_ROWS = 32_768  # a window read decodes at most a group or two of this many points
ROW_GROUP_BYTES = 32 << 20  # ...and never more than this (series of tensors)
READ_CHUNKS = 256  # chunks fetched per MGET while archiving
STUB_FIELDS = ("archived", "archived_at", "archive_digest", "archive_bytes")  # added to the run record
# An archive file is read only when its footer says it is within these (a file in the archive
# folder may come from anywhere: a 1 MB file decoded to 2.9 GB in a viewer worker). The
# archiver writes groups of at most ROW_GROUP_ROWS rows and ROW_GROUP_BYTES (one larger
# value gets a group of its own), so a group over MAX_GROUP_BYTES is one value over 256 MiB.
MAX_GROUP_BYTES = 256 << 20  # uncompressed, per row group: what one read decodes at most
MAX_ROWS = 1_000_000_000  # points per file
_RUN_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # an owner may start with "_": _svc.<id>
_VALUE_COLUMN = {"f": "f", "i": "i", "b": "b", "o": "o"}
_NUMPY = {"f": np.float64, "i": np.int64, "b": np.bool_}


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise LabstatsError("archived runs need pyarrow: pip install 'labstats[pandas]'") from None
    return pa, pq


def path_for(directory: str | Path, run_id: str) -> Path:
    """The archive file of a run. Run ids come from Redis, so they are checked before they
    become part of a path."""
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise LabstatsError(f"run id {run_id!r} cannot name an archive file")
    return Path(directory) / f"{run_id}{SUFFIX}"


# ---- digest --------------------------------------------------------------------------------


class _Digest:
    """sha256 over every point of every series, column by column (so the same points give
    the same digest however they were batched)."""

    def __init__(self) -> None:
        self.series: dict[str, list[Any]] = {}

    def start(self, name: str) -> None:
        """Count a series (also one without points)."""
        self.series.setdefault(name, [0, hashlib.sha256(), hashlib.sha256(), hashlib.sha256()])

    def add(self, name: str, idx: np.ndarray, kinds: np.ndarray, values: dict[str, Any]) -> None:
        self.start(name)
        state = self.series[name]
        state[0] += len(idx)
        state[1].update(np.ascontiguousarray(idx, dtype="<i8").tobytes())
        state[2].update(np.ascontiguousarray(kinds, dtype="S1").tobytes())
        for kind in "fibo":
            picked = values.get(kind)
            if picked is None:
                continue
            if kind == "o":
                for payload in picked:
                    state[3].update(len(payload).to_bytes(8, "little"))
                    state[3].update(payload)
            else:
                dtype = "<f8" if kind == "f" else "<i8" if kind == "i" else "u1"
                state[3].update(np.ascontiguousarray(picked, dtype=dtype).tobytes())

    def counts(self) -> dict[str, int]:
        return {name: state[0] for name, state in self.series.items()}

    def hexdigest(self) -> str:
        total = hashlib.sha256()
        for name in sorted(self.series):
            count, *parts = self.series[name]
            total.update(name.encode("utf-8", "surrogatepass") + b"\0" + count.to_bytes(8, "little"))
            for part in parts:
                total.update(part.digest())
        return total.hexdigest()


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


def _redis_batches(lab: Lab, run_id: str, info: dict[str, Any], blobs: set[int]) -> Iterator[_Batch]:
    """A series' points from Redis in idx order, a few hundred chunks at a time (object
    values as their stored codec bytes, blobs joined; the blobs' numbers added to ``blobs``)."""
    numbers = list(range(info["last_chunk"] + 1))
    groups = [numbers[i : i + READ_CHUNKS] for i in range(0, len(numbers), READ_CHUNKS)]
    if not info.get("monotonic", True):
        groups = [numbers]  # idx went back somewhere: sort the whole series at once
    for group in groups:
        idx_parts, kind_parts, value_parts = [], [], []
        for kind, idx, values in lab._chunks(run_id, info["sid"], group, raw=True, blobs=blobs):
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


def _schema(pa):
    return pa.schema(
        [
            ("series", pa.string()),
            ("idx", pa.int64()),
            ("kind", pa.string()),
            ("f", pa.float64()),
            ("i", pa.int64()),
            ("b", pa.bool_()),
            ("o", pa.large_binary()),
        ]
    )


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
            for pos, value in zip(np.flatnonzero(mask).tolist(), _as_list(batch.values[kind]), strict=True):
                full[pos] = value
            columns[kind] = pa.array(full, typ)
    return pa.table(columns, schema=_schema(pa))


def _as_list(values: Any) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else [bytes(v) for v in values]


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
    pa, pq = _pa()
    if run.archived:
        raise LabstatsError(f"run {run.name!r} is archived already")
    stored = run.meta.get("status", schema.RUNNING)
    if stored == schema.RUNNING and not force:
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
        digest = _Digest()
        index: dict[str, dict[str, Any]] = {}
        blobs: set[int] = set()
        group = 0
        try:
            with pq.ParquetWriter(tmp, _schema(pa), compression="zstd") as writer:
                for name in sorted(infos):
                    info = infos[name]
                    entry = index[name] = {"kinds": [], "groups": []}
                    digest.start(name)
                    for batch in _redis_batches(lab, run.id, info, blobs):
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
                    "schema": schema.SCHEMA_VERSION,
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
            checked = ArchivedRun(tmp)
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
    digest = _Digest()
    for raw_name, raw_info in lab.redis.hgetall(lab.keys.series(run_id)).items():
        name = raw_name.decode("utf-8", "surrogateescape")
        digest.start(name)
        for batch in _redis_batches(lab, run_id, json.loads(raw_info), set()):
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
    archived = ArchivedRun(path_for(directory, run.id))
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
            for idx, kinds, values in archived._groups(name)
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
    if run.meta.get("status") not in (schema.FINISHED, schema.CRASHED):
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


# ---- reading an archive file ----------------------------------------------------------------


class ArchivedRun:
    """One archive file, read the way the reader reads Redis: windows by idx (only the row
    groups that hold them), the latest points, an overview of a long series."""

    def __init__(self, path: str | Path, artifacts: ArtifactStore | None = None) -> None:
        pa, pq = _pa()
        self.path = Path(path)
        self.artifacts = artifacts  # where the run's large tensors are (their files)
        self._lock = threading.Lock()  # one reader of the file at a time (viewer threads)
        try:
            # kind and o as dictionaries: a value repeated in a row group is decoded once
            # (see _expand), however many rows repeat it.
            self.file = pq.ParquetFile(self.path, read_dictionary=["kind", "o"])
            raw = (self.file.metadata.metadata or {}).get(META_KEY)
            self.meta = json.loads(raw) if raw else None
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise LabstatsError(f"{self.path}: not a readable labstats archive ({exc})") from None
        if not isinstance(self.meta, dict) or self.meta.get("format") != FORMAT:
            raise LabstatsError(f"{self.path}: not a labstats archive of format {FORMAT}")
        self._check(pa)

    def _check(self, pa) -> None:
        """Refuse a file whose footer says it holds more than one read may decode, or whose
        labstats metadata does not describe it, before any of its data is read."""
        footer = self.file.metadata
        stored = [(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                  for f in self.file.schema_arrow]  # fmt: skip
        wanted = [(f.name, f.type) for f in _schema(pa)]
        binary = (pa.binary(), pa.large_binary())  # o, as a dictionary, reads as binary
        if len(stored) != len(wanted) or any(
            s != w and not (s[0] == w[0] == "o" and s[1] in binary)
            for s, w in zip(stored, wanted, strict=True)
        ):
            raise LabstatsError(f"{self.path}: malformed archive metadata (not the columns of an archive)")
        if footer.num_rows > MAX_ROWS:
            raise LabstatsError(
                f"{self.path}: not read: it holds {footer.num_rows:,} rows; at most {MAX_ROWS:,}"
            )
        rows = []
        for n in range(footer.num_row_groups):
            group = footer.row_group(n)
            # The group's total and its columns' own sizes: a file may say one and hold the other.
            columns = sum(max(0, group.column(c).total_uncompressed_size) for c in range(group.num_columns))
            size = max(group.total_byte_size, columns)
            if group.num_rows > ROW_GROUP_ROWS:
                raise LabstatsError(
                    f"{self.path}: not read: row group {n} holds {group.num_rows:,} rows; "
                    f"at most {ROW_GROUP_ROWS:,}"
                )
            if size > MAX_GROUP_BYTES:
                raise LabstatsError(
                    f"{self.path}: not read: row group {n} holds {size:,} bytes uncompressed; "
                    f"at most {MAX_GROUP_BYTES:,}"
                )
            rows.append(group.num_rows)
        problem = _meta_problem(self.meta, rows)
        if problem:
            raise LabstatsError(f"{self.path}: malformed archive metadata ({problem})")

    def _text(self, key: str) -> str:
        raw = self.meta.get(key)
        return base64.b64decode(raw).decode("utf-8", "replace") if raw else ""

    def diff(self) -> str:
        return self._text("diff")

    def freeze(self) -> str:
        return self._text("freeze")

    def counts(self) -> dict[str, int]:
        return {name: sum(g[3] for g in entry["groups"]) for name, entry in self.meta["index"].items()}

    def digest(self) -> str:
        """The digest of what the file holds (read in full), to compare with the stored one."""
        digest = _Digest()
        for name in self.meta["index"]:
            digest.start(name)
            for idx, kinds, values in self._groups(name, raw=True):
                digest.add(name, idx, kinds, values)
        return digest.hexdigest()

    def _entry(self, name: str) -> dict[str, Any]:
        entry = self.meta["index"].get(name)
        if entry is None:
            raise LabstatsError(f"archived run {self.meta['run_id']}: no series {name!r}")
        return entry

    def _read(self, name: str, groups: list[int]):
        """Rows of the given row groups: idx, kinds (S1) and the value columns the series uses."""
        entry = self._entry(name)
        columns = ["idx", "kind", *(_VALUE_COLUMN[k] for k in entry["kinds"])]
        if not groups:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype="S1"), {}
        with self._lock:
            table = self.file.read_row_groups(groups, columns=columns, use_threads=False)
        idx = table.column("idx").to_numpy()
        if len(entry["kinds"]) > 1:
            kinds = np.array(_expand(table.column("kind"), self.path), dtype="S1")
        else:
            kinds = np.full(len(idx), entry["kinds"][0].encode() if entry["kinds"] else b"f", dtype="S1")
        values = {}
        for kind in entry["kinds"]:
            column = table.column(_VALUE_COLUMN[kind])
            if kind == "o":
                values[kind] = [v for v in _expand(column, self.path) if v is not None]
            elif len(entry["kinds"]) == 1:
                values[kind] = column.to_numpy()
            else:
                values[kind] = column.drop_null().to_numpy()
        return idx, kinds, values

    def _groups(self, name: str, raw: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray, Any]]:
        """Row group by row group: (idx, kinds, values by kind). ``raw`` keeps the columns;
        otherwise values come as one iterator per kind (codec bytes wrapped as Encoded)."""
        for group in self._entry(name)["groups"]:
            idx, kinds, values = self._read(name, [group[0]])
            if raw:
                yield idx, kinds, values
            else:
                iters = {
                    k.encode(): iter(_as_list(v) if k != "o" else map(Encoded, v)) for k, v in values.items()
                }
                yield idx, kinds, iters

    @staticmethod
    def _empty(entry: dict[str, Any], info: dict[str, Any], start: int) -> Any:
        """No points in a window, typed as the reader types it from Redis: after the start of
        an in-order series, as the values of the chunk that holds ``start`` (the kind of the
        last point before it); else untyped."""
        before = [g for g in entry["groups"] if g[1] < start]
        if not info.get("monotonic", True) or not before:
            return np.empty(0)
        kind = before[-1][4]
        return [] if kind == "o" else np.empty(0, dtype=_NUMPY[kind])

    def series(self, name: str, info: dict[str, Any], start: int | None, stop: int | None) -> Series:
        from labstats.reader import Series

        lo = -(2**63) if start is None else start
        hi = 2**63 - 1 if stop is None else stop
        entry = self._entry(name)
        groups = [g[0] for g in entry["groups"] if g[2] >= lo and g[1] <= hi]
        idx, kinds, values = self._read(name, groups)
        if not groups:
            return Series(name, idx, self._empty(entry, info, lo), info.get("kind", "f"))
        mask = (idx >= lo) & (idx <= hi)
        return Series(name, idx[mask], _values(kinds, values, mask, self.artifacts), info.get("kind", "f"))

    def tail(self, name: str, last: int) -> tuple[np.ndarray, Any]:
        """The last ``last`` points (idx order), reading only the row groups that hold them."""
        groups, total = [], 0
        for group in reversed(self._entry(name)["groups"]):
            groups.insert(0, group[0])
            total += group[3]
            if total >= last:
                break
        idx, kinds, values = self._read(name, groups)
        mask = np.zeros(len(idx), dtype=bool)
        mask[max(0, len(idx) - last) :] = True
        return idx[mask], _values(kinds, values, mask, self.artifacts)


def _expand(column: Any, path: Path) -> list[Any]:
    """A column read as a dictionary, one value per row (None for nulls), each distinct value
    one Python object shared by its rows. Refused when the rows' values add up to more than
    MAX_GROUP_BYTES: a few KB of dictionary can repeat one large value in every row."""
    pa, _ = _pa()
    import pyarrow.compute as pc

    out: list[Any] = []
    for chunk in column.chunks:  # one per row group read: the bound is per group
        if not isinstance(chunk, pa.DictionaryArray):
            chunk = chunk.dictionary_encode()  # (not read as a dictionary: already decoded)
        total = pc.sum(pc.take(pc.binary_length(chunk.dictionary), chunk.indices)).as_py() or 0
        if total > MAX_GROUP_BYTES:
            raise LabstatsError(
                f"{path}: not read: a row group's values decode to over {MAX_GROUP_BYTES:,} bytes"
            )
        values = chunk.dictionary.to_pylist()
        out += [None if i is None else values[i] for i in chunk.indices.to_pylist()]
    return out


def _meta_problem(meta: dict[str, Any], rows: list[int]) -> str | None:
    """What is wrong with an archive's labstats metadata given the rows of its row groups
    (as the footer says), or None: every field the reader uses, of the type it uses."""
    if not isinstance(meta.get("run_id"), str):
        return "run_id"
    if not isinstance(meta.get("series"), dict) or not all(
        isinstance(v, dict) for v in meta["series"].values()
    ):
        return "series"
    if not isinstance(meta.get("rows"), int):
        return "rows"
    index = meta.get("index")
    if not isinstance(index, dict):
        return "index"
    for name, entry in index.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("groups"), list):
            return f"index of {name!r}"
        kinds = entry.get("kinds")
        if not isinstance(kinds, list) or not set(kinds) <= set(_VALUE_COLUMN):
            return f"kinds of {name!r}"
        for group in entry["groups"]:
            ok = (
                isinstance(group, list) and len(group) == 5
                and all(isinstance(x, int) and not isinstance(x, bool) for x in group[:4])
                and group[4] in _VALUE_COLUMN and 0 <= group[0] < len(rows) and group[3] == rows[group[0]]
            )  # fmt: skip
            if not ok:
                return f"row group {group!r} of {name!r} is not one of the file's"
        numbers = [group[0] for group in entry["groups"]]
        if numbers != sorted(set(numbers)):  # each group once, in order: a read decodes each once
            return f"row groups of {name!r} repeat or are out of order"
    return None


def _values(
    kinds: np.ndarray, values: dict[str, Any], mask: np.ndarray, artifacts: ArtifactStore | None
) -> Any:
    """The values of the masked points as the reader gives them: one NumPy array when every
    point is a number (of the common type), else a list (decoded objects; large tensors read
    from their files in ``artifacts``)."""
    present = [k for k in values if np.any(kinds[mask] == k.encode())] if mask.any() else list(values)
    if not present:
        return np.empty(0)
    if all(k != "o" for k in present) and len(values) == 1:
        (column,) = values.values()
        return column[mask]
    if all(k != "o" for k in values):
        out = np.empty(int(mask.sum()), dtype=np.result_type(*(_NUMPY[k] for k in present)))
        picked = kinds[mask]
        for kind in present:
            column = values[kind][np.flatnonzero(mask[kinds == kind.encode()])]
            out[picked == kind.encode()] = column
        return out
    result: list[Any] = [None] * int(mask.sum())
    picked = kinds[mask]
    for kind, column in values.items():
        chosen = np.flatnonzero(mask[kinds == kind.encode()])
        where = np.flatnonzero(picked == kind.encode())
        for pos, i in zip(where.tolist(), chosen.tolist(), strict=True):
            if kind == "o":
                try:
                    result[pos] = codec.decode(tensorfiles.resolve(column[i], artifacts))
                except (ValueError, TypeError) as exc:
                    result[pos] = ValueError(f"unreadable record: {exc}")
            else:
                result[pos] = column[i].item()
    return result
