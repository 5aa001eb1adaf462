"""What an open page's poll (POST /api/live, once a second) hears of a run besides its chart
windows, cheaply whatever the run holds, by sending changes only:

- how many series the run has (one HLEN); only when that differs from what the page knows,
  the series its page charts (at most MAX_CHARTS names and kinds), so new ones appear;
- the point counts of the series the page shows (one HMGET), and for those that changed
  their latest value or, for text series, their newest rows;
- the run's media list (names, kinds, logged steps) only when its fingerprint changed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from labstats.format import media_record, series_info
from labstats.format.keys import AXIS_SERIES
from labstats.reader import LabstatsError, Run
from labstats.viewer.data import describe

MAX_CHARTS = 200  # charts on a run page; a run with more series shows the first ones and says so
TEXT_ROWS = 50  # newest values of a text series on its page
MAX_TEXT_UPDATES = 20  # text series whose rows one poll sends; the others come with the next ones
MAX_MEDIA_NAMES = 200  # media names announced to a page
MAX_MEDIA_STEPS = 1000  # the last steps of each name announced (a slider's stops)
NUMERIC = ("f", "i", "b")


def charted(info: dict[str, dict]) -> list[tuple[str, dict]]:
    """The series a run page charts, in its order: the epochs and call times are x axes,
    not charts; names with "_" after the rest."""
    return sorted(
        (item for item in info.items() if item[0] not in AXIS_SERIES),
        key=lambda item: (item[0].startswith("_"), item[0]),
    )


def short_value(value: Any) -> str:
    """A latest value as the latest-values table shows it: floats to 6 significant digits."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def text_value(value: Any) -> str:
    """A text series' value as its table shows it."""
    shown = describe(value)
    return shown if isinstance(shown, str) else json.dumps(shown)


def text_rows(run: Run, name: str, page: int = 0) -> list[tuple[int, str]]:
    """A page of a text series' values (page 0 the newest TEXT_ROWS), newest first."""
    newest = run.recent(name, TEXT_ROWS * (page + 1))
    return [
        (i, text_value(v)) for i, v in reversed(newest[: max(0, len(newest) - TEXT_ROWS * page)][-TEXT_ROWS:])
    ]


def media_fingerprint(run: Run) -> str:
    """A short digest of the run's media names, kinds and record counts: it changes when a
    name or a step arrives (two round trips to Redis, whatever the records hold)."""
    names = run.media_names()
    pipe = run.lab.redis.pipeline(transaction=False)
    for name in names:
        pipe.hlen(run.lab.keys.media_records(run.id, media_record.media_id(name)))
    counts = pipe.execute() if names else []
    state = json.dumps([[n, k, c] for (n, k), c in zip(names.items(), counts, strict=True)])
    return hashlib.blake2b(state.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def media_list(run: Run) -> list[dict[str, Any]]:
    """The run's media as the run page lists them (name, kind, logged steps), bounded:
    the first MAX_MEDIA_NAMES names, the last MAX_MEDIA_STEPS steps of each."""
    names = list(run.media_names().items())[:MAX_MEDIA_NAMES]
    return [{"name": n, "kind": k, "steps": run.media_steps(n)[-MAX_MEDIA_STEPS:]} for n, k in names]


def _known(asked: Any) -> dict[str, int]:
    """A page's {name: count} (at most MAX_CHARTS; anything else is left out)."""
    if not isinstance(asked, dict):
        return {}
    return {str(k): v for k, v in list(asked.items())[:MAX_CHARTS] if isinstance(v, int)}


def watch(run: Run, asked: dict[str, Any]) -> dict[str, Any]:
    """What changed in ``run`` since the page's poll last heard: ``asked`` holds what the page
    knows ({"series": count, "counts": {name: count}, "texts": {name: count}, "media":
    fingerprint}, each optional). The answer has ``series`` (the count now) and only what
    differs: ``names`` (the charted series and their kinds), ``counts`` ({name: {count,
    latest}}), ``texts`` ({name: {count, rows}}), ``media`` ({fingerprint, list})."""
    redis, key = run.lab.redis, run.lab.keys.series(run.id)
    out: dict[str, Any] = {"series": redis.hlen(key)}
    if "series" in asked and asked["series"] != out["series"]:
        out["names"] = [{"name": n, "kind": i.get("kind"), "hint": i.get("hint")}
                        for n, i in charted(run.series_info())[:MAX_CHARTS]]  # fmt: skip
    counts, texts = _known(asked.get("counts")), _known(asked.get("texts"))
    names = list(dict.fromkeys([*counts, *texts]))
    infos = redis.hmget(key, names) if names else []
    changed_counts: dict[str, Any] = {}
    changed_texts: dict[str, Any] = {}
    for name, raw in zip(names, infos, strict=True):
        info = _info(raw)
        if info is None:
            continue
        count = info["count"]
        if name in counts and counts[name] != count:
            latest = _latest(run, name, info) if info.get("kind") in NUMERIC else None
            changed_counts[name] = {"count": count, "latest": latest}
        if name in texts and texts[name] != count and len(changed_texts) < MAX_TEXT_UPDATES:
            try:
                changed_texts[name] = {"count": count, "rows": text_rows(run, name)}
            except (LabstatsError, ValueError, TypeError, KeyError):
                continue  # an unreadable record: its page said so at load
    if changed_counts:
        out["counts"] = changed_counts
    if changed_texts:
        out["texts"] = changed_texts
    if "media" in asked:
        fingerprint = media_fingerprint(run)
        if fingerprint != asked["media"]:
            out["media"] = {"fingerprint": fingerprint, "list": media_list(run)}
    return out


def _info(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    info = series_info.decode(raw)
    return None if "error" in info else info


def _latest(run: Run, name: str, info: dict[str, Any]) -> list | None:
    try:
        last = run.points.latest(name, info)
    except (LabstatsError, ValueError, TypeError, KeyError):
        return None
    return [last[0], short_value(last[1])] if last else None
