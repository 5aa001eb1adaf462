"""A single chart as a file for a paper: SVG or PNG, drawn here on the server (no browser on
the web box; Bokeh's own export needs one), downsampled as a run page's lines are: at most
2,000 points, the extremes kept, from up to 100,000 read (a window: all of its points).

    GET /runs/<source>/<run_id>/figure.svg?series=loss&x=epoch
    GET /runs/<source>/<run_id>/figure.png?series=loss&width=1600&height=1000

One layout (axes, ticks, labels, the line) is made in figure units, then written as small
hand-made SVG text or painted with Pillow."""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from xml.sax.saxutils import escape

import numpy as np
from flask import Blueprint, Response, request
from werkzeug.datastructures import MultiDict

from labstats.read.downsample import MAX_POINTS, downsample
from labstats.viewer.charts import WALL_IDX, WALL_LABEL
from labstats.viewer.data import ApiError, get_run, int_arg
from labstats.viewer.openapi import BINARY, STRING, declare, integer, one_of, page_errors, parameter
from labstats.viewer.pages import page_error
from labstats.viewer.windows import MAX_POINTS_ASKED, X_AXES, series_body

bp = Blueprint("figures", __name__)
bp.register_error_handler(ApiError, page_error)

FORMATS = ("svg", "png")
SIZE = {"svg": (640, 400), "png": (1280, 800)}  # default width × height (SVG: CSS pixels)
MIN_SIDE, MAX_SIDE = 200, 3000  # 3000 px: 10 inches at 300 dpi; at most 27 MB of pixels drawn
MAX_TITLE = 120  # characters of a title drawn; the rest is cut with …
LINE_COLOR = "#1f77b4"  # Bokeh's first line colour, as on the run page
INK = "#222222"
GRID = "#e5e5e5"

# The run page's x axes, and the System charts' own: an idx that is wall time in unix ms.
FIGURE_AXES = {**X_AXES, WALL_IDX: WALL_LABEL}
WALL_CLOCK = ("time", WALL_IDX)
FIGURE_FILE = {
    "description": "the figure",
    "content": {"image/svg+xml": {"schema": STRING}, "image/png": {"schema": BINARY}},
}
QUERY = [
    {**parameter("series", {"type": "string"}, "the series drawn (numeric)"), "required": True},
    one_of("x", FIGURE_AXES, "the x axis (default idx; wall-idx: the idx is unix ms, as sys/ series)"),
    parameter("start", {"type": "number"}, "the first x drawn (in the x axis' units; default: the start)"),
    parameter("stop", {"type": "number"}, "the last x drawn (default: the end)"),
    integer("width", MIN_SIDE, MAX_SIDE, "the figure's width in pixels"),
    integer("height", MIN_SIDE, MAX_SIDE, "the figure's height in pixels"),
    parameter("title", {"type": "string", "maxLength": 200}, "the title (default run: series; empty: none)"),
]


