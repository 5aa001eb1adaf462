"""The read-only JSON API; its OpenAPI document (/api/openapi.json) is generated from the
declarations beside each endpoint (labstats.viewer.openapi). Errors are JSON too.

    GET /api/runs, /api/runs/<source>/<run_id>, .../series/<name>?start=&stop=&max_points=
    POST /api/live {"runs": [...], "series": [...], "watch": [...]}   (what a page polls)

Every answer is bounded whatever a run holds: configs in lists and live updates are a
summary of at most MAX_LISTED_CONFIG_BYTES (the whole one is in the run's own answer), a
live request at most MAX_LIVE_POINTS points in all (413 beyond), object series at most
MAX_OBJECTS_SENT values, and a chart whose data cannot be reduced answers its own error.
How runs are read is labstats.viewer.data; series windows and x axes labstats.viewer.windows.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from labstats.format import run_record
from labstats.format.codec import INT64_MAX, INT64_MIN
from labstats.read.downsample import MAX_POINTS
from labstats.reader import LabstatsError, Run
from labstats.viewer.data import (
    MAX_LIST_LIMIT,
    MAX_LIST_PAGE,
    RUN_SORTS,
    ApiError,
    describe,
    finite,
    get_run,
    int_arg,
    is_numeric,
    json_error,
    run_summary,
    runs_table,
    series_window,
    short,
    sources,
    tensor_at,
)
from labstats.viewer.filters import MAX_FILTER_CHARS
from labstats.viewer.live import MAX_CHARTS, watch
from labstats.viewer.openapi import (
    JSON_OK,
    STRING,
    content,
    declare,
    document,
    errors,
    integer,
    one_of,
    parameter,
)
from labstats.viewer.table import MAX_SORT_CHARS, ORDERS
from labstats.viewer.windows import MAX_POINTS_ASKED, X_AXES, series_body

bp = Blueprint("api", __name__, url_prefix="/api")

# A window's edges: idx (an integer) or, with ?x=, the axis' units.
WINDOW = [
    parameter("start", {"type": "number"}, "first point's x (idx unless x says otherwise)"),
    parameter("stop", {"type": "number"}, "last point's x (idx unless x says otherwise)"),
]
IDX_WINDOW = [integer("start", INT64_MIN, INT64_MAX), integer("stop", INT64_MIN, INT64_MAX)]


bp.register_error_handler(ApiError, json_error)


@bp.get("/health")
@declare("Are the sources reachable", responses={200: JSON_OK, 503: JSON_OK})
def health():
    reachable = {}
    for name, src in sources().items():
        try:
            reachable[name] = bool(src.lab.redis.ping())
        except Exception:  # a health check reports, it does not raise
            reachable[name] = False
    ok = all(reachable.values())
    return jsonify({"ok": ok, "sources": reachable}), 200 if ok else 503


# The runs list's query (runs_table), here and on the runs table's pages: sorted, filtered
# and grouped over every run of every source, then a page.
RUNS_QUERY = [
    parameter("q", STRING, "name contains"),
    one_of("status", run_record.SHOWN_STATUSES),
    parameter("tag", STRING),
    parameter(
        "sort",
        {"type": "string", "maxLength": MAX_SORT_CHARS},
        f"{', '.join(RUN_SORTS)}, duration, config:KEY or metric:SERIES:last|min|max "
        "(default: started, newest first)",
    ),
    one_of("order", ORDERS, "asc or desc (default: desc for started and heartbeat, else asc)"),
    parameter(
        "filter",
        {"type": "string", "maxLength": MAX_FILTER_CHARS},
        "over config keys, metrics (NAME, NAME.min, NAME.max) and status, name, duration: "
        'lr < 0.01 and val/loss.min < 0.1 and opt == "adam" (a bad one is a 400 that says why)',
    ),
    parameter("group", STRING, "config:KEY or status: the runs grouped, with counts over every run"),
    integer("limit", 1, MAX_LIST_LIMIT, "runs on a page"),
    integer("page", 1, MAX_LIST_PAGE, "from 1"),
]


@bp.get("/runs")
@declare(
    "Runs of every source, filtered and sorted, a page at a time", query=RUNS_QUERY, responses=errors(400)
)
def runs():
    """A page of the runs; with a filter, another sort than the newest first or a group,
    also ``total`` (the runs that match) and ``groups`` ([{value, count}] in their order),
    each run then naming its ``group`` and the ``metrics`` the sort and filter read
    ({series: {last, min, max}})."""
    runs, table = runs_table()
    unreachable = [name for name, state in table.states.items() if not state["reachable"]]
    body: dict[str, Any] = {"runs": runs, "sources": table.states, "unreachable": unreachable}
    if table.total is not None:
        body["total"] = table.total
    if table.groups:
        body["groups"] = [{"value": g.value, "count": g.count} for g in table.groups]
        for run, group in zip(runs, table.group_of, strict=True):
            run["group"] = group
    if table.summaries:  # the metrics the sort and filter read: their values, as the order used them
        for run in runs:
            run["metrics"] = {
                name: found.get((run["source"], run["id"])) for name, found in table.summaries.items()
            }
    return jsonify(body)


@bp.get("/runs/<source>/<run_id>")
@declare("A run: metadata, recipe, series", responses=errors(404, 503))
def run(source: str, run_id: str):
    r = get_run(source, run_id)
    info = r.series_info()
    body = run_summary(source, r, whole_config=True)
    body["meta"] = {k: v for k, v in r.meta.items() if k not in ("config", "tags")}
    body["regenerate"] = r.regenerate_command()
    body["series"] = {
        name: {"kind": i.get("kind"), "count": i.get("count"), "last_idx": i.get("last_idx")}
        for name, i in sorted(info.items())
    }
    return jsonify(body)


@bp.get("/runs/<source>/<run_id>/diff")
@declare("The git diff the run started with", responses=errors(404, 503, ok=content("text/x-diff", "diff")))
def diff(source: str, run_id: str):
    return Response(get_run(source, run_id).diff(), mimetype="text/x-diff")


@bp.get("/runs/<source>/<run_id>/series/<path:name>")
@declare(
    "A series window, downsampled to max_points keeping extremes",
    query=[
        *WINDOW,
        integer("max_points", 2, MAX_POINTS_ASKED, f"default {MAX_POINTS}"),
        one_of("x", X_AXES, "the x of the points: idx, epoch, time (ms) or relative (s)"),
        parameter("columns", STRING, "any value: only the idx and values columns"),
    ],
    responses=errors(400, 404, 503),
)
def series(source: str, run_id: str, name: str):
    return jsonify(series_body(get_run(source, run_id), name, request.args))


MAX_LIVE_URLS = 400  # 20 runs compared × 20 charts
MAX_WATCHED_RUNS = 20  # the runs of a compare page
MAX_WATCHED_NAMES = 2 * MAX_CHARTS  # a run page's charts and text series
# Points a live request may ask for in all (each window's max_points, 2,000 unless given):
# the most a page sends, 400 windows of 2,000; 40 windows of 100,000 returned 106 MB.
MAX_LIVE_POINTS = MAX_LIVE_URLS * MAX_POINTS


LIVE_BODY = {
    "type": "object",
    "properties": {
        "runs": {"type": "array", "items": STRING, "maxItems": MAX_LIVE_URLS, "description": "source/run_id"},
        "series": {
            "type": "array",
            "items": STRING,
            "maxItems": MAX_LIVE_URLS,
            "description": "series URLs (/api/runs/.../series/NAME?...), each answered in order",
        },
        "watch": {
            "type": "array",
            "maxItems": MAX_WATCHED_RUNS,
            "items": {
                "type": "object",
                "properties": {
                    "run": {**STRING, "description": "source/run_id"},
                    "series": {"type": "integer", "description": "how many series the page knows of"},
                    "counts": {"type": "object", "description": "{name: points the page shows}"},
                    "texts": {"type": "object", "description": "{text series: values the page shows}"},
                    "media": {**STRING, "description": "the media fingerprint the page has"},
                },
            },
            "description": "what the page knows of each run: the answer says what changed "
            f"(at most {MAX_WATCHED_NAMES} names in counts and texts in all)",
        },
    },
    "description": f"at most {MAX_LIVE_URLS} runs and series in all",
}


@bp.post("/live")
@declare("The runs' status and the charts' windows a page polls", body=LIVE_BODY, responses=errors(400, 413))
def live():
    """Everything a page polls, in one request: the status of its runs and the current
    window of each of its charts' series (the data URLs the charts hold, zoom included).
    Body: {"runs": ["source/run_id", ...], "series": ["/api/runs/.../series/NAME?...", ...],
    "watch": [{"run": "source/run_id", "series": N, "counts": {name: count}, "texts": {name:
    count}, "media": fingerprint}, ...]}: each watched run's answer (``watch``, in order)
    holds its series count and only what changed since (labstats.viewer.live.watch): the
    charted series when the count differs, the new counts with latest values, text rows,
    the media list when its fingerprint differs."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "send a JSON object with 'runs' and 'series' lists")
    refs, urls, watched = body.get("runs") or [], body.get("series") or [], body.get("watch") or []
    if not (isinstance(refs, list) and isinstance(urls, list)) or len(refs) + len(urls) > MAX_LIVE_URLS:
        raise ApiError(400, f"'runs' and 'series' must be lists of at most {MAX_LIVE_URLS} items in all")
    if not isinstance(watched, list) or len(watched) > MAX_WATCHED_RUNS:
        raise ApiError(400, f"'watch' must be a list of at most {MAX_WATCHED_RUNS} runs")
    # Each name shown may cost a read of its last chunk: as many as one run page shows, in all.
    if sum(_names_in(entry) for entry in watched) > MAX_WATCHED_NAMES:
        raise ApiError(400, f"'watch' may name at most {MAX_WATCHED_NAMES} series in all (counts and texts)")
    asked = sum(_max_points_of(url) for url in urls)
    if asked > MAX_LIVE_POINTS:
        raise ApiError(413, f"the windows ask for {asked:,} points in all, over the {MAX_LIVE_POINTS:,} "
                            "one live request may have (fewer windows, or a smaller max_points)")  # fmt: skip
    loaded: dict[tuple[str, str], Run] = {}

    def run_of(source: str, run_id: str) -> Run:
        if (source, run_id) not in loaded:
            loaded[source, run_id] = get_run(source, run_id)
        return loaded[source, run_id]

    answer: dict[str, Any] = {"runs": {}, "series": []}
    for ref in refs:
        source, _, run_id = str(ref).partition("/")
        try:
            answer["runs"][ref] = run_summary(source, run_of(source, run_id))
        except ApiError as exc:
            answer["runs"][ref] = {"error": exc.message}
    if watched:
        answer["watch"] = [_watch(entry, run_of) for entry in watched]
    adapter = current_app.url_map.bind("")
    axes: dict = {}
    for url in urls:
        try:
            parts = urlsplit(str(url))
            endpoint, values = adapter.match(unquote(parts.path), method="GET")
            if endpoint != "api.series":
                raise ApiError(400, "not a series URL")
            r = run_of(values["source"], values["run_id"])
            answer["series"].append(series_body(r, values["name"], MultiDict(parse_qsl(parts.query)), axes))
        except ApiError as exc:
            answer["series"].append({"error": exc.message})
        except HTTPException:
            answer["series"].append({"error": "not a series URL"})
        except (LabstatsError, ValueError, TypeError, KeyError, IndexError) as exc:
            # One chart whose data cannot be read or reduced: its error, the others still come.
            current_app.logger.warning("live: %s: %s", url, exc)
            answer["series"].append({"error": f"this chart's data cannot be read ({short(exc)})"})
    return jsonify(answer)


