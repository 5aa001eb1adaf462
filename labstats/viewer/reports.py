"""Reports: titled Markdown documents with live panels (a run's chart, runs compared for a
metric, media at chosen steps, a table of runs, the hyperparameters view), every version kept.

    GET  /reports                      the reports, newest first; ?q= searches titles and text
    GET  /reports/new                  the form of a new report (editors)
    POST /reports                      save it (editors): its version 1
    GET  /reports/<id>[?version=N]     a report as it reads now (its newest version, or N)
    GET  /reports/<id>/edit            the form of its next version (editors)
    POST /reports/<id>                 save a new version (editors); none is ever changed
    GET  /reports/<id>/export.html     the report as one HTML file that opens offline

A panel is a line in a fenced block whose info string is ``labstats`` (docs/reports.md):

    ```labstats
    chart run=local/3f2a series=loss,val/loss
    compare metric=loss filter="opt == 'adam'" split=lr agg=mean
    media run=local/3f2a name=samples steps=0,500,1000
    table filter="lr < 0.1" columns=name,status,config:lr,loss:min
    hparams metric=loss tag=sweep
    ```

Panels are drawn when the report is opened, from the runs as they are then. The Markdown is
rendered as the run notes are (labstats.viewer.annotate: no raw HTML, only http(s), mailto
and relative links, no images); a panel that names a run that is gone or in the trash, or
that cannot be drawn, shows a sentence in its place, never an error page.
"""

from __future__ import annotations

import itertools
import os
import shlex
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from markupsafe import Markup
from werkzeug.datastructures import MultiDict

from labstats import export
from labstats.format import media_files
from labstats.reader import UNREACHABLE, LabstatsError, Run, short
from labstats.viewer import annotate, charts, explorer
from labstats.viewer.data import ApiError, get_run, int_arg, labs
from labstats.viewer.exports import HTML_FILE, _download
from labstats.viewer.filters import FilterError
from labstats.viewer.openapi import STRING, declare, integer, page_errors, parameter
from labstats.viewer.pages import page_error
from labstats.viewer.report_store import (
    MAX_BODY_BYTES,
    MAX_TITLE_CHARS,
    MAX_VERSIONS,
    MEMORY,
    ReportError,
    ReportStore,
    ReportVersion,
)
from labstats.viewer.table import (
    Query,
    caches,
    differing_keys,
    duration,
    filtered_runs,
    read_summaries,
    shown,
)
from labstats.viewer.windows import X_AXES

bp = Blueprint("reports", __name__)
bp.register_error_handler(ApiError, page_error)

MAX_PANELS = 20  # per report
MAX_PANEL_CHARS = 2000  # of one panel's line
MAX_CHART_SERIES = 10  # lines of a chart panel
MAX_COMPARE_CHARTS = 6  # charts of one compare panel
MAX_MEDIA_STEPS = 16
DEFAULT_MEDIA_STEPS = 8
MAX_TABLE_ROWS = 100
DEFAULT_TABLE_ROWS = 20
MAX_TABLE_COLUMNS = 12
MAX_HPARAMS_RUNS = 500
MAX_HPARAMS_KEYS = 12
MAX_SEARCH_CHARS = 200
PANEL_INFO = "labstats"  # a fenced block with this info string holds panels
# Keys that may be repeated or hold a comma-separated list.
LIST_KEYS = ("run", "series", "metric", "steps", "columns", "over", "keys")
SELECTING = {"run": MAX_HPARAMS_RUNS, "q": 1, "tag": 1, "status": 1, "filter": 1}  # which runs
# Per kind: the keys it takes (with how many values at most) and those it needs.
KINDS: dict[str, tuple[dict[str, int], tuple[str, ...]]] = {
    "chart": ({"run": 1, "series": MAX_CHART_SERIES, "x": 1, "y": 1}, ("run", "series")),
    "compare": (
        {
            **SELECTING,
            "run": explorer.MAX_CHOSEN,
            "metric": explorer.MAX_METRICS,
            "split": 1,
            "color": 1,
            "agg": 1,
            "over": 20,
            "x": 1,
            "smooth": 1,
            "y": 1,
        },
        ("metric",),
    ),
    "media": ({"run": 1, "name": 1, "steps": MAX_MEDIA_STEPS}, ("run", "name")),
    "table": ({**SELECTING, "run": MAX_TABLE_ROWS, "columns": MAX_TABLE_COLUMNS, "limit": 1}, ()),
    "hparams": ({**SELECTING, "metric": 1, "keys": MAX_HPARAMS_KEYS}, ()),
}
TABLE_COLUMNS = ("name", "id", "status", "started", "ended", "duration", "host", "tags", "project")
DEFAULT_COLUMNS = ["name", "status", "started", "duration"]
SUMMARY_PARTS = ("last", "min", "max")