@bp.get("/runs/<source>/<run_id>/figure.<fmt>")
@declare(
    "One series of a run as a figure for a paper (SVG or PNG), downsampled as on its page",
    query=QUERY,
    responses={**page_errors(400, 404), 200: FIGURE_FILE},
)
def figure(source: str, run_id: str, fmt: str):
    if fmt not in FORMATS:
        raise ApiError(404, "a figure is figure.svg or figure.png")
    name = request.args.get("series", "")
    if not name:
        raise ApiError(400, "say which series to draw (?series=NAME)")
    x_axis = request.args.get("x") or "idx"
    if x_axis not in FIGURE_AXES:
        raise ApiError(400, f"x must be one of {', '.join(FIGURE_AXES)}")
    width = int_arg("width", SIZE[fmt][0], MIN_SIDE, MAX_SIDE)
    height = int_arg("height", SIZE[fmt][1], MIN_SIDE, MAX_SIDE)
    title = request.args.get("title")
    if title is not None and len(title) > 200:
        raise ApiError(400, "a title has at most 200 characters")
    run = get_run(source, run_id)
    # Finer than the page's first view (the chunk summaries of a long series): up to 100,000
    # points read (the whole of most series), then the 2,000 kept that keep the extremes.
    query = {"x": "idx" if x_axis == WALL_IDX else x_axis, "max_points": str(MAX_POINTS_ASKED)}
    query |= {side: request.args[side] for side in ("start", "stop") if request.args.get(side)}
    body = series_body(run, name, MultiDict(query))
    if body["kind"] not in ("f", "i", "b"):
        raise ApiError(400, f"series {name[:100]!r} is not numeric: only numbers can be drawn as a figure")
    values = np.array([np.nan if v is None else v for v in body["values"]], dtype=np.float64)
    if not np.isfinite(values).any():
        raise ApiError(404, f"series {name[:100]!r} has no finite values to draw")
    xs, values = downsample(np.asarray(body["idx"], dtype=np.float64), values, MAX_POINTS)
    try:
        plot = layout(
            title=f"{run.display_name}: {name}" if title is None else title,
            x_label=FIGURE_AXES[x_axis] + (" (UTC)" if x_axis in WALL_CLOCK else ""),
            y_label=name,
            xs=xs.tolist(),
            ys=[None if math.isnan(v) else v for v in values.tolist()],
            time_axis=x_axis in WALL_CLOCK,
            width=width,
            height=height,
        )
    except ValueError as exc:
        raise ApiError(400, f"series {name[:100]!r} cannot be drawn: {exc}") from None
    data, mimetype = (to_svg(plot).encode(), "image/svg+xml") if fmt == "svg" else (to_png(plot), "image/png")
    response = Response(data, mimetype=mimetype)
    # A file name of plain characters only: run and series names are the training user's text.
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{run.name}-{name}").strip("._")[:100] or "figure"
    response.headers["Content-Disposition"] = f'inline; filename="{stem}.{fmt}"'
    return response


# ---- layout ------------------------------------------------------------------------------------


@dataclass
class Text:
    x: float
    y: float
    text: str
    size: float
    anchor: str  # Pillow's two letters: l/m/r horizontally, t/m/s (top, middle, baseline) vertically
    rotated: bool = False  # turned a quarter left (the y axis' label)


@dataclass
class Plot:
    """A figure in its own units (SVG pixels): what to draw, in order."""

    width: int
    height: int
    lines: list[tuple[list[tuple[float, float]], str, float]] = field(default_factory=list)
    dots: list[tuple[float, float, float]] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)


def layout(*, title, x_label, y_label, xs, ys, time_axis, width, height) -> Plot:
    """Axes with ticks and labels around the line through (xs, ys); a None in ys breaks it.
    ValueError when the values cannot be placed on axes (their span overflows)."""
    finite = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and math.isfinite(x)]
    x_lo, x_hi = _span([x for x, _ in finite], pad=0.0)
    y_lo, y_hi = _span([y for _, y in finite], pad=0.05)
    if not math.isfinite(x_hi - x_lo) or not math.isfinite(y_hi - y_lo):
        raise ValueError("its values span more than a float holds")
    scale = min(width / 640, height / 400)
    tick_size, label_size, title_size = 11 * scale, 12 * scale, 14 * scale
    y_ticks = nice_ticks(y_lo, y_hi)
    y_texts = tick_labels(y_ticks)
    x_ticks = time_ticks(x_lo, x_hi) if time_axis else nice_ticks(x_lo, x_hi)
    x_texts = time_labels(x_ticks, x_hi - x_lo) if time_axis else tick_labels(x_ticks)
    # Room for the longest tick label (about 0.6 em a character) and the rotated axis label.
    left = max(len(t) for t in y_texts) * 0.6 * tick_size + 2.2 * label_size + 12 * scale
    top = (2.4 * title_size if title else 0) + 10 * scale
    bottom, right = 1.5 * tick_size + 1.6 * label_size + 16 * scale, 24 * scale
    x0, x1, y0, y1 = left, width - right, height - bottom, top  # plot area: y grows downward

    def px(x: float) -> float:
        return x0 + (x - x_lo) / (x_hi - x_lo) * (x1 - x0)

    def py(y: float) -> float:
        return y0 - (y - y_lo) / (y_hi - y_lo) * (y0 - y1)

    plot = Plot(width, height)
    tick = 5 * scale
    for value, text in zip(y_ticks, y_texts, strict=True):
        plot.lines.append(([(x0, py(value)), (x1, py(value))], GRID, scale))
        plot.lines.append(([(x0 - tick, py(value)), (x0, py(value))], INK, scale))
        plot.texts.append(Text(x0 - tick - 3 * scale, py(value), text, tick_size, "rm"))
    for value, text in zip(x_ticks, x_texts, strict=True):
        plot.lines.append(([(px(value), y0), (px(value), y0 + tick)], INK, scale))
        plot.texts.append(Text(px(value), y0 + tick + 3 * scale, text, tick_size, "mt"))
    plot.lines.append(([(x0, y1), (x0, y0), (x1, y0)], INK, scale))  # the axes
    for segment in _segments(xs, ys):
        points = [(px(x), py(y)) for x, y in segment]
        if len(points) == 1:  # a lone point draws no line: a dot
            plot.dots.append((*points[0], 2.5 * scale))
        else:
            plot.lines.append((points, LINE_COLOR, 1.5 * scale))
    plot.texts.append(Text((x0 + x1) / 2, height - 6 * scale, x_label, label_size, "ms"))
    plot.texts.append(
        Text(6 * scale + label_size / 2, (y0 + y1) / 2, y_label, label_size, "mm", rotated=True)
    )
    if title:
        plot.texts.append(Text((x0 + x1) / 2, 6 * scale + title_size, title, title_size, "ms"))
    for text in plot.texts:
        text.text = _printable(text.text)
    return plot


