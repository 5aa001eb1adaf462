"""A reference to a tensor kept as a file of the artifact store, in its chunk record's place.

The file holds the value's codec bytes (dtype, shape, raw data); the record holds the file's
SHA-256 and the length of those bytes.
"""

from __future__ import annotations

import struct

# Tag, SHA-256 of the file (raw 32 bytes), length of the codec bytes it holds.
REF = struct.Struct("<c32sQ")
TAG = b"S"  # no codec value starts with it (codec tags), nor a blob reference ("R")


def is_ref(payload: bytes | memoryview) -> bool:
    return payload[:1] == TAG and len(payload) == REF.size


def make_ref(digest: str, length: int) -> bytes:
    return REF.pack(TAG, bytes.fromhex(digest), length)


def digest_of(payload: bytes | memoryview) -> str:
    """The hex SHA-256 of the file a reference names."""
    return REF.unpack(bytes(payload))[1].hex()