# ---- the panel syntax ----------------------------------------------------------------------


class PanelError(ValueError):
    """A panel line that is not one, with the sentence shown in its place."""


@dataclass
class Panel:
    kind: str
    params: dict[str, list[str]] = field(default_factory=dict)
    text: str = ""

    def one(self, key: str, default: str = "") -> str:
        return self.params.get(key, [default])[0]


def parse_panel(line: str) -> Panel:
    """``KIND key=value key=value ...`` (values quoted as in a shell; list keys repeated or
    comma-separated) as a Panel; a PanelError saying what is wrong."""
    if len(line) > MAX_PANEL_CHARS:
        raise PanelError(f"a panel's line is at most {MAX_PANEL_CHARS:,} characters")
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise PanelError(f'{exc} (quote values with spaces as "a b")') from None
    kind, *pairs = words
    if kind not in KINDS:
        raise PanelError(f"unknown panel {kind[:40]!r}: a panel is one of {', '.join(KINDS)}")
    allowed, needed = KINDS[kind]
    params: dict[str, list[str]] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise PanelError(f"{pair[:40]!r} is not key=value")
        if key not in allowed:
            raise PanelError(f"a {kind} panel takes {', '.join(allowed)}, not {key[:40]!r}")
        values = [v.strip() for v in value.split(",")] if key in LIST_KEYS else [value.strip()]
        params.setdefault(key, []).extend(v for v in values if v)
    for key, values in params.items():
        if len(values) > allowed[key]:
            raise PanelError(f"a {kind} panel takes at most {allowed[key]} {key}")
    missing = [key for key in needed if not params.get(key)]
    if missing:
        raise PanelError(f"a {kind} panel needs {' and '.join(f'{k}=' for k in missing)}")
    return Panel(kind, params, line)


def _lines(content: str) -> list[str]:
    """A panel block's lines (blank ones and comments, #..., left out)."""
    return [
        line.strip() for line in content.splitlines() if line.strip() and not line.strip().startswith("#")
    ]


