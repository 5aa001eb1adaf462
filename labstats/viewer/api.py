"""The read-only JSON API (described by /api/openapi.json). Errors are JSON too.

    GET /api/runs, /api/runs/<source>/<run_id>, .../series/<name>?start=&stop=&max_points=
    POST /api/live {"runs": [...], "series": [...]}   (what a page polls)

Every answer is bounded whatever a run holds: configs in lists and live updates are a
summary of at most MAX_LISTED_CONFIG_BYTES (the whole one is in the run's own answer), a
live request at most MAX_LIVE_POINTS points in all (413 beyond), object series at most
MAX_OBJECTS_SENT values, and a chart whose data cannot be reduced answers its own error.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from labstats import schema
from labstats.codec import INT64_MAX, INT64_MIN
from labstats.reader import UNREACHABLE, LabstatsError, Run, Series, number
from labstats.viewer.downsample import MAX_POINTS, downsample
from labstats.viewer.sources import Source

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_TEXT = 2000  # characters of a text/object value shown
# Values of an object (text) series sent in one answer: 1,000 × MAX_TEXT is at most 2 MB;
# max_points (up to 100,000) would allow 200 MB.
MAX_OBJECTS_SENT = 1000
# A run's config as lists (/api/runs, the runs page) and live updates send it: keys in
# order while they fit in 4 KiB (a 20 MB config slowed / to 1.6 s and was resent to every
# open runs page every 5 s); a value over 256 bytes is replaced by a note of its size. The
# run's own answer (/api/runs/<source>/<id>) has it whole; its page shows up to 64 KiB.
MAX_LISTED_CONFIG_BYTES = 4096
MAX_LISTED_VALUE_BYTES = 256
MAX_PAGE_CONFIG_BYTES = 65_536
MAX_TENSOR_VALUES = 1_000_000  # elements of one tensor sent whole, as JSON, by the API
# elements of one tensor a run page draws (reduced for the screen): a 4096×4096 weight
MAX_DRAWN_TENSOR_VALUES = 4096 * 4096


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---- helpers shared with the pages -------------------------------------------------------


def sources() -> dict[str, Source]:
    return current_app.extensions["labstats_sources"]


def get_run(source: str, run_id: str) -> Run:
    src = sources().get(source)
    if src is None:
        raise ApiError(404, f"unknown source {source!r}")
    try:
        return src.lab.run(run_id)
    except LabstatsError as exc:
        raise ApiError(404, str(exc)) from None
    except UNREACHABLE as exc:
        raise SourceDown(source, exc) from None


class SourceDown(ApiError):
    """A source that cannot be read right now (its replica is down)."""

    def __init__(self, source: str, exc: Exception) -> None:
        super().__init__(503, f"source {source} cannot be read right now ({short(exc)}); "
                              "its runs come back when it does")  # fmt: skip
        self.source = source


def short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def source_state(src: Source) -> dict[str, Any]:
    """Whether a source can be read and whether its training box is connected to it."""
    try:
        return {"reachable": True, "link": src.lab.link_state(), "error": None}
    except UNREACHABLE as exc:
        return unreachable_state(exc)


def unreachable_state(exc: Exception) -> dict[str, Any]:
    return {"reachable": False, "link": None, "error": short(exc)}


def int_arg(
    name: str, default: int | None = None, low: int | None = None, high: int | None = None, args=None
) -> int | None:
    raw = (request.args if args is None else args).get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    low = INT64_MIN if low is None else low
    high = INT64_MAX if high is None else high
    if value is None or value < low or value > high:
        raise ApiError(400, f"query parameter {name!r} must be an integer between {low} and {high}")
    return value


# A spreadsheet runs a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(text: str) -> str:
    """A text cell that a spreadsheet shows as text, never evaluates (OWASP's advice:
    prefix a quote). Numbers are written as numbers and need no escape."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def finite(values: np.ndarray) -> list[Any]:
    """A JSON-safe list: NaN and infinities become null."""
    if values.dtype.kind == "f":
        out = values.astype(object)
        out[~np.isfinite(values)] = None
        return out.tolist()
    return values.tolist()


