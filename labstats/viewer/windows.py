"""Series windows as the API answers them: the x axes a chart can have (idx, epoch, wall-clock
time, seconds since start), their maths to and from idx, and a window of a series reduced
for a chart (series_body, what GET .../series/<name> and POST /api/live send)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from werkzeug.datastructures import MultiDict

from labstats.format import keys
from labstats.format.codec import INT64_MAX, INT64_MIN
from labstats.read.downsample import MAX_POINTS, downsample
from labstats.reader import LabstatsError, Run, number
from labstats.viewer.data import ApiError, describe, finite, int_arg, is_numeric, series_window

# Values of an object (text) series sent in one answer: 1,000 × MAX_TEXT is at most 2 MB;
# max_points (up to 100,000) would allow 200 MB.
MAX_OBJECTS_SENT = 1000
MAX_POINTS_ASKED = 100_000  # the most points one window may ask for (?max_points=)

# The x axes a chart can have (?x=), with the labels the axis and the page's control show.
X_AXES = {"idx": "idx", "epoch": "epoch", "time": "wall-clock time", "relative": "seconds since start"}


class XAxis:
    """A chart's x axis other than idx: epoch (from update()'s _epoch), wall-clock time in
    ms (Bokeh's datetime axis) or seconds since the run started, each read from the run's
    internal series and mapped to and from idx.

    Epochs are fractional: _epoch holds the idx where each epoch began, so a point between
    two of them lies that far through its epoch, and the last epoch runs as long as the one
    before (update() makes idx = epoch × set size + step × batch, so this is exact there).
    Every point of an epoch at one x drew vertical combs instead of a line."""

    def __init__(self, r: Run, kind: str) -> None:
        name = keys.EPOCH_SERIES if kind == "epoch" else keys.TIME_SERIES
        try:
            s = r.series(name)
        except LabstatsError:
            raise ApiError(404, f"run {r.name!r} has no {kind} to plot against (no {name} series)") from None
        order = np.argsort(s.idx, kind="stable")
        self.idx = s.idx[order].astype(np.float64)
        self.x = np.asarray(s.values, dtype=np.float64)[order]
        self.kind = kind
        if kind == "time":
            self.x = self.x * 1000.0
        elif kind == "relative":
            self.x = self.x - (number(r.meta.get("started")) or float(self.x[0]))
        if not len(self.idx):
            raise ApiError(404, f"run {r.name!r} has no {kind} to plot against")
        self.stepwise = False  # epochs that cannot be spread (one only, or not increasing)
        if kind == "epoch":
            rising = len(self.idx) > 1 and bool(np.all(np.diff(self.idx) > 0) and np.all(np.diff(self.x) > 0))
            if rising:  # the end of the last epoch, as long (in idx per epoch) as the one before
                per_epoch = (self.idx[-1] - self.idx[-2]) / (self.x[-1] - self.x[-2])
                self.idx = np.append(self.idx, self.idx[-1] + per_epoch)
                self.x = np.append(self.x, self.x[-1] + 1.0)
            self.stepwise = not rising

    def of(self, idx: np.ndarray) -> np.ndarray:
        if self.stepwise:  # the epoch an idx belongs to: the last one set at or before it
            at = np.clip(np.searchsorted(self.idx, idx, side="right") - 1, 0, len(self.idx) - 1)
            return self.x[at]
        return np.interp(idx, self.idx, self.x)

    def to_idx(self, x: float, side: str) -> float:
        """The idx where the axis reaches ``x`` (a zoom window's edge), rounded outward."""
        found = self._epoch_idx(x, side) if self.stepwise else float(np.interp(x, self.x, self.idx))
        return float(np.floor(found) if side == "start" else np.ceil(found))

    def _epoch_idx(self, x: float, side: str) -> float:
        if side == "start":  # where the first epoch at or after x begins
            return self.idx[min(int(np.searchsorted(self.x, x, side="left")), len(self.idx) - 1)]
        after = int(np.searchsorted(self.x, x, side="right"))  # the first epoch after the window
        return self.idx[after] - 1 if after < len(self.idx) else np.inf


def window_args(args, axis: XAxis | None):
    """The query's start/stop, in idx: given in the axis' units when it is not idx."""
    if axis is None:
        return args
    converted = MultiDict(args)
    for side in ("start", "stop"):
        raw = args.get(side)
        if raw not in (None, ""):
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise ApiError(400, f"{side} must be a finite number")
            converted[side] = str(int(min(max(axis.to_idx(value, side), INT64_MIN), INT64_MAX)))
    return converted


def series_body(r: Run, name: str, args, axes: dict | None = None) -> dict[str, Any]:
    """A series window as the series endpoint answers it (``args``: its query parameters).
    ``x``: idx (default), epoch, time or relative; the points' x values are then those."""
    x = args.get("x") or "idx"
    if x not in X_AXES:
        raise ApiError(400, f"x must be one of {', '.join(X_AXES)}")
    # ``axes``: one request's x axes by (run, kind), read once however many charts share them.
    axis = None
    if x != "idx":
        cache = axes if axes is not None else {}
        axis = cache.get((r.id, x)) or cache.setdefault((r.id, x), XAxis(r, x))
    args = window_args(args, axis)
    max_points = int_arg("max_points", MAX_POINTS, 2, MAX_POINTS_ASKED, args=args)
    whole = args.get("start") in (None, "") and args.get("stop") in (None, "")
    try:
        info = r.series_meta(name)
    except LabstatsError:
        info = {}  # series_window below answers 404
    if whole and info.get("kind") in ("f", "i", "b") and info.get("count", 0) > max_points:
        # The whole of a long series: start from the chunk summaries, not every point.
        s, total = r.overview(name), info["count"]
    else:
        s = series_window(r, name, args)
        total = len(s)
    if is_numeric(s):
        values = s.values.astype(np.int8) if s.values.dtype.kind == "b" else s.values
        idx, values = downsample(s.idx, values, max_points)
        body = {"idx": idx.tolist(), "values": finite(values)}
    else:
        keep = slice(max(0, total - min(max_points, MAX_OBJECTS_SENT)), total)  # objects: the latest ones
        body = {"idx": s.idx[keep].tolist(), "values": [describe(v) for v in list(s.values)[keep]]}
    if axis is not None and body["idx"]:
        body["idx"] = axis.of(np.asarray(body["idx"], dtype=np.float64)).tolist()
    if args.get("columns"):  # the charts' data source wants only the columns
        return body
    return {"name": name, "kind": s.kind, "total": total, "downsampled": len(body["idx"]) < total, **body}
