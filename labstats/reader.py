"""Read runs back: the one place that knows how runs are laid out in Redis for reading.

    lab = labstats.connect()                      # URL from env/config, see labstats.config
    for run in lab.runs(status="running", params={"lr": (1e-4, 1e-2)}):
        print(run.name, run.status)
    run = lab.run("exp42")
    run.display_name, run.annotations.tags        # as people changed them after (labstats.curation)
    lab.runs(trashed=True)                        # the runs in the trash (hidden from every other list)
    s = run.series("loss", start=1000, stop=2000) # idx window, both ends included
    s.idx, s.values                               # NumPy arrays (a list for object series)
    run.frame(["loss", "acc"])                    # pandas, one column per series
    lab.compare(["exp42", "exp43"], "loss")       # pandas, one column per run

Only read commands are used, so the viewer's read-only Redis user is enough. Annotations are
read each time a list is asked for (and a run's again after a second): a change made in the
viewer or the CLI shows here within a second.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import redis

from labstats import config as cfg
from labstats.config import LabstatsError
from labstats.curation import Annotations, read_annotations
from labstats.format import chunk, media_files, media_record, run_record, series_info
from labstats.format.keys import DEFAULT_PREFIX, Keys, run_owner
from labstats.format.run_record import number
from labstats.read import regenerate
from labstats.read.archive_file import ArchiveFile, path_for
from labstats.read.points import OVERVIEW_MIN, Points, RedisPoints, Series
from labstats.read.run_index import RunIndex
from labstats.store import ArtifactStore, default_artifact_dir

__all__ = [
    "UNREACHABLE",
    "Lab",
    "Labs",
    "LabstatsError",
    "Run",
    "Series",
    "connect",
    "each_readable",
    "number",
]

ARCHIVES_OPEN = 32  # archive files a Lab keeps open
STALE_AFTER = 60.0  # seconds without a heartbeat before a "running" run reads as crashed
# A live run whose loop has not called log()/update() for max(STALL_AFTER, STALL_FACTOR x its
# usual interval between calls) reads as stalled.
STALL_AFTER = 120.0
STALL_FACTOR = 5.0
ANNOTATIONS_FRESH = 1.0  # seconds a run's annotations are kept before they are read again


@dataclass
class Run:
    lab: Lab
    id: str
    meta: dict[str, Any] = field(repr=False)
    # Read with the run by the lists (one round trip for all); else when first asked for.
    loaded_annotations: Annotations | None = field(default=None, repr=False, compare=False)
    _annotations_at: float = field(default_factory=time.monotonic, repr=False, compare=False)

    @property
    def name(self) -> str:
        """The name it was logged with (``labstats.run(name)`` finds it by this name)."""
        return self.meta.get("name", self.id)

    @property
    def annotations(self) -> Annotations:
        """What people said about the run after the fact: display name, project, note, tags,
        star, protect, trash (labstats.curation). Read again when over a second old."""
        if self.loaded_annotations is None or time.monotonic() - self._annotations_at > ANNOTATIONS_FRESH:
            self.loaded_annotations = self.lab.annotations([self.id])[self.id]
            self._annotations_at = time.monotonic()
        return self.loaded_annotations

    @property
    def display_name(self) -> str:
        """The name people gave it (``labstats rename``), else the name it was logged with."""
        return self.annotations.name or self.name

    @property
    def project(self) -> str:
        return self.annotations.project

    @property
    def note(self) -> str:
        """Its note (markdown text, as written)."""
        return self.annotations.note

    @property
    def trashed(self) -> bool:
        """Whether it is in the trash (hidden from lists until restored)."""
        return self.annotations.trashed is not None

    @property
    def owner(self) -> str | None:
        """The training user that logged the run (its Redis user), or None for an unowned
        run. Taken from the id, which only the owner's Redis user may write keys under."""
        return run_owner(self.id)

    @property
    def status(self) -> str:
        """running, stalled, finished or crashed. A running run whose heartbeat stopped reads
        as crashed; one whose process lives but whose loop stopped calling, as stalled."""
        status = self.meta.get("status", run_record.RUNNING)
        if status not in run_record.STATUSES:
            return run_record.CRASHED  # an unknown status cannot be trusted to be running
        if status == run_record.RUNNING and self.heartbeat_age > self.lab.stale_after:
            return run_record.CRASHED
        if status == run_record.RUNNING and self.stalled_for is not None:
            return run_record.STALLED
        return status

    @property
    def stalled_for(self) -> float | None:
        """Seconds since the loop's last log()/update() call when that is over its limit
        (max(stall_after, 5 x its usual interval)); None while it calls as usual."""
        last = number(self.meta.get("last_call"))
        if last is None:
            return None
        interval = number(self.meta.get("call_interval")) or 0.0
        quiet = time.time() - last
        return quiet if quiet > max(self.lab.stall_after, STALL_FACTOR * interval) else None

    @property
    def reason(self) -> str:
        """Why the run ended or is stuck, in words: the recorded reason, or what the reader saw."""
        recorded = self.meta.get("reason")
        if recorded:
            return str(recorded)
        status = self.status
        if status == run_record.CRASHED and self.meta.get("status") == run_record.RUNNING:
            last = number(self.meta.get("heartbeat")) or number(self.meta.get("started")) or 0.0
            return f"no heartbeat since {_clock(last)}: its process ended without closing the run"
        if status == run_record.STALLED:
            usual = number(self.meta.get("call_interval")) or 0.0
            quiet = self.stalled_for or 0.0
            return f"no log() or update() for {quiet:.0f} s (usually every {usual:.3g} s); its process lives"
        return ""

    @property
    def heartbeat_age(self) -> float:
        last = number(self.meta.get("heartbeat")) or number(self.meta.get("started")) or 0.0
        return time.time() - last

    @property
    def config(self) -> dict[str, Any]:
        """The run's config; {} when it is missing or not a mapping (see ``malformed``)."""
        config = self.meta.get("config")
        return config if isinstance(config, dict) else {}

    @property
    def tags(self) -> list[str]:
        """The tags it was logged with; ``annotations.tags`` has them as people changed them
        since (``labstats tag``), and the lists' ``tag=`` filter goes by those."""
        tags = self.meta.get("tags")
        return [str(t) for t in tags] if isinstance(tags, list) else []

    @property
    def malformed(self) -> list[str]:
        """Fields of the run's record that could not be read as what they should be (a
        record written by hand or by a broken client); the rest of the run still reads."""
        bad = list(self.meta.get("_malformed", []))
        for key in ("started", "heartbeat", "ended"):
            if key in self.meta and number(self.meta[key]) is None:
                bad.append(key)
        for key, kind in (("config", dict), ("tags", list), ("argv", list)):
            if key in self.meta and not isinstance(self.meta[key], kind):
                bad.append(key)
        if self.meta.get("status", run_record.RUNNING) not in run_record.STATUSES:
            bad.append("status")
        return bad

    @property
    def archived(self) -> bool:
        """Whether the run's points live in its archive file (see labstats.ops.archive)."""
        return bool(self.meta.get("archived"))

    @cached_property
    def points(self) -> Points:
        """Where the run's points are read: Redis, or its archive file once archived."""
        return self.lab.points(self)

    def diff(self) -> str:
        """The uncommitted git diff the run started with ('' if clean or not in git)."""
        return self.points.diff()

    def freeze(self) -> str:
        """The packages installed when the run started (pip freeze or conda list), or ''."""
        return self.points.freeze()

    # ---- media ---------------------------------------------------------------------------------

    def media_names(self) -> dict[str, str]:
        """Media names of the run → their kind (image, fits, points, file)."""
        raw = self.lab.redis.hgetall(self.lab.keys.media(self.id))
        found = {
            name.decode("utf-8", "surrogatepass"): media_record.decode_kind(info)
            for name, info in raw.items()
        }
        return {name: kind for name, kind in sorted(found.items()) if kind is not None}

    def media(self, name: str) -> list[dict[str, Any]]:
        """The records of media ``name``, by step then item: step, item, kind, digest, type
        (media type), shape, bytes, caption, time (and file, for files)."""
        raw = self.lab.redis.hvals(self._media_key(name))
        records = [r for r in map(media_record.decode, raw) if r is not None]
        return sorted(records, key=lambda r: (r["step"], r["item"]))

    def media_steps(self, name: str) -> list[int]:
        """The steps at which media ``name`` was logged."""
        steps = {media_record.step_of(f) for f in self.lab.redis.hkeys(self._media_key(name))}
        return sorted(step for step in steps if step is not None)

    def _media_key(self, name: str) -> str:
        return self.lab.keys.media_records(self.id, media_record.media_id(name))

    def media_at(self, name: str, step: int) -> list[dict[str, Any]]:
        """The records of media ``name`` at ``step`` (one per item), without reading the others."""
        key = self._media_key(name)
        records = []
        cursor = 0
        while True:
            cursor, found = self.lab.redis.hscan(key, cursor, match=f"{int(step)}:*", count=1000)
            records += [
                r for r in map(media_record.decode, found.values()) if r is not None and r["step"] == step
            ]
            if not cursor:
                break
        return sorted(records, key=lambda r: r["item"])

    def thumbnail(self, name: str, step: int, item: int = 0, max_bytes: int | None = None) -> bytes | None:
        """The record's thumbnail (WebP, ≤ 256 px), from Redis; None when there is none, or
        when it is over ``max_bytes`` (its owner writes it: its size is measured, not read)."""
        key = self.lab.keys.media_thumbs(self.id, media_record.media_id(name))
        field = media_record.field_name(step, item)
        if max_bytes is not None and self.lab.redis.hstrlen(key, field) > max_bytes:
            return None
        return self.lab.redis.hget(key, field)

    def pictures(self, name: str, steps: Iterable[int] | None = None, *, original: bool = False) -> list:
        """(step, PIL image) of media ``name`` (item 0) at ``steps`` (default: all): the
        thumbnails from Redis, or with ``original=True`` the full pictures (images as logged,
        FITS as their ZScale/Asinh preview, from the artifact store). Steps without one are left out."""
        from PIL import Image  # optional (the media extra): the reader works without it

        kind = self.media_names().get(name)
        out = []
        for step in self.media_steps(name) if steps is None else steps:
            if original and kind in ("image", "fits"):
                array = self.artifact(name, step, as_="array")
                picture = media_files.fits_preview(array) if kind == "fits" else Image.fromarray(array)
            else:
                picture = media_files.open_picture(self.thumbnail(name, step))
                if picture is None:
                    continue
            out.append((step, picture.convert("RGB")))
        return out

    def artifact(self, name: str, step: int | None = None, item: int = 0, *, as_: str = "bytes") -> Any:
        """The original file of media ``name`` at ``step`` (default: the last one): ``as_``
        "bytes", "path" (in the artifact store), or "array" (images as HWC uint8, FITS data,
        points as N×3; files as bytes)."""
        records = self.media(name)
        if step is not None:
            records = [r for r in records if r["step"] == step and r.get("item", 0) == item]
        if not records:
            raise LabstatsError(
                f"run {self.name!r} has no media {name!r}" + (f" at step {step}" if step is not None else "")
            )
        record = records[-1]
        path = self.lab.artifacts.path(record["digest"])
        if not path.is_file():
            raise LabstatsError(
                f"the file of {name!r} at step {record['step']} ({record['digest'][:12]}) is not in "
                f"{self.lab.artifacts.root} yet (a web box gets it with the next push from its training box)"
            )
        if as_ == "path":
            return path
        try:
            data = self.lab.artifacts.read(record["digest"])  # checked against its SHA-256
        except ValueError:
            raise LabstatsError(
                f"the stored copy of {name!r} at step {record['step']} ({path}) is damaged"
            ) from None
        if as_ == "bytes":
            return data
        if as_ != "array":
            raise ValueError("as_ must be 'bytes', 'path' or 'array'")
        return media_files.decode_array(record, data)

    def regenerate_plan(self) -> regenerate.Plan:
        """What regenerating this run takes, from its record (see labstats.read.regenerate)."""
        digest = regenerate.bundle_digest(self.meta)
        path = self.lab.artifacts.path(digest) if digest else None
        here = path if path is not None and path.is_file() else None
        return regenerate.plan(self.id, self.meta, bundle=here)

    def regenerate_command(self) -> str:
        """A shell recipe that regenerates this run from an empty directory (or the one
        command `labstats regenerate RUN DIR --run`). Every recorded field is shell-quoted:
        a record is data, never code to paste."""
        return self.regenerate_plan().shell()

    def series_info(self) -> dict[str, dict[str, Any]]:
        """Every series' info by name. An entry that cannot be read has kind "?" and an
        ``error``; the others read as usual."""
        raw = self.lab.redis.hgetall(self.lab.keys.series(self.id))
        return {k.decode("utf-8", "replace"): series_info.decode(v) for k, v in raw.items()}

    def series_meta(self, name: str) -> dict[str, Any]:
        """One series' info (one HGET, however many series the run has)."""
        raw = self.lab.redis.hget(self.lab.keys.series(self.id), name)
        if raw is None:
            raise LabstatsError(f"run {self.name!r} has no series {name!r}")
        info = series_info.decode(raw)
        if "error" in info:
            raise LabstatsError(f"run {self.name!r}: series {name!r} is malformed ({info['error']})")
        return info

    def series_names(self, include_internal: bool = False) -> list[str]:
        return sorted(n for n in self.series_info() if include_internal or not n.startswith("_"))

    def series(self, name: str, start: int | None = None, stop: int | None = None) -> Series:
        """Points with start <= idx <= stop (either end open when None), sorted by idx."""
        return self.points.window(name, self.series_meta(name), start, stop)

    def overview(self, name: str) -> Series:
        """Few points that keep a long numeric series' shape: the first, lowest, highest and
        last point of every chunk (about 4 per 1,023 points), read from the chunk summaries
        instead of the points themselves. Short (≤ 4,096) or non-numeric series come whole."""
        info = self.series_meta(name)
        chunks = info["last_chunk"] + 1
        if info.get("kind") not in chunk.NUMERIC_KINDS or info["count"] <= max(4 * chunks, OVERVIEW_MIN):
            return self.series(name)
        return self.points.overview(name, info)

    def steps(self, name: str, last: int = 200) -> np.ndarray:
        """The idx of the series' last ``last`` points, in logging order, without reading
        their values (cheap even for a series of large tensors). Of an archived run: the
        last in idx order (the same unless idx went back, as in a resumed run)."""
        return self.points.steps(name, self.series_meta(name), last)

    def recent(self, name: str, last: int) -> list[tuple[int, Any]]:
        """The series' newest ``last`` points as (idx, value), oldest first, reading only the
        chunks that hold them (a long series of tensors costs its last few values)."""
        steps = self.steps(name, last)
        if not len(steps):
            return []
        shown = self.series(name, int(steps.min()), None)
        return list(zip(shown.idx.tolist(), list(shown.values), strict=True))[-last:]

    def latest(self, name: str) -> tuple[int, Any] | None:
        """The last point written to a series, as (idx, value)."""
        return self.points.latest(name, self.series_meta(name))

    def summary(self, name: str) -> dict[str, float | None] | None:
        """Last, lowest and highest value of a numeric series (None if it is not one), read
        from its overview: the chunk summaries keep every extreme, so this reads about 4
        points per 1,023 however long the series."""
        info = self.series_meta(name)
        if info.get("kind") not in chunk.NUMERIC_KINDS:
            return None
        values = np.asarray(self.overview(name).values, dtype=np.float64)
        finite = values[np.isfinite(values)]
        last = self.latest(name)
        return {
            "last": number(last[1]) if last else None,
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
        }

    def frame(self, names: Iterable[str] | None = None, start: int | None = None, stop: int | None = None):
        """A pandas DataFrame indexed by idx with one column per series (outer join)."""
        import pandas as pd

        names = list(names) if names is not None else self.series_names()
        columns = {}
        for name in names:
            s = self.series(name, start, stop)
            columns[name] = s.to_pandas().groupby(level=0).last()
        frame = pd.DataFrame(columns)
        frame.index.name = "idx"
        return frame

    def export(self, path: str | Path, fmt: str | None = None) -> Path:
        """Write every scalar series to CSV or Parquet (chosen by ``fmt`` or the suffix)."""
        path = Path(path)
        fmt = (fmt or path.suffix.lstrip(".") or "csv").lower()
        numeric = [
            n
            for n, i in self.series_info().items()
            if i["kind"] in chunk.NUMERIC_KINDS and not n.startswith("_")
        ]
        frame = self.frame(sorted(numeric))
        if fmt == "csv":
            frame.to_csv(path)
        elif fmt == "parquet":
            frame.to_parquet(path)
        else:
            raise LabstatsError(f"unknown export format {fmt!r} (csv or parquet)")
        return path