def describe(value: Any) -> Any:
    """A JSON-safe, size-bounded view of a stored object value."""
    if isinstance(value, np.ndarray):
        return {"dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Exception):
        return {"error": str(value)[:MAX_TEXT]}
    return json.dumps(value, default=str)[:MAX_TEXT]


def series_window(run: Run, name: str, args=None) -> Series:
    start = int_arg("start", args=args)
    stop = int_arg("stop", args=args)
    try:
        return run.series(name, start, stop)
    except LabstatsError as exc:
        raise ApiError(404, str(exc)) from None


def is_numeric(series: Series) -> bool:
    return isinstance(series.values, np.ndarray) and series.values.dtype.kind in "fiub"


def encoded_size(value: Any, limit: int) -> int:
    """About the length of ``value`` as JSON, counted only up to ``limit`` (a number over it
    is returned as soon as it is reached): never encodes a large value to measure it."""
    size, stack = 0, [value]
    while stack and size <= limit:
        item = stack.pop()
        if isinstance(item, dict):
            size += 2 + 4 * len(item)
            for key, element in item.items():
                size += len(str(key))
                stack.append(element)
                if len(stack) > limit:
                    return limit + 1
        elif isinstance(item, list | tuple):
            size += 2 + len(item)
            stack.extend(item[: limit + 1])
        elif isinstance(item, str):
            size += len(item) + 2
        else:
            size += len(str(item)) if isinstance(item, int | float | bool) or item is None else 16
    return size


def config_summary(config: dict[str, Any], budget: int = MAX_LISTED_CONFIG_BYTES) -> tuple[dict, bool]:
    """(the config's keys in order while they fit in ``budget`` bytes of JSON, each value
    over MAX_LISTED_VALUE_BYTES replaced by a note of its size; whether anything was left
    out or replaced)."""
    out: dict[str, Any] = {}
    used, shortened = 2, False
    for key, value in config.items():
        size = encoded_size(value, MAX_LISTED_VALUE_BYTES)
        if size > MAX_LISTED_VALUE_BYTES:
            value, shortened = (
                f"({type(value).__name__} over {MAX_LISTED_VALUE_BYTES} bytes: on the run's page)",
                True,
            )
            size = len(value) + 2
        used += len(str(key)) + size + 4
        if used > budget:
            return out, True
        out[key] = value
    return out, shortened


def run_summary(source: str, run: Run, whole_config: bool = False) -> dict[str, Any]:
    """What the runs list shows of a run. Never raises on a malformed record: what cannot
    be read is left out and named in ``malformed``. The config is a summary (config_summary;
    ``config_truncated`` says when it is shortened) unless ``whole_config``."""
    meta = run.meta
    host = meta.get("host")
    config, truncated = (run.config, False) if whole_config else config_summary(run.config)
    return {
        "source": source,
        "id": run.id,
        "name": str(run.name),
        "status": run.status,
        "reason": run.reason,
        "started": number(meta.get("started")),
        "ended": number(meta.get("ended")),
        "heartbeat": number(meta.get("heartbeat")),
        "host": host if isinstance(host, str) else None,
        "tags": run.tags,
        "config": config,
        "config_truncated": truncated,
        "malformed": run.malformed,
        "archived": run.archived,
        "duration": _duration(meta),
    }


def _duration(meta: dict[str, Any]) -> float | None:
    """Seconds from start to end (or to the last heartbeat of a run still going)."""
    start, end = number(meta.get("started")), number(meta.get("ended")) or number(meta.get("heartbeat"))
    return round(end - start, 3) if start is not None and end is not None and end >= start else None


def list_runs(with_runs: bool = False, default_limit: int = 200):
    """A page of the runs of every source that can be read (``limit`` a page, ``page`` from
    1), and each source's state (see source_state): one source that is away leaves the
    others listed. ``with_runs``: also the Run objects in the same order (the runs table
    reads their series), and whether more pages follow."""
    q = request.args.get("q") or None
    status = request.args.get("status") or None
    tag = request.args.get("tag") or None
    sort = request.args.get("sort") or "started"
    if status is not None and status not in schema.SHOWN_STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(schema.SHOWN_STATUSES)}")
    if sort not in ("started", "name", "status", "heartbeat"):
        raise ApiError(400, "sort must be started, name, status or heartbeat")
    limit = int_arg("limit", default_limit, 1, 10_000)
    page = int_arg("page", 1, 1, 10_000)
    pairs, states = [], {}
    for name, src in sources().items():
        try:
            # Each source's newest page * limit (and one more, to know whether more follow):
            # enough for this page of the merged list.
            found = src.lab.runs(name=q, tag=tag, status=status, limit=limit * page + 1)
        except UNREACHABLE as exc:
            states[name] = unreachable_state(exc)
            continue
        states[name] = source_state(src)
        pairs += [(run_summary(name, run), run) for run in found]
    if sort in ("started", "heartbeat"):  # newest first; runs without the time last
        pairs.sort(key=lambda p: (p[0][sort] is None, -(p[0][sort] or 0)))
    else:
        pairs.sort(key=lambda p: str(p[0][sort] or ""))
    more = len(pairs) > limit * page
    pairs = pairs[limit * (page - 1) : limit * page]
    runs = [summary for summary, _ in pairs]
    if with_runs:
        return runs, states, [run for _, run in pairs], more
    return runs, states


