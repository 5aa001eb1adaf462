"""The alerts service's SQLite file: the rules' state per (source, run, rule), every message
sent (the viewer's alerts page reads it, read-only, through :func:`read_history`), what waits
for each channel (the outbox), and the runs being watched. A restart of the service repeats
nothing, since all of it is here."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from labstats.ops.alert_messages import Message

KEEP_STATE, KEEP_SENT = 7 * 86400.0, 90 * 86400.0  # the rules' state of runs gone; the history

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rule_state (
    source TEXT NOT NULL, run TEXT NOT NULL, rule TEXT NOT NULL,
    active INTEGER NOT NULL,        -- 1 while the condition holds
    since REAL NOT NULL,            -- when it last began to hold
    last_sent REAL,                 -- when it was last sent (NULL: never)
    notified INTEGER NOT NULL,      -- whether this episode was sent (a resolve is sent only then)
    PRIMARY KEY (source, run, rule)
);
CREATE TABLE IF NOT EXISTS sent (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL, source TEXT NOT NULL, run TEXT NOT NULL, run_name TEXT NOT NULL,
    rule TEXT NOT NULL,
    kind TEXT NOT NULL,             -- alert, again (still holds after repeat_after), resolved
    level TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL,
    channels INTEGER NOT NULL,      -- how many channels it goes to
    delivered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,    -- channels that gave up after retry_for
    last_error TEXT NOT NULL DEFAULT ''   -- masked: no secret
);
CREATE INDEX IF NOT EXISTS sent_at ON sent (at);
CREATE TABLE IF NOT EXISTS outbox (
    sent_id INTEGER NOT NULL, channel TEXT NOT NULL,   -- channel: a digest of its URL
    attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
    PRIMARY KEY (sent_id, channel)
);
CREATE TABLE IF NOT EXISTS watched (
    source TEXT NOT NULL, run TEXT NOT NULL, cursor TEXT NOT NULL DEFAULT '',  -- its own alerts read up to
    PRIMARY KEY (source, run)
);
"""


def channel_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


class History:
    """The SQLite file: the rules' state, what was sent and what waits for a channel.
    Plain rollback journal (not WAL), so that the viewer can read it with a read-only file."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._db.executescript(_SCHEMA)
        self.lock = threading.Lock()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """What is written inside goes to the disk as one transaction at its end (a check's
        rule states and messages: thousands in a flood, each its own sync otherwise). The
        channels' threads go on meanwhile, their writes in the same transaction."""
        with self.lock:
            if not self._db.in_transaction:
                self._db.execute("BEGIN")
        try:
            yield
        finally:
            with self.lock:
                if self._db.in_transaction:
                    self._db.execute("COMMIT")

    def sql(self, query: str, args: Iterable[Any] = ()) -> list[tuple]:
        with self.lock:
            return self._db.execute(query, tuple(args)).fetchall()

    def state(self, source: str, run: str, rule: str) -> tuple | None:
        found = self.sql(
            "SELECT active, since, last_sent, notified FROM rule_state WHERE source=? AND run=? AND rule=?",
            (source, run, rule),
        )
        return found[0] if found else None

    def set_state(
        self,
        source: str,
        run: str,
        rule: str,
        active: bool,
        since: float,
        last_sent: float | None,
        notified: bool,
    ) -> None:
        self.sql(
            "INSERT OR REPLACE INTO rule_state VALUES (?, ?, ?, ?, ?, ?, ?)",
            (source, run, rule, int(active), since, last_sent, int(notified)),
        )

    def record(self, message: Message, channels: list[str], now: float) -> int:
        """Keep a message and queue it for every channel; its id."""
        with self.lock:
            db = self._db
            db.execute("SAVEPOINT record")
            try:
                cur = db.execute(
                    "INSERT INTO sent (at, source, run, run_name, rule, kind, level, title, body, channels)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        now,
                        message.source,
                        message.run,
                        message.run_name,
                        message.rule,
                        message.kind,
                        message.level,
                        message.title,
                        message.body,
                        len(channels),
                    ),
                )
                sent_id = cur.lastrowid
                db.executemany(
                    "INSERT INTO outbox (sent_id, channel, next_at) VALUES (?, ?, ?)",
                    [(sent_id, channel_id(url), now) for url in channels],
                )
                db.execute("RELEASE record")
            except BaseException:
                db.execute("ROLLBACK TO record")
                db.execute("RELEASE record")
                raise
        return sent_id

    def prune(self, now: float, keep_state: float, keep_sent: float, channels: list[str]) -> None:
        """Forget what can no longer matter: the rules' state of runs no longer watched (after
        ``keep_state``: by then a dead run is no longer alerted as newly seen), messages older
        than ``keep_sent`` that wait for nothing, and what waits for a channel no longer set."""
        ids = [channel_id(url) for url in channels]
        self.sql(
            "DELETE FROM rule_state WHERE run != '' AND since < ? AND NOT EXISTS (SELECT 1 FROM watched w"
            " WHERE w.source = rule_state.source AND w.run = rule_state.run)",
            (now - keep_state,),
        )
        for (channel,) in self.sql("SELECT DISTINCT channel FROM outbox"):
            if channel not in ids:
                self.sql("DELETE FROM outbox WHERE channel = ?", (channel,))
        self.sql(
            "DELETE FROM sent WHERE at < ? AND id NOT IN (SELECT sent_id FROM outbox)", (now - keep_sent,)
        )

    def watched(self, source: str) -> dict[str, str]:
        return dict(self.sql("SELECT run, cursor FROM watched WHERE source=?", (source,)))

    def watch(self, source: str, run: str, cursor: str | None = None) -> None:
        if cursor is None:
            self.sql("INSERT OR IGNORE INTO watched (source, run) VALUES (?, ?)", (source, run))
        else:
            self.sql("INSERT OR REPLACE INTO watched VALUES (?, ?, ?)", (source, run, cursor))

    def unwatch(self, source: str, run: str) -> None:
        self.sql("DELETE FROM watched WHERE source=? AND run=?", (source, run))


def read_history(path: str, limit: int = 200, before: int | None = None) -> list[dict[str, Any]]:
    """The newest messages sent (before id ``before``), newest first, from the service's file
    opened read-only (the viewer's alerts page); [] when there is none yet."""
    if not Path(path).is_file():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT id, at, source, run, run_name, rule, kind, level, title, body, channels, delivered,"
            " failed, last_error FROM sent WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before if before is not None else 2**62, limit),
        ).fetchall()
    except sqlite3.OperationalError as exc:  # no table yet: the service has not started
        if "no such table" in str(exc):
            return []
        raise
    finally:
        db.close()
    return [dict(row) for row in rows]