def panel_lines(body: str) -> list[str]:
    """The panel lines of a report's Markdown, in order (comments, #..., and blank lines
    left out)."""
    tokens = annotate._markdown().parse(body)  # noqa: SLF001 (the notes' own rules)
    return [
        line.strip()
        for token in tokens
        if token.type == "fence" and token.info.strip() == PANEL_INFO
        for line in token.content.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def check_panels(body: str) -> None:
    """A ReportError for a body with too many panels, or a panel line that is not one."""
    lines = panel_lines(body)
    if len(lines) > MAX_PANELS:
        raise ReportError(f"a report has at most {MAX_PANELS} panels; this one has {len(lines)}")
    for n, line in enumerate(lines, 1):
        try:
            parse_panel(line)
        except PanelError as exc:
            raise ReportError(f"panel {n} ({line[:80]}): {exc}") from None


# ---- drawing a report ------------------------------------------------------------------------


class Drawing:
    """One drawing of a report: ``file`` for the one-file export (points and pictures
    inline, no link to the viewer) or the viewer's page (charts load their points from the
    API, downsampled as on run pages)."""

    def __init__(self, file: bool) -> None:
        self.file = file
        self.panels = 0
        self.targets = itertools.count()

    def target(self) -> str:
        return f"report-chart-{next(self.targets)}"

    def panel(self, line: str) -> str:
        self.panels += 1
        if self.panels > MAX_PANELS:
            found: dict[str, Any] = {"error": f"a report shows at most {MAX_PANELS} panels"}
        else:
            found = self._drawn(line)
        return render_template("report_panel.html", panel=found, line=line, file=self.file)

    def _drawn(self, line: str) -> dict[str, Any]:
        try:
            panel = parse_panel(line)
            return {"kind": panel.kind, "notes": [], **DRAW[panel.kind](self, panel)}
        except (PanelError, FilterError, LabstatsError) as exc:
            return {"error": str(exc)}
        except ApiError as exc:
            return {"error": exc.message}
        except UNREACHABLE as exc:
            return {"error": f"a source cannot be read right now ({short(exc)})"}
        except Exception:  # one panel that cannot be drawn must not hide the report
            current_app.logger.exception("report panel %r", line[:200])
            return {"error": "this panel could not be drawn (the viewer's log says why)"}


def shown_run(ref: str) -> tuple[str, Run]:
    """The run ``source/id`` names, if it is there and not in the trash (else a PanelError)."""
    source, _, run_id = ref.partition("/")
    try:
        run = get_run(source, run_id)
    except ApiError as exc:
        if exc.status == 404:
            raise PanelError(f"run {ref} is not there (deleted, or never was)") from None
        raise
    if run.trashed:
        raise PanelError(f"run {ref} is in the trash")
    return source, run


def selected_runs(panel: Panel, limit: int) -> tuple[list[tuple[str, Run]], list[str]]:
    """The panel's runs: the ones it names (those gone or in the trash left out, and said),
    else those its q, tag, status and filter select (newest first; the trash is in no list)."""
    if panel.params.get("run"):
        runs, notes = [], []
        for ref in panel.params["run"][:limit]:
            try:
                runs.append(shown_run(ref))
            except PanelError as exc:
                notes.append(f"{exc}: left out")
        if not runs:
            raise PanelError("; ".join(notes) or "no runs")
        return runs, notes
    query = Query(name=panel.one("q") or None, tag=panel.one("tag") or None,
                  status=panel.one("status") or None, filter=panel.one("filter") or None)  # fmt: skip
    found = filtered_runs(labs(), query, caches(current_app.extensions))
    notes = [f"the newest {limit} of {len(found)} runs are shown"] if len(found) > limit else []
    return found[:limit], notes


def draw_chart(drawing: Drawing, panel: Panel) -> dict[str, Any]:
    """A run's series, a line each on one chart."""
    source, run = shown_run(panel.one("run"))
    info = run.series_info()
    names = [
        n for n in dict.fromkeys(panel.params["series"]) if info.get(n, {}).get("kind") in ("f", "i", "b")
    ]
    notes = [
        f"{run.display_name} has no numeric series {n!r}" for n in panel.params["series"] if n not in names
    ]
    if not names:
        raise PanelError("; ".join(notes))
    x = panel.one("x", "idx")
    if x not in X_AXES:
        raise PanelError(f"x is one of {', '.join(X_AXES)}")
    title = f"{run.display_name}: {', '.join(names)}"
    target = drawing.target()
    if drawing.file:  # the points in the file (idx, at most export.MAX_POINTS a line)
        return {"charts": [export.chart_item(title, run, names, target)], "notes": notes}
    lines = [(name, charts.series_url(source, run.id, name, x)) for name in names]
    spec = charts.line_chart(title, lines, False, target, log_y=panel.one("y") == "log", x_axis=x)
    link = url_for("pages.run_page", source=source, run_id=run.id)
    return {"charts": [spec], "notes": notes, "link": link}


def draw_compare(drawing: Drawing, panel: Panel) -> dict[str, Any]:
    """The explorer's view of the panel's runs: split, coloured, aggregated (its own code)."""
    runs, notes = selected_runs(panel, explorer.MAX_CHOSEN) if panel.params.get("run") else ([], [])
    args = MultiDict([(key, value) for key, values in panel.params.items() for value in values])
    if panel.params.get("run"):  # the runs still there
        args.setlist("run", [f"{source}/{run.id}" for source, run in runs])
    # The explorer reads a view from a request's query (its runs' query too: table_query), so
    # the panel's keys are put in one: the same checks and sentences as on the explorer page.
    with current_app.test_request_context("/explorer", query_string=args):
        view = explorer.read_view(request.args)
    found = explorer.explore(view)
    drawn = found["charts"][:MAX_COMPARE_CHARTS]
    if len(found["charts"]) > len(drawn):
        notes.append(f"the first {len(drawn)} of {len(found['charts'])} charts are shown")
    if not drawn:
        raise PanelError(f"no chosen run has a numeric series {', '.join(panel.params['metric'])}")
    specs = [explorer.chart_spec(chart, drawing.target(), view) for chart in drawn]
    link = None if drawing.file else url_for("explorer.page") + "?" + urlencode(view.params())
    return {"charts": specs, "notes": notes + found["notes"], "link": link}


def draw_media(drawing: Drawing, panel: Panel) -> dict[str, Any]:
    """A run's pictures of one media name at the chosen steps (each: the latest logged step
    at or before it), or at up to DEFAULT_MEDIA_STEPS evenly chosen ones."""
    source, run = shown_run(panel.one("run"))
    name = panel.one("name")
    kind = run.media_names().get(name)
    if kind is None:
        raise PanelError(f"{run.display_name} has no media {name!r}")
    if kind not in ("image", "fits"):
        raise PanelError(f"media {name!r} is {kind}: a report shows pictures; its run page shows the rest")
    logged = run.media_steps(name)
    notes: list[str] = []
    if panel.params.get("steps"):
        steps = []
        for text in panel.params["steps"]:
            try:
                wanted = int(text)
            except ValueError:
                raise PanelError(f"steps are whole numbers, not {text[:40]!r}") from None
            before = [s for s in logged if s <= wanted]
            if before:
                steps.append(before[-1])
            else:
                notes.append(f"nothing of {name!r} was logged at or before step {wanted}")
        steps = list(dict.fromkeys(steps))
    else:
        steps = media_files.evenly(logged, DEFAULT_MEDIA_STEPS)
    pictures = []
    for step in steps:
        if drawing.file:
            uri = export.picture_uri(run, name, step)
            if uri is None:
                notes.append(f"no picture of {name!r} at step {step}")
                continue
        else:
            uri = url_for("media.thumb", source=source, run_id=run.id, name=name, step=step)
        pictures.append({"step": step, "src": uri})
    link = None if drawing.file else url_for("pages.run_page", source=source, run_id=run.id)
    return {"title": f"{run.display_name}: {name}", "pictures": pictures, "notes": notes, "link": link}


def draw_table(drawing: Drawing, panel: Panel) -> dict[str, Any]:
    """Runs as rows, the chosen columns: the run's own fields, config:KEY, and a metric's
    last value (METRIC) or its min or max (METRIC:min)."""
    try:
        limit = int(panel.one("limit", str(DEFAULT_TABLE_ROWS)))
    except ValueError:
        limit = -1
    if not 1 <= limit <= MAX_TABLE_ROWS:
        raise PanelError(f"limit is a whole number from 1 to {MAX_TABLE_ROWS}")
    columns = list(dict.fromkeys(panel.params.get("columns") or DEFAULT_COLUMNS))
    runs, notes = selected_runs(panel, limit)
    metrics = {}
    for column in columns:
        if column not in TABLE_COLUMNS and not column.startswith("config:"):
            metric = _metric_column(column)[0]
            if metric not in metrics:
                metrics[metric] = read_summaries(runs, metric, caches(current_app.extensions))
    rows = []
    for source, run in runs:
        cells = [_cell(source, run, column, metrics) for column in columns]
        link = None if drawing.file else url_for("pages.run_page", source=source, run_id=run.id)
        rows.append({"cells": cells, "link": link})
    return {"columns": columns, "rows": rows, "notes": notes}


def _metric_column(column: str) -> tuple[str, str]:
    name, _, part = column.rpartition(":")
    return (name, part) if name and part in SUMMARY_PARTS else (column, "last")


def _cell(source: str, run: Run, column: str, metrics: dict) -> str:
    meta = run.meta
    if column == "name":
        return run.display_name
    if column == "id":
        return f"{source}/{run.id}"
    if column == "status":
        return run.status
    if column in ("started", "ended"):
        return export.time_text(meta.get(column)) if meta.get(column) is not None else ""
    if column == "duration":
        return current_app.jinja_env.filters["duration"](duration(meta))
    if column == "host":
        return str(meta.get("host", ""))[:64]
    if column == "tags":
        return ", ".join(run.annotations.tags)
    if column == "project":
        return run.annotations.project
    if column.startswith("config:"):
        key = column.removeprefix("config:")
        return shown(run.config[key]) if key in run.config else ""
    name, part = _metric_column(column)
    summary = metrics.get(name, {}).get((source, run.id))
    value = (summary or {}).get(part)
    return f"{value:.6g}" if isinstance(value, float | int) else ""


def draw_hparams(drawing: Drawing, panel: Panel) -> dict[str, Any]:
    """The hyperparameters view: the config keys that differ over the runs (or those
    named) against a metric's last value, as parallel coordinates."""
    runs, notes = selected_runs(panel, MAX_HPARAMS_RUNS)
    kept = caches(current_app.extensions)
    keys = panel.params.get("keys") or differing_keys(runs, kept)[:MAX_HPARAMS_KEYS]
    metric = panel.one("metric") or next(iter(explorer.metric_choices(runs)), "")
    axes = [(k, [run.config.get(k) for _, run in runs]) for k in keys]
    if metric:
        summaries = read_summaries(runs, metric, kept)
        axes.append((f"{metric} (last)", [(summaries.get((s, r.id)) or {}).get("last") for s, r in runs]))
    if len(axes) < 2 or not runs:
        raise PanelError("nothing to draw: these runs have no config key that differs")
    lines = [
        (run.display_name, "#" if drawing.file else url_for("pages.run_page", source=source, run_id=run.id))
        for source, run in runs
    ]
    return {"charts": [charts.parallel_coordinates(axes, lines, drawing.target())], "notes": notes}


DRAW = {"chart": draw_chart, "compare": draw_compare, "media": draw_media, "table": draw_table,
        "hparams": draw_hparams}  # fmt: skip


def _renderer(drawing: Drawing):
    """Markdown as the run notes are rendered, each ```labstats block's lines drawn as panels."""
    md = annotate._markdown()  # noqa: SLF001 (the notes' own rules, not a copy of them)
    plain_fence = md.renderer.rules["fence"]

    def fence(renderer, tokens, idx, options, env):
        token = tokens[idx]
        if token.info.strip() != PANEL_INFO:
            return plain_fence(tokens, idx, options, env)
        return "".join(drawing.panel(line) for line in _lines(token.content))

    md.add_render_rule("fence", fence)
    return md


def render_body(body: str, file: bool = False) -> Markup:
    """A report's Markdown as HTML with its panels drawn (``file``: for the one-file export)."""
    # Safe to mark: markdown-it escapes what it does not turn into markup (html off), links
    # pass annotate.safe_link, and the panels are Jinja templates (autoescaped).
    return Markup(_renderer(Drawing(file)).render(body))  # noqa: S704


# ---- storage ---------------------------------------------------------------------------------


def _store() -> ReportStore:
    """The app's reports, in the sessions file when it has one (else in memory)."""
    store = current_app.extensions.get("labstats_reports")
    if store is None:
        sessions = current_app.extensions.get("labstats_sessions")
        path = getattr(sessions, "path", MEMORY) or MEMORY
        store = current_app.extensions["labstats_reports"] = ReportStore(path)
    return store


def _user() -> str:
    # An open viewer (a laptop's loopback, no logins) has one user, without a name.
    return g.get("user") or "open viewer"


def _report(report_id: str, version: int | None = None) -> ReportVersion:
    found = _store().get(report_id, version)
    if found is None:
        what = f"version {version} of this report" if version is not None else "this report"
        raise ApiError(404, f"there is no {what}")
    return found


def report_version(report_id: str, version: int | None = None) -> int | None:
    """The version number ``version`` names (None: the newest), or None when there is none."""
    found = _store().get(report_id, version)
    return found.version if found is not None else None


def report_title(report_id: str, version: int | None = None) -> str | None:
    """The title of that version (None: the newest), or None when there is no such version:
    read from the store, without drawing the report's panels."""
    found = _store().get(report_id, version)
    return found.title if found is not None else None


def report_export_html(report_id: str, version: int | None = None) -> str | None:
    """The report (its newest version, or ``version``) as ONE self-contained HTML file:
    BokehJS inline once, each chart's points and each picture in the file, nothing asked
    of any network when it is opened from disk; None when there is no such report. Needs
    an app and request context (a viewer request, or test_request_context)."""
    found = _store().get(report_id, version)
    if found is None:
        return None
    return render_template(
        "report_export.html", report=found, body=render_body(found.body, file=True), csp=export.CSP,
        bokeh_js=Markup(export.inline_bokeh_js()),  # noqa: S704 (Bokeh's own script)
        exported=export.time_text(time.time()),
    )  # fmt: skip


def _form(report: ReportVersion | None, title: str, body: str, base: int | None, error: str | None):
    """The form of a new report or of a report's next version, as sent (or to start from)."""
    return render_template("report_edit.html", report=report, title=title, body=body, base=base, error=error,
                           kinds=KINDS, max_panels=MAX_PANELS)  # fmt: skip


def _refusals(*statuses: int) -> dict[int, Any]:
    """A form's error answers (the form again, with its sentence)."""
    return {status: page for status, page in page_errors(*statuses).items() if status != 200}


# ---- the pages -------------------------------------------------------------------------------

FORM = [
    parameter("title", {"type": "string", "maxLength": MAX_TITLE_CHARS}, "the report's title"),
    parameter("body", STRING, f"its Markdown with ```labstats panels (at most {MAX_BODY_BYTES:,} bytes)"),
]  # fmt: skip
SAVED = {303: {"description": "to the report's page"}}
VERSION = integer("version", 1, MAX_VERSIONS, "a version (default: the newest)")


@bp.get("/reports")
@declare("The reports, the most recently saved first; q: those whose title or text has it (HTML)",
         query=[parameter("q", {"type": "string", "maxLength": MAX_SEARCH_CHARS}, "search text")],
         responses=page_errors())  # fmt: skip
def list_page():
    """Each report's newest title, its number of versions, who saved it last and when."""
    search = request.args.get("q", "").strip()[:MAX_SEARCH_CHARS]
    return render_template("reports.html", reports=_store().listed(search), q=search)


@bp.get("/reports/new")
@declare("The form of a new report (HTML; only editors may save it)", responses=page_errors())
def new_page():
    return _form(None, "", EXAMPLE, None, None)


@bp.post("/reports")
@declare("Save a new report (editors; HTML form fields or query parameters)", query=FORM,
         responses={**SAVED, **_refusals(400, 409)})  # fmt: skip
def create():
    title, body = request.values.get("title", ""), request.values.get("body", "")
    try:
        check_panels(body)
        report_id, _ = _store().create(title, body, _user())
    except ReportError as exc:
        return _form(None, title, body, None, str(exc)), exc.status
    return redirect(url_for("reports.report_page", report_id=report_id), 303)


@bp.get("/reports/<report_id>")
@declare("A report, its panels drawn from the runs as they are now (HTML)", query=[VERSION],
         responses=page_errors(400, 404))  # fmt: skip
def report_page(report_id: str):
    """Its newest version, or ``version``; the list of its versions beside it."""
    found = _report(report_id, int_arg("version", None, 1, MAX_VERSIONS))
    versions, first = _store().versions(report_id), _store().first_saved(report_id)
    return render_template("report.html", report=found, body=render_body(found.body), versions=versions,
                           first=first)  # fmt: skip


@bp.get("/reports/<report_id>/edit")
@declare("The form of a report's next version (HTML; only editors may save it)", query=[VERSION],
         responses=page_errors(400, 404))  # fmt: skip
def edit_page(report_id: str):
    """Filled with its newest version (or ``version``, to start again from an older one)."""
    found = _report(report_id, int_arg("version", None, 1, MAX_VERSIONS))
    return _form(found, found.title, found.body, found.latest, None)


@bp.post("/reports/<report_id>")
@declare("Save a report's next version (editors; HTML form fields or query parameters)",
         query=[*FORM, integer("base", 1, MAX_VERSIONS, "the version the change started from")],
         responses={**SAVED, **_refusals(400, 404, 409)})  # fmt: skip
def save(report_id: str):
    """When another version was saved since ``base``, nothing is saved (409) and the form
    comes back with the text as sent."""
    current = _report(report_id)
    title, body = request.values.get("title", ""), request.values.get("body", "")
    base = int_arg("base", None, 1, MAX_VERSIONS, args=request.values)
    try:
        check_panels(body)
        _store().save(report_id, title, body, _user(), base)
    except ReportError as exc:
        return _form(current, title, body, base, str(exc)), exc.status
    return redirect(url_for("reports.report_page", report_id=report_id), 303)


@bp.get("/reports/<report_id>/export.html")
@declare("A report as one HTML file that opens offline (a download)", query=[VERSION],
         responses={**HTML_FILE, **page_errors(400, 404)})  # fmt: skip
def export_file(report_id: str):

    version = int_arg("version", None, 1, MAX_VERSIONS)
    html = report_export_html(report_id, version)
    if html is None:
        raise ApiError(404, f"there is no version {version} of this report" if version else "no such report")
    found = _report(report_id, version)
    return _download(html, f"{found.title}-v{found.version}")


EXAMPLE = """A sentence or two on what was tried, and what came of it.

```labstats
# a panel per line; see docs/reports.md
chart run=SOURCE/RUN_ID series=loss
```
"""


# ---- the command line ------------------------------------------------------------------------


def file_from_store(
    report_id: str,
    version: int | None = None,
    db: str | None = None,
    url: str | None = None,
    prefix: str | None = None,
) -> str:
    """``labstats export-html --report ID``: the report's one-file HTML, read from the
    viewer's SQLite file (``db``, default the sessions_file of the viewer's config, named
    by $LABSTATS_VIEWER_CONFIG) and drawn from the viewer's sources (without a viewer
    config: the store ``url`` names, or the usual lookup, as source "local")."""
    from labstats.config import LabstatsError
    from labstats.viewer import create_app
    from labstats.viewer.sources import Source, config_path, load_auth, load_sources

    db = db or (load_auth() or {}).get("sessions_file")
    if not db:
        raise LabstatsError("the viewer keeps no SQLite file (its config has no [auth] sessions_file): "
                            "name the file its reports are in with --db")  # fmt: skip
    if not os.path.isfile(db):
        raise LabstatsError(f"{db}: no such file (the viewer's SQLite file, where its reports are)")
    if config_path() is None and url:
        found = {"local": Source("local", url, prefix or "ls")}
    else:
        found = load_sources()
    app = create_app(found)
    app.extensions["labstats_reports"] = ReportStore(db)
    with app.test_request_context():
        html = report_export_html(report_id, version)
    if html is None:
        raise LabstatsError(f"{db} has no report {report_id!r}" + (f" version {version}" if version else ""))
    return html
