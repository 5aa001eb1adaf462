"""Saved views of the runs table, per user, on the web box: the table's own query (columns
hidden, metric and more metrics, grouping, filter, sort) under a name, in the viewer's own
SQLite file (the sessions file of labstats.viewer.sessions, a table of its own; in memory
when there is none, as the sessions are).

    store = ViewStore(path)
    store.save("alice", "best adam", [("filter", 'opt == "adam"'), ("sort", "metric:loss:min")])
    store.views("alice")          # [(name, params)], by name
    store.get("alice", "best adam")
    store.delete("alice", "best adam")

A view is opened through ``clean``: what names a column the runs no longer have (a config
key, a metric) is dropped, so a view saved before a sweep changed still opens.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable

from labstats.viewer import state_file

MEMORY = state_file.MEMORY
# The table's query parameters a view keeps (the page number is not part of a view).
VIEW_PARAMS = ("q", "status", "tag", "sort", "order", "filter", "group", "limit", "metric", "also", "hide")
MAX_VIEWS = 100  # per user
MAX_NAME_CHARS = 80
MAX_QUERY_CHARS = 8192

_SCHEMA = """
CREATE TABLE IF NOT EXISTS saved_views (
    user TEXT NOT NULL,            -- "" for an open viewer (no logins)
    name TEXT NOT NULL,
    params TEXT NOT NULL,          -- JSON list of [parameter, value] pairs
    saved_at REAL NOT NULL,
    PRIMARY KEY (user, name)
);
"""


class ViewError(ValueError):
    """A view that cannot be saved, with a sentence for the page."""


class ViewStore:
    """The saved views of every user; one connection per process (opened again after a
    fork: uWSGI forks its workers after loading the app)."""

    def __init__(self, path: str | os.PathLike = MEMORY) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._state = state_file.PerProcess(self.path, _SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        return self._state.get()

    def save(self, user: str, name: str, params: Iterable[tuple[str, str]]) -> None:
        """Keep ``params`` (the table's own, see VIEW_PARAMS; others are left out) as the
        view ``name`` of ``user``, replacing one of that name."""
        name = name.strip()
        if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise ViewError(f"a view's name is 1 to {MAX_NAME_CHARS} printable characters")
        kept = [[str(k), str(v)] for k, v in params if k in VIEW_PARAMS and v != ""]
        text = json.dumps(kept, ensure_ascii=False)
        if len(text) > MAX_QUERY_CHARS:
            raise ViewError(f"this view is over the {MAX_QUERY_CHARS:,} characters a view may keep")
        with self._lock:
            db = self._conn()
            (count,) = db.execute(
                "SELECT COUNT(*) FROM saved_views WHERE user = ? AND name != ?", (user, name)
            ).fetchone()
            if count >= MAX_VIEWS:
                raise ViewError(f"you have {MAX_VIEWS} saved views already; delete one first")
            db.execute(
                "INSERT OR REPLACE INTO saved_views (user, name, params, saved_at) VALUES (?, ?, ?, ?)",
                (user, name, text, time.time()),
            )

    def views(self, user: str) -> list[tuple[str, list[tuple[str, str]]]]:
        with self._lock:
            rows = (
                self._conn()
                .execute("SELECT name, params FROM saved_views WHERE user = ? ORDER BY name", (user,))
                .fetchall()
            )
        return [(name, _params(text)) for name, text in rows]

    def get(self, user: str, name: str) -> list[tuple[str, str]] | None:
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT params FROM saved_views WHERE user = ? AND name = ?", (user, name))
                .fetchone()
            )
        return _params(row[0]) if row else None

    def delete(self, user: str, name: str) -> bool:
        with self._lock:
            return (
                self._conn()
                .execute("DELETE FROM saved_views WHERE user = ? AND name = ?", (user, name))
                .rowcount
                > 0
            )


def _params(text: str) -> list[tuple[str, str]]:
    try:
        pairs = json.loads(text)
    except ValueError:
        return []  # a row not written here: an empty view, never an error
    if not isinstance(pairs, list):
        return []
    return [(str(p[0]), str(p[1])) for p in pairs if isinstance(p, list) and len(p) == 2]


def clean(params: list[tuple[str, str]], config_keys: set[str], metrics: set[str]) -> list[tuple[str, str]]:
    """A saved view as it opens today: hidden columns, metrics, a sort and a grouping that
    name a config key or metric no run has any more are dropped (the rest is kept)."""
    out = []
    for key, value in params:
        if key in ("metric", "also") and value not in metrics:
            continue
        if key == "hide" and not _known_column(value, config_keys, metrics):
            continue
        if key in ("sort", "group") and not _known_sort(value, config_keys, metrics):
            continue
        out.append((key, value))
    sorts = {k for k, _ in out}
    return [(k, v) for k, v in out if k != "order" or "sort" in sorts]


FIXED_COLUMNS = ("name", "status", "started", "duration", "heartbeat", "host", "tags", "config")
METRIC_COLUMNS = ("metric-last", "metric-min", "metric-max")


def _known_column(column: str, config_keys: set[str], metrics: set[str]) -> bool:
    if column in FIXED_COLUMNS or column in METRIC_COLUMNS:
        return True
    kind, _, rest = column.partition(":")
    if kind == "config":
        return rest in config_keys
    if kind == "also":
        return rest.rpartition(":")[0] in metrics
    return False


def _known_sort(value: str, config_keys: set[str], metrics: set[str]) -> bool:
    kind, _, rest = value.partition(":")
    if kind == "config":
        return rest in config_keys
    if kind == "metric":
        return rest.rpartition(":")[0] in metrics
    return True  # the table's own columns; a bad one is the table's 400
