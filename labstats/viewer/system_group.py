"""The "System" group of a run page: the run's ``sys/`` series (its GPUs, its processes, its
box, sampled by labstats.capture.system) on the wall-clock axis, each in its unit, in
sections (the box, the run's processes, each GPU), and the samplers' status texts
(``sys/gpu_status``, ``sys/host_status``) as lines of text instead of charts.

Their idx is the sample's wall time in unix ms, so their charts draw idx as dates whatever
x axis the run's own metrics use (those keep their step axis)."""

from __future__ import annotations

import math
import re
from typing import Any

from labstats.capture.system import GPU_STATUS, HOST_STATUS, PREFIX, SERIES
from labstats.reader import LabstatsError, Run
from labstats.viewer import charts
from labstats.viewer import live as live_watch

TITLE = "System"
MAX_SYSTEM_CHARTS = 120  # 8 GPUs × 6 fields, the processes, the box and its places, with room
STATUS_SERIES = (GPU_STATUS, HOST_STATUS)
MAX_STATUS_CHARS = 500  # a status text as its line shows it (the run's owner writes it)
NUMERIC = ("f", "i", "b")
EMPTY: dict = {"sections": [], "statuses": [], "truncated": False, "names": []}  # a run with no sys/ series

_GPU = re.compile(r"^" + re.escape(PREFIX) + r"gpu(\d{1,4})/(.+)$")
# A GPU's charts in this order (what a person looks at first); others after, by name.
GPU_ORDER = ("util_percent", "memory_used_bytes", "memory_total_bytes", "power_watts",
             "temperature_celsius", "used_by_run")  # fmt: skip
# The box's and the processes' charts in the sampler's order (SERIES), free space after.
BOX_ORDER = tuple(SERIES)


def is_system(name: str) -> bool:
    """Whether a series belongs to the System group (``sys/...``)."""
    return name.startswith(PREFIX)


def unit_of(name: str) -> str:
    """The unit a series' name says (a key of charts' unit texts), or ""."""
    for suffix, unit in (("_bytes_per_s", "bytes_per_s"), ("_bytes", "bytes"), ("_percent", "percent"),
                         ("_watts", "watts"), ("_celsius", "celsius"), ("used_by_run", "flag")):  # fmt: skip
        if name.endswith(suffix):
            return unit
    return ""


def section_of(name: str) -> tuple[tuple[int, int], str]:
    """The section a ``sys/`` series is drawn in: its sort key and title."""
    found = _GPU.match(name)
    if found:
        return (2, int(found.group(1))), f"GPU {int(found.group(1))}"
    if name.startswith(PREFIX + "proc_"):
        return (1, 0), "This run's processes"
    return (0, 0), "Box"


def _order_in_section(name: str) -> tuple[int, str]:
    found = _GPU.match(name)
    field = found.group(2) if found else name[len(PREFIX) :]
    order = GPU_ORDER if found else BOX_ORDER
    return (order.index(field) if field in order else len(order), name)


def description(name: str) -> str:
    """What a series is, in words (the sampler's own descriptions), or ""."""
    field = name[len(PREFIX) :]
    if field in SERIES:
        return SERIES[field]
    if field.endswith("_free_bytes"):
        return f"free space where the run's {field.removesuffix('_free_bytes')} lives"
    found = _GPU.match(name)
    if found:
        return f"GPU {int(found.group(1))}: {found.group(2).replace('_', ' ')}"
    return ""


def readable(value: Any, unit: str) -> str:
    """A latest value in its unit, as the chart's head shows it (the y axis says the same)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return live_watch.short_value(value)
    if not math.isfinite(v):
        return live_watch.short_value(value)
    if unit in ("bytes", "bytes_per_s"):
        suffix = "/s" if unit == "bytes_per_s" else ""
        for size, label in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if abs(v) >= size:
                return f"{v / size:.1f} {label}{suffix}"
        return f"{v:.0f} B{suffix}"
    texts = {"percent": f"{v:.1f} %", "watts": f"{v:.1f} W", "celsius": f"{v:.1f} °C",
             "flag": "yes" if v >= 0.5 else "no"}  # fmt: skip
    return texts.get(unit, live_watch.short_value(value))


def group(run: Run, source: str, info: dict[str, dict], live: bool, target_of, specs: bool = True) -> dict:
    """The run's System group: ``sections`` ([{title, plots}], each plot with its Bokeh spec,
    point count and readable latest value), ``statuses`` ([{name, idx, text}]) and
    ``truncated`` (more sys/ series than MAX_SYSTEM_CHARTS). ``target_of(n, name)`` names
    each chart's target; ``specs`` False leaves the Bokeh specs out (None). Empty sections
    and statuses when the run has no sys/ series."""
    names = [(n, i) for n, i in live_watch.charted(info) if is_system(n)]
    statuses = [_status(run, n) for n, _ in names if n in STATUS_SERIES]
    numeric = [(n, i) for n, i in names if n not in STATUS_SERIES and i.get("kind") in NUMERIC]
    numeric.sort(key=lambda item: (section_of(item[0])[0], _order_in_section(item[0])))
    sections: dict[str, list[dict]] = {}
    for n, (name, i) in enumerate(numeric[:MAX_SYSTEM_CHARTS]):
        _, title = section_of(name)
        sections.setdefault(title, []).append(_plot(run, source, name, i, live, target_of(n, name), specs))
    return {
        "sections": [{"title": title, "plots": plots} for title, plots in sections.items()],
        "statuses": [s for s in statuses if s is not None],
        "truncated": len(numeric) > MAX_SYSTEM_CHARTS,
        "names": [n for n, _ in names][: live_watch.MAX_CHARTS],
    }


def _plot(run: Run, source: str, name: str, i: dict, live: bool, target: str, specs: bool) -> dict:
    unit = unit_of(name)
    url = charts.series_url(source, run.id, name)  # idx: the wall time the chart draws as dates
    spec = (
        charts.line_chart(name, [(name, url)], live, target, x_axis=charts.WALL_IDX, unit=unit)
        if specs
        else None
    )
    try:
        last = run.latest(name)
    except (LabstatsError, ValueError, TypeError, KeyError):
        last = None
    return {"name": name, "target": target, "spec": spec, "count": i.get("count"), "unit": unit,
            "description": description(name), "latest": readable(last[1], unit) if last else None,
            "latest_at": last[0] if last else None}  # fmt: skip


def _status(run: Run, name: str) -> dict | None:
    """A status series' newest text (what the sampler last said), bounded."""
    try:
        last = run.latest(name)
    except (LabstatsError, ValueError, TypeError, KeyError):
        return {"name": name, "idx": None, "text": "unreadable status record"}
    if last is None:
        return None
    text = live_watch.text_value(last[1])
    if len(text) > MAX_STATUS_CHARS:
        text = text[: MAX_STATUS_CHARS - 1] + "…"
    return {"name": name, "idx": last[0], "text": text}
