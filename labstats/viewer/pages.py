"""HTML pages: runs list, run page, compare page. Everything shown is escaped by Jinja's
autoescape; chart specs travel as JSON data blocks read by static/viewer.js (no inline code)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

import numpy as np
from bokeh.palettes import Category10_10, Category20_20
from flask import Blueprint, abort, current_app, g, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from labstats.format.codec import INT64_MAX, INT64_MIN
from labstats.format.keys import AXIS_SERIES
from labstats.format.run_record import RUNNING, STALLED
from labstats.read.archive_file import path_for
from labstats.reader import LabstatsError, Run, number
from labstats.viewer import charts, system_group
from labstats.viewer import live as live_watch
from labstats.viewer.api import RUNS_QUERY
from labstats.viewer.data import (
    MAX_DRAWN_TENSOR_VALUES,
    MAX_PAGE_CONFIG_BYTES,
    ApiError,
    BadFilter,
    SourceDown,
    config_summary,
    get_run,
    int_arg,
    json_error,
    labs,
    run_summary,
    runs_table,
    tensor_at,
)
from labstats.viewer.media import media_overview
from labstats.viewer.openapi import STRING, declare, errors, integer, one_of, page_errors, parameter, strings
from labstats.viewer.runcache import source_cache
from labstats.viewer.saved_views import (
    FIXED_COLUMNS,
    MAX_NAME_CHARS,
    MEMORY,
    VIEW_PARAMS,
    ViewError,
    ViewStore,
    clean,
)
from labstats.viewer.table import (
    NEWEST_FIRST,
    Query,
    caches,
    every_run,
    metric_names,
    read_summaries,
    shown,
)
from labstats.viewer.windows import X_AXES

bp = Blueprint("pages", __name__)

MAX_CHARTS = live_watch.MAX_CHARTS  # per page; a run with more series shows the first ones and says so
HISTOGRAM_STEPS = 500  # the newest steps of a histogram series shown as a heat-map

# Runs whose pages keep asking for new points (a stalled run may go on).
LIVE = (RUNNING, STALLED)


# The views of this blueprint that answer JSON (what viewer.js asks for on a page).
JSON_VIEWS = ("pages.run_charts", "pages.run_system", "pages.compare_charts")


def page_error(exc: ApiError):
    """An ApiError as the error page (the pages and the exports answer HTML; the JSON views
    JSON)."""
    if request.endpoint in JSON_VIEWS:
        return json_error(exc)
    return render_template("error.html", status=exc.status, message=exc.message), exc.status


bp.register_error_handler(ApiError, page_error)


# The runs list's own query parameters: only these are ever copied into a URL the page
# builds (url_for would take _external, _scheme, _method... as its own options).
LIST_FILTERS = ("q", "status", "tag", "sort", "order", "filter", "group", "limit", "metric")
PAGE_RUNS = 50  # runs on a page of the runs table
HPARAMS_RUNS = 500
MAX_METRICS = 6  # more metric columns a table may have
MAX_COMPARED = 20  # runs on one compare page
MAX_TEXT_PAGE = 10_000  # pages of a text series' older values
# The runs table's own query besides the runs list's (RUNS_QUERY).
TABLE_QUERY = [
    *RUNS_QUERY,
    parameter("metric", STRING, "the metric column (default: a loss- or accuracy-like series that changes)"),
    strings("hide", "columns hidden (their data-col: host, config:lr, metric-min...)"),
    parameter("view", STRING, "the saved view this is (shown beside the views)"),
    strings("also", f"more metric columns (the first {MAX_METRICS} of the runs' series)"),
]
# The charts' axes (anything else is idx, and a linear y).
AXES_QUERY = [one_of("x", X_AXES, "the charts' x axis"), one_of("y", ["log"], "a log y axis")]


@bp.get("/")
@declare("The runs table (HTML)", query=TABLE_QUERY, responses=page_errors(400))
def index():
    """Every run of every source, filtered by an expression over config and metrics, sorted
    by any column and grouped by a config key over all of them, a page at a time."""
    try:
        table = _runs_table(PAGE_RUNS)
    except BadFilter as exc:  # said beside the filter box, the form kept as typed
        return render_template("runs.html", **_refused_table(exc)), 400
    return render_template("runs.html", **table)


@bp.get("/hparams")
@declare("Hyperparameters against a metric (HTML)", query=TABLE_QUERY, responses=page_errors(400))
def hparams():
    """Hyperparameters against the chosen metric: parallel coordinates over the listed runs
    (the runs list's filters; up to 500), one line per run coloured by the metric."""
    table = _runs_table(HPARAMS_RUNS)
    runs, metric = table["runs"], table["metric"]
    keys = table["config_columns"]
    axes = [(k, [r["config"].get(k) if isinstance(r["config"], dict) else None for r in runs]) for k in keys]
    if metric is not None:
        axes.append((f"{metric} (last)", [(r["metric"] or {}).get("last") for r in runs]))
    lines = [(r["name"], url_for("pages.run_page", source=r["source"], run_id=r["id"])) for r in runs]
    spec = charts.parallel_coordinates(axes, lines, "hparams-chart") if runs and len(axes) > 1 else None
    return render_template("hparams.html", spec=spec, **table)


def _runs_table(default_limit: int) -> dict[str, Any]:
    """What the runs table and the hparams view show: a page of runs (filtered, sorted and
    grouped over all of them) with the chosen metric's last/min/max and the config keys
    that differ between the listed runs."""
    runs, table = runs_table(default_limit)
    page = int_arg("page", 1, 1, 10_000)
    tags = sorted({t for r in runs for t in r["tags"]})
    filters = {k: request.args[k] for k in LIST_FILTERS if request.args.get(k)}
    kept = caches(current_app.extensions)
    infos: dict[str, dict] = {}
    for source, members in _by_source(table.runs).items():
        infos.update(source_cache(kept, source, members[0].lab).series_infos(members))
    choices = _metric_choices(infos.values())
    wanted = request.args.get("metric")
    metric = wanted if wanted in choices else _default_metric(choices, table.runs, kept)
    # More metrics (?also=acc&also=val/loss): their columns after the first one's.
    also = [m for m in dict.fromkeys(request.args.getlist("also")) if m in choices and m != metric][
        :MAX_METRICS
    ]
    if also:
        filters["also"] = also
    summaries = {name: read_summaries(table.runs, name, kept) for name in ([metric] if metric else []) + also}
    for summary, (source, run) in zip(runs, table.runs, strict=True):
        summary["metrics"] = {name: found.get((source, run.id)) for name, found in summaries.items()}
        summary["metric"] = summary["metrics"].get(metric)
    columns = _differing_config(runs)
    for summary in runs:
        config = summary["config"] if isinstance(summary["config"], dict) else {}
        summary["cells"] = {k: shown(config[k]) if k in config else "" for k in columns}
        summary["config_text"] = json.dumps(summary["config"], default=str, ensure_ascii=False, indent=1)
    shown_columns = {*FIXED_COLUMNS, *(f"config:{k}" for k in columns)}
    if metric:
        shown_columns |= {f"metric-{part}" for part in ("last", "min", "max")}
    shown_columns |= {f"also:{m}:{part}" for m in also for part in ("last", "min", "max")}
    hidden = [c for c in dict.fromkeys(request.args.getlist("hide")) if c in shown_columns]
    if hidden:
        filters["hide"] = hidden
    return {
        "runs": runs, "tags": tags, "args": filters, "sources": table.states, "metric": metric,
        "metric_choices": choices, "config_columns": columns, "page": page, "more": table.more,
        "also": also, "total": table.total, "groups": _group_rows(table), "sort": _sort_state(),
        "group_choices": _group_choices(columns), "filter_error": None, "hidden": hidden, **_views_of_user(),
    }  # fmt: skip


def _refused_table(exc: ApiError) -> dict[str, Any]:
    """The runs page for a filter that cannot be used: no runs, the form as typed, and why."""
    filters = {k: request.args[k] for k in LIST_FILTERS if request.args.get(k)}
    return {
        "runs": [], "tags": [], "args": filters, "sources": {}, "metric": None, "metric_choices": [],
        "config_columns": [], "page": 1, "more": False, "also": [], "total": 0, "groups": [],
        "sort": _sort_state(), "group_choices": _group_choices([]), "filter_error": exc.message,
        "hidden": [], **_views_of_user(),
    }  # fmt: skip


def _by_source(pairs) -> dict[str, list]:
    out: dict[str, list] = {}
    for source, run in pairs:
        out.setdefault(source, []).append(run)
    return out


def _sort_state() -> dict[str, Any]:
    """The table's sort (a column's sort key) and whether it is descending, for its headers."""
    sort = request.args.get("sort") or "started"
    order = request.args.get("order")
    return {"key": sort, "descending": order == "desc" if order else sort in NEWEST_FIRST}


def _group_rows(table) -> list[dict[str, Any]]:
    """Per listed run, the group header to draw above it (None within a group): its key and
    value, its count over every filtered run, the sorted column's value of its first run,
    and a link to the table filtered to it."""
    if not table.groups:
        return []
    group = request.args.get("group") or ""
    label = "status" if group == "status" else group.removeprefix("config:")
    counts = {g.value: g for g in table.groups}
    out, previous = [], None
    for value in table.group_of:
        if value == previous:
            out.append(None)
            continue
        found = counts[value]
        only = _only_filter(label if group == "status" else f"`{label}`", found.raw)
        args = {k: v for k, v in _kept_args().items() if k not in ("group", "filter")}
        if only is not None and request.args.get("filter"):
            only = f"({request.args['filter']}) and {only}"
        link = url_for("pages.index", **args, filter=only) if only is not None else None
        out.append({"key": label, "value": value, "count": found.count, "first": found.first, "only": link})
        previous = value
    return out


def _only_filter(name: str, value: Any) -> str | None:
    """A filter for the runs whose ``name`` is ``value`` (None when none can say it)."""
    if "`" in name[1:-1]:
        return None
    if value is None:
        return f"{name} == null"
    if isinstance(value, bool):
        return f"{name} == {'true' if value else 'false'}"
    if isinstance(value, int | float) and math.isfinite(value):
        return f"{name} == {value!r}"
    if isinstance(value, str):
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{name} == "{quoted}"'
    return None


def _kept_args() -> dict[str, Any]:
    """The table's own query parameters of this request (only these travel in its links)."""
    args: dict[str, Any] = {k: request.args[k] for k in LIST_FILTERS if request.args.get(k)}
    for many in ("also", "hide"):
        if request.args.getlist(many):
            args[many] = request.args.getlist(many)
    return args


# ---- saved views of the runs table (labstats.viewer.saved_views) -------------------------


def _view_store() -> ViewStore:
    """The app's saved views, in the sessions file when it has one (else in memory)."""
    store = current_app.extensions.get("labstats_views")
    if store is None:
        sessions = current_app.extensions.get("labstats_sessions")
        path = getattr(sessions, "path", MEMORY) or MEMORY
        store = current_app.extensions["labstats_views"] = ViewStore(path)
    return store


def _viewer() -> str:
    """Whose views these are: the logged-in user, or "" on an open viewer."""
    return getattr(g, "user", None) or ""


def _views_of_user() -> dict[str, Any]:
    """The user's saved views (name, link) and this page's view as one to save."""
    views = [(name, url_for("pages.open_view", name=name)) for name, _ in _view_store().views(_viewer())]
    query = urlencode([(k, v) for k in VIEW_PARAMS for v in request.args.getlist(k) if v])
    return {"saved_views": views, "view_query": query, "view_name": request.args.get("view", "")}


@bp.post("/views")
@declare(
    "Save the runs table's view, or delete one (HTML form fields or query parameters)",
    query=[
        parameter("name", {"type": "string", "maxLength": MAX_NAME_CHARS}, "the view's name"),
        parameter(
            "query", STRING, "the table's query string to keep (its columns, metric, grouping, filter, sort)"
        ),
        parameter("delete", STRING, "the name of a view to delete instead"),
    ],
    responses={303: {"description": "to the saved view (or the table, after a delete)"}, **page_errors(400)},
)
def save_view():
    """Saves the table's columns, metric, grouping, filter and sort under a name, for the
    user who is logged in (on the web box: the viewer's own SQLite file)."""
    form = request.values
    if form.get("delete"):
        _view_store().delete(_viewer(), form["delete"])
        return redirect(url_for("pages.index"), 303)
    name = form.get("name", "")
    try:
        _view_store().save(_viewer(), name, parse_qsl(form.get("query", ""))[:MAX_VIEW_PARAMS])
    except ViewError as exc:
        raise ApiError(400, str(exc)) from None
    return redirect(url_for("pages.open_view", name=name.strip()), 303)


MAX_VIEW_PARAMS = 200


@bp.get("/views/<path:name>")
@declare(
    "Open a saved view of the runs table (a redirect to the table)",
    responses={302: {"description": "to the runs table with the view's query"}, **page_errors(404)},
)
def open_view(name: str):
    """The runs table with a saved view's query; what names a config key or metric no run
    has any more (a hidden column, a metric, a sort, a grouping) is dropped."""
    params = _view_store().get(_viewer(), name)
    if params is None:
        raise ApiError(404, f"you have no saved view named {name!r}")
    listed, _ = every_run(labs(), Query(), caches(current_app.extensions))
    keys = {key for _, run in listed for key in run.config}
    kept = clean(params, keys, metric_names(listed, caches(current_app.extensions)))
    return redirect(url_for("pages.index") + "?" + urlencode([*kept, ("view", name)]))


def _group_choices(columns: list[str]) -> list[tuple[str, str]]:
    """What the table can be grouped by: the differing config keys (and the one asked
    for), and status."""
    keys = list(columns)
    group = request.args.get("group") or ""
    asked = group.partition(":")[2] if group.startswith("config:") else None
    if asked and asked not in keys:
        keys.append(asked)
    return [(f"config:{k}", k) for k in keys] + [("status", "status")]


# A series name like these is what a person watches; lr, momentum or a step count is not.
WATCHED = re.compile(
    r"loss|acc|err|score|f1|auc|bleu|rouge|perplex|ppl|reward|return|iou|dice|precision|recall", re.IGNORECASE
)
DEFAULT_METRIC_TRIES = 8  # candidates whose summaries are read to find one that changes


def _metric_choices(infos) -> list[str]:
    """The numeric series of the listed runs (their series infos): loss- and accuracy-like
    names first, then those most runs share ("loss" wins a tie)."""
    counts: dict[str, int] = {}
    for info in infos:
        for name, i in info.items():
            if not name.startswith("_") and i.get("kind") in ("f", "i", "b"):
                counts[name] = counts.get(name, 0) + 1
    return sorted(counts, key=lambda n: (not WATCHED.search(n), -counts[n], "loss" not in n, n))


def _default_metric(choices: list[str], pairs, kept) -> str | None:
    """The metric the table shows unless one is asked for: the first choice whose values
    change, within a run or between runs (never a constant such as lr); else the first."""
    for name in choices[:DEFAULT_METRIC_TRIES]:
        found = [s for s in read_summaries(pairs, name, kept).values() if s]
        if any(s["min"] != s["max"] for s in found) or len({s["last"] for s in found}) > 1:
            return name
    return choices[0] if choices else None


MAX_CONFIG_COLUMNS = 12
# The table's own columns: a config key of one of these names shows as "config NAME".
OWN_COLUMNS = ("name", "status", "started", "duration", "last update", "host", "tags", "config")


def _differing_config(runs: list[dict[str, Any]]) -> list[str]:
    """The config keys whose values differ across the listed runs: a column each. A "name"
    key that only repeats each run's name gets none (the name column shows it)."""
    configs = [r["config"] if isinstance(r["config"], dict) else {} for r in runs]
    keys = sorted({key for config in configs for key in config})
    differing = [
        k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1
    ]
    if "name" in differing and all(
        c.get("name") in (None, r["name"]) for c, r in zip(configs, runs, strict=True)
    ):
        differing.remove("name")
    return differing[:MAX_CONFIG_COLUMNS]


RUN_PAGE_QUERY = [
    *AXES_QUERY,
    integer("step", INT64_MIN, INT64_MAX, "the tensors at or before it (default: the latest)"),
    integer("text_page", 0, MAX_TEXT_PAGE, "older values of the text series"),
    strings("merge", "chart groups drawn as one chart each (train for train/*)"),
]


@bp.get("/runs/<source>/<run_id>")
@declare("A run's page: its charts, values, tensors and media (HTML)", query=RUN_PAGE_QUERY,
         responses=page_errors(400, 404))  # fmt: skip
def run_page(source: str, run_id: str):
    try:
        run = get_run(source, run_id)
    except SourceDown as exc:  # said as a page of its own, which looks again every 30 s
        return render_template("source_down.html", source=source, message=exc.message)
    summary = run_summary(source, run)
    live = summary["status"] in LIVE
    arriving = run.archived and not path_for(run.lab.archive_dir, run.id).exists()
    if arriving:  # archived on its box a moment ago: no series to read here until its file comes
        view = {"plots": [], "texts": [], "tensors": [], "group_links": {}, "names": [], "series": 0,
                "truncated": False, "system": system_group.EMPTY}  # fmt: skip
    else:
        view = _run_view(run, source, live, lambda n, name: f"chart-{n}")
        view["system"] = _system_group(run, source, live)
    config, config_truncated = config_summary(run.config, MAX_PAGE_CONFIG_BYTES)  # whole: in the API
    media = media_overview(run)
    return render_template(
        "run.html",
        group_links=view["group_links"],
        run=run,
        summary=summary,
        source=source,
        plots=view["plots"],
        texts=view["texts"],
        tensors=view["tensors"],
        meta=run.meta,
        config=config,
        config_truncated=config_truncated,
        regenerate=run.regenerate_command(),
        has_diff=bool(run.meta.get("git_dirty")),
        truncated=view["truncated"],
        system=view["system"],
        live=live,
        media=media,
        arriving=arriving,
        previous=_previous_run(run),
        resumes=_resumes(run),
        # What the page's poll starts from: it hears only of what changes after (api.live).
        watch={
            "series": view["series"],
            "media": live_watch.media_fingerprint(run) if live else "",
            # The System group's series too: the poll then does not take them for new ones
            # (the group follows them itself, through run_system).
            "names": view["names"] + view["system"]["names"],
        },
    )


def _resumes(run: Run) -> list[dict[str, Any]]:
    """When the run was resumed and after which step (its owner writes the list: only
    entries of the right shape, the last 20)."""
    found = run.meta.get("resumes")
    if not isinstance(found, list):
        return []
    shown = []
    for entry in [r for r in found if isinstance(r, dict)][-20:]:
        step = entry.get("after_idx")
        shown.append({
            "at": number(entry.get("at")) or "",
            "after_idx": step if isinstance(step, int) and not isinstance(step, bool) else "?",
            "host": str(entry.get("host") or "")[:64],  # a text of any length, as its owner wrote it
        })  # fmt: skip
    return shown


def _previous_run(run: Run) -> str | None:
    """The id of the run this one was started again after (its record's ``previous``), when
    that run is still there."""
    previous = run.meta.get("previous")
    if not isinstance(previous, str) or not previous:
        return None
    return previous if run.lab.redis.exists(run.lab.keys.run(previous)) else None


@bp.get("/runs/<source>/<run_id>/charts")
@declare(
    "A run page's charts for a view (JSON): what viewer.js draws in place on a control change",
    query=[*RUN_PAGE_QUERY, strings("name", "only these series (default: every charted one)")],
    responses=errors(400, 404, 503),
)
def run_charts(source: str, run_id: str):
    """The run page's charts, text series and tensors for the query's x axis, y scale and
    merged groups, each with its Bokeh spec (a target id of its own, unique per series and
    view), group, point count and latest value; ``name`` narrows it to new series."""
    run = get_run(source, run_id)
    live = run.status in LIVE
    view = _run_view(run, source, live, _view_target, set(request.args.getlist("name")) or None)
    return jsonify(
        {
            "live": live,
            "series": view["series"],
            "names": view["names"],
            "truncated": view["truncated"],
            "plots": [_plot_json(source, run.id, p) for p in view["plots"]],
            "texts": [{**t, "csv": _csv_url(source, run.id, t["name"])} for t in view["texts"]],
            "tensors": [
                {k: t.get(k) for k in ("name", "target", "spec", "idx", "dtype", "shape", "error")}
                for t in view["tensors"]
            ],
            "groups": {
                group: {"link": link, "merged": group in request.args.getlist("merge")}
                for group, link in view["group_links"].items()
            },
        }
    )


@bp.get("/runs/<source>/<run_id>/system")
@declare(
    "A run page's System group (JSON): its sys/ series' charts on the wall-clock axis, by section",
    query=[
        one_of("specs", ["0", "1"], "0: each chart without its Bokeh spec (its count and latest value only)")
    ],
    responses=errors(404, 503),
)
def run_system(source: str, run_id: str):
    """The run's System group as its page draws it: ``sections`` (the box, the run's
    processes, each GPU: their charts, each with its Bokeh spec, point count and latest value
    in its unit), ``statuses`` (the samplers' latest texts), ``truncated``, and ``live``.
    The page asks for it while the run is live: ``specs=0`` for the counts and values only
    (a spec is ~14 KB; 8 GPUs make 60 charts), then the specs of series it lacks."""
    run = get_run(source, run_id)
    live = run.status in LIVE
    group = _system_group(run, source, live, specs=request.args.get("specs") != "0")
    for section in group["sections"]:
        for plot in section["plots"]:
            plot["csv"] = _csv_url(source, run.id, plot["name"])
    return jsonify({"live": live, **group})


def _system_group(run, source: str, live: bool, specs: bool = True) -> dict[str, Any]:
    """The run's System group (labstats.viewer.system_group). Its charts keep their own axes
    whatever the page's controls say: wall-clock time, a linear y in each series' unit."""
    return system_group.group(run, source, run.series_info(), live, _system_target, specs=specs)


def _system_target(n: int, name: str) -> str:
    """A System chart's target id: the same on the page and in run_system's answers (the page
    adds the charts it lacks by it)."""
    return "system-" + hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def _view_target(n: int, name: str) -> str:
    """A chart's target id in a view drawn in place: the same series in another view (x
    axis, y scale) gets another one, so an old chart's Bokeh models never clash with it."""
    key = "\0".join([name, _x_axis(), request.args.get("y", ""), *request.args.getlist("merge")])
    return "chart-" + hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def _csv_url(source: str, run_id: str, name: str) -> str:
    return url_for("api.series_csv", source=source, run_id=run_id, name=name)


def _plot_json(source: str, run_id: str, plot: dict) -> dict:
    keep = ("name", "target", "spec", "group", "count", "latest", "hidden", "members")
    out = {k: plot[k] for k in keep if k in plot}
    if not plot.get("members"):
        out["csv"] = _csv_url(source, run_id, plot["name"])
        # The chart as a paper figure on the page's x axis (as _chart_links.html links it).
        x = request.args.get("x")
        x = x if x in X_AXES and x != "idx" else None
        out["figures"] = {
            fmt: url_for("figures.figure", source=source, run_id=run_id, fmt=fmt, series=plot["name"], x=x)
            for fmt in ("svg", "png")
        }
    return out


def _run_view(run, source: str, live: bool, target_of, names: set[str] | None = None) -> dict[str, Any]:
    """A run's charts as its page draws them: line charts and histograms (``plots``), text
    series, tensors, the links that merge or split each group, and how many series the run
    has (``series``, what the page's poll compares with). ``target_of(n, name)`` names each
    chart's target; ``names``: only these series."""
    info = run.series_info()
    try:
        at_idx = int_arg("step")
    except ApiError:
        at_idx = None  # a step picker typo shows the latest value
    plots, texts, tensors, drawn = [], [], [], []
    # The run's own series; its sys/ ones are the System group's (system_group).
    own = [(name, i) for name, i in live_watch.charted(info) if not system_group.is_system(name)]
    for n, (name, i) in enumerate(own[:MAX_CHARTS]):
        if names is not None and name not in names:
            continue
        drawn.append(name)
        try:
            _add_series(run, source, name, i, target_of(n, name), live, at_idx, plots, texts, tensors)
        except (LabstatsError, ValueError, TypeError, KeyError) as exc:
            # One unreadable series (a record not written by labstats) must not hide the rest.
            texts.append({"name": name, "rows": [], "count": 0, "error": f"malformed series: {exc}"})
    if names is not None:  # new series of a merged group: the page asks for the whole view
        links = _group_links(plots, source, run.id)
        return {"plots": plots, "texts": texts, "tensors": tensors, "group_links": links, "names": drawn,
                "series": len(info), "truncated": len(own) > MAX_CHARTS}  # fmt: skip
    plots, group_links = _merge_groups(plots, live, source, run.id, target_of)
    return {"plots": plots, "texts": texts, "tensors": tensors, "group_links": group_links, "names": drawn,
            "series": len(info), "truncated": len(own) > MAX_CHARTS}  # fmt: skip


def _merge_groups(
    plots: list[dict], live: bool, source: str, run_id: str, target_of
) -> tuple[list[dict], dict]:
    """The groups asked for as one chart (?merge=train): their line charts drawn as one, a
    line per series. Returns the plots and, per group, the link that toggles it."""
    merged = set(request.args.getlist("merge"))
    out, done = [], set()
    for plot in plots:
        group = plot["group"]
        if group not in merged or "url" not in plot:
            out.append(plot)
            continue
        if group in done:
            continue
        done.add(group)
        members = [p for p in plots if p["group"] == group and "url" in p]
        target = target_of(len(done), f"{group}/*").replace("chart-", "merged-", 1)
        spec = charts.line_chart(f"{group}/*", [(p["name"], p["url"]) for p in members], live, target,
                                 log_y=request.args.get("y") == "log", x_axis=_x_axis())  # fmt: skip
        out.append({"name": f"{group}/*", "target": target, "spec": spec, "group": group,
                    "count": sum(p["count"] or 0 for p in members),
                    "members": [p["name"] for p in members]})  # fmt: skip
        out += [
            {**p, "spec": None, "hidden": True} for p in members if p.get("latest")
        ]  # keep their latest values
    return out, _group_links(plots, source, run_id)


def _group_links(plots: list[dict], source: str, run_id: str) -> dict[str, str]:
    """Per group of ``plots``, the link that draws it as one chart, or as separate ones again."""
    merged = set(request.args.getlist("merge"))
    links = {}
    # Only the page's own parameters travel: url_for takes _method, _external, _scheme...
    # as its own options (?_method=POST was a 500).
    args = {k: v for k in RUN_PAGE_PARAMS if (v := request.args.get(k))}
    for group in {p["group"] for p in plots if p["group"]}:
        wanted = sorted(merged ^ {group})
        links[group] = url_for("pages.run_page", source=source, run_id=run_id, merge=wanted, **args)
    return links


# The run page's own query parameters (besides merge), kept by the links it builds.
RUN_PAGE_PARAMS = ("x", "y", "step", "text_page")


def _add_series(run, source, name, i, target, live, at_idx, plots, texts, tensors) -> None:
    if "error" in i:
        raise ValueError(i["error"])
    if i.get("kind") in ("f", "i", "b"):
        x_axis = _x_axis()
        url = charts.series_url(source, run.id, name, x_axis)
        spec = charts.line_chart(name, [(name, url)], live, target, log_y=request.args.get("y") == "log",
                                 x_axis=x_axis)  # fmt: skip
        last = run.latest(name)
        plots.append({"name": name, "target": target, "spec": spec, "count": i.get("count"), "url": url,
                      "group": _group(name),
                      "latest": (last[0], _short(last[1])) if last else None})  # fmt: skip
        return
    if i.get("hint") == "histogram":
        pairs = [(s, v) for s, v in run.recent(name, HISTOGRAM_STEPS)
                 if isinstance(v, np.ndarray) and v.ndim == 1 and v.size > 2]  # fmt: skip
        spec = charts.histogram_chart(name, [s for s, _ in pairs], [v for _, v in pairs], target)
        plots.append(
            {"name": name, "target": target, "spec": spec, "count": i.get("count"), "group": _group(name)}
        )
        return
    last = run.latest(name)
    if last is not None and isinstance(last[1], np.ndarray):
        try:
            idx, value = tensor_at(run, name, at_idx, MAX_DRAWN_TENSOR_VALUES, latest=last)
        except ApiError as exc:
            tensors.append({"name": name, "target": target, "spec": None, "error": exc.message})
            return
        drawable = value.dtype.kind in "fiub" and value.size  # an empty one: its shape says it all
        spec = charts.tensor_chart(name, value, idx, target) if drawable else None
        tensors.append(
            {
                "name": name,
                "target": target,
                "spec": spec,
                "idx": idx,
                "dtype": str(value.dtype),
                "shape": list(value.shape),
                "steps": run.steps(name, 200).tolist(),
            }
        )
        return
    if last is not None and _elements(last[1]):
        # A list or dict of arrays: each element drawn as an array, never printed as text.
        idx, value = last
        if at_idx is not None:
            chosen = [(s, v) for s, v in run.recent(name, 200) if s <= at_idx and _elements(v)]
            idx, value = chosen[-1] if chosen else last
        for k, (key, element) in enumerate(_elements(value)[:MAX_ELEMENTS]):
            spec = charts.tensor_chart(f"{name}{key}", element, idx, f"{target}-{k}")
            tensors.append({"name": f"{name}{key}", "target": f"{target}-{k}", "spec": spec, "idx": idx,
                            "dtype": str(element.dtype), "shape": list(element.shape),
                            "steps": run.steps(name, 200).tolist() if k == 0 else []})  # fmt: skip
        return
    page = max(0, int_arg("text_page", 0, 0, MAX_TEXT_PAGE) or 0)
    rows = live_watch.text_rows(run, name, page)
    more = len(rows) == live_watch.TEXT_ROWS and i.get("count", 0) > live_watch.TEXT_ROWS * (page + 1)
    texts.append({"name": name, "rows": rows, "count": i.get("count", 0), "page": page, "more": more})


MAX_ELEMENTS = 16  # arrays of one list/dict value drawn on the page


def _elements(value: Any) -> list[tuple[str, np.ndarray]]:
    """The numeric arrays of a list, tuple or dict value, keyed "[0]" / "['w']"; [] when it
    is not a container of arrays only."""
    if isinstance(value, dict):
        items = [(f"[{k!r}]", v) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        items = [(f"[{k}]", v) for k, v in enumerate(value)]
    else:
        return []
    arrays = [(k, v) for k, v in items if isinstance(v, np.ndarray) and v.dtype.kind in "fiub" and v.size]
    return arrays if arrays and len(arrays) == len(items) else []


def _x_axis() -> str:
    """The page's x axis (?x=idx|epoch|time|relative; anything else is idx)."""
    x = request.args.get("x", "idx")
    return x if x in X_AXES else "idx"


_short = live_watch.short_value


def _group(name: str) -> str:
    """The chart group of a series: its name's first part (train/loss → train), or ""."""
    return name.split("/", 1)[0] if "/" in name else ""


COMPARE_QUERY = [
    {**strings("run", "source/run_id", minItems=1, maxItems=MAX_COMPARED), "required": True},
    strings("series", "the series charted (default: all)"),
    *AXES_QUERY,
]


@bp.get("/compare")
@declare("Runs compared: their charts and configs side by side (HTML)", query=COMPARE_QUERY,
         responses=page_errors(400, 404))  # fmt: skip
def compare():
    runs = _compared_runs()
    names, plots, colors = _compare_plots(runs, lambda n, name: f"chart-{n}")
    # Each run's config as its page shows it (64 KiB at most): 20 configs of 100,000 keys
    # would be a table of 100,000 rows.
    configs = [config_summary(r.config, MAX_PAGE_CONFIG_BYTES)[0] for _, r in runs]
    keys = sorted({k for config in configs for k in config})
    table = []
    for key in keys:
        values = [json.dumps(config.get(key), default=str, sort_keys=True) for config in configs]
        table.append({"key": key, "cells": values, "differs": len(set(values)) > 1})
    live_refs = [f"{s}/{r.id}" for s, r in runs if r.status in LIVE]
    return render_template(
        "compare.html", runs=runs, plots=plots, table=table, names=names, live_refs=live_refs, colors=colors,
        refs=request.args.getlist("run"), chosen_series=request.args.getlist("series"),
    )  # fmt: skip


@bp.get("/compare/charts")
@declare(
    "A compare page's charts for a view (JSON): what viewer.js draws in place on a control change",
    query=COMPARE_QUERY,
    responses=errors(400, 404, 503),
)
def compare_charts():
    """The compare page's charts for the query's runs, series, x axis and y scale, each with
    its Bokeh spec (a target id of its own per series and view), and how many series each
    run has (what the page's poll compares with)."""
    try:
        runs = _compared_runs()
    except HTTPException as exc:  # the page's own refusal, said as JSON here
        raise ApiError(exc.code or 400, exc.description or "bad request") from None
    _, plots, _ = _compare_plots(runs, _view_target)
    return jsonify(
        {
            "plots": [{k: p[k] for k in ("name", "target", "spec")} for p in plots],
            "live": any(r.status in LIVE for _, r in runs),
        }
    )


def _compared_runs() -> list[tuple[str, Any]]:
    refs = request.args.getlist("run")
    if not refs or len(refs) > MAX_COMPARED:
        abort(400, "choose between 1 and 20 runs to compare (?run=source/id&run=...)")
    runs = []
    for ref in refs:
        source, _, run_id = ref.partition("/")
        runs.append((source, get_run(source, run_id)))
    return runs


def _compare_plots(runs, target_of) -> tuple[list[str], list[dict], list[str]]:
    """The compared runs' numeric series (names), a chart per chosen series with a line per
    run that has it (plots), and each run's colour."""
    infos = {r.id: r.series_info() for _, r in runs}  # read once per run, not per chart
    names = sorted(
        {n for info in infos.values() for n, i in info.items() if i.get("kind") in ("f", "i", "b")}
        - AXIS_SERIES
    )
    wanted = request.args.getlist("series") or names
    # A colour per run, the same on every chart (a run without a series leaves a gap, not a shift).
    palette = Category10_10 if len(runs) <= 10 else Category20_20
    colors = [palette[k % len(palette)] for k in range(len(runs))]
    live = any(r.status in LIVE for _, r in runs)
    log_y = request.args.get("y") == "log"
    x_axis = _x_axis()
    plots = []
    for n, name in enumerate(wanted[:MAX_CHARTS]):
        chosen = [(k, s, r) for k, (s, r) in enumerate(runs) if name in infos[r.id]]
        lines = [(f"{r.name} ({s})", charts.series_url(s, r.id, name, x_axis)) for _, s, r in chosen]
        if lines:
            line_colors = [colors[k] for k, _, _ in chosen]
            target = target_of(n, name)
            spec = charts.line_chart(
                name, lines, live, target, log_y=log_y, colors=line_colors, x_axis=x_axis
            )
            plots.append({"name": name, "target": target, "spec": spec})
    return names, plots, colors
