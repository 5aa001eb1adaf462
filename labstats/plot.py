"""Bokeh helpers for notebooks (needs the ``viewer`` extra: bokeh, tsdownsample).

import labstats, labstats.plot as lp
lp.notebook()                          # BokehJS once, from the bokeh package (no CDN), compressed
lab = labstats.connect()
run = lab.run("exp42")
lp.show(lp.series(run, "loss"))        # a long series, downsampled keeping extremes
lp.show(lp.overlay(lab.runs(tag="sweep"), "loss"))
lp.show(lp.heatmap(run, "weights"))    # a tensor's values over steps
lp.show(lp.metadata_table(run))
lp.show(lp.images(run, "samples"))     # media: a grid of pictures at chosen steps (Bokeh)
lp.montage(run, "samples")             # one PIL image (shown inline by Jupyter)
lp.animation(run, "samples")           # an animated GIF (bytes, shown inline)
"""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from collections.abc import Iterable

import numpy as np
from bokeh.embed import json_item
from bokeh.models import ColorBar, ColumnDataSource, DataTable, HoverTool, LinearColorMapper, TableColumn
from bokeh.palettes import Category10_10, Viridis256
from bokeh.plotting import figure

from labstats.format import media_files
from labstats.read.downsample import MAX_POINTS, downsample
from labstats.reader import LabstatsError, Run, Series, each_readable


def _points(run: Run, name: str, start: int | None, stop: int | None, max_points: int) -> Series:
    s = run.overview(name) if start is None and stop is None else run.series(name, start, stop)
    if not isinstance(s.values, np.ndarray) or s.values.dtype.kind not in "fiub":
        raise LabstatsError(f"series {name!r} of run {run.name!r} is not numeric")
    idx, values = downsample(s.idx, s.values.astype(np.float64), max_points)
    return Series(name, idx, values, s.kind)


def series(
    run: Run, name: str, start: int | None = None, stop: int | None = None, max_points: int = MAX_POINTS
):
    """One series of one run as a line chart (at most ``max_points`` points, extremes kept)."""
    return overlay([run], name, start, stop, max_points, title=f"{run.name}: {name}")


def overlay(
    runs: Iterable[Run],
    name: str,
    start: int | None = None,
    stop: int | None = None,
    max_points: int = MAX_POINTS,
    title: str | None = None,
):
    """The same series of several runs on one chart (click a legend entry to hide a run)."""
    runs = list(runs)
    fig = figure(
        title=title or name,
        height=320,
        sizing_mode="stretch_width",
        x_axis_label="idx",
        tools="xpan,xwheel_zoom,box_zoom,reset,save",
    )

    def points(run: Run) -> Series | None:
        return _points(run, name, start, stop, max_points) if name in run.series_info() else None

    for n, run, s in each_readable(runs, f"overlay {name!r}", points):
        source = ColumnDataSource({"idx": s.idx, "value": s.values, "run": [run.name] * len(s)})
        fig.line(
            "idx",
            "value",
            source=source,
            color=Category10_10[n % 10],
            line_width=1.5,
            legend_label=run.name if len(runs) > 1 else name,
        )
    fig.add_tools(HoverTool(tooltips=[("run", "@run"), ("idx", "@idx"), ("value", "@value")]))
    fig.legend.click_policy = "hide"
    return fig