# ---- endpoints ---------------------------------------------------------------------------


@bp.get("/health")
def health():
    reachable = {}
    for name, src in sources().items():
        try:
            reachable[name] = bool(src.lab.redis.ping())
        except Exception:  # a health check reports, it does not raise
            reachable[name] = False
    ok = all(reachable.values())
    return jsonify({"ok": ok, "sources": reachable}), 200 if ok else 503


@bp.get("/runs")
def runs():
    runs, states = list_runs()
    unreachable = [name for name, state in states.items() if not state["reachable"]]
    return jsonify({"runs": runs, "sources": states, "unreachable": unreachable})


@bp.get("/runs/<source>/<run_id>")
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
def diff(source: str, run_id: str):
    return Response(get_run(source, run_id).diff(), mimetype="text/x-diff")


@bp.get("/runs/<source>/<run_id>/series/<path:name>")
def series(source: str, run_id: str, name: str):
    return jsonify(series_body(get_run(source, run_id), name, request.args))


# The x axes a chart can have (?x=), with the labels the axis and the page's control show.
X_AXES = {"idx": "idx", "epoch": "epoch", "time": "wall-clock time", "relative": "seconds since start"}


class XAxis:
    """A chart's x axis other than idx: epoch (from update()'s _epoch), wall-clock time in
    ms (Bokeh's datetime axis) or seconds since the run started, each read from the run's
    internal series and mapped to and from idx."""

    def __init__(self, r: Run, kind: str) -> None:
        name = schema.EPOCH_SERIES if kind == "epoch" else schema.TIME_SERIES
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

    def of(self, idx: np.ndarray) -> np.ndarray:
        if self.kind == "epoch":  # the epoch an idx belongs to: the last one set at or before it
            at = np.clip(np.searchsorted(self.idx, idx, side="right") - 1, 0, len(self.idx) - 1)
            return self.x[at]
        return np.interp(idx, self.idx, self.x)

    def to_idx(self, x: float, side: str) -> float:
        """The idx where the axis reaches ``x`` (a zoom window's edge), rounded outward."""
        found = float(np.interp(x, self.x, self.idx)) if self.kind != "epoch" else self._epoch_idx(x, side)
        return float(np.floor(found) if side == "start" else np.ceil(found))

    def _epoch_idx(self, x: float, side: str) -> float:
        if side == "start":  # where the first epoch at or after x begins
            return self.idx[min(int(np.searchsorted(self.x, x, side="left")), len(self.idx) - 1)]
        after = int(np.searchsorted(self.x, x, side="right"))  # the first epoch after the window
        return self.idx[after] - 1 if after < len(self.idx) else np.inf


def _window_args(args, axis: XAxis | None):
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
    args = _window_args(args, axis)
    max_points = int_arg("max_points", MAX_POINTS, 2, 100_000, args=args)
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


MAX_LIVE_URLS = 400  # 20 runs compared × 20 charts
# Points a live request may ask for in all (each window's max_points, 2,000 unless given):
# the most a page sends, 400 windows of 2,000; 40 windows of 100,000 returned 106 MB.
MAX_LIVE_POINTS = MAX_LIVE_URLS * MAX_POINTS


