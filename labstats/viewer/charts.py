"""Bokeh charts for the pages. Numeric series load their points from the API (downsampled
overview, full resolution once zoomed into a window) and poll it while the run is running."""

from __future__ import annotations

import functools
import json
import re
from urllib.parse import quote

import numpy as np
from bokeh import events
from bokeh.embed import json_item
from bokeh.models import (
    AjaxDataSource,
    ColorBar,
    ColumnDataSource,
    CustomJS,
    CustomJSHover,
    CustomJSTickFormatter,
    HoverTool,
    LinearColorMapper,
)
from bokeh.palettes import Category10_10, Viridis256
from bokeh.plotting import figure

from labstats.viewer.windows import X_AXES

LIVE_TAG = "labstats-live"  # marks the data sources viewer.js refreshes while a run runs
# The x axis of series whose idx is the wall time in unix ms (the run's sys/ series): drawn
# as dates, zoomed in whole idx like the step axis.
WALL_IDX = "wall-idx"
WALL_LABEL = "wall-clock time"

# Units a chart's y axis and hover can say (from the series' name; see system_group.unit_of):
# each a JS expression of `v` (a number) giving its text. Bytes go to the largest binary unit
# they reach (1.5 GiB), so a GPU's 80 GiB is not read as 85899345920.
_UNIT_TEXT = {
    "bytes": "labstatsBytes(v, '')",
    "bytes_per_s": "labstatsBytes(v, '/s')",
    "percent": "(Math.round(v * 10) / 10) + ' %'",
    "watts": "(Math.round(v * 10) / 10) + ' W'",
    "celsius": "(Math.round(v * 10) / 10) + ' \u00b0C'",
    "flag": "(v >= 0.5 ? 'yes' : 'no')",
}
# On an axis (ticks: all of its ticks) every tick takes the unit of the largest and as many
# decimals as the spacing needs, so that ticks 0.05 GiB apart do not all read "1.1 GiB".
_AXIS_TEXT = {
    **_UNIT_TEXT,
    "bytes": "labstatsBytes(v, '', ticks)",
    "bytes_per_s": "labstatsBytes(v, '/s', ticks)",
}
BYTES_JS = """
function labstatsBytes(v, suffix, ticks) {
  const units = [[1099511627776, "TiB"], [1073741824, "GiB"], [1048576, "MiB"], [1024, "KiB"], [1, "B"]];
  const top = ticks ? Math.max(...ticks.map(Math.abs)) : Math.abs(v);
  const [size, name] = units.find(([size]) => top >= size) || units[units.length - 1];
  let decimals = 1;
  if (ticks && ticks.length > 1) {
    const step = Math.abs(ticks[1] - ticks[0]) / size;
    decimals = step > 0 ? Math.min(4, Math.max(0, Math.ceil(-Math.log10(step)))) : 1;
  }
  return (v / size).toFixed(decimals).replace(/\\.0+$/, "") + " " + name + suffix;
}
"""

# A user's zoom or pan (not the automatic ranging as data arrives, which must not freeze a
# live chart's window) asks the API for the visible window, at full resolution when few
# enough points; debounced so that a drag does not send a request per frame. Reset goes
# back to the whole series.
_ZOOM_JS = """
clearTimeout(fig._labstats_timer);
fig._labstats_timer = setTimeout(() => {
  // idx windows are whole numbers; the other axes (time, epoch) are sent as they are.
  const start = exact ? cb_obj.x0 : Math.floor(cb_obj.x0), stop = exact ? cb_obj.x1 : Math.ceil(cb_obj.x1);
  for (const [source, url] of sources) {
    source.data_url = url + "&start=" + start + "&stop=" + stop;
    source.get_data("replace");
  }
}, 250);
"""
_RESET_JS = """
for (const [source, url] of sources) {
  source.data_url = url;
  source.get_data("replace");
}
"""


def series_url(source: str, run_id: str, name: str, x_axis: str = "idx") -> str:
    """The URL a chart's line loads its points from, against ``x_axis`` (one of X_AXES)."""
    url = (
        f"/api/runs/{quote(source, safe='')}/{quote(run_id, safe='')}/series/{quote(name, safe='')}?columns=1"
    )
    return url if x_axis == "idx" else f"{url}&x={x_axis}"