def _names_in(entry: Any) -> int:
    """The series a watched run's entry names (its counts and texts)."""
    if not isinstance(entry, dict):
        return 0
    return sum(len(entry[key]) for key in ("counts", "texts") if isinstance(entry.get(key), dict))


def _watch(entry: Any, run_of) -> dict[str, Any]:
    """One watched run's changes (labstats.viewer.live.watch), or its error."""
    if not isinstance(entry, dict) or not isinstance(entry.get("run"), str):
        return {"error": "each watched run is an object with its 'run' (source/run_id)"}
    source, _, run_id = entry["run"].partition("/")
    try:
        return {"run": entry["run"], **watch(run_of(source, run_id), entry)}
    except ApiError as exc:
        return {"run": entry["run"], "error": exc.message}
    except (LabstatsError, ValueError, TypeError, KeyError) as exc:
        current_app.logger.warning("live: watching %s: %s", entry["run"], exc)
        return {"run": entry["run"], "error": f"this run cannot be read ({short(exc)})"}


def _max_points_of(url: Any) -> int:
    """The points a live window asks for (its max_points, else the default)."""
    raw = MultiDict(parse_qsl(urlsplit(str(url)).query)).get("max_points")
    try:
        return min(max(int(raw), 2), MAX_POINTS_ASKED) if raw not in (None, "") else MAX_POINTS
    except ValueError:
        return MAX_POINTS  # answered as that window's error


