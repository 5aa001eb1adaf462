"""Read-only links, kept on the web box: each link's SHA-256 (never the token), whose it is,
what it shows, until when, and whether it was revoked; and a log of who made or revoked
which link when. In the viewer's own SQLite file (the sessions file of
labstats.viewer.sessions, tables of their own; in memory when there is none, as the
sessions are).

    store = ShareStore(path)
    token, link = store.create("alice", "run", {"source": "gpu1", "run": "abc"}, "my run", days=7)
    store.find(token)            # the Link, whatever its state (None: no such token)
    store.revoke(link.id, "alice")
    store.links("alice")         # newest first; links() for everyone's
    store.entries("alice")       # the log: created, revoked

Every lookup reads the file: a revocation made by one worker is seen by the next request
of any worker (no cache to wait for).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labstats.viewer import state_file

MEMORY = state_file.MEMORY
KINDS = ("run", "compare", "report")
TOKEN_BYTES = 32  # secrets.token_urlsafe(32): 256 random bits, 43 characters
TOKEN_FORM = re.compile(r"[A-Za-z0-9_-]{43}")  # what token_urlsafe(32) gives, nothing else is looked up
DEFAULT_DAYS = 7
DEFAULT_MAX_DAYS = 30
MAX_ACTIVE_LINKS = 200  # per user: links not yet expired nor revoked
# Links made per user in any 24 hours, revoked ones too: making and revoking in a loop would
# otherwise grow the file (each row up to MAX_TARGET_CHARS, kept KEEP_ENDED_DAYS) without end.
MAX_MADE_PER_DAY = 500
MAX_LISTED = 1000  # links one Links page lists (the newest)
MAX_TITLE_CHARS = 200
MAX_TARGET_CHARS = 16_384
# Links that ended (expired or revoked) this long ago leave the Links page; the log keeps
# their creation and revocation for LOG_DAYS.
KEEP_ENDED_DAYS = 90
LOG_DAYS = 400
DAY = 86_400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS share_links (
    id TEXT PRIMARY KEY,           -- a handle for the Links page and the log (not the token)
    token_sha256 TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,           -- "" for an open viewer (no logins)
    kind TEXT NOT NULL,            -- run, compare or report
    target TEXT NOT NULL,          -- JSON: what it shows
    title TEXT NOT NULL,           -- what it showed when made, for the Links page
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL,
    revoked_by TEXT
);
CREATE INDEX IF NOT EXISTS share_links_owner ON share_links (owner, created_at);
CREATE TABLE IF NOT EXISTS share_log (
    at REAL NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,          -- created, revoked
    link TEXT NOT NULL,            -- share_links.id
    what TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS share_log_at ON share_log (at);
"""


class ShareError(ValueError):
    """A link that cannot be made, with a sentence for the page."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Link:
    id: str
    owner: str
    kind: str
    target: dict[str, Any]
    title: str
    created_at: float
    expires_at: float
    revoked_at: float | None
    revoked_by: str | None

    def state(self, now: float) -> str:
        """One of "revoked", "expired" or "active"."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"


@dataclass(frozen=True)
class Entry:
    at: float
    who: str
    action: str
    link: str
    what: str


