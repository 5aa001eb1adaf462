"""A run's record: the hash ``ls:run:<id>`` of its metadata, field by field.

Most fields are text (name, status, times as unix seconds with 3 decimals); the fields of
JSON_FIELDS hold JSON (the config, tags, the command line...), ``git_dirty`` a flag. A record
is written by the training user that owns the run, so decoding trusts nothing: a field that
is not what it should be is kept as text and named in ``_malformed``.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Run status values stored in the record; "crashed" is also derived by readers when a
# running run's heartbeat is older than its stale limit.
RUNNING, FINISHED, CRASHED = "running", "finished", "crashed"
STATUSES = (RUNNING, FINISHED, CRASHED)
# Derived only, never stored: a running run whose process lives (its heartbeat is fresh) but
# whose training loop has not called log() or update() for too long (a stuck data loader).
STALLED = "stalled"
SHOWN_STATUSES = (RUNNING, STALLED, FINISHED, CRASHED)

JSON_FIELDS = ("config", "tags", "argv", "packages", "env", "git_notes", "resumes")
FLAG_FIELDS = ("git_dirty",)
_TRUE = ("1", "True", "true")

# The note a run records when git is missing where it started (regenerate looks for it).
GIT_MISSING = "git is not installed on "


def encode_field(key: str, value: Any) -> str | int | float:
    """A field's stored form: a JSON field always as JSON; another field's text and numbers
    as they are, anything else as JSON."""
    if key in JSON_FIELDS or not isinstance(value, str | int | float):
        return json.dumps(value, default=str)
    return value


def decode(raw: dict[bytes, bytes]) -> dict[str, Any]:
    """The record as read (HGETALL) → field → value; JSON fields parsed where they parse."""
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        k, v = key.decode("utf-8", "replace"), value.decode("utf-8", "replace")
        if "\ufffd" in k or "\ufffd" in v:
            meta.setdefault("_malformed", []).append(k)
        if k in JSON_FIELDS:
            try:
                meta[k] = json.loads(v)
            except (ValueError, RecursionError):  # nested too deep for the parser: kept as text
                meta[k] = v
        elif k in FLAG_FIELDS:
            meta[k] = v in _TRUE
        else:
            meta[k] = v
    return meta


def number(value: Any) -> float | None:
    """A finite float from a stored field (text or bytes a run's owner wrote), or None when it
    is not one."""
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return result if math.isfinite(result) else None
