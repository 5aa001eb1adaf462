"""A blob: a value too large to sit in a chunk, kept in Redis under a key of its own.

Two forms, told apart by the reference the chunk holds in the value's place:

- a hash of parts (tag "R": blob number, part count, total length). The parts are the
  value's bytes cut into full PART-sized parts, then parts that each fill one allocator size
  class (part_lengths): Redis's memory for a blob is then its size, not its size rounded up.
  Parts after the first are views of the value's memory (a tensor is sent without a copy).
- a small blob, up to SMALL_MAX (tag "H": blob number, total length, then the value's
  tail): one string holding the longest head of the value that fills its allocator class,
  the few bytes left over (the tail) in the record itself. A hash costs Redis about 260
  bytes besides its bytes, a string about 90: for a 4 KiB tensor, 1.08x its size or 1.03x.
"""

from __future__ import annotations

import struct

# Blob part size: 1 MiB minus Redis's string header (and a little), one exact allocator
# class. Measured against 64 KiB parts on an H200 box: 0.92 GB/s into Redis instead of 0.78
# (fewer hash fields and sends per tensor; docs/benchmarks.md).
PART = 2**20 - 16
# A blob reference inside an object record: tag, blob number, part count, total length.
REF = struct.Struct("<cIIQ")
TAG = b"R"


# A small blob's reference: tag, blob number, total length; the value's tail follows it.
SMALL_REF = struct.Struct("<cIQ")
SMALL_TAG = b"H"  # no codec value starts with it (codec tags), nor a tensor-file reference ("S")
# Blobs up to this size are small ones: their tail is under a quarter of it, so a record
# with its tail stays well inside a chunk.
SMALL_MAX = 16 * 2**10


def ref(number: int, part_count: int, total: int) -> bytes:
    return REF.pack(TAG, number, part_count, total)


def small_ref(number: int, total: int, tail: bytes | memoryview) -> bytes:
    return SMALL_REF.pack(SMALL_TAG, number, total) + bytes(tail)


def is_ref(payload: bytes | memoryview) -> bool:
    """Whether a record's payload is a reference to a blob (of either form)."""
    return (payload[:1] == TAG and len(payload) == REF.size) or is_small(payload)


def is_small(payload: bytes | memoryview) -> bool:
    return payload[:1] == SMALL_TAG and len(payload) >= SMALL_REF.size


def parse_ref(payload: bytes | memoryview) -> tuple[int, int, int]:
    """(blob number, part count, total length) of a reference; a small blob is one part."""
    if is_small(payload):
        _, number, total = SMALL_REF.unpack_from(payload)
        return number, 1, total
    _, number, part_count, total = REF.unpack(bytes(payload))
    return number, part_count, total


def head_length(total: int) -> int:
    """How many of a small blob's ``total`` bytes its string holds: all of them when their
    allocator class wastes little, else the most that fill a class exactly."""
    return total if _class_waste(total) <= PART_COST else _filling(total)


def join(payload: bytes | memoryview, found: list[bytes | None]) -> bytes:
    """The value a reference names, from its parts as read (in order; None for a missing
    one; a small blob's one part is its head). A ValueError says why the blob cannot be read
    (parts missing or of the wrong size)."""
    number, _, total = parse_ref(payload)
    if any(part is None for part in found):
        raise ValueError(f"blob {number} is incomplete")
    if is_small(payload):
        found = [*found, payload[SMALL_REF.size :]]
    data = b"".join(found)  # type: ignore[arg-type]
    if len(data) != total:
        raise ValueError(f"blob {number} has {len(data)} bytes, expected {total}")
    return data


# A blob part costs Redis about this much besides its bytes (hash entry and field name): a
# part whose allocator class wastes less than this is not worth splitting further.
PART_COST = 64


def part_lengths(total: int) -> list[int]:
    """How a blob of ``total`` bytes is cut into parts: full ``PART`` parts, then
    the rest in parts that each fill one allocator class exactly.

    Redis keeps each part as one allocation, rounded up to the allocator's next size class
    (jemalloc: four classes per power of two), so a single 400 KB part would take 448 KiB
    (1.12x). Cut greedily into the largest part that fills a class, each rest is under a
    quarter of the part before it: a few parts more, each costing about PART_COST."""
    lengths = []
    while total > 0:
        length = min(total, PART)
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