class ShareStore:
    """Every user's links; one connection per process (opened again after a fork: uWSGI
    forks its workers after loading the app). ``clock`` is for the tests."""

    def __init__(self, path: str | os.PathLike = MEMORY, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._state = state_file.PerProcess(self.path, _SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        return self._state.get()

    def create(
        self, owner: str, kind: str, target: dict[str, Any], title: str, days: float, max_days: float
    ) -> tuple[str, Link]:
        """A new link of ``owner`` to ``target`` for ``days`` (0 < days <= max_days): the
        token (shown once, never kept) and the link. Logged as "created"."""
        if kind not in KINDS:
            raise ShareError(f"a link shows a {', a '.join(KINDS)}, not {kind!r}")
        if not 0 < days <= max_days:
            raise ShareError(f"a link lasts more than 0 and at most {max_days:g} days")
        text = json.dumps(target, ensure_ascii=False, sort_keys=True)
        if len(text) > MAX_TARGET_CHARS:
            raise ShareError("what this link would show is too long to keep")
        title = title[:MAX_TITLE_CHARS]
        token = secrets.token_urlsafe(TOKEN_BYTES)
        link_id = secrets.token_hex(8)
        now = self.clock()
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                self._prune(db, now)
                (active,) = db.execute(
                    "SELECT COUNT(*) FROM share_links"
                    " WHERE owner = ? AND revoked_at IS NULL AND expires_at > ?",
                    (owner, now),
                ).fetchone()
                if active >= MAX_ACTIVE_LINKS:
                    raise ShareError(f"you have {MAX_ACTIVE_LINKS} links in force; revoke one first")
                (made,) = db.execute(
                    "SELECT COUNT(*) FROM share_links WHERE owner = ? AND created_at > ?", (owner, now - DAY)
                ).fetchone()
                if made >= MAX_MADE_PER_DAY:
                    raise ShareError(
                        f"you made {MAX_MADE_PER_DAY} links in the last 24 hours; try again later"
                    )
                db.execute(
                    "INSERT INTO share_links (id, token_sha256, owner, kind, target, title, created_at,"
                    " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (link_id, hash_token(token), owner, kind, text, title, now, now + days * DAY),
                )
                db.execute(
                    "INSERT INTO share_log (at, who, action, link, what) VALUES (?, ?, 'created', ?, ?)",
                    (now, owner, link_id, f"{kind}: {title}"),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return token, self.get(link_id)

    def find(self, token: str) -> Link | None:
        """The link this token opens, in whatever state; None for a token no link has (one
        not of token_urlsafe's form is not even looked up)."""
        if not TOKEN_FORM.fullmatch(token):
            return None
        return self._one("token_sha256 = ?", hash_token(token))

    def get(self, link_id: str) -> Link | None:
        return self._one("id = ?", link_id)

    def links(self, owner: str | None = None, limit: int | None = None) -> list[Link]:
        """``owner``'s links (everyone's: None), newest first, at most ``limit`` (MAX_LISTED)."""
        where, args = ("WHERE owner = ?", (owner,)) if owner is not None else ("", ())
        with self._lock:
            rows = self._conn().execute(f"{_SELECT} {where} ORDER BY created_at DESC LIMIT ?",
                                        (*args, limit or MAX_LISTED)).fetchall()  # fmt: skip
        return [_link(row) for row in rows]

    def revoke(self, link_id: str, by: str) -> bool:
        """End the link now: True if it was in force (or expired) and is revoked now, False
        if it was revoked already. Logged as "revoked"."""
        now = self.clock()
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT kind, title FROM share_links WHERE id = ? AND revoked_at IS NULL",
                                 (link_id,)).fetchone()  # fmt: skip
                if row is not None:
                    db.execute(
                        "UPDATE share_links SET revoked_at = ?, revoked_by = ? WHERE id = ?",
                        (now, by, link_id),
                    )
                    db.execute(
                        "INSERT INTO share_log (at, who, action, link, what) VALUES (?, ?, 'revoked', ?, ?)",
                        (now, by, link_id, f"{row[0]}: {row[1]}"),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return row is not None

    def entries(self, who: str | None = None, limit: int = 200) -> list[Entry]:
        """The log, newest first: ``who``'s entries and those of ``who``'s links (None: all)."""
        if who is None:
            query, args = "SELECT * FROM share_log ORDER BY at DESC LIMIT ?", (limit,)
        else:
            query = (
                "SELECT * FROM share_log WHERE who = ?"
                " OR link IN (SELECT id FROM share_links WHERE owner = ?) ORDER BY at DESC LIMIT ?"
            )
            args = (who, who, limit)
        with self._lock:
            rows = self._conn().execute(query, args).fetchall()
        return [Entry(*row) for row in rows]

    def _one(self, where: str, value: str) -> Link | None:
        with self._lock:
            row = self._conn().execute(f"{_SELECT} WHERE {where}", (value,)).fetchone()
        return _link(row) if row else None

    @staticmethod
    def _prune(db: sqlite3.Connection, now: float) -> None:
        # Bounded tables: links that ended long ago, and older log entries.
        ended = now - KEEP_ENDED_DAYS * DAY
        db.execute(
            "DELETE FROM share_links WHERE MIN(expires_at, COALESCE(revoked_at, expires_at)) < ?", (ended,)
        )
        db.execute("DELETE FROM share_log WHERE at < ?", (now - LOG_DAYS * DAY,))


_SELECT = ("SELECT id, owner, kind, target, title, created_at, expires_at, revoked_at, revoked_by"
           " FROM share_links")  # fmt: skip


def _link(row: tuple) -> Link:
    try:
        target = json.loads(row[3])
    except ValueError:
        target = {}  # a row not written here: a link to nothing, never an error
    return Link(row[0], row[1], row[2], target if isinstance(target, dict) else {}, *row[4:])
