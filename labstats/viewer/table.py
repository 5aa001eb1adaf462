"""The runs table over every run, not one page: a filter expression (labstats.viewer.filters),
a sort by any column (a metric's last/min/max, a config key, duration, status, start...),
groups by a config key with their counts, and then the page asked for.

A plain list (newest first, no filter, no groups) is read a page at a time by Labs.page
as before; anything else reads every run of every source that can be read
(through labstats.viewer.runcache, which keeps what ended runs will not change).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import g, has_request_context

from labstats.reader import SORTS, UNREACHABLE, Labs, Run, number, short
from labstats.viewer.filters import PARTS, Filter, FilterError, compile_filter
from labstats.viewer.runcache import SourceCache, source_cache

# Sorts besides Labs.page's: duration, config:KEY and metric:SERIES:PART (last, min, max).
EXTRA_SORTS = ("duration",)
ORDERS = ("asc", "desc")
NEWEST_FIRST = ("started", "heartbeat")  # sorts that are descending unless asked otherwise
MAX_SORT_CHARS = 1000
NOT_SET = "(not set)"


@dataclass
class Query:
    """What the runs table was asked for (see read_query)."""

    name: str | None = None
    tag: str | None = None
    status: str | None = None
    sort: str = "started"
    order: str | None = None
    filter: str | None = None
    group: str | None = None
    limit: int = 50
    page: int = 1

    @property
    def descending(self) -> bool:
        return self.order == "desc" if self.order else self.sort in NEWEST_FIRST

    @property
    def whole(self) -> bool:
        """Whether the page needs every run: Labs.page reads each source's newest runs
        only, which holds the page only when the list is the newest first."""
        return bool(self.filter or self.group or self.sort != "started" or self.order)


@dataclass
class Group:
    """A group of the filtered runs: its value as shown, and how many runs it has."""

    value: str
    count: int
    first: Any = None  # the sorted column's value of its first run
    raw: Any = None  # the grouped key's value itself (value is how it is shown)


@dataclass
class Table:
    """A page of the table: ``runs`` as (source, run), each source's state, whether more
    pages follow; with the whole set read, ``total`` filtered runs, ``groups`` (in the
    order shown) and each listed run's group, and the summaries read for the sort and
    filter ({series: {run id: summary}})."""

    runs: list[tuple[str, Run]]
    states: dict[str, dict[str, Any]]
    more: bool
    total: int | None = None
    groups: list[Group] = field(default_factory=list)
    group_of: list[str] = field(default_factory=list)
    summaries: dict[str, dict[tuple[str, str], Any]] = field(default_factory=dict)
    config_keys: list[str] | None = None  # keys that differ over every filtered run (whole set read)


def check_sort(sort: str, order: str | None) -> None:
    """FilterError unless ``sort`` is a sort the table knows (its key need not exist)."""
    if order is not None and order not in ORDERS:
        raise FilterError("order must be asc or desc")
    if sort in SORTS or sort in EXTRA_SORTS:
        return
    kind, _, rest = sort.partition(":")
    if len(sort) <= MAX_SORT_CHARS and kind == "config" and rest:
        return
    series, _, part = rest.rpartition(":")
    if len(sort) <= MAX_SORT_CHARS and kind == "metric" and series and part in PARTS:
        return
    raise FilterError(
        f"sort must be {', '.join(SORTS + EXTRA_SORTS)}, config:KEY or metric:SERIES:last|min|max"
    )


def caches(app_extensions: dict) -> dict[str, SourceCache]:
    """The app's per-source caches (made on first use)."""
    return app_extensions.setdefault("labstats_run_caches", {})


def read_table(labs: Labs, query: Query, kept: dict[str, SourceCache]) -> Table:
    """The page ``query`` asks for (a FilterError for a bad sort or filter)."""
    check_sort(query.sort, query.order)
    if not query.whole:
        found = labs.page(name=query.name, tag=query.tag, status=query.status, sort=query.sort,
                          limit=query.limit, page=query.page)  # fmt: skip
        return Table(found.runs, found.states, found.more)
    listed, states = every_run(labs, query, kept)
    summaries: dict[str, dict[tuple[str, str], Any]] = {}

    def metric(name: str) -> dict[tuple[str, str], Any]:
        if name not in summaries:
            summaries[name] = read_summaries(listed, name, kept)
        return summaries[name]

    if query.filter:
        listed = apply_filter(listed, query.filter, kept, metric)
    key = sort_key(query.sort, metric)
    ordered = sorted_runs(listed, key, query.descending)
    groups: list[Group] = []
    group_of: list[str] = []
    if query.group:
        ordered, groups, group_of = grouped(ordered, query.group, key)
    start = query.limit * (query.page - 1)
    page = ordered[start : start + query.limit]
    keys = differing_keys(ordered, kept)
    if has_request_context():  # the page's config columns read them here, not every run again
        g.labstats_table_keys = keys
    return Table(page, states, len(ordered) > start + query.limit, total=len(ordered), groups=groups,
                 group_of=group_of[start : start + query.limit], summaries=summaries,
                 config_keys=keys)  # fmt: skip