def line_chart(
    title: str,
    lines: list[tuple[str, str]],
    live: bool,
    target: str,
    log_y: bool = False,
    colors: list[str] | None = None,
    x_axis: str = "idx",
    unit: str = "",
) -> dict:
    """A chart with one line per (legend label, data URL), as a Bokeh JSON item; ``log_y``
    for a logarithmic y axis; ``colors`` one per line (default: Category10 in order; the
    compare page gives each run its own colour on every chart). ``x_axis`` WALL_IDX draws
    an idx that is wall time (unix ms) as dates; ``unit`` (a key of _UNIT_TEXT) says the y
    values in it.

    Building a Bokeh figure costs ~25 ms, so one is built per (line count, live, log) and
    reused: its model ids are made unique per chart and the placeholders filled in."""
    text = _ID.sub(
        lambda m: f'"{target}-{m.group(1)}"', _chart_template(len(lines), live, log_y, x_axis, unit)
    )
    # Colours first: the title and labels filled in below are user text.
    for k, color in enumerate(colors or [Category10_10[k % 10] for k in range(len(lines))]):
        text = text.replace(f'"{_slot_color(k)}"', json.dumps(color))
    fills = {"__TITLE__": title, "__TARGET__": target}
    for k, (label, url) in enumerate(lines):
        fills[f"__LABEL_{k}__"] = label
        fills[f"__URL_{k}__"] = url
    # Longest placeholders first, so __URL_1__ never eats the start of __URL_10__.
    for key in sorted(fills, key=len, reverse=True):
        text = text.replace(key, json.dumps(fills[key])[1:-1])
    return json.loads(text)


_ID = re.compile(r'"(p\d+)"')


def _slot_color(k: int) -> str:
    """The placeholder colour of line k in a chart template (replaced by the real one)."""
    return f"#0c0{k:03x}"


@functools.lru_cache(maxsize=64)
def _chart_template(n_lines: int, live: bool, log_y: bool, x_axis: str, unit: str = "") -> str:
    lines = [(f"__LABEL_{k}__", f"__URL_{k}__") for k in range(n_lines)]
    return json.dumps(_build_line_chart("__TITLE__", lines, live, "__TARGET__", log_y, x_axis, unit))


# When a line's points arrive, viewer.js redraws what depends on them: the smoothed line,
# the marker of a one-point series, the clipped y range (labstatsRedraw, page controls).
_REDRAW_JS = "if (window.labstatsRedraw) window.labstatsRedraw(fig);"


def _build_line_chart(
    title: str,
    lines: list[tuple[str, str]],
    live: bool,
    target: str,
    log_y: bool,
    x_axis: str = "idx",
    unit: str = "",
) -> dict:
    fig = figure(
        title=title,
        height=260,
        sizing_mode="stretch_width",
        x_axis_label=WALL_LABEL if x_axis == WALL_IDX else X_AXES[x_axis],
        x_axis_type="datetime" if x_axis in ("time", WALL_IDX) else "linear",
        y_axis_type="log" if log_y else "linear",
        tools="xpan,xwheel_zoom,box_zoom,reset,save",
        active_scroll="xwheel_zoom",
        output_backend="canvas",
    )
    pairs = []
    for n, (label, url) in enumerate(lines):
        # Live sources do not poll on their own: viewer.js fetches every live chart of the
        # page in one request per second (POST /api/live).
        source = AjaxDataSource(
            data_url=url,
            method="GET",
            mode="replace",
            data={"idx": [], "values": []},
            tags=[LIVE_TAG] if live else [],
        )
        color = _slot_color(n)
        kwargs = {"legend_label": label} if len(lines) > 1 else {}
        fig.line("idx", "values", source=source, color=color, line_width=1.5, name=f"raw-{n}", **kwargs)
        # The smoothed line (an EMA viewer.js computes from the raw points) and the marker a
        # series of one point needs (a line of one point draws nothing): shown on demand.
        smooth = ColumnDataSource({"idx": [], "values": []})
        fig.line("idx", "values", source=smooth, color=color, line_width=2, name=f"smooth-{n}", visible=False)
        fig.scatter("idx", "values", source=source, color=color, size=7, name=f"dot-{n}", visible=False)
        source.js_on_change("data", CustomJS(args={"fig": fig}, code=_REDRAW_JS))
        pairs.append((source, url))
    fig.add_tools(_hover(x_axis, unit))
    if unit in _UNIT_TEXT:
        code = f"{BYTES_JS}\nconst v = tick;\nreturn {_AXIS_TEXT[unit]};"
        fig.yaxis.formatter = CustomJSTickFormatter(code=code)
    if len(lines) > 1:
        fig.legend.click_policy = "hide"
        fig.legend.location = "top_left"
    # A wall-time idx is zoomed in whole idx (the series endpoint's start/stop), as idx is.
    exact = x_axis not in ("idx", WALL_IDX)
    zoom = CustomJS(args={"fig": fig, "sources": pairs, "exact": exact}, code=_ZOOM_JS)
    fig.js_on_event(events.RangesUpdate, zoom)
    fig.js_on_event(events.Reset, CustomJS(args={"sources": pairs}, code=_RESET_JS))
    return json_item(fig, target)


