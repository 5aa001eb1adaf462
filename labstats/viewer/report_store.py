"""Reports on the web box: every version of every report, in the viewer's own SQLite file (the
sessions file of labstats.viewer.sessions, tables of their own; in memory when there is none,
as the sessions and saved views are). An edit adds a version; none is ever changed or removed.

    store = ReportStore(path)
    report_id, version = store.create("Adam vs SGD", "markdown...", "alice")
    store.save(report_id, "Adam vs SGD", "more markdown", "bob", base=version)   # version 2
    store.get(report_id)              # the newest version (a ReportVersion), or None
    store.get(report_id, 1)           # version 1
    store.versions(report_id)         # [ReportVersion] newest first (their bodies left out)
    store.listed("adam")              # the newest version of each report whose title or body has it

Sizes are checked here (ReportError with the sentence a page shows); what a body's panels
say is checked by labstats.viewer.reports before it is saved.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass

from labstats.viewer import state_file

MEMORY = state_file.MEMORY
MAX_TITLE_CHARS = 200
MAX_BODY_BYTES = 64 * 1024  # UTF-8 bytes of one version's Markdown
MAX_VERSIONS = 1000  # of one report
MAX_REPORTS = 10_000
# Text one user saves in any 24 hours (every version is kept: without it an editor saving in
# a loop would fill the web box's disk at 64 KiB a request, up to 640 GB).
MAX_SAVED_BYTES_PER_DAY = 16 * 1024 * 1024
DAY = 86_400.0
MAX_LISTED = 500  # reports one list or search answers at most
REPORT_ID_BYTES = 8  # random bytes of a report's id (16 hex digits)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS report_versions (
    report TEXT NOT NULL,          -- the report's id (hex)
    version INTEGER NOT NULL,      -- 1, 2, ...: an edit adds one, none is changed
    title TEXT NOT NULL,
    body TEXT NOT NULL,            -- Markdown with ```labstats panel blocks
    saved_by TEXT NOT NULL,        -- the user, or "open viewer" where there are no logins
    saved_at REAL NOT NULL,        -- unix seconds
    PRIMARY KEY (report, version)
);
CREATE INDEX IF NOT EXISTS report_versions_saver ON report_versions (saved_by, saved_at);
"""