class Lab:
    """A connection to one labstats store."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = DEFAULT_PREFIX,
        source: str = "",
        stale_after: float = STALE_AFTER,
        archive_dir: str | Path | None = None,
        artifact_dir: str | Path | None = None,
        stall_after: float = STALL_AFTER,
    ) -> None:
        self.redis = client
        self.artifacts = ArtifactStore(artifact_dir or default_artifact_dir())
        self.keys = Keys(prefix)
        self.index = RunIndex(client, self.keys)
        self.source = source
        self.stale_after = stale_after
        self.stall_after = stall_after
        self.archive_dir = Path(archive_dir) if archive_dir else cfg.default_archive_dir()
        self._archives: dict[str, tuple[int, ArchiveFile]] = {}  # run id -> (file mtime, its file)
        self._archives_lock = threading.Lock()

    def link_state(self) -> str | None:
        """For a replica: "up" when its master (the training box) is connected, else "down".
        None for a master, or when this user may not ask (ROLE)."""
        try:
            role = self.redis.execute_command("ROLE")
        except redis.ResponseError:
            return None
        if not role or role[0] not in (b"slave", "slave"):
            return None
        state = role[3].decode() if isinstance(role[3], bytes) else str(role[3])
        return "up" if state == "connected" else "down"

    def series_infos(self, runs: list[Run]) -> dict[str, dict[str, dict[str, Any]]]:
        """Run.series_info of many runs of this store in one round trip (run id → info)."""
        pipe = self.redis.pipeline(transaction=False)
        for run in runs:
            pipe.hgetall(self.keys.series(run.id))
        return {
            run.id: {k.decode("utf-8", "replace"): series_info.decode(v) for k, v in raw.items()}
            for run, raw in zip(runs, pipe.execute(), strict=True)
        }

    def summaries(self, runs: list[Run], name: str) -> dict[str, dict[str, float | None] | None]:
        """Run.summary of one series for many runs of this store, in two round trips (the
        runs table): the last, lowest and highest value from the chunk summaries."""
        pipe = self.redis.pipeline(transaction=False)
        for run in runs:
            pipe.hget(self.keys.series(run.id), name)
        out: dict[str, dict[str, float | None] | None] = {}
        numeric = []
        for run, raw in zip(runs, pipe.execute(), strict=True):
            info = series_info.decode(raw) if raw is not None else {}
            out[run.id] = None
            if info.get("kind") in chunk.NUMERIC_KINDS and "error" not in info:
                numeric.append((run, info))
        pipe = self.redis.pipeline(transaction=False)
        for run, info in numeric:
            pipe.hgetall(self.keys.chunk_summary(run.id, info["sid"]))
        for (run, info), raw in zip(numeric, pipe.execute(), strict=True):
            if not raw or len(raw) < info["last_chunk"] + 1:
                # A chunk without summary (all NaN, a kind change), or none: an archived run's
                # points, summaries included, are in its file.
                with contextlib.suppress(LabstatsError, ValueError, TypeError, KeyError):
                    out[run.id] = run.summary(name)
                continue
            records = chunk.summaries([raw[k] for k in sorted(raw, key=int)])
            out[run.id] = {"last": float(records["v3"][-1]), "min": float(records["v1"].min()),
                           "max": float(records["v2"].max())}  # fmt: skip
        return out

    def points(self, run: Run) -> Points:
        """Where a run's points are read: its archive file once it is archived, else Redis."""
        if run.archived:
            return self.archive_file(run.id)
        return RedisPoints(self.redis, self.keys, run.id, self.artifacts)

    def archive_file(self, run_id: str) -> ArchiveFile:
        """The archive file of an archived run, opened once (and again when it changes)."""
        path = path_for(self.archive_dir, run_id)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            raise LabstatsError(
                f"run {run_id} is archived, but its file {path} is not here (a web box gets it "
                "with the next push from its training box, within minutes)"
            ) from None
        with self._archives_lock:
            cached = self._archives.get(run_id)
            if cached is None or cached[0] != mtime:
                if len(self._archives) >= ARCHIVES_OPEN:
                    self._archives.pop(next(iter(self._archives)))
                cached = self._archives[run_id] = (mtime, ArchiveFile(path, self.artifacts))
            return cached[1]

    def annotations(self, run_ids: Iterable[str]) -> dict[str, Annotations]:
        """The annotations of these runs, in one round trip (see Run.annotations)."""
        return read_annotations(self.redis, self.keys.prefix, run_ids)

    # ---- runs --------------------------------------------------------------------------------

    def runs(
        self,
        name: str | None = None,
        tag: str | None = None,
        status: str | None = None,
        params: dict[str, Any] | None = None,
        limit: int | None = 100,
        offset: int = 0,
        *,
        project: str | None = None,
        starred: bool | None = None,
        trashed: bool = False,
    ) -> list[Run]:
        """Runs, newest first; those in the trash only with ``trashed=True`` (then only them).
        ``name`` is a substring of the logged or the display name; ``tag`` one of its tags
        (logged, or given after); ``project`` its project exactly; ``params`` maps a config
        key to a value (equality) or a (low, high) pair (inclusive range, either side None).
        Runs of every owner and unowned ones alike (see :meth:`owners`)."""
        if status is not None and status not in run_record.SHOWN_STATUSES:
            raise LabstatsError(f"unknown status {status!r} (one of {', '.join(run_record.SHOWN_STATUSES)})")
        filtered = any(x is not None for x in (name, tag, status, params, project, starred))
        if not filtered:
            return self._newest(offset, limit, trashed)
        # Names and tags can be given after the fact (annotations): the indexes of names and
        # logged tags do not hold those, so every run (of the status asked) is a candidate.
        candidates = self.index.candidates(None, None, status) if status else self.index.newest(0, None)
        runs = [
            r
            for r in self._load(candidates)
            if r.trashed == trashed
            and _matches(r, name, tag, status, params)
            and (project is None or r.project == project)
            and (starred is None or r.annotations.starred == starred)
        ]
        runs.sort(key=lambda r: number(r.meta.get("started")) or 0.0, reverse=True)
        return runs[offset : None if limit is None else offset + limit]

    def _newest(self, offset: int, limit: int | None, trashed: bool) -> list[Run]:
        """The page [offset, offset + limit) of the newest runs in (or out of) the trash:
        windows of the index, growing until the page is full or the index is read whole."""
        want = None if limit is None else offset + limit
        if want is not None and want <= 0:
            return []
        window = want
        while True:
            ids = self.index.newest(0, window)
            in_trash = self._in_trash(ids)
            kept = [run_id for run_id in ids if in_trash[run_id] == trashed]
            if window is None or len(kept) >= want or len(ids) < window:
                return self._load(kept[offset : None if limit is None else offset + limit])
            window = 2 * window + want - len(kept)

    def _in_trash(self, ids: list[str]) -> dict[str, bool]:
        """Whether each run is in the trash, in one round trip (its ``trashed`` time only)."""
        pipe = self.redis.pipeline(transaction=False)
        for run_id in ids:
            pipe.hget(self.keys.annotations(run_id), "trashed")
        found = pipe.execute(raise_on_error=False)
        return {
            run_id: isinstance(raw, bytes) and number(raw) is not None
            for run_id, raw in zip(ids, found, strict=True)
        }

    def owners(self) -> list[str]:
        """The owners whose runs are listed (see RunIndex.owners)."""
        return self.index.owners()

    def run_ids(self) -> list[str]:
        """The id of every run in the indexes (shared and owners'), newest first."""
        return self.index.newest(0, None)

    def _load(self, ids: list[str]) -> list[Run]:
        """The runs of these ids that exist, each with its annotations (two round trips)."""
        pipe = self.redis.pipeline(transaction=False)
        for run_id in ids:
            pipe.hgetall(self.keys.run(run_id))
        found = [(run_id, raw) for run_id, raw in zip(ids, pipe.execute(), strict=True) if raw]
        annotations = self.annotations([run_id for run_id, _ in found])
        return [Run(self, run_id, run_record.decode(raw), annotations[run_id]) for run_id, raw in found]

    def run(self, ref: str) -> Run:
        """A run by id or name (in the trash or not): an id first, since ids cannot be claimed
        by anyone else (a name can: anyone who may log could name a run after another's id, and would take
        over its pages and recipes). A name counts only when the run it names exists and
        carries that name in its own record (one pointing at another's run, or at nothing,
        is passed over)."""
        raw = self.redis.hgetall(self.keys.run(ref))
        if raw:
            return Run(self, ref, run_record.decode(raw))
        named = self.redis.hget(self.keys.names, ref)
        if named is not None:
            run_id = named.decode("utf-8", "replace")
            raw = self.redis.hgetall(self.keys.run(run_id))
            if raw:
                meta = run_record.decode(raw)
                if meta.get("name") == ref:
                    return Run(self, run_id, meta)
        raise LabstatsError(f"no run named {ref!r} (try `labstats ls`)")

    def compare(self, refs: Iterable[str], series: str, start: int | None = None, stop: int | None = None):
        """A pandas DataFrame: one column per run (by name) of one series, indexed by idx."""
        return _compare([self.run(ref) for ref in refs], series, start, stop)


