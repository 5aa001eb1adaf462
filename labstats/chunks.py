"""Turn logged points into Redis commands: the writer side of the chunk layout.

Each series keeps its open chunk in memory. New records are sent with APPEND (only the new
bytes cross the network and the replication link); when the chunk is full it is written once
more with SET, which gives Redis an exactly sized string (APPEND leaves spare capacity).
Commands are built as bytes here so that a batch can go to Redis or, unchanged, to the spool.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from labstats import codec, schema
from labstats.device import Pending
from labstats.snapshot import Deferred, Encoded, Histogram
from labstats.spool import Command
from labstats.tensorfiles import FileJob, TensorFiles

log = logging.getLogger("labstats")


def _b(value: Any) -> bytes | memoryview:
    if isinstance(value, bytes | memoryview):
        return value  # a memoryview: a part of a tensor's memory, sent without a copy
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


def cmd(*args: Any) -> Command:
    return tuple(_b(a) for a in args)


def kind_of(value: Any) -> bytes:
    if value is True or value is False:
        return schema.KIND_BOOL
    if type(value) is int:
        return schema.KIND_INT if codec.INT64_MIN <= value <= codec.INT64_MAX else schema.KIND_OBJECT
    if type(value) is float:
        return schema.KIND_FLOAT
    return schema.KIND_OBJECT


class SeriesState:
    """Writer-side state of one series: its id and its open chunk."""

    def __init__(self, sid: int, name: str) -> None:
        self.sid = sid
        self.name = name
        self.chunk_no = -1
        self.kind = b""
        self.buf = bytearray()  # the open chunk, kind byte included
        self.sent = 0  # bytes of buf already in Redis
        self.lo = self.hi = 0
        self.count = 0  # points in the whole series
        self.last_idx: int | None = None
        self.monotonic = True  # no chunk overlaps an earlier one: windows need no fallback
        self.hint: str | None = None  # "histogram": values are [min, max, counts...] arrays

    def info(self) -> bytes:
        info = {
            "sid": self.sid,
            "kind": self.kind.decode(),
            "count": self.count,
            "last_chunk": self.chunk_no,
            "last_idx": self.last_idx,
            "monotonic": self.monotonic,
        }
        if self.hint:
            info["hint"] = self.hint
        return json.dumps(info, separators=(",", ":")).encode()


class ChunkEncoder:
    """Builds the commands for one run's points; owns every series' state."""

    def __init__(self, keys: schema.Keys, run_id: str, files: TensorFiles | None = None) -> None:
        self.keys = keys
        self.run_id = run_id
        self.files = files  # large arrays go to files of the artifact store (labstats.tensorfiles)
        self.series: dict[str, SeriesState] = {}
        self.blobs = 0
        self.quarantined = 0  # values that could not be encoded and were left out

    def encode(self, points: list[tuple[int, str, Any]]) -> list[Command]:
        """Commands that store ``points`` (idx, series name, snapshot), in order. A value that
        cannot be encoded is left out (warned and counted); no other value or series state is
        touched by its failure."""
        touched: dict[str, SeriesState] = {}
        commands: list[Command] = []
        quarantined = self.quarantined
        # First every value is made ready, which starts the file writes of large tensors
        # (several at once, in the pool), then the records are made in order.
        staged: list[tuple[int, str, Any, str | None]] = []
        for idx, name, value in points:
            if type(value) is float:  # the common case, ready as it is
                staged.append((idx, name, value, None))
                continue
            try:
                staged.append((idx, name, *self._stage(value)))
            except Exception as exc:  # encoding only: nothing was changed yet
                self._quarantine(name, idx, exc)
        pack_float = schema.RECORD_STRUCTS[schema.KIND_FLOAT].pack
        for idx, name, value, hint in staged:
            if type(value) is float:
                kind, record = schema.KIND_FLOAT, pack_float(idx, value)
            else:
                blob_commands: list[Command] = []
                try:
                    kind, record = self._record(idx, value, blob_commands)
                except Exception as exc:
                    self._quarantine(name, idx, exc)
                    continue
                commands += blob_commands
            state = self.series.get(name)
            if state is None:
                state = self.series[name] = SeriesState(len(self.series), name)
            if hint is not None:
                state.hint = hint
            if (
                kind != state.kind
                or len(state.buf) + len(record) > schema.CHUNK_BYTES
                or (state.last_idx is not None and idx < state.last_idx)
            ):
                self._close_chunk(state, commands)
                self._open_chunk(state, kind, idx)
            state.buf += record
            state.count += 1
            if idx < state.lo:
                state.lo = idx
            elif idx > state.hi:
                state.hi = idx
            state.last_idx = idx
            touched[name] = state
        for state in touched.values():
            self._flush_chunk(state, commands)
        if self.quarantined != quarantined:
            commands.append(cmd("HSET", self.keys.run(self.run_id), "quarantined", self.quarantined))
        return commands

    def _quarantine(self, name: str, idx: int, exc: Exception) -> None:
        self.quarantined += 1
        log.warning("labstats: series %r at idx %d: value left out, it cannot be stored (%s)",
                    name, idx, exc)  # fmt: skip

    def _stage(self, value: Any) -> tuple[Any, str | None]:
        """(value ready to encode, series hint): GPU copies waited for, device histograms
        read, large arrays handed to the file writers (a :class:`FileJob`)."""
        files = self.files
        if isinstance(value, Histogram):
            return value.result(), "histogram"
        if isinstance(value, Pending):  # waits for the GPU copy here, on the writer thread
            if files is not None and not value.scalar and files.wants(value.nbytes):
                # The file is written from the pinned memory itself: no copy on the host.
                return files.submit(*value.borrow()), None
            return value.result(), None
        if isinstance(value, Deferred):
            value = value.result()
        if files is not None and isinstance(value, np.ndarray) and files.wants(value.nbytes):
            return files.submit(value), None
        return value, None

    def _record(self, idx: int, value: Any, commands: list[Command]) -> tuple[bytes, bytes]:
        if isinstance(value, FileJob):
            ref = value.ref() or self._blob(value.header, value.body, commands)  # no file: into Redis
            return schema.KIND_OBJECT, schema.OBJECT_HEADER.pack(idx, len(ref)) + ref
        kind = kind_of(value)
        if kind != schema.KIND_OBJECT:
            return kind, schema.RECORD_STRUCTS[kind].pack(idx, value)
        if isinstance(value, np.ndarray):
            header, body = codec.array_parts(value)
            if len(header) + len(body) > schema.INLINE_MAX:
                ref = self._blob(header, body, commands)
                return kind, schema.OBJECT_HEADER.pack(idx, len(ref)) + ref
            payload = header + bytes(body)
        else:
            payload = bytes(value) if isinstance(value, Encoded) else codec.encode(value)
            if len(payload) > schema.INLINE_MAX:
                ref = self._blob(payload, memoryview(b""), commands)
                return kind, schema.OBJECT_HEADER.pack(idx, len(ref)) + ref
        return kind, schema.OBJECT_HEADER.pack(idx, len(payload)) + payload

    def _blob(self, head: bytes, body: memoryview, commands: list[Command]) -> bytes:
        """Store head+body as a blob whose parts each fill one allocator class (see
        :func:`part_lengths`). Only the first part is copied (to join the small head to the
        body); the others are views of the body's memory."""
        n = self.blobs
        self.blobs += 1
        total = len(head) + len(body)
        lengths = part_lengths(total)
        if len(head) > lengths[0] or not len(body):  # an encoded value: all of it is in head
            data = memoryview(head + bytes(body))
            first, rest, pos = data[: lengths[0]], data, lengths[0]
        else:
            cut = lengths[0] - len(head)
            first, rest, pos = head + bytes(body[:cut]), body, cut
        parts: list[Any] = [first]
        for length in lengths[1:]:
            parts.append(rest[pos : pos + length])
            pos += length
        args: list[Any] = ["HSET", self.keys.blob(self.run_id, n)]
        for i, data in enumerate(parts):
            args += [i, data]
        commands.append(cmd(*args))
        return schema.BLOB_REF.pack(schema.BLOB_TAG, n, len(parts), total)

    def _open_chunk(self, state: SeriesState, kind: bytes, idx: int) -> None:
        if state.chunk_no >= 0 and state.last_idx is not None and idx < state.last_idx:
            state.monotonic = False
        state.chunk_no += 1
        state.kind = kind
        state.buf = bytearray(kind)
        state.sent = 0
        state.lo = state.hi = idx

    def _close_chunk(self, state: SeriesState, commands: list[Command]) -> None:
        if state.chunk_no < 0:
            return
        # Rewrite the full chunk exactly sized (see module docstring), then index it.
        commands.append(cmd("SET", self.keys.chunk(self.run_id, state.sid, state.chunk_no), bytes(state.buf)))
        state.sent = len(state.buf)
        self._index(state, commands)

    def _flush_chunk(self, state: SeriesState, commands: list[Command]) -> None:
        if state.sent < len(state.buf):
            key = self.keys.chunk(self.run_id, state.sid, state.chunk_no)
            commands.append(cmd("APPEND", key, bytes(state.buf[state.sent :])))
            state.sent = len(state.buf)
            self._index(state, commands)
        commands.append(cmd("HSET", self.keys.series(self.run_id), state.name, state.info()))

    def _index(self, state: SeriesState, commands: list[Command]) -> None:
        commands.append(cmd("ZADD", self.keys.chunk_lo(self.run_id, state.sid), state.lo, state.chunk_no))
        commands.append(cmd("ZADD", self.keys.chunk_hi(self.run_id, state.sid), state.hi, state.chunk_no))
        summary = summarize(state.kind, state.buf)
        if summary is not None:
            key = self.keys.chunk_summary(self.run_id, state.sid)
            commands.append(cmd("HSET", key, state.chunk_no, summary))


