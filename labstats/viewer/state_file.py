"""The viewer's own SQLite file on the web box: sessions, saved views, reports and read-only
links, a table (or two) each, in the one file of the config's ``[auth] sessions_file`` (in
memory when there is none: one process only). Each store keeps one connection per process,
opened on first use and again after a fork (uWSGI loads the app in its master and forks the
workers; a SQLite connection must not cross a fork).

    state = PerProcess(path, SCHEMA)
    state.get().execute(...)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

MEMORY = ":memory:"


def connect(path: str, schema: str) -> sqlite3.Connection:
    """A connection to the state file (made 0600 in a 0700 folder if missing), in WAL mode
    (readers never wait for a writer), with ``schema`` (CREATE ... IF NOT EXISTS) applied."""
    if path != MEMORY:
        file = Path(path)
        if not file.parent.is_dir():
            file.parent.mkdir(mode=0o700, parents=True)
        # Created 0600 before SQLite opens it (its -wal and -shm files copy the mode), and
        # only when it is not there: closing any descriptor of a file drops every POSIX lock
        # this process holds on it, so opening and closing the file while another store's
        # connection was open made the backup's copy believe it was alone, remove the -wal
        # and -shm files under the workers, and every page answered 500.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(file, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout = 10000")
    if path != MEMORY:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable across a crash of the app
    db.executescript(schema)
    return db


class PerProcess:
    """One store's connection in this process."""

    def __init__(self, path: str | os.PathLike, schema: str) -> None:
        self.path = str(path)
        self.schema = schema
        self.db: sqlite3.Connection | None = None
        self.pid = 0

    def get(self) -> sqlite3.Connection:
        if self.db is None or self.pid != os.getpid():
            # After a fork the parent's connection is left alone (never closed here: closing
            # it could touch the parent's locks); the child opens its own.
            self.db = connect(self.path, self.schema)
            self.pid = os.getpid()
        return self.db

    def close(self) -> None:
        if self.db is not None and self.pid == os.getpid():
            self.db.close()
        self.db = None