def _clock(ts: float) -> str:
    """A recorded time as local date and time; one no clock can show (a record's 1e300) as
    its number: records are written by training users, and a reason must never fail."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    except (OverflowError, OSError, ValueError):
        return f"{ts:g}"


def _matches(
    run: Run, name: str | None, tag: str | None, status: str | None, params: dict[str, Any] | None
) -> bool:
    """Whether the run's own record matches the filters (index entries only suggest it)."""
    if name is not None and not any(name.lower() in n.lower() for n in (run.name, run.annotations.name)):
        return False
    if tag is not None and tag not in run.annotations.tags:
        return False
    if status is not None and run.status != status:
        return False
    for key, want in (params or {}).items():
        have = run.config.get(key) if isinstance(run.config, dict) else None
        if isinstance(want, tuple) and len(want) == 2:
            low, high = want
            try:
                if have is None or (low is not None and have < low) or (high is not None and have > high):
                    return False
            except TypeError:
                return False
        elif have != want:
            return False
    return True


UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)  # a store that is away


def short(exc: Exception) -> str:
    """The first line of an error, as a source's state shows it."""
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


SORTS = ("started", "name", "status", "heartbeat")  # how a page of runs can be ordered


def _sort_key(sort: str) -> Callable[[tuple[str, Run]], Any]:
    if sort in ("started", "heartbeat"):  # newest first; runs without the time last

        def by_time(pair: tuple[str, Run]) -> tuple[bool, float]:
            value = number(pair[1].meta.get(sort))
            return value is None, -(value or 0.0)

        return by_time
    if sort == "name":
        return lambda pair: str(pair[1].name)
    return lambda pair: pair[1].status


