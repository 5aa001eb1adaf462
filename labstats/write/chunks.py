"""Turn logged points into Redis commands: the writer side of the chunk layout.

Each series keeps its open chunk in memory. New records are sent with APPEND (only the new
bytes cross the network and the replication link); when the chunk is full it is written once
more with SET, which gives Redis an exactly sized string (APPEND leaves spare capacity).
Commands are built as bytes here so that a batch can go to Redis or, unchanged, to the spool.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from labstats.capture.device import Pending
from labstats.capture.snapshot import Deferred, Encoded, Histogram
from labstats.format import blob, chunk, codec, series_info
from labstats.format.chunk import kind_of, summarize
from labstats.format.keys import Keys
from labstats.write.spool import Command
from labstats.write.tensorfiles import FileJob, TensorFiles

log = logging.getLogger("labstats")


def _b(value: Any) -> bytes | memoryview:
    if isinstance(value, bytes | memoryview):
        return value  # a memoryview: a part of a tensor's memory, sent without a copy
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


def cmd(*args: Any) -> Command:
    return tuple(_b(a) for a in args)


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
        return series_info.encode(self.sid, self.kind.decode(), self.count, self.chunk_no, self.last_idx,
                                  self.monotonic, self.hint)  # fmt: skip


class ChunkEncoder:
    """Builds the commands for one run's points; owns every series' state."""

    def __init__(self, keys: Keys, run_id: str, files: TensorFiles | None = None) -> None:
        self.keys = keys
        self.run_id = run_id
        self.files = files  # large arrays go to files of the artifact store (labstats.write.tensorfiles)
        self.series: dict[str, SeriesState] = {}
        self.blobs = 0
        self.quarantined = 0  # values that could not be encoded and were left out

    def continue_run(self, series: dict[str, dict[str, Any]], blobs: int) -> None:
        """Go on with a resumed run (labstats.write.resume): its series keep their numbers and
        counts, each starts a new chunk at its next point (what was written stays as it is),
        and new blobs take the numbers after its last one."""
        for name, info in sorted(series.items(), key=lambda item: item[1]["sid"]):
            state = SeriesState(info["sid"], name)
            state.chunk_no = info["last_chunk"]
            state.count = info["count"]
            state.last_idx = info.get("last_idx")
            state.monotonic = bool(info.get("monotonic", True))
            state.hint = info.get("hint")
            self.series[name] = state  # its kind is unset: the next point opens a chunk
        self.blobs = blobs

    def encode(self, points: list[tuple[int, str, Any]]) -> list[Command]:
        """Commands that store ``points`` (idx, series name, snapshot), in order. A value that
        cannot be encoded is left out (warned and counted); no other value or series state is
        touched by its failure. If encoding fails otherwise (a bug, a name the encoder cannot
        write), it raises with the encoder as it was before the call."""
        checkpoint = _Checkpoint(self, points)
        try:
            return self._encode(points)
        except BaseException:
            checkpoint.restore()  # the commands for the changes made so far went with the exception
            raise

    def _encode(self, points: list[tuple[int, str, Any]]) -> list[Command]:
        touched: dict[str, SeriesState] = {}
        commands: list[Command] = []
        quarantined, blobs = self.quarantined, self.blobs
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
        pack_float = chunk.RECORD_STRUCTS[chunk.KIND_FLOAT].pack
        for idx, name, value, hint in staged:
            if type(value) is float:
                kind, record = chunk.KIND_FLOAT, pack_float(idx, value)
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
                or len(state.buf) + len(record) > chunk.CHUNK_BYTES
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
        if self.blobs != blobs:  # a resumed run's blobs go on after these (labstats.write.resume)
            commands.append(cmd("HSET", self.keys.run(self.run_id), "blobs", self.blobs))
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
            return chunk.KIND_OBJECT, chunk.OBJECT_HEADER.pack(idx, len(ref)) + ref
        kind = kind_of(value)
        if kind != chunk.KIND_OBJECT:
            return kind, chunk.RECORD_STRUCTS[kind].pack(idx, value)
        if isinstance(value, np.ndarray):
            header, body = codec.array_parts(value)
            if len(header) + len(body) > chunk.INLINE_MAX:
                ref = self._blob(header, body, commands)
                return kind, chunk.OBJECT_HEADER.pack(idx, len(ref)) + ref
            payload = header + bytes(body)
        else:
            payload = bytes(value) if isinstance(value, Encoded) else codec.encode(value)
            if len(payload) > chunk.INLINE_MAX:
                ref = self._blob(payload, memoryview(b""), commands)
                return kind, chunk.OBJECT_HEADER.pack(idx, len(ref)) + ref
        return kind, chunk.OBJECT_HEADER.pack(idx, len(payload)) + payload

    def _blob(self, head: bytes, body: memoryview, commands: list[Command]) -> bytes:
        """Store head+body as a blob and return its reference: a small one as one string
        (see :mod:`labstats.format.blob`), a larger one as parts that each fill one allocator
        class (:func:`labstats.format.blob.part_lengths`). Only the first part is copied (to
        join the small head to the body); the others are views of the body's memory."""
        n = self.blobs
        self.blobs += 1
        total = len(head) + len(body)
        if total <= blob.SMALL_MAX:  # one string and a tail in the record (format.blob)
            data = head + bytes(body)
            cut = blob.head_length(total)
            commands.append(cmd("SET", self.keys.blob(self.run_id, n), data[:cut]))
            return blob.small_ref(n, total, data[cut:])
        lengths = blob.part_lengths(total)
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
        return blob.ref(n, len(parts), total)

    def _open_chunk(self, state: SeriesState, kind: bytes, idx: int) -> None:
        if state.chunk_no >= 0 and state.last_idx is not None and idx < state.last_idx:
            state.monotonic = False
        state.chunk_no += 1
        state.kind = kind
        state.buf = bytearray(kind)
        state.sent = 0
        state.lo = state.hi = idx

    def _close_chunk(self, state: SeriesState, commands: list[Command]) -> None:
        if state.chunk_no < 0 or not state.buf:  # none yet, or a resumed run's (stored already)
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


class _Checkpoint:
    """An encoder's state before one encode() call, to undo a call that failed half way.

    Only what a call changes is kept: the counters, the number of series (new ones are added
    last) and the touched series' fields with their open chunk's length (a chunk only grows
    in place, or is replaced whole by a new one, so the length and the old buffer bring it
    back without a copy)."""

    __slots__ = ("blobs", "encoder", "n_series", "quarantined", "states")

    def __init__(self, encoder: ChunkEncoder, points: list[tuple[int, str, Any]]) -> None:
        series = encoder.series
        self.encoder = encoder
        self.blobs, self.quarantined, self.n_series = encoder.blobs, encoder.quarantined, len(series)
        if len(series) <= len(points):  # the common case: few series, many points
            touched = series.values()
        else:
            touched = [series[name] for name in {name for _, name, _ in points} if name in series]
        self.states = [(state, vars(state).copy(), len(state.buf)) for state in touched]

    def restore(self) -> None:
        encoder = self.encoder
        encoder.blobs, encoder.quarantined = self.blobs, self.quarantined
        for name in list(encoder.series)[self.n_series :]:
            del encoder.series[name]
        for state, fields, length in self.states:
            vars(state).update(fields)
            del state.buf[length:]
