"""Compact binary encoding of logged values (schema v1, see docs/schema.md).

Scalars of one kind are packed into fixed-size records (see :mod:`labstats.format.chunk`); every
other value (str, None, nested containers, arrays) is encoded here as a tagged byte string.
Arrays are stored as dtype + shape + raw bytes, never as text, so a float32 tensor costs its
own size plus a few header bytes.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

# One tag byte per value; containers nest.
_NONE, _TRUE, _FALSE = b"N", b"T", b"F"
_INT, _BIGINT, _FLOAT = b"i", b"I", b"f"
_STR, _BYTES = b"s", b"b"
_LIST, _TUPLE, _DICT = b"l", b"t", b"d"
_ARRAY = b"A"

_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Encoded(bytes):
    """A value already encoded here (containers, str, None...): stored as it is."""


class EncodeError(TypeError):
    """A value labstats cannot store (said with the type and where it was found)."""


def _put_len(out: bytearray, n: int) -> None:
    out += _U32.pack(n)


def _encode_into(out: bytearray, value: Any, path: str) -> None:
    if value is None:
        out += _NONE
    elif value is True or value is False:
        out += _TRUE if value else _FALSE
    elif isinstance(value, np.bool_):
        out += _TRUE if bool(value) else _FALSE
    elif isinstance(value, int | np.integer):
        number = int(value)
        if INT64_MIN <= number <= INT64_MAX:
            out += _INT
            out += _I64.pack(number)
        else:
            text = str(number).encode()
            out += _BIGINT
            _put_len(out, len(text))
            out += text
    elif isinstance(value, float | np.floating):
        out += _FLOAT
        out += _F64.pack(float(value))
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        out += _STR
        _put_len(out, len(data))
        out += data
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        out += _BYTES
        _put_len(out, len(data))
        out += data
    elif isinstance(value, np.ndarray):
        _encode_array(out, value, path)
    elif isinstance(value, list | tuple):
        out += _LIST if isinstance(value, list) else _TUPLE
        _put_len(out, len(value))
        for i, item in enumerate(value):
            _encode_into(out, item, f"{path}[{i}]")
    elif isinstance(value, dict):
        out += _DICT
        _put_len(out, len(value))
        for key, item in value.items():
            _encode_into(out, key, f"{path}.<key>")
            _encode_into(out, item, f"{path}[{key!r}]")
    else:
        raise EncodeError(f"cannot store {type(value).__module__}.{type(value).__qualname__} at {path}")


def _encode_array(out: bytearray, array: np.ndarray, path: str) -> None:
    header, body = array_parts(array, path)
    out += header
    out += body


def check_array(array: np.ndarray, path: str = "value") -> None:
    """Arrays of numbers, bool or str are stored; of Python objects or records, not."""
    if array.dtype.hasobject or array.dtype.fields is not None:
        raise EncodeError(
            f"cannot store an array of dtype {array.dtype} at {path} (numbers, bool or str only)"
        )


def array_parts(array: np.ndarray, path: str = "value") -> tuple[bytes, memoryview]:
    """An array's encoding as (header, body): the body is a view of the array's own memory
    (no copy for a C-contiguous array), so large tensors go to Redis without being copied."""
    check_array(array, path)
    if not array.flags.c_contiguous:
        array = array.copy(order="C")
    dtype = array.dtype.str.encode()  # e.g. b"<f4": byte order included
    header = _ARRAY + bytes([len(dtype), array.ndim]) + dtype + b"".join(_I64.pack(d) for d in array.shape)
    return header, memoryview(array.reshape(-1).view(np.uint8))


def encode(value: Any, path: str = "value") -> bytes:
    """Encode a snapshot (plain Python or NumPy values) to bytes."""
    out = bytearray()
    _encode_into(out, value, path)
    return bytes(out)


def decode(data: bytes | memoryview) -> Any:
    """Decode bytes made by :func:`encode`."""
    view = memoryview(data)
    try:
        value, end = _decode_at(view, 0)
    except (struct.error, UnicodeDecodeError, IndexError, TypeError) as exc:
        raise ValueError(f"corrupt value: {exc}") from None
    if end != len(view):
        raise ValueError(f"trailing bytes after value ({len(view) - end})")
    return value


def _decode_at(view: memoryview, pos: int) -> tuple[Any, int]:
    tag = bytes(view[pos : pos + 1])
    pos += 1
    if tag == _NONE:
        return None, pos
    if tag == _TRUE:
        return True, pos
    if tag == _FALSE:
        return False, pos
    if tag == _INT:
        return _I64.unpack_from(view, pos)[0], pos + 8
    if tag == _FLOAT:
        return _F64.unpack_from(view, pos)[0], pos + 8
    if tag in (_STR, _BYTES, _BIGINT):
        (n,) = _U32.unpack_from(view, pos)
        pos += 4
        raw = bytes(view[pos : pos + n])
        if len(raw) != n:
            raise ValueError("truncated value")
        pos += n
        if tag == _STR:
            return raw.decode("utf-8", "surrogatepass"), pos
        if tag == _BIGINT:
            return int(raw), pos
        return raw, pos
    if tag in (_LIST, _TUPLE):
        (n,) = _U32.unpack_from(view, pos)
        pos += 4
        items = []
        for _ in range(n):
            item, pos = _decode_at(view, pos)
            items.append(item)
        return (items if tag == _LIST else tuple(items)), pos
    if tag == _DICT:
        (n,) = _U32.unpack_from(view, pos)
        pos += 4
        result = {}
        for _ in range(n):
            key, pos = _decode_at(view, pos)
            result[key], pos = _decode_at(view, pos)
        return result, pos
    if tag == _ARRAY:
        dtype_len, ndim = view[pos], view[pos + 1]
        pos += 2
        dtype = np.dtype(bytes(view[pos : pos + dtype_len]).decode())
        pos += dtype_len
        shape = tuple(_I64.unpack_from(view, pos + 8 * i)[0] for i in range(ndim))
        pos += 8 * ndim
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if pos + nbytes > len(view):
            raise ValueError("truncated array")
        array = np.frombuffer(view[pos : pos + nbytes], dtype=dtype).reshape(shape).copy()
        return array, pos + nbytes
    raise ValueError(f"unknown value tag {tag!r}")