def heatmap(run: Run, name: str, start: int | None = None, stop: int | None = None, max_steps: int = 500):
    """A tensor series as a heat-map: one column per logged step, one row per element
    (flattened), colour = value. At most ``max_steps`` steps, evenly spread."""
    s = run.series(name, start, stop)
    pairs = [(int(i), v) for i, v in zip(s.idx, s.values, strict=True) if isinstance(v, np.ndarray)]
    if not pairs:
        raise LabstatsError(f"series {name!r} of run {run.name!r} holds no tensors")
    if len(pairs) > max_steps:
        pairs = [pairs[k] for k in np.linspace(0, len(pairs) - 1, max_steps).astype(int)]
    size = pairs[0][1].size
    pairs = [(i, v) for i, v in pairs if v.size == size]  # a shape change starts a new picture
    image = np.stack([v.reshape(-1).astype(np.float64) for _, v in pairs], axis=1)
    steps = np.array([i for i, _ in pairs])
    finite = image[np.isfinite(image)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    mapper = LinearColorMapper(palette=Viridis256, low=low, high=high if high > low else low + 1)
    width = float(steps[-1] - steps[0]) or 1.0
    fig = figure(
        title=f"{run.name}: {name} over steps",
        height=360,
        sizing_mode="stretch_width",
        x_range=(float(steps[0]), float(steps[0]) + width),
        y_range=(0, size),
        x_axis_label="idx",
        y_axis_label="element",
        tools="pan,wheel_zoom,box_zoom,reset,save,hover",
        tooltips=[("idx", "$x{0}"), ("element", "$y{0}"), ("value", "@image")],
    )
    fig.image(image=[image], x=float(steps[0]), y=0, dw=width, dh=size, color_mapper=mapper)
    fig.add_layout(ColorBar(color_mapper=mapper), "right")
    return fig


def metadata_table(run: Run):
    """A run's metadata and config as a two-column table."""
    rows = [("name", run.name), ("status", run.status)]
    rows += [(f"config.{k}", json.dumps(v, default=str)) for k, v in sorted((run.config or {}).items())]
    rows += [
        (k, v if isinstance(v, str) else json.dumps(v, default=str))
        for k, v in sorted(run.meta.items())
        if k not in ("config", "name", "status")
    ]
    source = ColumnDataSource({"key": [r[0] for r in rows], "value": [str(r[1]) for r in rows]})
    columns = [TableColumn(field="key", title="key", width=180), TableColumn(field="value", title="value")]
    return DataTable(
        source=source,
        columns=columns,
        height=28 * min(len(rows) + 1, 20),
        sizing_mode="stretch_width",
        index_position=None,
        reorderable=False,  # reordering needs jQuery UI, which is not loaded (a console warning)
    )


# ---- media -----------------------------------------------------------------------------------


def _chosen(run: Run, name: str, steps: Iterable[int] | None, limit: int) -> list[int]:
    logged = run.media_steps(name)
    if not logged:
        raise LabstatsError(f"run {run.name!r} has no media {name!r}")
    return media_files.evenly(logged if steps is None else [s for s in steps if s in set(logged)], limit)


def images(run: Run, name: str, steps: Iterable[int] | None = None, columns: int = 4, original: bool = False,
           limit: int = 16):  # fmt: skip
    """Media ``name`` at ``steps`` (default: at most ``limit`` evenly chosen) as a grid of
    Bokeh pictures, titled by step: thumbnails, or the full pictures with ``original=True``."""
    from bokeh.layouts import gridplot

    figures = []
    for step, picture in run.pictures(name, _chosen(run, name, steps, limit), original=original):
        rgba = np.asarray(picture.convert("RGBA"))[::-1]  # Bokeh's y axis points up
        h, w = rgba.shape[:2]
        fig = figure(title=f"step {step}", width=220, height=max(60, round(220 * h / w)), x_range=(0, w),
                     y_range=(0, h), tools="pan,wheel_zoom,reset,save", match_aspect=True)  # fmt: skip
        fig.image_rgba(image=[rgba.view(np.uint32).reshape(h, w)], x=0, y=0, dw=w, dh=h)
        fig.axis.visible = False
        figures.append(fig)
    return gridplot(figures, ncols=columns)


def montage(run: Run, name: str, steps: Iterable[int] | None = None, original: bool = False, limit: int = 64):
    """Media ``name`` at ``steps`` as one PIL image (rows of pictures, by step)."""
    pictures = [p for _, p in run.pictures(name, _chosen(run, name, steps, limit), original=original)]
    return media_files.montage(pictures)


def animation(run: Run, name: str, steps: Iterable[int] | None = None, ms: int = 200, original: bool = False,
              limit: int = 300):  # fmt: skip
    """Media ``name`` over its steps as an animated GIF: the bytes, shown inline by Jupyter."""
    pictures = [p for _, p in run.pictures(name, _chosen(run, name, steps, limit), original=original)]
    return Animation(media_files.animation(pictures, ms))


class Animation(bytes):
    """GIF bytes that Jupyter shows as the moving picture."""

    def _repr_html_(self) -> str:
        import base64

        return f'<img src="data:image/gif;base64,{base64.b64encode(self).decode()}">'


# ---- notebooks that share well ----------------------------------------------------------------
# Bokeh's output_notebook(INLINE) puts all five BokehJS bundles (3.9 MB) in the notebook twice
# (one copy for the classic notebook, one for JupyterLab): 8 MB saved. Here the two bundles the
# charts above need (the core and the tables) are stored once, gzip-compressed (0.6 MB), and
# unpacked by the browser; each chart waits for them, however long that takes.

BUNDLES = ("bokeh", "bokeh-tables")

_LOADER_JS = """(() => {
  if (window.labstatsBokeh) return;  // once per document: a second setup output does nothing
  const parts = %(parts)s, version = %(version)s;
  async function unpack(b64) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return await new Response(stream).text();
  }
  window.labstatsBokeh = (async () => {
    for (const b64 of parts) {
      const script = document.createElement("script");
      script.textContent = await unpack(b64);  // runs at once, in the page's global scope
      document.head.appendChild(script);
    }
    return window.Bokeh[version];  // this version, even when another BokehJS is on the page
  })();
})();"""

_SHOW_JS = """(() => {
  const item = %(item)s, target = document.getElementById(%(target)s);
  if (!window.labstatsBokeh) {
    target.textContent = "BokehJS is not loaded in this document: run labstats.plot.notebook() first.";
    return;
  }
  window.labstatsBokeh
    .then((Bokeh) => Bokeh.embed.embed_item(item, target))
    .catch((error) => {
      target.textContent = "This chart could not be drawn: " + error;
      console.error(error);
    });
})();"""


def _script_json(value) -> str:
    """JSON that is safe inside an HTML <script>: no </script>, <!-- or & can close it."""
    # A JavaScript literal, not JSON.parse'd: NaN and Infinity, were there any, are valid.
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def notebook_loader_html() -> str:
    """The setup output's HTML: BokehJS (the bundles in BUNDLES, minified, gzip-compressed,
    base64) and the script that unpacks it into the page once."""
    from bokeh import __version__ as version
    from bokeh.util.paths import bokehjs_path

    folder = bokehjs_path() / "js"
    parts = [
        base64.b64encode(gzip.compress((folder / f"{name}.min.js").read_bytes(), 9, mtime=0)).decode()
        for name in BUNDLES
    ]
    script = _LOADER_JS % {"parts": json.dumps(parts), "version": json.dumps(version)}
    return f'<script type="text/javascript">{script}</script>'


def notebook() -> None:
    """Set up this notebook for :func:`show`: one output holding BokehJS from the bokeh
    package (never a CDN, so an exported notebook opens offline), about 0.6 MB. Run it once,
    at the top; every chart shown after it uses it."""
    from IPython.display import display

    display({"text/html": notebook_loader_html(), "text/plain": "BokehJS for labstats.plot.show"}, raw=True)


def chart_html(obj) -> str:
    """The HTML of one chart (or table, or layout) for a notebook output: its document as
    JSON and a script that draws it once the setup output's BokehJS is there."""
    target = f"labstats-{uuid.uuid4().hex}"
    item = json_item(obj)
    script = _SHOW_JS % {"item": _script_json(item), "target": _script_json(target)}
    return f'<div id="{target}" class="labstats-chart"></div><script type="text/javascript">{script}</script>'


def show(obj) -> None:
    """Show a chart from this module (or any Bokeh model) in the notebook; run
    :func:`notebook` once first. The saved notebook keeps only the chart's data (a few KB)."""
    from IPython.display import display

    display({"text/html": chart_html(obj), "text/plain": f"<{type(obj).__name__} chart>"}, raw=True)