def filtered_runs(labs: Labs, query: Query, kept: dict[str, SourceCache]) -> list[tuple[str, Run]]:
    """Every run the query's name, tag, status and filter expression select, over every
    source that can be read, newest first (a FilterError for a filter that cannot be used)."""
    listed, _ = every_run(labs, query, kept)
    if query.filter:
        summaries: dict[str, dict[tuple[str, str], Any]] = {}

        def metric(name: str) -> dict[tuple[str, str], Any]:
            if name not in summaries:
                summaries[name] = read_summaries(listed, name, kept)
            return summaries[name]

        listed = apply_filter(listed, query.filter, kept, metric)
    return sorted_runs(listed, lambda pair: field_value(pair[0], pair[1], "started"), True)


def differing_keys(listed: list[tuple[str, Run]], kept: dict[str, SourceCache]) -> list[str]:
    """The config keys whose values differ over the listed runs (a key some runs lack
    differs), sorted: what the table's config columns and group-by choices offer. Each
    run's config is encoded once and kept (runcache), so 10,000 runs cost a pass of dict
    look-ups, not 10,000 JSON encodings per request."""
    by_source: dict[str, list[Run]] = {}
    for source, run in listed:
        by_source.setdefault(source, []).append(run)
    first: dict[str, str] = {}
    differ: set[str] = set()
    seen = False
    for source, runs in by_source.items():
        for encoded in source_cache(kept, source, runs[0].lab).encoded_configs(runs):
            if seen:  # a key only some runs have differs
                differ |= first.keys() ^ encoded.keys()
            seen = True
            for key, value in encoded.items():
                found = first.setdefault(key, value)
                if found != value:
                    differ.add(key)
    # A "name" key that only repeats each run's name gets no column (the name column shows it).
    if "name" in differ and all(run.config.get("name") in (None, str(run.name)) for _, run in listed):
        differ.discard("name")
    return sorted(differ)


def every_run(labs: Labs, query: Query, kept: dict[str, SourceCache]):
    """Every run of every source that can be read that matches the name, tag and status,
    and each source's state."""
    listed: list[tuple[str, Run]] = []
    states: dict[str, dict[str, Any]] = {}
    for source, lab in labs.labs.items():
        try:
            # Names and tags can be given after the fact (annotations), which no index holds:
            # the index narrows by status only, and each record is matched below.
            ids = lab.index.candidates(None, None, query.status)
            runs = source_cache(kept, source, lab).runs(ids)
        except UNREACHABLE as exc:
            states[source] = {"reachable": False, "link": None, "error": short(exc)}
            continue
        states[source] = labs.state(source)
        listed += [(source, run) for run in runs if _matches(run, query)]
    return listed, states


def _matches(run: Run, query: Query) -> bool:
    """Whether the run's own record matches (index entries only suggest it)."""
    if query.name is not None:
        wanted = query.name.lower()
        if wanted not in str(run.name).lower() and wanted not in str(run.display_name).lower():
            return False
    if query.tag is not None and query.tag not in run.annotations.tags:
        return False
    return query.status is None or run.status == query.status


def read_summaries(listed: list[tuple[str, Run]], name: str, kept: dict[str, SourceCache]):
    """{(source, run id): summary of series ``name`` or None} of the listed runs."""
    out: dict[tuple[str, str], Any] = {}
    by_source: dict[str, list[Run]] = {}
    for source, run in listed:
        by_source.setdefault(source, []).append(run)
    for source, runs in by_source.items():
        cache = source_cache(kept, source, runs[0].lab)
        try:
            found = cache.metric_summaries(runs, name)
        except UNREACHABLE:
            found = {}
        out.update({(source, run_id): summary for run_id, summary in found.items()})
    return out


def metric_names(listed: list[tuple[str, Run]], kept: dict[str, SourceCache]) -> set[str]:
    """The numeric series any of the listed runs has (internal ones included: _epoch)."""
    names: set[str] = set()
    by_source: dict[str, list[Run]] = {}
    for source, run in listed:
        by_source.setdefault(source, []).append(run)
    for source, runs in by_source.items():
        try:
            infos = source_cache(kept, source, runs[0].lab).series_infos(runs)
        except UNREACHABLE:
            continue
        for info in infos.values():
            names.update(n for n, i in info.items() if i.get("kind") in ("f", "i", "b"))
    return names