@bp.post("/live")
def live():
    """Everything a page polls, in one request: the status of its runs and the current
    window of each of its charts' series (the data URLs the charts hold, zoom included).
    Body: {"runs": ["source/run_id", ...], "series": ["/api/runs/.../series/NAME?...", ...]}."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "send a JSON object with 'runs' and 'series' lists")
    refs, urls = body.get("runs") or [], body.get("series") or []
    if not (isinstance(refs, list) and isinstance(urls, list)) or len(refs) + len(urls) > MAX_LIVE_URLS:
        raise ApiError(400, f"'runs' and 'series' must be lists of at most {MAX_LIVE_URLS} items in all")
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


def _max_points_of(url: Any) -> int:
    """The points a live window asks for (its max_points, else the default)."""
    raw = MultiDict(parse_qsl(urlsplit(str(url)).query)).get("max_points")
    try:
        return min(max(int(raw), 2), 100_000) if raw not in (None, "") else MAX_POINTS
    except ValueError:
        return MAX_POINTS  # answered as that window's error


@bp.get("/runs/<source>/<run_id>/csv/<path:name>")
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


def tensor_at(
    r: Run, name: str, at: int | None, limit: int = MAX_TENSOR_VALUES, latest: tuple[int, Any] | None = None
) -> tuple[int, np.ndarray]:
    """The tensor of a series at idx ``at`` (the last one at or before it; default: latest),
    of at most ``limit`` elements. Only the records at the chosen idx are decoded, however
    many tensors the series holds; ``latest``, the series' last point when the caller has
    read it already, is not read again when it is the one asked for."""
    if latest is not None and isinstance(latest[1], np.ndarray) and (at is None or at >= latest[0]):
        idx, value = latest
    else:
        idx, value = _tensor_before(r, name, at)
    if value.size > limit:
        raise ApiError(
            413,
            f"tensor of {value.size:,} values is over the {limit:,} this view sends "
            f"(read it whole in a notebook: run.series({name!r}))",
        )
    return idx, value


def _tensor_before(r: Run, name: str, at: int | None) -> tuple[int, np.ndarray]:
    try:
        steps = r.steps(name, 10_000)
    except LabstatsError as exc:
        raise ApiError(404, str(exc)) from None
    candidates = steps if at is None else steps[steps <= at]
    for idx in sorted(set(candidates.tolist()), reverse=True)[:20]:
        for value in reversed(list(r.series(name, idx, idx).values)):
            if isinstance(value, np.ndarray):
                return idx, value
    raise ApiError(404, f"series {name!r} has no tensor at or before idx {at}")


@bp.get("/openapi.json")
def openapi():
    return jsonify(OPENAPI)


@bp.errorhandler(ApiError)
def api_error(exc: ApiError):
    return jsonify({"error": exc.message}), exc.status


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


_RUN_PARAMS = [_ref("source"), _ref("run_id")]
_ERROR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_JSON = {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "labstats viewer API",
        "version": "1",
        "description": "Read-only access to logged runs.",
    },
    "paths": {
        "/api/health": {
            "get": {"summary": "Are the sources reachable", "responses": {"200": _JSON, "503": _JSON}}
        },
        "/api/runs": {
            "get": {
                "summary": "Runs of every source, filtered and sorted",
                "parameters": [
                    {
                        "name": "q",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "name contains",
                    },
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(schema.SHOWN_STATUSES)},
                    },
                    {"name": "tag", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "sort",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["started", "name", "status", "heartbeat"]},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                    },
                ],
                "responses": {"200": _JSON, "400": _ERROR},
            }
        },
        "/api/runs/{source}/{run_id}": {
            "get": {
                "summary": "A run: metadata, recipe, series",
                "parameters": _RUN_PARAMS,
                "responses": {"200": _JSON, "404": _ERROR},
            }
        },
        "/api/runs/{source}/{run_id}/diff": {
            "get": {
                "summary": "The git diff the run started with",
                "parameters": _RUN_PARAMS,
                "responses": {
                    "200": {
                        "description": "diff",
                        "content": {"text/x-diff": {"schema": {"type": "string"}}},
                    },
                    "404": _ERROR,
                },
            }
        },
        "/api/runs/{source}/{run_id}/series/{name}": {
            "get": {
                "summary": "A series window, downsampled to max_points keeping extremes",
                "parameters": [
                    *_RUN_PARAMS,
                    _ref("name"),
                    _ref("start"),
                    _ref("stop"),
                    {
                        "name": "max_points",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 2, "maximum": 100000},
                    },
                    {
                        "name": "x",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(X_AXES)},
                        "description": "the x of the points: idx, epoch, time (ms) or relative (s)",
                    },
                ],
                "responses": {"200": _JSON, "400": _ERROR, "404": _ERROR},
            }
        },
        "/api/runs/{source}/{run_id}/csv/{name}": {
            "get": {
                "summary": "A series window at full resolution, as CSV",
                "parameters": [*_RUN_PARAMS, _ref("name"), _ref("start"), _ref("stop")],
                "responses": {
                    "200": {"description": "csv", "content": {"text/csv": {"schema": {"type": "string"}}}},
                    "400": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/api/runs/{source}/{run_id}/tensor/{name}": {
            "get": {
                "summary": "A tensor value at (or before) an idx",
                "parameters": [
                    *_RUN_PARAMS,
                    _ref("name"),
                    {"name": "idx", "in": "query", "schema": {"type": "integer"}},
                ],
                "responses": {"200": _JSON, "400": _ERROR, "404": _ERROR, "413": _ERROR},
            }
        },
    },
    "components": {
        "parameters": {
            "source": {"name": "source", "in": "path", "required": True, "schema": {"type": "string"}},
            "run_id": {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}},
            "name": {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
            "start": {"name": "start", "in": "query", "schema": {"type": "integer"}},
            "stop": {"name": "stop", "in": "query", "schema": {"type": "integer"}},
        },
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
        },
    },
}
