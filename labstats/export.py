"""A run or a comparison as one self-contained HTML file: the charts still interactive
(BokehJS inline, once), the pictures embedded (their thumbnails), and nothing fetched from any
network when it is opened from disk (a Content-Security-Policy in the file forbids it, so a
hostile run name cannot make it call out either).

    labstats export-html RUN -o run.html
    labstats export-html RUN RUN ... [--series loss --series acc] -o comparison.html

or ``labstats.export.run_html(run)`` / ``compare_html(runs)`` (a string of HTML). The viewer
offers the same files from its run and compare pages. Long series are downsampled, keeping
their extremes (MAX_POINTS a line): a comparison of 10 charts of 3 runs is about 1.7 MB, most
of it BokehJS.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

import jinja2
import numpy as np
from bokeh.embed import components
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.palettes import Category10_10, Category20_20
from bokeh.plotting import figure
from bokeh.resources import Resources

from labstats import __version__
from labstats.config import LabstatsError
from labstats.format import media_files
from labstats.format.keys import AXIS_SERIES
from labstats.read.downsample import downsample
from labstats.reader import Run, number

MAX_POINTS = 1000  # a line's points in the file (extremes kept)
MAX_READ = 1_000_000  # points of a series read to make them
MAX_CHARTS = 40
MAX_PICTURES = 8  # a media name's pictures, evenly chosen over its steps
MAX_MEDIA_NAMES = 12
MAX_RUNS = 20  # runs in one comparison (as the viewer's compare page)
MAX_TEXT = 2000  # characters of a text series' latest value, of a config value

# Nothing from outside: no script, style, picture or font but what the file holds.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data:; font-src data:; base-uri 'none'; form-action 'none'"
)

# The page (labstats/templates/export.html): every user text is escaped.
_TEMPLATE = jinja2.Environment(loader=jinja2.PackageLoader("labstats"), autoescape=True).get_template(
    "export.html"
)


def run_html(run: Run) -> str:
    """One run: its record and config, a chart per numeric series, the latest value of each
    text series, and the pictures of its image media at evenly chosen steps."""
    info = run.series_info()
    numeric = [
        n for n, i in sorted(info.items()) if i.get("kind") in ("f", "i", "b") and n not in AXIS_SERIES
    ]
    figures = [
        _line_chart(name, [(name, *_points(run, name), Category10_10[0])]) for name in numeric[:MAX_CHARTS]
    ]
    texts = [
        (name, _text(run.latest(name)), None)
        for name, i in sorted(info.items())
        if i.get("kind") == "o" and name not in AXIS_SERIES
    ][:MAX_CHARTS]
    tables = [{"title": "Run", "rows": _record_rows(run)}]
    if run.config:
        tables.append({"title": "Config", "rows": [(k, _text(v), None) for k, v in _flat(run.config)]})
    if texts:
        tables.append({"title": "Latest values", "rows": texts})
    return _page(run.display_name, tables, figures, _pictures(run), _left_out(len(numeric), MAX_CHARTS))


def compare_html(runs: Iterable[Run], series: list[str] | None = None) -> str:
    """Several runs: a chart per series with a line per run (each run its colour on every
    chart), and their records and configs side by side."""
    runs = list(runs)
    if not 1 <= len(runs) <= MAX_RUNS:
        raise LabstatsError(f"compare between 1 and {MAX_RUNS} runs, not {len(runs)}")
    palette = Category10_10 if len(runs) <= 10 else Category20_20
    colors = {run.id: palette[n % len(palette)] for n, run in enumerate(runs)}
    infos = {run.id: run.series_info() for run in runs}
    found = sorted(
        {n for info in infos.values() for n, i in info.items() if i.get("kind") in ("f", "i", "b")}
        - AXIS_SERIES
    )
    names = found if series is None else [n for n in series if n in found]
    if series is not None and not names:
        raise LabstatsError(f"none of the runs has a numeric series named {', '.join(series)}")
    figures = [
        _line_chart(
            name,
            [
                (run.display_name, *_points(run, name), colors[run.id])
                for run in runs
                if name in infos[run.id]
            ],
        )
        for name in names[:MAX_CHARTS]
    ]
    rows = [
        (
            run.display_name,
            f"{run.id}  {run.status}  started {_when(run.meta.get('started'))}",
            colors[run.id],
        )
        for run in runs
    ]
    tables = [{"title": "Runs", "rows": rows}]
    keys = sorted({k for run in runs for k, _ in _flat(run.config)})
    for key in keys:
        values = [dict(_flat(run.config)).get(key) for run in runs]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:  # only what differs
            tables.append(
                {
                    "title": f"Config: {key}",
                    "rows": [
                        (run.display_name, _text(v), colors[run.id])
                        for run, v in zip(runs, values, strict=True)
                    ],
                }
            )
    title = f"{runs[0].display_name} and {len(runs) - 1} more" if len(runs) > 1 else runs[0].display_name
    return _page(f"Comparison: {title}", tables, figures, [], _left_out(len(names), MAX_CHARTS))


def _page(title: str, tables: list[dict], figures: list, pictures: list[dict], note: str) -> str:
    script, divs = components(figures) if figures else ("", ())
    return _TEMPLATE.render(
        csp=CSP,
        title=title,
        tables=tables,
        charts=list(divs),
        pictures=pictures,
        bokeh_js=Resources(mode="inline", components=["bokeh"]).render_js() if figures else "",
        chart_script=script,
        version=__version__,
        exported=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        note=note,
    )


def _points(run: Run, name: str) -> tuple[np.ndarray, np.ndarray]:
    # Every point read up to MAX_READ (then downsampled to the line's MAX_POINTS, extremes
    # kept); a longer series from its chunk summaries, as the viewer draws it.
    count = run.series_meta(name).get("count", 0)
    s = run.series(name) if count <= MAX_READ else run.overview(name)
    values = np.asarray(s.values, dtype=np.float64)
    keep = np.isfinite(values)  # a NaN or an infinity would break the line
    idx, values = downsample(s.idx[keep], values[keep], MAX_POINTS)
    return np.asarray(idx, dtype=np.float64), np.asarray(values, dtype=np.float32)


def _line_chart(title: str, lines: list[tuple[str, np.ndarray, np.ndarray, str]]):
    fig = figure(
        title=title,
        height=280,
        sizing_mode="stretch_width",
        x_axis_label="idx",
        tools="xpan,xwheel_zoom,box_zoom,reset,save",
        active_scroll="xwheel_zoom",
    )
    for label, idx, values, color in lines:
        source = ColumnDataSource({"idx": idx, "value": values})
        kwargs = {"legend_label": label} if len(lines) > 1 else {}
        fig.line("idx", "value", source=source, color=color, line_width=1.5, **kwargs)
        if len(idx) == 1:  # a line of one point draws nothing
            fig.scatter("idx", "value", source=source, color=color, size=7)
    fig.add_tools(HoverTool(tooltips=[("idx", "@idx"), ("value", "@value")]))
    if len(lines) > 1:
        fig.legend.click_policy = "hide"
        fig.legend.location = "top_left"
    return fig


def _pictures(run: Run) -> list[dict[str, Any]]:
    out = []
    images = [name for name, kind in run.media_names().items() if kind in ("image", "fits")]
    for name in images[:MAX_MEDIA_NAMES]:
        shown = []
        for step in media_files.evenly(run.media_steps(name), MAX_PICTURES):
            thumb = run.thumbnail(name, step, max_bytes=media_files.THUMB_READ_MAX_BYTES)
            if thumb and thumb[:4] == b"RIFF" and thumb[8:12] == b"WEBP":  # only what it says it is
                shown.append((step, "data:image/webp;base64," + base64.b64encode(thumb).decode()))
        if shown:
            out.append({"name": name, "pictures": shown})
    return out


def _record_rows(run: Run) -> list[tuple[str, str, None]]:
    meta = run.meta
    ann = run.annotations  # what people said after the fact, shown as text (escaped)
    rows = [("name", run.display_name)]
    if ann.name:
        rows.append(("logged as", run.name))
    rows += [
        ("id", run.id),
        ("status", run.status),
        ("started", _when(meta.get("started"))),
        ("ended", _when(meta.get("ended"))),
        ("host", str(meta.get("host", "-"))),
        ("tags", ", ".join(ann.tags) or "-"),
    ]
    if ann.project:
        rows.append(("project", ann.project))
    if run.reason:
        rows.append(("reason", run.reason))
    rows = [(k, _text(v), None) for k, v in rows]
    if ann.note:  # the whole note (at most 64 KiB), its markdown as written
        rows.append(("note", ann.note, None))
    return rows


def _flat(config: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in sorted(config.items(), key=lambda kv: str(kv[0])):
        if isinstance(value, dict) and value:
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _text(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 2:  # run.latest(): (idx, value)
        value = value[1]
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def _when(value: Any) -> str:
    seconds = number(value)
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _left_out(total: int, shown: int) -> str:
    return f"{total - shown} more series left out (at most {shown} charts)." if total > shown else ""


# ---- building blocks for other one-file pages (the viewer's reports) ------------------------


def inline_bokeh_js() -> str:
    """BokehJS as one inline <script> (what every exported file holds once)."""
    return Resources(mode="inline", components=["bokeh"]).render_js()


def chart_item(title: str, run: Run, names: list[str], target: str) -> dict[str, Any]:
    """A chart of ``run``'s numeric series ``names`` (a line each, against idx, at most
    MAX_POINTS points a line, extremes kept) as a Bokeh JSON item with its points inline,
    for ``Bokeh.embed.embed_item`` in a file that asks no network."""
    from bokeh.embed import json_item

    lines = [(name, *_points(run, name), Category10_10[k % 10]) for k, name in enumerate(names)]
    return json_item(_line_chart(title, lines), target)


def picture_uri(run: Run, name: str, step: int) -> str | None:
    """The thumbnail of ``run``'s media ``name`` at ``step`` as a data: URI (WebP, at most
    256 px), or None when it has none or it is not the WebP it should be."""
    thumb = run.thumbnail(name, step, max_bytes=media_files.THUMB_READ_MAX_BYTES)
    if thumb and thumb[:4] == b"RIFF" and thumb[8:12] == b"WEBP":  # only what it says it is
        return "data:image/webp;base64," + base64.b64encode(thumb).decode()
    return None


def time_text(value: Any) -> str:
    """Unix seconds as the files show a time (UTC), "-" for what is not a number."""
    return _when(value)