def apply_filter(listed, text: str, kept, metric: Callable[[str], dict]) -> list[tuple[str, Run]]:
    """The listed runs that match the expression ``text`` (a FilterError when it does not
    parse, names what no listed run has, or compares values of different kinds)."""
    keys = {key for _, run in listed for key in run.config}
    chosen: Filter = compile_filter(text, keys, metric_names(listed, kept))
    tables = {name: metric(name) for name in chosen.metrics}

    def lookup_of(source: str, run: Run):
        def lookup(ref):
            if ref[0] == "config":
                return run.config.get(ref[1])
            if ref[0] == "metric":
                summary = tables[ref[1]].get((source, run.id))
                return summary.get(ref[2]) if summary else None
            return field_value(source, run, ref[1])

        return lookup

    return [(s, r) for s, r in listed if chosen.matches(lookup_of(s, r), f"run {r.name!s:.60}")]


def field_value(source: str, run: Run, name: str) -> Any:
    """A run's own field, as filters and sorts read it."""
    meta = run.meta
    if name == "name":  # the name people gave it, else the logged one
        return str(run.display_name)
    if name == "project":
        return run.project or None
    if name == "tag":  # its tags as they are now (given later ones included)
        return list(run.annotations.tags)
    if name == "starred":
        return run.annotations.starred
    if name == "status":
        return run.status
    if name == "duration":
        return duration(meta)
    if name in ("started", "heartbeat", "ended"):
        return number(meta.get(name))
    if name == "host":
        host = meta.get("host")
        return host if isinstance(host, str) else None
    if name == "source":
        return source
    if name == "id":
        return run.id
    return None


def duration(meta: dict[str, Any]) -> float | None:
    """Seconds from start to end (or to the last heartbeat of a run still going)."""
    start, end = number(meta.get("started")), number(meta.get("ended")) or number(meta.get("heartbeat"))
    return round(end - start, 3) if start is not None and end is not None and end >= start else None


def sort_key(sort: str, metric: Callable[[str], dict]) -> Callable[[tuple[str, Run]], Any]:
    """The value a run is sorted by (None: it has none, and goes last either way)."""
    kind, _, rest = sort.partition(":")
    if kind == "config" and rest:
        return lambda pair: pair[1].config.get(rest)
    if kind == "metric" and rest:
        series, _, part = rest.rpartition(":")
        table = metric(series)

        def by_metric(pair: tuple[str, Run]) -> Any:
            summary = table.get((pair[0], pair[1].id))
            return summary.get(part) if summary else None

        return by_metric
    return lambda pair: field_value(pair[0], pair[1], sort)


def ordering(value: Any) -> tuple | None:
    """A value's place in a sort: numbers, then strings, then true/false, then anything else
    by its JSON text; None (and NaN) when it has none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return (2, value)
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (3, json.dumps(value, sort_keys=True, default=str))


def sorted_runs(listed, key: Callable, descending: bool) -> list[tuple[str, Run]]:
    """The runs by ``key``, runs without a value last whichever the direction (ties keep
    the newest first)."""
    ranked = [(ordering(key(pair)), pair) for pair in listed]
    present = [(rank, pair) for rank, pair in ranked if rank is not None]
    present.sort(key=lambda item: item[0], reverse=descending)
    return [pair for _, pair in present] + [pair for rank, pair in ranked if rank is None]


def shown(value: Any) -> str:
    """A config value as a cell shows it: strings unquoted (adam, not "adam")."""
    if value is None:
        return NOT_SET
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, sort_keys=True)


def grouped(ordered, group: str, key: Callable):
    """The sorted runs grouped by a config key (``config:KEY``, or just KEY) or ``status``:
    each group where its best run ranks, its runs in their order. Returns the runs, the
    groups and each run's group value."""
    kind, _, rest = group.partition(":")
    name = rest if kind == "config" and rest else group

    def value_of(pair: tuple[str, Run]) -> Any:
        return pair[1].status if group == "status" else pair[1].config.get(name)

    members: dict[str, list] = {}
    for pair in ordered:
        members.setdefault(shown(value_of(pair)), []).append(pair)
    runs, groups, group_of = [], [], []
    for value, pairs in members.items():
        groups.append(Group(value, len(pairs), key(pairs[0]), value_of(pairs[0])))
        runs += pairs
        group_of += [value] * len(pairs)
    return runs, groups, group_of
