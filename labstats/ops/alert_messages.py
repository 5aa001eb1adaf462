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

# Control characters (C0 but tab and line feed, DEL, C1: NEL ends a line in some mail
# readers), zero-width and direction marks, line and paragraph separators, the BOM.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_BREAKS = re.compile(r"[\t\n]")


def plain(text: Any, limit: int = TEXT_CHARS) -> str:
    """Text from a run (its alert's text) as a message may carry it: plain characters, no
    control or direction marks, cut at ``limit``."""
    text = str(text)
    cut = len(text) > limit
    text = _CONTROL.sub("?", text[: limit - 1] if cut else text)
    return text + "…" if cut else text


def one_line(text: Any, limit: int = NAME_CHARS) -> str:
    """A name from a run (the run's, a series', its alert's title) as one line of a message or
    a mail subject: :func:`plain`, and tabs and line breaks as spaces."""
    return _BREAKS.sub(" ", plain(text, limit))


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
