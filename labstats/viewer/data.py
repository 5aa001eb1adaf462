"""How the viewer reads runs (the role of flaskr's db.py): the app's sources, a run by
source and id, the errors a request is answered with (ApiError, SourceDown), each
source's state, series windows, run and config summaries and the merged runs list.

Endpoints and pages read runs only through these. Every answer they build is bounded
whatever a run holds: configs in lists are a summary of at most MAX_LISTED_CONFIG_BYTES,
object values at most MAX_TEXT characters, a tensor at most MAX_TENSOR_VALUES elements.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from flask import current_app, jsonify, request

from labstats.curation import Annotations, read_annotations
from labstats.format import run_record
from labstats.format.codec import INT64_MAX, INT64_MIN
from labstats.reader import SORTS, UNREACHABLE, Labs, LabstatsError, Run, Series, number, short
from labstats.viewer.filters import FilterError
from labstats.viewer.sources import Source
from labstats.viewer.table import Query, Table, caches, check_sort, duration, read_table

MAX_TEXT = 2000  # characters of a text/object value shown
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
# The runs list's query: its sort orders and the bounds of a page (the API declares the same).
RUN_SORTS = SORTS
MAX_LIST_LIMIT = 10_000  # runs on one page
MAX_LIST_PAGE = 10_000


class ApiError(Exception):
    """A request answered with ``status`` and ``message`` (JSON from the API, a page from pages)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_error(exc: ApiError):
    """An ApiError as the API answers it: {"error": sentence} with its status."""
    return jsonify({"error": exc.message}), exc.status


def sources() -> dict[str, Source]:
    """The app's sources by name (create_app's, or the viewer's config)."""
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


class BadFilter(ApiError):
    """A filter expression, sort or group the runs list cannot use (a 400 with its sentence)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class SourceDown(ApiError):
    """A source that cannot be read right now (its replica is down)."""

    def __init__(self, source: str, exc: Exception) -> None:
        super().__init__(503, f"source {source} cannot be read right now ({short(exc)}); "
                              "its runs come back when it does")  # fmt: skip
        self.source = source


def labs() -> Labs:
    """The app's sources read as one, as the CLI and notebooks read them (no warnings: pages
    ask every few seconds and show each source's state instead)."""
    return Labs({name: src.lab for name, src in sources().items()}, warn=False)


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


def annotations_of(runs: list[Run]) -> dict[tuple[int, str], Annotations]:
    """{(id of its Lab, run id): annotations} of runs of any sources, one round trip per
    source (read from where the runs are read: the replica)."""
    by_lab: dict[int, list[Run]] = {}
    for run in runs:
        by_lab.setdefault(id(run.lab), []).append(run)
    out: dict[tuple[int, str], Annotations] = {}
    for key, listed in by_lab.items():
        lab = listed[0].lab
        try:
            found = read_annotations(lab.redis, lab.keys.prefix, [run.id for run in listed])
        except UNREACHABLE:  # gone since its runs were read: listed with their logged tags
            found = {run.id: Annotations(tags=tuple(map(str, run.tags))) for run in listed}
        out.update({(key, run_id): ann for run_id, ann in found.items()})
    return out


def annotation_fields(ann: Annotations) -> dict[str, Any]:
    """What a runs list shows of a run's annotations (labstats.curation): its tags as they are
    now (the logged ones until someone changes them), display name, project, star, protect."""
    return {
        "tags": list(ann.tags),
        "display_name": ann.name,
        "project": ann.project,
        "starred": ann.starred,
        "protected": ann.protected,
        "trashed": ann.trashed,
    }


def run_summary(
    source: str, run: Run, whole_config: bool = False, annotations: Annotations | None = None
) -> dict[str, Any]:
    """What the runs list shows of a run. Never raises on a malformed record: what cannot
    be read is left out and named in ``malformed``. The config is a summary (config_summary;
    ``config_truncated`` says when it is shortened) unless ``whole_config``. The annotations
    (annotation_fields) are read unless given (a list reads them all at once)."""
    if annotations is None:
        annotations = annotations_of([run])[id(run.lab), run.id]
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
        "duration": duration(meta),
        **annotation_fields(annotations),
    }


def table_query(default_limit: int) -> Query:
    """The runs list's query from the request: name (q), tag, status, sort and order, a
    filter expression, a group and the page; a 400 for what is not one."""
    args = request.args
    status = args.get("status") or None
    if status is not None and status not in run_record.SHOWN_STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(run_record.SHOWN_STATUSES)}")
    query = Query(
        name=args.get("q") or None,
        tag=args.get("tag") or None,
        status=status,
        sort=args.get("sort") or "started",
        order=args.get("order") or None,
        filter=(args.get("filter") or "").strip() or None,
        group=args.get("group") or None,
        limit=int_arg("limit", default_limit, 1, MAX_LIST_LIMIT),
        page=int_arg("page", 1, 1, MAX_LIST_PAGE),
    )
    try:
        check_sort(query.sort, query.order)
    except FilterError as exc:
        raise BadFilter(str(exc)) from None
    return query


def runs_table(default_limit: int = 200) -> tuple[list[dict[str, Any]], Table]:
    """A page of the runs of every source that can be read, filtered, sorted and grouped
    over all of them (labstats.viewer.table), as the runs list shows each, and the Table
    (each source's state, the Run objects, groups, totals): one source that is away leaves
    the others listed. A filter that cannot be used is a 400 with its sentence. Runs in the
    trash are in no list (each source's index leaves them out: sources.TrashAwareIndex)."""
    query = table_query(default_limit)
    try:
        table = read_table(labs(), query, caches(current_app.extensions))
    except FilterError as exc:
        raise BadFilter(f"filter: {exc}") from None
    found = annotations_of([run for _, run in table.runs])
    return [run_summary(s, run, annotations=found[id(run.lab), run.id]) for s, run in table.runs], table


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
