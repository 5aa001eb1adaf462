"""A run's points, wherever they live: what a run offers to read, and its Redis side.

A run's record, series info and media stay in Redis for ever; its points (chunks, blobs) and
its git diff and package list live in Redis until the run is archived, then in its archive
file (:mod:`labstats.read.archive_file`). Both offer the :class:`Points` interface, so a
:class:`labstats.reader.Run` reads the same way from either and never asks which it has.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import redis

from labstats.config import LabstatsError
from labstats.format import blob, chunk, codec, tensor_file
from labstats.format.keys import Keys
from labstats.store import ArtifactStore

OVERVIEW_MIN = 4096  # series this short are read whole: cheaper than any summary


@dataclass
class Series:
    """Points of one series in idx order: ``idx`` (int64) and ``values``."""

    name: str
    idx: np.ndarray
    values: Any  # np.ndarray for numeric series, else a list
    kind: str = "f"

    def __len__(self) -> int:
        return len(self.idx)

    def to_pandas(self):
        import pandas as pd  # optional: the reader works without pandas

        return pd.Series(self.values, index=pd.Index(self.idx, name="idx"), name=self.name)


class Points(Protocol):
    """What a run's stored points offer. ``info`` is the series' info (format.series_info)."""

    def diff(self) -> str:
        """The uncommitted git diff the run started with ('' if none)."""

    def freeze(self) -> str:
        """The package list of the run's environment ('' if none)."""

    def window(self, name: str, info: dict[str, Any], start: int | None, stop: int | None) -> Series:
        """Points with start <= idx <= stop (either end open when None), in idx order."""

    def overview(self, name: str, info: dict[str, Any]) -> Series:
        """The first, lowest, highest and last point of every chunk's worth of a long numeric series."""

    def steps(self, name: str, info: dict[str, Any], last: int) -> np.ndarray:
        """The idx of the last ``last`` points, without their values."""

    def latest(self, name: str, info: dict[str, Any]) -> tuple[int, Any] | None:
        """The last point written, as (idx, value)."""


def decoded(payload: bytes | memoryview, artifacts: ArtifactStore | None) -> Any:
    """An object record's value: decoded codec bytes, read from its tensor file if it is one.
    A record that cannot be read is an error value in its place, so its neighbours still read."""
    try:
        return codec.decode(resolve_file(payload, artifacts))
    except (ValueError, TypeError) as exc:
        return ValueError(f"unreadable record: {exc}")


def resolve_file(payload: bytes | memoryview, store: ArtifactStore | None) -> bytes | memoryview:
    """A record's codec bytes: the payload itself, or the file a tensor-file reference names."""
    if not tensor_file.is_ref(payload):
        return payload
    digest = tensor_file.digest_of(payload)
    if store is None:
        raise ValueError(f"tensor file {digest} is in an artifact store, and none was given")
    try:
        return store.read(digest)  # checked against its SHA-256: a damaged copy raises
    except FileNotFoundError:
        raise ValueError(
            f"tensor file {digest} is not in the artifact store {store.root} yet "
            "(a web box gets it with the next push from its training box)"
        ) from None


def plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class RedisPoints:
    """The points of a run that is not archived: its chunks, blobs, diff and package list."""

    def __init__(self, client: redis.Redis, keys: Keys, run_id: str, artifacts: ArtifactStore | None) -> None:
        self.redis, self.keys, self.run_id, self.artifacts = client, keys, run_id, artifacts

    def _text(self, key: str) -> str:
        raw = self.redis.get(key)
        return raw.decode("utf-8", "replace") if raw else ""

    def diff(self) -> str:
        return self._text(self.keys.diff(self.run_id))

    def freeze(self) -> str:
        return self._text(self.keys.freeze(self.run_id))

    def window(self, name: str, info: dict[str, Any], start: int | None, stop: int | None) -> Series:
        numbers = self.chunk_numbers(info, start, stop)
        idx, values = self.read(info["sid"], numbers, start, stop)
        return Series(name, idx, values, info.get("kind", "f"))

    def overview(self, name: str, info: dict[str, Any]) -> Series:
        raw = self.redis.hgetall(self.keys.chunk_summary(self.run_id, info["sid"]))
        if len(raw) < info["last_chunk"] + 1:  # a chunk without summary (kind changed, all NaN)
            return self.window(name, info, None, None)
        idx, values = chunk.summary_points(chunk.summaries([raw[k] for k in sorted(raw, key=int)]))
        return Series(name, idx, values, info["kind"])

    def steps(self, name: str, info: dict[str, Any], last: int) -> np.ndarray:
        found: list[np.ndarray] = []
        total = 0
        for n in range(info["last_chunk"], -1, -1):
            data = self.redis.get(self.keys.chunk(self.run_id, info["sid"], n)) or b""
            idx = chunk.idx_of(data)
            found.insert(0, idx)
            total += len(idx)
            if total >= last:
                break
        return np.concatenate(found)[-last:] if found else np.empty(0, dtype=np.int64)

    def latest(self, name: str, info: dict[str, Any]) -> tuple[int, Any] | None:
        last = info.get("last_idx")
        idx, values = self.read(info["sid"], [info["last_chunk"]], last, last)
        return (int(idx[-1]), plain(values[-1])) if len(idx) else None

    # ---- chunks --------------------------------------------------------------------------

    def chunk_numbers(self, info: dict[str, Any], start: int | None, stop: int | None) -> list[int]:
        """The chunks that may hold points of [start, stop], in order."""
        k, sid = self.keys, info["sid"]
        lo_key, hi_key = k.chunk_lo(self.run_id, sid), k.chunk_hi(self.run_id, sid)
        if start is None and stop is None:
            return list(range(info["last_chunk"] + 1))
        hi_arg = "+inf" if stop is None else stop
        pipe = self.redis.pipeline(transaction=False)
        if info.get("monotonic", True):
            # Chunks do not overlap and are ordered: the one holding `start`, then those
            # beginning inside the window. O(log n + k).
            if start is not None:
                pipe.zrevrangebyscore(lo_key, f"({start}", "-inf", start=0, num=1)
            pipe.zrangebyscore(lo_key, "-inf" if start is None else start, hi_arg)
            numbers = {int(n) for group in pipe.execute() for n in group}
        else:
            # Some chunks overlap (idx went back): chunks starting before the window's end
            # and ending after its start.
            pipe.zrangebyscore(lo_key, "-inf", hi_arg)
            pipe.zrangebyscore(hi_key, "-inf" if start is None else start, "+inf")
            before_end, after_start = pipe.execute()
            numbers = {int(n) for n in before_end} & {int(n) for n in after_start}
        return sorted(numbers)

    def read(
        self, sid: int, numbers: list[int], start: int | None, stop: int | None
    ) -> tuple[np.ndarray, Any]:
        """(idx, values) of the points of these chunks inside [start, stop], in idx order: one
        array when every chunk is numeric, else a list."""
        idx_parts, value_parts, kinds = [], [], set()
        for kind, idx, values in self.chunks(sid, numbers, start, stop):
            if kind != "o":
                keep = np.ones(len(idx), dtype=bool)
                if start is not None:
                    keep &= idx >= start
                if stop is not None:
                    keep &= idx <= stop
                idx, values = idx[keep], values[keep]
            idx_parts.append(idx)
            value_parts.append(values)
            kinds.add(kind)
        if not idx_parts:
            return np.empty(0, dtype=np.int64), np.empty(0)
        idx = np.concatenate(idx_parts)
        if "o" in kinds:
            values = [plain(v) for part in value_parts for v in part]
        else:
            values = np.concatenate(value_parts)
        if len(idx) > 1 and not (np.diff(idx) >= 0).all():
            order = np.argsort(idx, kind="stable")
            idx = idx[order]
            values = values[order] if isinstance(values, np.ndarray) else [values[i] for i in order]
        return idx, values

    def chunks(
        self,
        sid: int,
        numbers: list[int],
        start: int | None = None,
        stop: int | None = None,
        *,
        raw: bool = False,
        blobs: set[int] | None = None,
    ) -> Iterator[tuple[str, np.ndarray, Any]]:
        """(kind, idx, values) of each chunk, in chunk order (one MGET): a numeric chunk's
        values as an array; an object chunk's as a list of decoded values inside [start, stop]
        (``raw``: their codec bytes, the numbers of the blobs read added to ``blobs``)."""
        keys = [self.keys.chunk(self.run_id, sid, n) for n in numbers]
        for data in self.redis.mget(keys) if keys else []:
            if not data:
                continue
            if chunk.is_numeric(data):
                records = chunk.records(data)
                yield data[:1].decode(), records["idx"], records["value"]
            elif data[:1] == chunk.KIND_OBJECT:
                unreadable: dict[int, str] = {}
                pairs = list(self.payloads(data, start, stop, blobs, unreadable))
                idx = np.array([p[0] for p in pairs], dtype=np.int64)
                if raw:
                    yield "o", idx, [p[1] for p in pairs]
                else:
                    yield "o", idx, [
                        ValueError(f"unreadable record: {unreadable[n]}") if n in unreadable
                        else decoded(payload, self.artifacts)
                        for n, (_, payload) in enumerate(pairs)
                    ]  # fmt: skip
            else:
                raise LabstatsError(f"run {self.run_id}: chunk of unknown kind {data[:1]!r} (newer schema?)")

    def payloads(
        self,
        data: bytes,
        start: int | None = None,
        stop: int | None = None,
        blobs: set[int] | None = None,
        unreadable: dict[int, str] | None = None,
    ) -> Iterator[tuple[int, bytes | memoryview]]:
        """(idx, codec bytes) of an object chunk's records inside [start, stop], blobs joined
        (a record outside costs a header read, not a blob fetch; a blob that cannot be read
        leaves its reference, which decodes as an error, and says why in ``unreadable``, by
        the record's place among those yielded)."""
        shown = 0
        for idx, payload in chunk.object_payloads(data):
            if (start is not None and idx < start) or (stop is not None and idx > stop):
                continue
            if blob.is_ref(payload):
                if blobs is not None:
                    blobs.add(blob.parse_ref(payload)[0])
                try:
                    payload = self.blob(payload)
                except ValueError as exc:
                    if unreadable is not None:
                        unreadable[shown] = str(exc)
            shown += 1
            yield idx, payload

    def blob(self, ref: bytes | memoryview) -> bytes:
        """The value a blob reference names (a ValueError when it cannot be read whole)."""
        number, part_count, _ = blob.parse_ref(ref)
        key = self.keys.blob(self.run_id, number)
        try:
            if blob.is_small(ref):
                found = [self.redis.get(key)]
            else:
                found = self.redis.hmget(key, [str(i) for i in range(part_count)])
        except redis.ResponseError as exc:  # its owner made the key something else
            raise ValueError(f"blob {number} is unreadable ({exc})") from None
        return blob.join(ref, found)
