"""What the alerts service sends, and the text it is made of: a :class:`Message` (kept in the
history, sent to every channel), the names of the built-in rules, and :func:`plain`, which
makes anything a training user wrote (a run's name, a series' name, its own alert) safe to
put in a mail subject or a chat message."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

# Rules built in (their names as the history shows them).
CRASHED, STALLED, NONFINITE, RUN_ALERT = "crashed", "stalled", "nan", "run alert"
ENDED = "ended"  # not a rule: marks a run whose end was seen (its state row says so)
TEXT_CHARS, NAME_CHARS = 2000, 200

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def plain(text: Any, limit: int = TEXT_CHARS) -> str:
    """Text from a run (its name, its alert) as a message may carry it: plain characters, no
    control or direction marks, cut at ``limit``."""
    text = _CONTROL.sub("?", str(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Message:
    source: str
    run: str
    run_name: str
    rule: str
    kind: str  # alert, again, resolved
    level: str
    title: str
    body: str


def number_text(value: float) -> str:
    """A non-finite float as a message says it."""
    return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def duration(seconds: float) -> str:
    """1 h 5 min, 4 min 12 s, 37 s."""
    s = int(seconds)
    return (
        f"{s // 3600} h {s % 3600 // 60} min"
        if s >= 3600
        else (f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s")
    )