def _hover(x_axis: str, unit: str) -> HoverTool:
    """The hover of a line chart: x as a date on a wall-time axis, y in its unit."""
    x_field, formatters = ("idx", "@idx"), {}
    if x_axis == WALL_IDX:
        x_field = ("time", "@idx{%F %T}")
        formatters["@idx"] = "datetime"
    y_field = ("value", "@values")
    if unit in _UNIT_TEXT:
        y_field = ("value", "@values{custom}")
        formatters["@values"] = CustomJSHover(
            code=f"{BYTES_JS}\nconst v = value;\nreturn {_UNIT_TEXT[unit]};"
        )
    return HoverTool(tooltips=[x_field, y_field], formatters=formatters, mode="vline")


# A tensor is sent to the browser whole only while it is small: a 4096×4096 weight would be
# ~100 MB of JSON and freeze the page. Larger ones are reduced to what a screen can show.
MAX_LINE_BUCKETS = 2000  # a 1-D tensor longer than twice this is drawn as min/max per bucket
MAX_IMAGE_SIDE = 1024  # a heat-map larger than this on a side is drawn as block means


def tensor_chart(title: str, value: np.ndarray, idx: int, target: str) -> dict:
    """A 1-D tensor as a line over its elements; a uint8 H×W×3 (or ×4) array as the colour
    picture it is; anything else as a heat-map (first axis × the rest flattened). Row 0 is
    at the top, as in the array. Large tensors are reduced for the screen, and the title
    says how."""
    if value.dtype == np.uint8 and value.ndim == 3 and value.shape[-1] in (3, 4):
        return _picture_chart(title, value, idx, target)
    # float32 where it is exact (float16, bfloat16 upcast, small ints, float32): half the bytes
    data = np.asarray(value, dtype=np.result_type(value.dtype, np.float32))
    if data.ndim <= 1:
        return _line_tensor_chart(title, data.reshape(-1), idx, target)
    image = data.reshape(data.shape[0], -1)
    rows, cols = image.shape
    image, note = block_means(image, MAX_IMAGE_SIDE)
    finite = image[np.isfinite(image)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    mapper = LinearColorMapper(palette=Viridis256, low=low, high=high if high > low else low + 1)
    fig = figure(
        title=f"{title} at idx {idx} (shape {list(value.shape)}{note})",
        height=320,
        sizing_mode="stretch_width",
        x_range=(0, cols),
        y_range=(rows, 0),  # row 0 at the top
        tools="pan,wheel_zoom,box_zoom,reset,save,hover",
        tooltips=[("row", "$y{0}"), ("column", "$x{0}"), ("value", "@image")],
    )
    # the (reduced) image still spans the tensor's own rows and columns, so the axes and
    # the hover's row and column are the tensor's
    fig.image(image=[image], x=0, y=0, dw=cols, dh=rows, color_mapper=mapper)
    fig.add_layout(ColorBar(color_mapper=mapper), "right")
    return json_item(fig, target)


def block_means(image: np.ndarray, side: int) -> tuple[np.ndarray, str]:
    """``image`` shrunk to at most ``side`` × ``side`` by the mean of each block (NaNs and
    the padding of the last blocks left out), with a note for the title; small images
    pass unchanged with an empty note."""
    rows, cols = image.shape
    fr, fc = -(-rows // side), -(-cols // side)  # ceiling division
    if fr == 1 and fc == 1:
        return image, ""
    padded = np.full((-(-rows // fr) * fr, -(-cols // fc) * fc), np.nan, image.dtype)
    padded[:rows, :cols] = image
    blocks = padded.reshape(padded.shape[0] // fr, fr, padded.shape[1] // fc, fc)
    finite = np.isfinite(blocks)
    counts = finite.sum(axis=(1, 3))
    sums = np.where(finite, blocks, 0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums / counts).astype(image.dtype)  # a block with no finite value is NaN
    return means, f", shown as means of {fr}×{fc} blocks"


def _line_tensor_chart(title: str, flat: np.ndarray, idx: int, target: str) -> dict:
    fig = figure(
        title=f"{title} at idx {idx}",
        height=260,
        sizing_mode="stretch_width",
        x_axis_label="element",
        tools="pan,wheel_zoom,box_zoom,reset,save",
    )
    if len(flat) <= 2 * MAX_LINE_BUCKETS:
        fig.line(x=np.arange(len(flat)), y=flat, line_width=1.5)
        return json_item(fig, target)
    # A line through a million points fills, in each pixel column, the band between that
    # column's lowest and highest value: drawing that band per bucket looks the same and
    # keeps every spike. Both edges are drawn, so a smooth tensor still shows as a line.
    starts, low, high = bucket_extremes(flat, MAX_LINE_BUCKETS)
    fig.title.text += f" ({len(flat):,} elements, min and max of {len(starts):,} buckets)"
    fig.varea(x=starts, y1=low, y2=high, fill_alpha=0.35)
    for edge in (low, high):
        fig.line(x=starts, y=edge, line_width=1)
    return json_item(fig, target)


def bucket_extremes(flat: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first index, lowest and highest value of each of ``buckets`` equal runs of
    ``flat`` (NaNs left out; a bucket of NaNs only gives NaN)."""
    starts = np.linspace(0, len(flat), buckets, endpoint=False).astype(np.int64)
    with np.errstate(invalid="ignore"):
        low = np.fmin.reduceat(flat, starts)
        high = np.fmax.reduceat(flat, starts)
    return starts, low, high


def _picture_chart(title: str, value: np.ndarray, idx: int, target: str) -> dict:
    h, w, channels = value.shape
    rgba = np.full((h, w, 4), 255, np.uint8)
    rgba[..., :channels] = value
    fig = figure(
        title=f"{title} at idx {idx} (picture {h}×{w})",
        height=min(640, max(160, 4 * h)),
        sizing_mode="stretch_width",
        x_range=(0, w),
        y_range=(h, 0),  # row 0 at the top
        match_aspect=True,
        tools="pan,wheel_zoom,box_zoom,reset,save",
    )
    fig.image_rgba(image=[rgba.view(np.uint32).reshape(h, w)], x=0, y=0, dw=w, dh=h)
    return json_item(fig, target)


def histogram_chart(
    title: str, steps: list[int], packed: list[np.ndarray], target: str, rows: int = 64
) -> dict:
    """Histograms over steps (``watch(..., kind="histogram")``) as a heat-map: x the step,
    y the value, colour the share of values in that bin. Each step's own bins (between its
    min and max) are spread onto ``rows`` common value bins."""
    lows = np.array([p[0] for p in packed], dtype=np.float64)
    highs = np.array([p[1] for p in packed], dtype=np.float64)
    ok = np.isfinite(lows) & np.isfinite(highs) & (highs >= lows)
    low = float(lows[ok].min()) if ok.any() else 0.0
    high = float(highs[ok].max()) if ok.any() else 1.0
    high = high if high > low else low + 1.0
    image = np.zeros((rows, len(packed)))
    for col, hist in enumerate(packed):
        counts = np.asarray(hist[2:], dtype=np.float64)
        if not ok[col] or not counts.sum():
            continue
        edges = np.linspace(hist[0], hist[1], len(counts) + 1)
        centers = (edges[:-1] + edges[1:]) / 2
        index = np.clip(((centers - low) / (high - low) * rows).astype(int), 0, rows - 1)
        np.add.at(image[:, col], index, counts / counts.sum())
    mapper = LinearColorMapper(palette=Viridis256, low=0, high=float(image.max()) or 1.0)
    first, last = (steps[0], steps[-1]) if steps else (0, 1)
    width = (last - first) / max(len(steps) - 1, 1) if len(steps) > 1 else 1
    fig = figure(
        title=f"{title}: distribution over steps",
        height=320,
        sizing_mode="stretch_width",
        x_range=(first, last + width),
        y_range=(low, high),
        x_axis_label="idx",
        tools="pan,wheel_zoom,box_zoom,reset,save,hover",
        tooltips=[("idx", "$x{0}"), ("value", "$y"), ("share", "@image")],
    )
    fig.image(image=[image], x=first, y=low, dw=last + width - first, dh=high - low, color_mapper=mapper)
    fig.add_layout(ColorBar(color_mapper=mapper), "right")
    return json_item(fig, target)


def parallel_coordinates(axes: list[tuple[str, list]], lines: list[tuple[str, str]], target: str) -> dict:
    """Parallel coordinates: one vertical axis per (name, values) — numbers scaled between
    their min and max, anything else placed by its sorted distinct values — and one line per
    run (label, page URL), coloured by the last axis (the metric). Clicking a line opens
    its run. A run without a value on an axis has a gap there."""
    from bokeh.models import FixedTicker, LabelSet, OpenURL, TapTool
    from bokeh.transform import linear_cmap

    n_axes = len(axes)
    positions, labels = [], []
    for k, (_, values) in enumerate(axes):
        numbers = [
            v for v in values if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
        ]
        if len(numbers) == len([v for v in values if v is not None]) and numbers:
            low, high = min(numbers), max(numbers)
            span = (high - low) or 1.0
            positions.append([(v - low) / span if v in numbers else np.nan for v in values])
            labels += [(k, 0.0, _tick(low)), (k, 1.0, _tick(high))]
        else:
            distinct = sorted({json.dumps(v, sort_keys=True, default=str) for v in values if v is not None})
            place = {
                v: (i / (len(distinct) - 1) if len(distinct) > 1 else 0.5) for i, v in enumerate(distinct)
            }
            positions.append([place[json.dumps(v, sort_keys=True, default=str)] if v is not None else np.nan
                              for v in values])  # fmt: skip
            labels += [(k, place[v], json.loads(v) if v.startswith('"') else v) for v in distinct]
    metric = positions[-1]
    source = ColumnDataSource({
        "xs": [list(range(n_axes)) for _ in lines],
        "ys": [[positions[k][i] for k in range(n_axes)] for i in range(len(lines))],
        "name": [label for label, _ in lines],
        "url": [url for _, url in lines],
        "metric": [m if np.isfinite(m) else 0.5 for m in metric],
    })  # fmt: skip
    fig = figure(title="hyperparameters against " + axes[-1][0], height=420, sizing_mode="stretch_width",
                 x_range=(-0.3, n_axes - 0.7), y_range=(-0.08, 1.08), tools="tap,save,reset",
                 toolbar_location="right")  # fmt: skip
    fig.multi_line("xs", "ys", source=source, line_width=2, line_alpha=0.8, name="runs",
                   line_color=linear_cmap("metric", Viridis256, 0, 1), hover_line_width=4,
                   selection_line_width=4, nonselection_line_alpha=0.2)  # fmt: skip
    for k in range(n_axes):
        fig.line([k, k], [0, 1], color="#555", line_width=1)
    ticks = ColumnDataSource({"x": [x for x, _, _ in labels], "y": [y for _, y, _ in labels],
                              "text": [str(t) for _, _, t in labels]})  # fmt: skip
    fig.add_layout(LabelSet(x="x", y="y", text="text", source=ticks, x_offset=4, text_font_size="11px"))
    fig.xaxis.ticker = FixedTicker(ticks=list(range(n_axes)))
    fig.xaxis.major_label_overrides = {k: name for k, (name, _) in enumerate(axes)}
    fig.yaxis.visible = False
    fig.ygrid.visible = False
    fig.add_tools(HoverTool(tooltips=[("run", "@name")], renderers=fig.select(name="runs")))
    fig.select_one(TapTool).callback = OpenURL(url="@url", same_tab=True)
    return json_item(fig, target)


def _tick(value: float) -> str:
    return f"{value:.4g}"
