"""A chunk: one Redis string of a series' points, and the summary kept beside it.

A chunk is a kind byte followed by records. A numeric chunk (``f``, ``i``, ``b``) holds
fixed-size (idx, value) records, read as a NumPy view without a copy; an object chunk (``o``)
holds (idx, length) headers each followed by codec bytes or a blob reference (see
:mod:`labstats.format.blob`). A record still being appended at the end is left out by every
reader here. A numeric chunk's summary keeps its first, lowest, highest and last points, so an
overview of a long series reads 4 points per chunk.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

from labstats.format import codec

# Chunk kinds: one byte at the start of every chunk.
KIND_FLOAT = b"f"  # records <q idx, <d value
KIND_INT = b"i"  # records <q idx, <q value
KIND_BOOL = b"b"  # records <q idx, <? value
KIND_OBJECT = b"o"  # records <q idx, <I length, then codec bytes (or a blob reference)
NUMERIC_KINDS = ("f", "i", "b")  # the kinds (as text) that have summaries and charts

RECORD_DTYPES = {
    KIND_FLOAT: np.dtype([("idx", "<i8"), ("value", "<f8")]),
    KIND_INT: np.dtype([("idx", "<i8"), ("value", "<i8")]),
    KIND_BOOL: np.dtype([("idx", "<i8"), ("value", "?")]),
}
RECORD_STRUCTS = {
    KIND_FLOAT: struct.Struct("<qd"),
    KIND_INT: struct.Struct("<qq"),
    KIND_BOOL: struct.Struct("<q?"),
}
OBJECT_HEADER = struct.Struct("<qI")

# A chunk is closed once it would pass this size. 16 KiB minus Redis's string header and the
# kind byte, so a full chunk fills one allocator size class exactly (no rounding waste).
CHUNK_BYTES = 16384 - 7
# Object values above this size go to a blob (a hash of parts) instead of inline in a chunk.
INLINE_MAX = 4096

# Summary of a numeric chunk: first, min, max and last points, each as (idx, value).
SUMMARY = struct.Struct("<qdqdqdqd")
# The same as a NumPy record, to read many summaries at once.
SUMMARY_DTYPE = np.dtype([(f"{part}{k}", "<i8" if part == "i" else "<f8") for k in range(4) for part in "iv"])
SUMMARY_BLOCK = 1023  # points per chunk summary at most: a full float chunk's record count


def kind_of(value: Any) -> bytes:
    """The chunk kind a value is stored in: a scalar's own, else object."""
    if value is True or value is False:
        return KIND_BOOL
    if type(value) is int:
        return KIND_INT if codec.INT64_MIN <= value <= codec.INT64_MAX else KIND_OBJECT
    if type(value) is float:
        return KIND_FLOAT
    return KIND_OBJECT


def numeric_record(kind: bytes, idx: int, value: Any) -> bytes:
    return RECORD_STRUCTS[kind].pack(idx, value)


def object_record(idx: int, payload: bytes) -> bytes:
    """An object record: its header, then the payload (codec bytes or a blob reference)."""
    return OBJECT_HEADER.pack(idx, len(payload)) + payload


def is_numeric(data: bytes | bytearray | memoryview) -> bool:
    return bytes(data[:1]) in RECORD_DTYPES


def records(data: bytes | bytearray) -> np.ndarray:
    """The (idx, value) records of a numeric chunk, as a NumPy view of its bytes."""
    dtype = RECORD_DTYPES[bytes(data[:1])]
    return np.frombuffer(data, dtype=dtype, offset=1, count=(len(data) - 1) // dtype.itemsize)


def object_payloads(data: bytes | memoryview) -> Iterator[tuple[int, memoryview]]:
    """(idx, payload) of an object chunk's records, without a copy."""
    view = memoryview(data)
    pos = 1
    while pos + OBJECT_HEADER.size <= len(view):
        idx, size = OBJECT_HEADER.unpack_from(view, pos)
        pos += OBJECT_HEADER.size
        payload = view[pos : pos + size]
        pos += size
        if len(payload) != size:
            return  # a record still being appended
        yield idx, payload


def idx_of(data: bytes) -> np.ndarray:
    """The idx column of any chunk, from record headers only (values are not read)."""
    if is_numeric(data):
        return records(data)["idx"].copy()
    return np.fromiter((idx for idx, _ in object_payloads(data)), dtype=np.int64)


def summarize(kind: bytes, chunk: bytes | bytearray) -> bytes | None:
    """First, min, max and last points of a numeric chunk (NaNs ignored), packed; None for
    an object chunk or one without a number."""
    if kind not in RECORD_DTYPES:
        return None
    found = records(chunk)
    values = found["value"].astype(np.float64)
    finite = np.flatnonzero(~np.isnan(values))
    if not len(finite):
        return None
    lo = finite[np.argmin(values[finite])]
    hi = finite[np.argmax(values[finite])]
    first, last = finite[0], finite[-1]
    idx = found["idx"]
    return SUMMARY.pack(
        idx[first], values[first], idx[lo], values[lo], idx[hi], values[hi], idx[last], values[last]
    )


def summaries(packed: list[bytes]) -> np.ndarray:
    """Packed chunk summaries, in chunk order, as SUMMARY_DTYPE records."""
    return np.frombuffer(b"".join(packed), dtype=SUMMARY_DTYPE).reshape(-1)


def summary_points(found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(idx, values) of summaries' points: sorted by idx, repeats dropped."""
    idx = np.stack([found[f"i{k}"] for k in range(4)], axis=1).reshape(-1)
    values = np.stack([found[f"v{k}"] for k in range(4)], axis=1).reshape(-1)
    order = np.lexsort((values, idx))
    idx, values = idx[order], values[order]
    keep = np.ones(len(idx), dtype=bool)
    keep[1:] = (idx[1:] != idx[:-1]) | (values[1:] != values[:-1])
    return idx[keep], values[keep]


def block_points(
    idx: np.ndarray, values: np.ndarray, block: int = SUMMARY_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """What summaries of every ``block`` points would keep (first, lowest, highest and last,
    NaNs ignored for the extremes), for points that have no stored summaries; sorted by idx."""
    n = len(idx)
    padded = -(-n // block) * block
    v = np.full(padded, np.nan)
    v[:n] = values
    v = v.reshape(-1, block)
    rows = np.arange(len(v))
    lowest = np.argmin(np.where(np.isnan(v), np.inf, v), axis=1)
    highest = np.argmax(np.where(np.isnan(v), -np.inf, v), axis=1)
    first = np.zeros(len(v), dtype=np.int64)
    last = np.minimum(block, n - rows * block) - 1
    picks = np.sort(np.unique(np.concatenate([(rows * block + p) for p in (first, lowest, highest, last)])))
    picks = picks[picks < n]
    return idx[picks], values[picks]