# A blob part costs Redis about this much besides its bytes (hash entry and field name): a
# part whose allocator class wastes less than this is not worth splitting further.
PART_COST = 64


def part_lengths(total: int) -> list[int]:
    """How a blob of ``total`` bytes is cut into parts: full ``schema.BLOB_PART`` parts, then
    the rest in parts that each fill one allocator class exactly.

    Redis keeps each part as one allocation, rounded up to the allocator's next size class
    (jemalloc: four classes per power of two), so a single 400 KB part would take 448 KiB
    (1.12x). Cut greedily into the largest part that fills a class, each rest is under a
    quarter of the part before it: a few parts more, each costing about PART_COST."""
    lengths = []
    while total > 0:
        length = min(total, schema.BLOB_PART)
        if length < total or _class_waste(length) <= PART_COST:
            lengths.append(length)
        else:
            lengths.append(_filling(length))
        total -= lengths[-1]
    return lengths


def _sds_overhead(length: int) -> int:
    """Bytes Redis adds to a string of ``length`` bytes (sds header and terminating NUL)."""
    if length < 32:
        return 2
    if length < 256:
        return 4
    return 6 if length < 65536 else 10


def _size_class(size: int) -> int:
    """The jemalloc size class an allocation of ``size`` bytes gets (x86-64, 16-byte quantum)."""
    if size <= 8:
        return 8
    if size <= 128:
        return -(-size // 16) * 16
    step = 1 << ((size - 1).bit_length() - 3)  # a quarter of the power of two below
    return -(-size // step) * step


def _class_waste(length: int) -> int:
    size = length + _sds_overhead(length)
    return _size_class(size) - size


def _filling(length: int) -> int:
    """The largest part length up to ``length`` whose string fills its size class."""
    size = length + _sds_overhead(length)
    below = _size_class(size)
    while below > size:  # the class under the one ``length`` needs
        below = (below - 16) if below <= 128 else below - (1 << ((below - 1).bit_length() - 3))
    part = below - _sds_overhead(length)
    return part - (_sds_overhead(part) - _sds_overhead(length))


def summarize(kind: bytes, chunk: bytes | bytearray) -> bytes | None:
    """First, min, max and last points of a numeric chunk (NaNs ignored), packed."""
    dtype = schema.RECORD_DTYPES.get(kind)
    if dtype is None:
        return None
    records = np.frombuffer(chunk, dtype=dtype, offset=1, count=(len(chunk) - 1) // dtype.itemsize)
    values = records["value"].astype(np.float64)
    finite = np.flatnonzero(~np.isnan(values))
    if not len(finite):
        return None
    lo = finite[np.argmin(values[finite])]
    hi = finite[np.argmax(values[finite])]
    first, last = finite[0], finite[-1]
    idx = records["idx"]
    return schema.SUMMARY.pack(
        idx[first], values[first], idx[lo], values[lo], idx[hi], values[hi], idx[last], values[last]
    )