def _span(values: list[float], pad: float) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi == lo:  # one value: a band around it
        half = abs(lo) * 0.1 or 1.0
        return lo - half, hi + half
    margin = (hi - lo) * pad
    return lo - margin, hi + margin


def _segments(xs, ys):
    """Runs of consecutive finite points (NaN and infinities break the line, as on the page)."""
    segment = []
    for x, y in zip(xs, ys, strict=True):
        if y is None or not math.isfinite(x):
            if segment:
                yield segment
            segment = []
        else:
            segment.append((x, y))
    if segment:
        yield segment


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round values (1, 2, 2.5 or 5 × 10^k apart) within [lo, hi], as close to ``count`` of
    them as such a spacing gives."""
    magnitude = 10 ** math.floor(math.log10((hi - lo) / count))
    steps = [m * magnitude * scale for scale in (0.1, 1, 10) for m in (1, 2, 2.5, 5)]
    step = min(steps, key=lambda s: (abs((hi - lo) / s - count), -s))
    first = math.ceil(lo / step - 1e-9)
    ticks = [k * step for k in range(first, first + count * 3) if k * step <= hi + step * 1e-9]
    return [0.0 if abs(t) < step * 1e-9 else t for t in ticks]


def tick_labels(ticks: list[float]) -> list[str]:
    """The tick values as text, all with the digits their spacing needs."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else abs(ticks[0]) or 1.0
    largest = max(abs(t) for t in ticks)
    if largest >= 1e6 or (largest < 1e-3 and largest != 0):
        digits = max(1, math.ceil(math.log10(largest / step) + 1e-9) + 1)
        return [f"{t:.{digits}g}" for t in ticks]
    exponent = math.floor(math.log10(step) + 1e-9)
    half = abs(step / 10**exponent - 2.5) < 1e-6  # 0.25 apart needs one digit more than 0.2
    decimals = max(0, -exponent + half)
    return [f"{t:.{decimals}f}" for t in ticks]


# Wall-clock steps, in seconds: the first giving at most ~7 ticks is used.
TIME_STEPS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
              3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800, 2592000, 31536000]  # fmt: skip


def time_ticks(lo_ms: float, hi_ms: float) -> list[float]:
    span = (hi_ms - lo_ms) / 1000
    step = next((s for s in TIME_STEPS if span / s <= 7), None)
    if step is None:  # centuries: plain round numbers of milliseconds
        return nice_ticks(lo_ms, hi_ms)
    first = math.ceil(lo_ms / 1000 / step)
    return [k * step * 1000.0 for k in range(first, first + 10) if k * step * 1000 <= hi_ms]