@dataclass
class Page:
    """One page of the runs of several sources: ``runs`` as (source, run) in order, each
    source's ``states`` ({"reachable", "link", "error"}: see :meth:`Labs.state`), and whether
    ``more`` pages follow."""

    runs: list[tuple[str, Run]]
    states: dict[str, dict[str, Any]]
    more: bool


class Labs:
    """Several stores read as one (one per training box, as on the web box), by the CLI,
    notebooks and the viewer alike: ``runs()`` and ``page()`` list the runs of every source
    it can reach, newest first; ``run(ref)`` finds a run in any of them ("source/name" picks
    one). A source that cannot be reached is left out and named in ``unreachable`` (source ->
    why), with a warning the first time when ``warn`` (a person at a prompt); its runs come
    back when it does."""

    def __init__(self, labs: dict[str, Lab], *, warn: bool = True) -> None:
        self.labs = labs
        self.warn = warn
        self.unreachable: dict[str, str] = {}
        self.disconnected: list[str] = []  # replicas whose training box is not connected

    def check(self) -> None:
        """Look at every source now: warn of those that are away, and of replicas whose
        training box is not connected (their runs are as last copied)."""
        states = dict(self._each(lambda lab: lab.link_state()))
        self.disconnected = [name for name, state in states.items() if state == "down"]
        for name in self.disconnected:
            warnings.warn(f"labstats: the training box of source {name} is not connected; its runs are "
                          "as last copied", stacklevel=2)  # fmt: skip

    def __repr__(self) -> str:
        return f"Labs({', '.join(self.labs)})"

    def _each(self, call) -> Iterator[tuple[str, Any]]:
        """call(lab) for every source, leaving out (and noting) those that are away."""
        for name, lab in self.labs.items():
            try:
                result = call(lab)
            except UNREACHABLE as exc:
                self._away(name, exc)
                continue
            self.unreachable.pop(name, None)
            yield name, result

    def _away(self, name: str, exc: Exception) -> None:
        if self.warn and name not in self.unreachable:
            warnings.warn(
                f"labstats: source {name} is unreachable ({exc}); its runs are left out", stacklevel=4
            )
        self.unreachable[name] = str(exc)

    def state(self, name: str) -> dict[str, Any]:
        """Whether a source can be read now, whether its training box is connected to it
        (``link``: "up", "down", or None for a master), and why not (``error``)."""
        try:
            link = self.labs[name].link_state()
        except UNREACHABLE as exc:
            self._away(name, exc)
            return {"reachable": False, "link": None, "error": short(exc)}
        self.unreachable.pop(name, None)
        return {"reachable": True, "link": link, "error": None}

    def page(
        self,
        *,
        name: str | None = None,
        tag: str | None = None,
        status: str | None = None,
        sort: str = "started",
        limit: int = 100,
        page: int = 1,
        trashed: bool = False,
    ) -> Page:
        """Page ``page`` (from 1) of ``limit`` runs (in the trash with ``trashed``) of every
        source that can be read, ordered by ``sort`` (SORTS), and every source's state: one
        source that is away leaves the others listed. Each source reads its own first page x
        limit runs (and one more, to know whether more follow): enough for this page of the
        merged list."""
        if sort not in SORTS:
            raise LabstatsError(f"sort must be {', '.join(SORTS[:-1])} or {SORTS[-1]}")
        if limit < 1 or page < 1:
            raise LabstatsError("limit and page count from 1")
        found: list[tuple[str, Run]] = []
        states: dict[str, dict[str, Any]] = {}
        for source, lab in self.labs.items():
            try:
                runs = lab.runs(name=name, tag=tag, status=status, limit=limit * page + 1, trashed=trashed)
            except UNREACHABLE as exc:
                self._away(source, exc)
                states[source] = {"reachable": False, "link": None, "error": short(exc)}
                continue
            states[source] = self.state(source)
            found += [(source, run) for run in runs]
        found.sort(key=_sort_key(sort))
        return Page(found[limit * (page - 1) : limit * page], states, len(found) > limit * page)

    def runs(self, *, limit: int | None = 100, offset: int = 0, **filters: Any) -> list[Run]:
        """As :meth:`Lab.runs`, over every reachable source."""
        wanted = None if limit is None else offset + limit
        found = [run for _, runs in self._each(lambda lab: lab.runs(limit=wanted, **filters)) for run in runs]
        found.sort(key=lambda r: number(r.meta.get("started")) or 0.0, reverse=True)
        return found[offset : None if limit is None else offset + limit]

    def run(self, ref: str) -> Run:
        """A run by name or id, in whichever source has it; "source/ref" looks in one."""
        source, sep, rest = ref.partition("/")
        if sep and source in self.labs:
            return self.labs[source].run(rest)
        for _, run in self._each(lambda lab: _find(lab, ref)):
            if run is not None:
                return run
        away = f" ({', '.join(self.unreachable)} unreachable)" if self.unreachable else ""
        raise LabstatsError(f"no run named {ref!r} in {', '.join(self.labs)}{away}")

    def compare(self, refs: Iterable[str], series: str, start: int | None = None, stop: int | None = None):
        """As :meth:`Lab.compare`, with runs from any source."""
        return _compare([self.run(ref) for ref in refs], series, start, stop)


