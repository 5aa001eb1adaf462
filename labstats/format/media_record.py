"""Media of a run: which names it has, and a record per logged item.

    ls:run:<id>:media          name → {"mid": MID, "kind": "image"}       (JSON)
    ls:run:<id>:m:<MID>        "step:item" → record                      (JSON)
    ls:run:<id>:m:<MID>:t      "step:item" → thumbnail (WebP, ≤ 256 px)

A record: step, item, kind, digest (SHA-256 of the file in the artifact store), type (media
type), shape, bytes, caption, time, and file (the name a file was logged under).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def media_id(name: str) -> str:
    """A media name's key part: stable (no counter to agree on) and short."""
    return hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def field_name(step: int, item: int) -> str:
    return f"{step}:{item}"


def step_of(field: bytes) -> int | None:
    """The step a record's field names, or None for a field labstats did not write."""
    try:
        return int(field.split(b":", 1)[0])
    except ValueError:
        return None


def encode_name(mid: str, kind: str) -> bytes:
    return json.dumps({"mid": mid, "kind": kind}, separators=(",", ":")).encode()


def decode_kind(raw: bytes) -> str | None:
    """The kind of a media name's entry, or None for one labstats did not write."""
    try:
        kind = json.loads(raw)["kind"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    return kind if isinstance(kind, str) else None


def encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def decode(raw: bytes) -> dict[str, Any] | None:
    """A media record, or None for one labstats did not write (not JSON, no int step...)."""
    try:
        record = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    record.setdefault("item", 0)
    if not all(
        isinstance(record.get(k), int) and not isinstance(record.get(k), bool) for k in ("step", "item")
    ):
        return None
    if not isinstance(record.get("digest"), str) or not isinstance(record.get("kind"), str):
        return None
    return record