def time_labels(ticks: list[float], span_ms: float) -> list[str]:
    days = span_ms / 86_400_000
    form = (
        "%Y-%m-%d"
        if days > 3
        else "%m-%d %H:%M"
        if days >= 1
        else "%H:%M"
        if span_ms >= 120_000
        else "%H:%M:%S"
    )
    out = []
    for t in ticks:
        try:
            when = datetime.fromtimestamp(t / 1000, UTC)
            out.append(when.strftime(form) + (f".{when.microsecond // 1000:03d}" if span_ms < 10_000 else ""))
        except (OverflowError, OSError, ValueError):  # a time outside what datetime holds
            out.append(f"{t / 1000:.0f}")
    return out


# Characters XML 1.0 cannot hold (a series name may): left out of every text drawn.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _printable(text: str) -> str:
    text = _NOT_XML.sub("", text).replace("\n", " ").replace("\r", " ").replace("\t", " ")
    return text if len(text) <= MAX_TITLE else text[: MAX_TITLE - 1] + "…"


# ---- SVG ---------------------------------------------------------------------------------------

_SVG_ANCHOR = {"l": "start", "m": "middle", "r": "end"}
_SVG_BASELINE = {"t": "hanging", "m": "central", "s": "alphabetic"}


def to_svg(plot: Plot) -> str:
    """The plot as standalone SVG text: every user text escaped, nothing fetched, no script."""
    w, h = plot.width, plot.height
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        'font-family="Helvetica, Arial, sans-serif">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
    ]
    for points, color, width in plot.lines:
        coords = " ".join(f"{x:.2f},{y:.2f}" for x, y in points)
        out.append(
            f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="{width:.2f}" '
            'stroke-linejoin="round" stroke-linecap="round"/>'
        )
    for x, y, r in plot.dots:
        out.append(f'<circle cx="{x:.2f}" cy="{y:.2f}" r="{r:.2f}" fill="{LINE_COLOR}"/>')
    for t in plot.texts:
        turn = f' transform="rotate(-90 {t.x:.2f} {t.y:.2f})"' if t.rotated else ""
        out.append(
            f'<text x="{t.x:.2f}" y="{t.y:.2f}" font-size="{t.size:.1f}" fill="{INK}" '
            f'text-anchor="{_SVG_ANCHOR[t.anchor[0]]}" dominant-baseline="{_SVG_BASELINE[t.anchor[1]]}"'
            f"{turn}>{escape(t.text)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---- PNG ---------------------------------------------------------------------------------------

MAX_SUPERSAMPLED = 16_000_000  # pixels: smaller figures are drawn at twice the size, then shrunk


def to_png(plot: Plot) -> bytes:
    """The plot painted with Pillow at exactly its size (drawn larger and shrunk, when small
    enough, so that lines and text are smooth)."""
    from PIL import Image, ImageDraw

    k = 2 if plot.width * plot.height * 4 <= MAX_SUPERSAMPLED else 1
    image = Image.new("RGB", (plot.width * k, plot.height * k), "white")
    draw = ImageDraw.Draw(image)
    for points, color, width in plot.lines:
        draw.line(
            [(x * k, y * k) for x, y in points], fill=color, width=max(1, round(width * k)), joint="curve"
        )
    for x, y, r in plot.dots:
        draw.ellipse([(x - r) * k, (y - r) * k, (x + r) * k, (y + r) * k], fill=LINE_COLOR)
    for t in plot.texts:
        font = _font(t.size * k)
        if not t.rotated:
            draw.text((t.x * k, t.y * k), t.text, fill=INK, font=font, anchor=t.anchor)
            continue
        box = draw.textbbox((0, 0), t.text, font=font, anchor="lt")
        label = Image.new("RGBA", (box[2] + 2, box[3] + 2), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((0, 0), t.text, fill=INK, font=font, anchor="lt")
        label = label.rotate(90, expand=True)
        image.paste(label, (round(t.x * k - label.width / 2), round(t.y * k - label.height / 2)), label)
    if k > 1:
        image = image.resize((plot.width, plot.height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _font(size: float):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=max(6, round(size)))  # Pillow ≥ 10.1, with FreeType
    except (TypeError, AttributeError, ImportError):
        return ImageFont.load_default()  # the small bitmap font
