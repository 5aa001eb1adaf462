"""A series' info: one field of the hash ``ls:run:<id>:series`` (series name → JSON).

    {"sid": 0, "kind": "f", "count": 1000, "last_chunk": 0, "last_idx": 999,
     "monotonic": true, "hint": "histogram"}

``sid`` numbers the series' keys, ``last_chunk`` is its open chunk, ``monotonic`` says no
chunk overlaps an earlier one (idx never went back), ``hint`` (optional) says how to show it.
"""

from __future__ import annotations

import json
from typing import Any

# Fields every info must have, with their types: without them a series cannot be read.
REQUIRED = (("sid", int), ("kind", str), ("count", int), ("last_chunk", int))
UNREADABLE_KIND = "?"


def encode(
    sid: int,
    kind: str,
    count: int,
    last_chunk: int,
    last_idx: int | None,
    monotonic: bool,
    hint: str | None = None,
) -> bytes:
    info: dict[str, Any] = {"sid": sid, "kind": kind, "count": count, "last_chunk": last_chunk,
                            "last_idx": last_idx, "monotonic": monotonic}  # fmt: skip
    if hint:
        info["hint"] = hint
    return json.dumps(info, separators=(",", ":")).encode()


def decode(raw: bytes) -> dict[str, Any]:
    """The info; one that cannot be read has kind "?", count 0 and an ``error``."""
    try:
        info = json.loads(raw)
        if not isinstance(info, dict) or any(not isinstance(info.get(k), t) for k, t in REQUIRED):
            raise ValueError("fields missing or of the wrong type")
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError; too deep
        return {"kind": UNREADABLE_KIND, "count": 0, "error": str(exc)[:200]}
    last = info.get("last_idx")
    if not isinstance(last, int) or isinstance(last, bool):
        info["last_idx"] = None  # not known: the last point written is read from the last chunk
    return info