class ReportError(ValueError):
    """A report that cannot be saved, with a sentence for the page; ``status`` for its answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ReportVersion:
    report: str
    version: int
    title: str
    body: str
    saved_by: str
    saved_at: float
    latest: int  # the report's newest version number


def check(title: str, body: str) -> tuple[str, str]:
    """The title and body as kept (the title stripped, line ends made plain newlines: a
    browser's textarea sends CRLF); a ReportError for what is over a bound or empty."""
    title = title.strip()
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    if not title or len(title) > MAX_TITLE_CHARS or not title.isprintable():
        raise ReportError(f"a report's title is 1 to {MAX_TITLE_CHARS} printable characters")
    size = len(body.encode("utf-8", "surrogatepass"))
    if size > MAX_BODY_BYTES:
        raise ReportError(f"the report's text is {size:,} bytes, over the {MAX_BODY_BYTES:,} a report may be")
    if "\x00" in body:
        raise ReportError("the report's text holds a NUL character")
    return title, body


def _check_budget(db: sqlite3.Connection, user: str, title: str, body: str) -> None:
    """A ReportError (409) when ``user`` saved MAX_SAVED_BYTES_PER_DAY in the last 24 hours."""
    (saved,) = db.execute(
        "SELECT COALESCE(SUM(LENGTH(CAST(title AS BLOB)) + LENGTH(CAST(body AS BLOB))), 0)"
        " FROM report_versions WHERE saved_by = ? AND saved_at > ?",
        (user, time.time() - DAY),
    ).fetchone()
    adding = len(title.encode("utf-8", "surrogatepass")) + len(body.encode("utf-8", "surrogatepass"))
    if saved + adding > MAX_SAVED_BYTES_PER_DAY:
        raise ReportError(f"you saved {saved:,} bytes of reports in the last 24 hours: try again later", 409)


class ReportStore:
    """One connection per process (opened again after a fork: uWSGI forks its workers after
    loading the app), as labstats.viewer.saved_views.ViewStore."""

    def __init__(self, path: str | os.PathLike = MEMORY) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._state = state_file.PerProcess(self.path, _SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        return self._state.get()

    def create(self, title: str, body: str, user: str) -> tuple[str, int]:
        """A new report (its version 1); its id and version."""
        title, body = check(title, body)
        report = secrets.token_hex(REPORT_ID_BYTES)
        with self._lock:
            db = self._conn()
            (count,) = db.execute("SELECT COUNT(DISTINCT report) FROM report_versions").fetchone()
            if count >= MAX_REPORTS:
                raise ReportError(f"the viewer holds {MAX_REPORTS:,} reports already", 409)
            _check_budget(db, user, title, body)
            db.execute(
                "INSERT INTO report_versions VALUES (?, 1, ?, ?, ?, ?)",
                (report, title, body, user, time.time()),
            )
        return report, 1

    def save(self, report: str, title: str, body: str, user: str, base: int | None = None) -> int:
        """A new version of ``report``; its number. ``base``: the version the editor started
        from: when another was saved since, a ReportError (409) instead of hiding it."""
        title, body = check(title, body)
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")  # two workers saving at once: one after the other
            try:
                (latest,) = db.execute(
                    "SELECT MAX(version) FROM report_versions WHERE report = ?", (report,)
                ).fetchone()
                if latest is None:
                    raise ReportError("there is no such report", 404)
                if base is not None and base != latest:
                    raise ReportError(
                        f"version {latest} was saved since you opened version {base}: "
                        "open it, and make your change there again",
                        409,
                    )
                if latest >= MAX_VERSIONS:
                    raise ReportError(f"this report has {MAX_VERSIONS:,} versions already", 409)
                _check_budget(db, user, title, body)
                db.execute(
                    "INSERT INTO report_versions VALUES (?, ?, ?, ?, ?, ?)",
                    (report, latest + 1, title, body, user, time.time()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return latest + 1

    def get(self, report: str, version: int | None = None) -> ReportVersion | None:
        """A version of ``report`` (default: the newest); None when there is no such one."""
        with self._lock:
            db = self._conn()
            (latest,) = db.execute(
                "SELECT MAX(version) FROM report_versions WHERE report = ?", (report,)
            ).fetchone()
            if latest is None:
                return None
            row = db.execute(
                "SELECT report, version, title, body, saved_by, saved_at FROM report_versions "
                "WHERE report = ? AND version = ?",
                (report, latest if version is None else version),
            ).fetchone()
        return ReportVersion(*row, latest=latest) if row else None

    def versions(self, report: str) -> list[ReportVersion]:
        """Every version of ``report``, newest first (bodies left out: "")."""
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT report, version, title, '', saved_by, saved_at FROM report_versions "
                    "WHERE report = ? ORDER BY version DESC",
                    (report,),
                )
                .fetchall()
            )
        latest = rows[0][1] if rows else 0
        return [ReportVersion(*row, latest=latest) for row in rows]

    def listed(self, search: str = "", limit: int = MAX_LISTED) -> list[ReportVersion]:
        """The newest version of each report, the most recently saved first; with ``search``,
        those whose newest title or body holds it (case-insensitive for ASCII letters)."""
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT v.report, v.version, v.title, v.body, v.saved_by, v.saved_at "
                    "FROM report_versions v "
                    "JOIN (SELECT report, MAX(version) AS latest FROM report_versions GROUP BY report) n "
                    "ON v.report = n.report AND v.version = n.latest "
                    "WHERE ? = '' OR v.title LIKE ? ESCAPE '\\' OR v.body LIKE ? ESCAPE '\\' "
                    "ORDER BY v.saved_at DESC LIMIT ?",
                    (search, pattern, pattern, limit),
                )
                .fetchall()
            )
        return [ReportVersion(*row, latest=row[1]) for row in rows]

    def first_saved(self, report: str) -> tuple[str, float] | None:
        """Who wrote version 1 of ``report``, and when."""
        with self._lock:
            row = (
                self._conn()
                .execute(
                    "SELECT saved_by, saved_at FROM report_versions WHERE report = ? AND version = 1",
                    (report,),
                )
                .fetchone()
            )
        return (row[0], row[1]) if row else None