def each_readable(runs: list[Run], what: str, read: Callable[[Run], Any]):
    """(position, run, read(run)) for each run whose ``read`` is not None. Of several runs, one
    that cannot be read here (an archive still on its way to this box) is left out with a
    warning naming it, so that the others are still shown; a single run's error is raised."""
    for n, run in enumerate(runs):
        try:
            value = read(run)
        except LabstatsError as exc:
            if len(runs) == 1:
                raise
            warnings.warn(f"{what}: run {run.name!r} left out: {exc}", stacklevel=3)
            continue
        if value is not None:
            yield n, run, value


def _compare(runs: list[Run], series: str, start: int | None, stop: int | None):
    import pandas as pd

    columns = {
        run.name: s.to_pandas().groupby(level=0).last()
        for _, run, s in each_readable(runs, f"compare {series!r}", lambda r: r.series(series, start, stop))
    }
    frame = pd.DataFrame(columns)
    frame.index.name = "idx"
    return frame


def _find(lab: Lab, ref: str) -> Run | None:
    try:
        return lab.run(ref)
    except LabstatsError:
        return None


def connect(url: str | None = None, prefix: str | None = None, timeout: float = 5.0) -> Lab | Labs:
    """Connect to a labstats store; with no URL, find one as :mod:`labstats.config` says. A
    config file with [[sources]] gives a :class:`Labs` over all of them."""
    settings = cfg.resolve(url, prefix)
    if settings.sources:
        labs = Labs({name: _lab(s, timeout) for name, s in settings.sources})
        labs.check()
        return labs
    lab = _lab(settings, timeout)
    try:
        lab.redis.ping()
    except redis.AuthenticationError as exc:
        raise LabstatsError(f"Redis at {cfg.redacted(settings.url)} refused the credentials: {exc}") from None
    except UNREACHABLE as exc:
        raise LabstatsError(
            f"cannot reach Redis at {cfg.redacted(settings.url)} (from {settings.source}): {exc}"
        ) from None
    except redis.ResponseError as exc:
        raise LabstatsError(f"Redis at {cfg.redacted(settings.url)}: {exc}") from None
    return lab


def _lab(settings: cfg.Settings, timeout: float) -> Lab:
    client = cfg.client(settings, timeout=timeout)
    return Lab(client, settings.prefix, settings.source, archive_dir=settings.archive_dir or None,
               artifact_dir=settings.artifact_dir or None)  # fmt: skip
