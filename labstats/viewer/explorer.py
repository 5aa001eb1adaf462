"""The explorer page: metrics of many runs split into subplots by one config key, coloured by
another, and the runs that differ only by the rest (seeds) aggregated as a band.

    /explorer?metric=loss&split=opt&color=lr&agg=mean&over=seed&x=idx&smooth=0.6&y=log
            &filter=lr < 0.1           (or &run=source/id&run=... for chosen runs)

Each run's series is read once, reduced to at most MAX_POINTS points (MinMaxLTTB, kept for
an ended run: labstats.viewer.runcache), smoothed, put on the chart's common x grid and
aggregated there: mean ± std (population std, ddof 0) or the median with a min–max band,
with the number of runs at each x. The page (explorer.js) asks /explorer/view again when
a control changes and keeps its state in the URL.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import numpy as np
from bokeh.embed import json_item
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.palettes import Category10_10, Category20_20
from bokeh.plotting import figure
from flask import Blueprint, current_app, g, jsonify, render_template, request

from labstats.format.keys import AXIS_SERIES
from labstats.read.downsample import MAX_POINTS, downsample
from labstats.reader import UNREACHABLE, LabstatsError, Run
from labstats.viewer.data import ApiError, get_run, labs, table_query
from labstats.viewer.filters import FilterError
from labstats.viewer.openapi import STRING, declare, errors, one_of, page_errors, parameter, strings
from labstats.viewer.pages import WATCHED, page_error
from labstats.viewer.runcache import source_cache
from labstats.viewer.table import Query, caches, differing_keys, filtered_runs, ordering, shown
from labstats.viewer.windows import X_AXES, XAxis

bp = Blueprint("explorer", __name__)
bp.register_error_handler(ApiError, page_error)

MAX_RUNS = 500  # runs one view reads (the newest of the filtered set)
MAX_CHOSEN = 200  # runs named one by one (?run=)
MAX_METRICS = 6
MAX_CHARTS = 24  # subplots drawn (metrics × split values)
MAX_LINES = 40  # aggregated lines per chart (runs drawn one by one: MAX_RUNS)
GRID_POINTS = 1000  # the common x grid of an aggregated chart, when the runs' own x are more
MAX_CHART_POINTS = 50_000  # points of the runs drawn one by one on a chart (agg=none)
MIN_LINE_POINTS = 100
MAX_SMOOTHING = 0.99
MAX_NAME_CHARS = 1000
MAX_CHOICES = 200  # metrics and config keys a view offers in its controls
# Seconds the plain list's config keys over every run are reused: reading which runs exist
# costs ~0.4 s at 10,000 runs, where the list's own page costs ~15 ms. The page's own
# differing keys are added to them (runs.html), so a new run's new key shows at once.
TABLE_KEYS_FRESH = 30.0
MAX_TABLE_QUERIES = 64
MAX_TABLE_KEYS = 100  # group-by choices the runs table offers (it shows at most 12 config columns)
AGGREGATES = {"none": "each run", "mean": "mean ± std", "median": "median, min–max"}
# Keys a sweep repeats runs over: aggregated over unless the view says otherwise (?over=).
SEED_LIKE = ("seed", "trial", "repeat", "replica")


# The explorer's query (the page's and its JSON view's).
EXPLORER_QUERY = [
    strings("metric", "the metrics drawn, a chart each (default: a loss- or accuracy-like one)",
            maxItems=MAX_METRICS),
    parameter("split", STRING, "a config key: a chart per value"),
    parameter("color", STRING, "a config key: a colour per value"),
    one_of("agg", AGGREGATES, "each run, mean ± std or median with a min–max band (default: mean)"),
    strings("over", "config keys aggregated over (default: seed-like keys; an empty value: none)"),
    one_of("x", X_AXES, "the x axis"),
    parameter("smooth", {"type": "number", "minimum": 0, "maximum": MAX_SMOOTHING}, "EMA weight"),
    one_of("y", ["log"], "a log y axis"),
    strings("run", "chosen runs (source/run_id) instead of the filter", maxItems=MAX_CHOSEN),
    parameter("q", STRING, "name contains"),
    parameter("status", STRING, "a run status"),
    parameter("tag", STRING),
    parameter("filter", STRING, "the runs table's filter expression"),
]  # fmt: skip


class ViewError(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(400, message)


@dataclass
class View:
    """What the explorer is asked to draw (read_view)."""

    metrics: list[str] = field(default_factory=list)
    split: str = ""
    color: str = ""
    agg: str = "mean"
    over: list[str] | None = None  # None: the seed-like keys
    x: str = "idx"
    smooth: float = 0.0
    log_y: bool = False
    refs: list[str] = field(default_factory=list)  # chosen runs (source/id), else the filter
    query: Query = field(default_factory=Query)

    def params(self) -> list[tuple[str, str]]:
        """The view as query parameters (the page's URL)."""
        out: list[tuple[str, str]] = [("metric", m) for m in self.metrics]
        out += [(k, v) for k, v in (("split", self.split), ("color", self.color)) if v]
        out.append(("agg", self.agg))
        if self.over is not None:
            out += [("over", k) for k in self.over] or [("over", "")]
        if self.x != "idx":
            out.append(("x", self.x))
        if self.smooth:
            out.append(("smooth", f"{self.smooth:g}"))
        if self.log_y:
            out.append(("y", "log"))
        out += [("run", ref) for ref in self.refs]
        q = self.query
        out += [
            (k, v)
            for k, v in (("q", q.name), ("status", q.status), ("tag", q.tag), ("filter", q.filter))
            if v
        ]
        return out


def read_view(args) -> View:
    """The view a request asks for; a ViewError (400) with its sentence for what is not one."""
    names = [m for m in dict.fromkeys(args.getlist("metric")) if m]
    if len(names) > MAX_METRICS:
        raise ViewError(f"choose at most {MAX_METRICS} metrics")
    texts = [*names, args.get("split", ""), args.get("color", ""), *args.getlist("over")]
    if any(len(t) > MAX_NAME_CHARS for t in texts):
        raise ViewError(f"a metric or config key name is longer than {MAX_NAME_CHARS} characters")
    agg = args.get("agg") or "mean"
    if agg not in AGGREGATES:
        raise ViewError(f"agg must be one of {', '.join(AGGREGATES)}")
    x = args.get("x") or "idx"
    if x not in X_AXES:
        raise ViewError(f"x must be one of {', '.join(X_AXES)}")
    try:
        smooth = float(args.get("smooth") or 0)
    except ValueError:
        smooth = math.nan
    if not 0 <= smooth <= MAX_SMOOTHING:
        raise ViewError(f"smooth must be a number from 0 to {MAX_SMOOTHING}")
    refs = [r for r in dict.fromkeys(args.getlist("run")) if r]
    if len(refs) > MAX_CHOSEN:
        raise ViewError(f"choose at most {MAX_CHOSEN} runs (or a filter)")
    over = [k for k in args.getlist("over") if k] if "over" in args else None
    return View(metrics=names, split=args.get("split") or "", color=args.get("color") or "", agg=agg,
                over=over, x=x, smooth=smooth, log_y=args.get("y") == "log", refs=refs,
                query=table_query(MAX_RUNS))  # fmt: skip


def chosen_runs(view: View) -> tuple[list[tuple[str, Run]], list[str]]:
    """The runs of the view (named ones, else the filtered set's newest MAX_RUNS) and notes."""
    if view.refs:
        out = []
        for ref in view.refs:
            source, _, run_id = ref.partition("/")
            out.append((source, get_run(source, run_id)))
        return out, []
    try:
        found = filtered_runs(labs(), view.query, caches(current_app.extensions))
    except FilterError as exc:
        raise ViewError(f"filter: {exc}") from None
    notes = [f"the newest {MAX_RUNS} of {len(found)} runs are drawn"] if len(found) > MAX_RUNS else []
    return found[:MAX_RUNS], notes


def metric_choices(runs: list[tuple[str, Run]]) -> list[str]:
    """The numeric series of the runs: loss- and accuracy-like names first, then the most shared."""
    counts: dict[str, int] = {}
    kept = caches(current_app.extensions)
    for source, members in _by_source(runs).items():
        try:
            infos = source_cache(kept, source, members[0].lab).series_infos(members)
        except UNREACHABLE:
            continue
        for info in infos.values():
            for name, i in info.items():
                if not name.startswith("_") and name not in AXIS_SERIES and i.get("kind") in ("f", "i", "b"):
                    counts[name] = counts.get(name, 0) + 1
    return sorted(counts, key=lambda n: (not WATCHED.search(n), -counts[n], "loss" not in n, n))


def _by_source(runs) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for source, run in runs:
        out.setdefault(source, []).append(run)
    return out


def reduced(source: str, run: Run, name: str, x: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A run's series as (x, value) floats, at most MAX_POINTS points keeping the extremes;
    None when the run has no such numeric series or no such x axis."""

    def read() -> tuple[np.ndarray, np.ndarray] | None:
        try:
            s = run.series(name)
        except LabstatsError:
            return None
        if not isinstance(s.values, np.ndarray) or s.values.dtype.kind not in "fiub" or not len(s.idx):
            return None
        idx, values = downsample(s.idx, s.values.astype(np.float64), MAX_POINTS)
        xs = idx.astype(np.float64)
        if x != "idx":
            try:
                xs = XAxis(run, x).of(xs)
            except ApiError:  # no epochs or times logged: left out, and said
                return None
        return xs, values

    cache = source_cache(caches(current_app.extensions), source, run.lab)
    return cache.reduced_series(run, (name, x), read)


def ema_rows(matrix: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing (viewer.js' ema) of each row: an exponential moving average
    debiased at the start, NaNs kept and skipped; one pass over the columns for all rows."""
    if weight <= 0 or matrix.shape[1] < 2:
        return matrix
    out = np.empty_like(matrix)
    last = np.zeros(matrix.shape[0])
    count = np.zeros(matrix.shape[0])
    for j in range(matrix.shape[1]):
        v = matrix[:, j]
        ok = np.isfinite(v)
        last = np.where(ok, last * weight + (1 - weight) * np.where(ok, v, 0.0), last)
        count += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = np.where(ok, last / (1 - weight**count), v)
    return out


def on_grid(grid: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A run's values at the grid's x (linear between its points), NaN outside its own x range."""
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    out = np.interp(grid, xs, ys)
    out[(grid < xs[0]) | (grid > xs[-1])] = np.nan
    return out


def common_grid(series: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The x where a chart's runs are aggregated: their own x when few enough (a sweep logs
    the same steps: the aggregate is then exactly that of the logged values), else
    GRID_POINTS evenly over their span."""
    union = np.unique(np.concatenate([xs for xs, _ in series]))
    union = union[np.isfinite(union)]
    if len(union) <= GRID_POINTS:
        return union
    return np.linspace(union[0], union[-1], GRID_POINTS)


def aggregate(matrix: np.ndarray, agg: str) -> dict[str, np.ndarray]:
    """Per column of runs × x: the centre line, the band and the number of runs there."""
    count = np.isfinite(matrix).sum(axis=0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # a column where no run has a value: NaN
        if agg == "median":
            center = np.nanmedian(matrix, axis=0)
            lower, upper = np.nanmin(matrix, axis=0), np.nanmax(matrix, axis=0)
        else:
            center, spread = np.nanmean(matrix, axis=0), np.nanstd(matrix, axis=0)
            lower, upper = center - spread, center + spread
    return {"center": center, "lower": lower, "upper": upper, "count": count.astype(np.float64)}


def explore(view: View) -> dict[str, Any]:
    """The view's charts as data: per chart its title and lines (label, colour, runs, x,
    centre, band, runs per x), and what the controls can offer."""
    runs, notes = chosen_runs(view)
    choices = metric_choices(runs)
    keys = differing_keys(runs, caches(current_app.extensions))
    configured = {k for _, run in runs for k in run.config}
    for what, key in (("split", view.split), ("color", view.color)):
        if key and runs and key not in configured:
            raise ViewError(f"{what}: no chosen run has config key {key!r}")
    unknown = [m for m in view.metrics if m not in choices]
    if unknown and runs:
        raise ViewError(f"no chosen run has a numeric series {unknown[0]!r}")
    metrics = view.metrics or choices[:1]
    over = view.over if view.over is not None else [k for k in keys if any(s in k.lower() for s in SEED_LIKE)]
    over = [k for k in over if k not in (view.split, view.color)]
    grouped_by = [k for k in keys if k not in over and k != view.split]
    color_values = sorted({shown(run.config.get(view.color)) for _, run in runs} if view.color else set(),
                          key=lambda v: _value_order(runs, view.color, v))  # fmt: skip
    palette = Category10_10 if len(color_values) <= 10 else Category20_20
    splits: dict[str, list[tuple[str, Run]]] = {}
    for pair in runs:
        splits.setdefault(shown(pair[1].config.get(view.split)) if view.split else "", []).append(pair)
    split_order = sorted(splits, key=lambda v: _value_order(runs, view.split, v)) if view.split else [""]
    pairs = [(metric, value) for metric in (metrics if runs else []) for value in split_order]
    if len(pairs) > MAX_CHARTS:
        notes.append(f"the first {MAX_CHARTS} of {len(pairs)} charts are drawn")
    charts, missing = [], 0
    for metric, value in pairs[:MAX_CHARTS]:
        title = f"{metric} · {view.split} = {value}" if view.split else metric
        lines, lacking = _chart_lines(view, metric, splits[value], grouped_by, color_values, palette)
        missing += lacking
        if len(lines) > (MAX_LINES if view.agg != "none" else MAX_RUNS):
            notes.append(f"{title}: the first {MAX_LINES} of {len(lines)} lines are drawn")
            lines = lines[:MAX_LINES]
        charts.append(
            {"title": title, "metric": metric, "split": value if view.split else None, "lines": lines}
        )
    if missing:
        notes.append(
            f"{missing} run-chart pairs without that series (or without a {X_AXES[view.x]} axis) are left out"
        )
    return {"runs": len(runs), "metrics": choices, "keys": keys, "over": over, "grouped_by": grouped_by,
            "charts": charts, "notes": notes, "chosen": metrics}  # fmt: skip


def _value_order(runs, key: str, value: str):
    """Shown config values in their values' order (0.001 before 0.01 before 0.1)."""
    for _, run in runs:
        raw = run.config.get(key)
        if shown(raw) == value:
            rank = ordering(raw)
            return (0, rank) if rank is not None else (1, ())
    return (1, ())


def _chart_lines(view, metric, members, grouped_by, color_values, palette) -> tuple[list[dict], int]:
    """The lines of one chart: a run each, or one per group of runs that share every
    grouped-by key (aggregated). Returns them and how many runs lacked the series."""
    read = [(s, r, reduced(s, r, metric, view.x)) for s, r in members]
    present = [(s, r, found) for s, r, found in read if found is not None and len(found[0])]
    lacking = len(read) - len(present)

    def color_of(run: Run, k: int) -> str:
        if view.color:
            return palette[color_values.index(shown(run.config.get(view.color))) % len(palette)]
        return (Category10_10 if k < 10 else Category20_20)[k % (10 if k < 10 else 20)]

    if view.agg == "none":
        width = max((len(found[0]) for _, _, found in present), default=0)
        matrix = np.full((len(present), width), np.nan)
        for k, (_, _, (_, ys)) in enumerate(present):
            matrix[k, : len(ys)] = ys
        smoothed = ema_rows(matrix, view.smooth)
        # Each run's line in as few points as the chart's budget allows (200 runs: 250 each).
        budget = max(MIN_LINE_POINTS, min(MAX_POINTS, MAX_CHART_POINTS // max(1, len(present))))
        lines = []
        for k, (source, run, (xs, ys)) in enumerate(present):
            label = str(run.name) + (
                f" ({view.color}={shown(run.config.get(view.color))})" if view.color else ""
            )
            xs, center = downsample(xs, smoothed[k, : len(ys)], budget)
            lines.append({"label": label, "color": color_of(run, k), "n": 1, "runs": [f"{source}/{run.id}"],
                          "x": xs, "center": center})  # fmt: skip
        return lines, lacking
    groups: dict[tuple, list] = {}
    for row, item in enumerate(present):
        key = tuple(shown(item[1].config.get(k)) for k in grouped_by)
        groups.setdefault(key, []).append((row, item))
    grid = common_grid([found for _, _, found in present]) if present else np.empty(0)
    # Every run of the chart on its grid, smoothed in one pass (one per group was 20 passes).
    rows = [on_grid(grid, xs, ys) for _, _, (xs, ys) in present]
    smoothed = ema_rows(np.vstack(rows), view.smooth) if rows else np.empty((0, 0))
    ordered = sorted(
        groups, key=lambda key: [_value_order(members, k, v) for k, v in zip(grouped_by, key, strict=True)]
    )
    lines = []
    for k, key in enumerate(ordered):
        items = [item for _, item in groups[key]]
        matrix = smoothed[[row for row, _ in groups[key]]]
        label = ", ".join(f"{name}={v}" for name, v in zip(grouped_by, key, strict=True)) or "all runs"
        lines.append({"label": f"{label} (n={len(items)})", "color": color_of(items[0][1], k),
                      "n": len(items), "runs": [f"{s}/{r.id}" for s, r, _ in items], "x": grid,
                      **aggregate(matrix, view.agg)})  # fmt: skip
    return lines, lacking


def chart_spec(chart: dict[str, Any], target: str, view: View) -> dict:
    """One chart as a Bokeh JSON item. Aggregated: per line a band and its centre line,
    named band-K and line-K, drawn from data source data-K (tagged with the line's label;
    columns x, center, lower, upper, count). Each run on its own: one multi-line "runs"
    from data source data-runs (columns xs, ys, color, label), however many runs.

    Building a Bokeh figure costs ~25 ms plus ~5 ms a line (400 ms for a view of four
    charts), so one is built per (line count, band, log, x axis) and reused, as charts.py
    does: its ids made unique per chart, its placeholders filled in, its data put in."""
    lines = chart["lines"]
    banded = view.agg != "none"
    slots = len(lines) if banded else min(len(lines), MAX_LINES + 1)  # runs: with a legend or not
    template = _chart_template(slots, banded, view.log_y, view.x)
    text = _ID.sub(lambda m: f'"{target}-{m.group(1)}"', template)
    fills = {"__TITLE__": chart["title"], "__TARGET__": target}
    if banded:
        for k, line in enumerate(lines):  # colours first: the title and labels filled in below are user text
            text = text.replace(f'"{_slot_color(k)}"', json.dumps(line["color"]))
        fills.update({f"__LABEL_{k}__": line["label"] for k, line in enumerate(lines)})
    for key in sorted(fills, key=len, reverse=True):
        text = text.replace(key, json.dumps(fills[key])[1:-1])
    item = json.loads(text)
    for attributes in _data_sources(item["doc"]):
        if banded:
            line = lines[int(attributes["name"].removeprefix("data-"))]
            entries = [[c, _ndarray(line[c])] for c in ("x", "center", "lower", "upper", "count")]
        else:
            entries = [["xs", [_ndarray(line["x"]) for line in lines]],
                       ["ys", [_ndarray(line["center"]) for line in lines]],
                       ["color", [line["color"] for line in lines]],
                       ["label", [line["label"] for line in lines]]]  # fmt: skip
        attributes["data"] = {"type": "map", "entries": entries}
    return item


_ID = re.compile(r'"(p\d+)"')


def _slot_color(k: int) -> str:
    """The placeholder colour of line k in a chart template (replaced by the real one)."""
    return f"#0c{k:04x}"


@functools.lru_cache(maxsize=32)
def _chart_template(n_lines: int, banded: bool, log_y: bool, x: str) -> str:
    fig = figure(title="__TITLE__", height=300, sizing_mode="stretch_width", x_axis_label=X_AXES[x],
                 x_axis_type="datetime" if x == "time" else "linear",
                 y_axis_type="log" if log_y else "linear", tools="xpan,xwheel_zoom,box_zoom,reset,save",
                 active_scroll="xwheel_zoom", output_backend="canvas")  # fmt: skip
    x_tip = (X_AXES[x], "@x{%F %T}" if x == "time" else "@x")
    formatters = {"@x": "datetime"} if x == "time" else {}
    if not banded:
        source = ColumnDataSource({"xs": [], "ys": [], "color": [], "label": []}, name="data-runs")
        legend = {"legend_field": "label"} if n_lines <= MAX_LINES else {}
        runs = fig.multi_line(xs="xs", ys="ys", line_color="color", source=source, line_width=1.5,
                              name="runs", **legend)  # fmt: skip
        fig.add_tools(
            HoverTool(tooltips=[("run", "@label"), (X_AXES[x], "$x"), ("value", "$y")], renderers=[runs])
        )
    drawn = []
    for k in range(n_lines if banded else 0):
        source = ColumnDataSource(
            {c: [] for c in ("x", "center", "lower", "upper", "count")},
            name=f"data-{k}",
            tags=[f"__LABEL_{k}__"],
        )
        color = _slot_color(k)
        fig.varea(
            x="x", y1="lower", y2="upper", source=source, fill_color=color, fill_alpha=0.2, name=f"band-{k}"
        )
        drawn.append(fig.line(x="x", y="center", source=source, color=color, line_width=2, name=f"line-{k}",
                              legend_label=f"__LABEL_{k}__"))  # fmt: skip
    if drawn:
        tips = [x_tip, ("centre", "@center"), ("band", "@lower – @upper"), ("runs", "@count")]
        fig.add_tools(HoverTool(tooltips=tips, renderers=drawn, formatters=formatters))
    if fig.legend:
        fig.legend.click_policy = "hide"
        fig.legend.location = "top_left"
    return json.dumps(json_item(fig, "__TARGET__"))


def _data_sources(node: Any):
    """The attributes of the data sources (data-K) in a Bokeh document's JSON."""
    if isinstance(node, dict):
        attributes = node.get("attributes")
        named = isinstance(attributes, dict) and str(attributes.get("name", "")).startswith("data-")
        if named and node.get("name") == "ColumnDataSource":
            yield attributes
        for value in node.values():
            yield from _data_sources(value)
    elif isinstance(node, list):
        for value in node:
            yield from _data_sources(value)


def _ndarray(values: np.ndarray) -> dict[str, Any]:
    """A float column as Bokeh sends arrays: little-endian float64, gzipped, base64 (NaN kept:
    a gap in the line)."""
    data = np.ascontiguousarray(values, dtype="<f8")
    packed = base64.b64encode(gzip.compress(data.tobytes(), compresslevel=1, mtime=1)).decode()
    return {"type": "ndarray", "array": {"type": "bytes", "data": packed}, "shape": [len(data)],
            "dtype": "float64", "order": "little"}  # fmt: skip


def view_answer(view: View) -> dict[str, Any]:
    """What the page draws: the charts as Bokeh items, the lines' labels and run counts,
    the choices of the controls, notes, and the view's own query string."""
    found = explore(view)
    charts = []
    for n, chart in enumerate(found["charts"]):
        target = f"explorer-chart-{n}"
        charts.append({"target": target, "title": chart["title"], "spec": chart_spec(chart, target, view),
                       "lines": [{"label": line["label"], "color": line["color"], "n": line["n"]}
                                 for line in chart["lines"]]})  # fmt: skip
    chosen = View(**{**view.__dict__, "metrics": found["chosen"], "over": found["over"]})
    return {"runs": found["runs"], "metrics": found["metrics"][:MAX_CHOICES],
            "keys": found["keys"][:MAX_CHOICES], "grouped_by": found["grouped_by"], "charts": charts,
            "notes": found["notes"], "query": urlencode(chosen.params()),
            "state": {"metric": chosen.metrics, "split": view.split, "color": view.color, "agg": view.agg,
                      "over": found["over"], "x": view.x, "smooth": view.smooth,
                      "y": "log" if view.log_y else ""}}  # fmt: skip


@bp.get("/explorer")
@declare("The explorer: metrics split, coloured and aggregated over runs (HTML)", query=EXPLORER_QUERY,
         responses=page_errors(400, 404))  # fmt: skip
def page():
    """The explorer (HTML): the controls and the charts of the view in the URL."""
    try:
        answer, error, status = view_answer(read_view(request.args)), None, 200
    except ApiError as exc:  # a bad control: said on the page, the controls kept to fix it
        if exc.status != 400:
            raise
        answer, error, status = None, exc.message, 400
    args = request.args
    return render_template("explorer.html", answer=answer, error=error, args=args, aggregates=AGGREGATES,
                           max_smoothing=MAX_SMOOTHING), status  # fmt: skip


@bp.get("/explorer/view")
@declare("The explorer's view: its charts (Bokeh JSON items), lines, run counts and choices",
         query=EXPLORER_QUERY, responses=errors(400, 404))  # fmt: skip
def view_json():
    """The explorer's view as JSON (what the page asks for when a control changes)."""
    try:
        return jsonify(view_answer(read_view(request.args)))
    except ApiError as exc:
        return jsonify({"error": exc.message}), exc.status


@bp.app_template_filter("config_cell")
def config_cell(value: Any) -> str:
    """A config value as the runs table's cell shows it (strings unquoted)."""
    return shown(value)


@bp.app_template_global("table_config_keys")
def table_config_keys() -> list[str]:
    """The config keys that differ over every run of the runs table's filtered set (not
    only its shown page): its config columns and group-by choices. A sorted, filtered or
    grouped table read every run already (table.read_table left them in g); the plain
    newest-first list reads a page only, and every run here at most once per
    TABLE_KEYS_FRESH seconds per name/tag/status/filter."""
    found = getattr(g, "labstats_table_keys", None)
    if found is None:
        try:
            query = table_query(MAX_RUNS)
        except ApiError:
            return []
        memo = current_app.extensions.setdefault("labstats_table_keys", {})
        asked, now = (query.name, query.tag, query.status, query.filter), time.monotonic()
        kept = memo.get(asked)
        if kept is not None and now - kept[0] < TABLE_KEYS_FRESH:
            found = kept[1]
        else:
            try:
                runs = filtered_runs(labs(), query, caches(current_app.extensions))
            except FilterError:
                runs = []
            found = differing_keys(runs, caches(current_app.extensions))
            if len(memo) > MAX_TABLE_QUERIES:
                memo.clear()
            memo[asked] = (now, found)
        g.labstats_table_keys = found
    return found[:MAX_TABLE_KEYS]