# A spreadsheet runs a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(text: str) -> str:
    """A text cell that a spreadsheet shows as text, never evaluates (OWASP's advice:
    prefix a quote). Numbers are written as numbers and need no escape."""
    return "'" + text if text.startswith(_FORMULA_START) else text


@bp.get("/runs/<source>/<run_id>/csv/<path:name>")
@declare(
    "A series window at full resolution, as CSV",
    query=IDX_WINDOW,
    responses=errors(400, 404, 503, ok=content("text/csv", "csv")),
)
def series_csv(source: str, run_id: str, name: str):
    r = get_run(source, run_id)
    s = series_window(r, name)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["idx", csv_text(name)])
    if is_numeric(s):
        writer.writerows(zip(s.idx.tolist(), s.values.tolist(), strict=True))
    else:
        for i, v in zip(s.idx.tolist(), map(describe, s.values), strict=True):
            writer.writerow([i, csv_text(v if isinstance(v, str) else json.dumps(v))])
    filename = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{r.name}-{name}")[:120]
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
    )


@bp.get("/runs/<source>/<run_id>/tensor/<path:name>")
@declare(
    "A tensor value at (or before) an idx",
    query=[integer("idx", INT64_MIN, INT64_MAX, "default: the latest")],
    responses=errors(400, 404, 413, 503),
)
def tensor(source: str, run_id: str, name: str):
    r = get_run(source, run_id)
    idx, value = tensor_at(r, name, int_arg("idx"))
    return jsonify(
        {
            "name": name,
            "idx": idx,
            "dtype": str(value.dtype),
            "shape": list(value.shape),
            "values": finite(value.reshape(-1)) if value.dtype.kind in "fiub" else None,
        }
    )


@bp.get("/openapi.json")
@declare("This document (OpenAPI 3)")
def openapi():
    # Made once per app from the declarations: the routes cannot change after the first request.
    doc = current_app.extensions.get("labstats_openapi")
    if doc is None:
        doc = current_app.extensions["labstats_openapi"] = document(current_app)
    return jsonify(doc)
