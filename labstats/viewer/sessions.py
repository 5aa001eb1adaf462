"""Viewer sessions kept server-side, so they can end: one SQLite file shared by every uWSGI worker.

    [auth]                                                      # in the viewer's TOML config
    sessions_file = "/var/lib/labstats-viewer/sessions.sqlite"  # WAL; the viewer owns the folder
    session_hours = 12                                          # absolute lifetime from login
    idle_minutes = 120                                          # ended after this long unused

    store = SessionStore(path, lifetime_s=12 * 3600, idle_s=7200)
    session_id, created = store.create("alice", fingerprint)  # the cookie's value
    store.lookup(session_id)           # -> Session, or None (unknown, ended, too old, idle)
    store.end(session_id); store.end_user("alice"); store.end_all()

    python -m labstats.viewer.sessions list          [--config /etc/labstats/viewer.toml]
    python -m labstats.viewer.sessions end USER      [--config ...]
    python -m labstats.viewer.sessions end-all       [--config ...]
    python -m labstats.viewer.sessions prune         [--config ...]   # drop expired rows

The cookie holds a 256-bit random id; the file holds only its SHA-256, the user, the login
time, the last use and a fingerprint of the user's password hash (a changed password ends the
user's sessions). Without a sessions_file the store is in memory: right for one process
(``labstats`` on a laptop), wrong for several uWSGI workers, which would each see their own.
The same file keeps the passwords users set themselves in the viewer (the users file is the
inventory's, root's, rewritten by each converge): a bcrypt hash and the SHA-256 of the users
file's hash it replaced, so that an admin's reset there wins (see :mod:`labstats.viewer.auth`),
and the wrong current passwords typed on that page (they are limited).
The config is $LABSTATS_VIEWER_CONFIG when --config is not given. Run the command as root or as
the viewer's user: as root it becomes the owner of the sessions folder first, so SQLite's side
files (-wal, -shm) it may create stay the viewer's.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from labstats.viewer import state_file

MEMORY = state_file.MEMORY
# Last use is written at most this often per session: a live page polls every second, and a
# write per request from every worker would contend for the file for nothing. The idle
# timeout is then exact to within this.
TOUCH_S = 60.0
# A session id as the cookie carries it (secrets.token_urlsafe(32)); anything else is not
# looked up (no hashing of a 4 kB forged cookie, no odd bytes in a query).
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,      -- SHA-256 of the cookie's session id, hex
    user TEXT NOT NULL,
    fingerprint TEXT NOT NULL,     -- of the user's password hash at login
    created REAL NOT NULL,         -- login time, Unix seconds
    last_used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user);
CREATE TABLE IF NOT EXISTS own_passwords (
    user TEXT PRIMARY KEY,
    hash TEXT NOT NULL,            -- bcrypt of the password the user set in the viewer
    replaces TEXT NOT NULL,        -- SHA-256 of the users file's hash it overrides
    set_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS password_failures (
    user TEXT NOT NULL,            -- a wrong current password on the own-password page
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS password_failures_user ON password_failures (user, at);
"""


@dataclass(frozen=True)
class Session:
    user: str
    fingerprint: str
    created: float
    last_used: float


def hash_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _well_formed(session_id: str | None) -> bool:
    return bool(session_id) and 32 <= len(session_id) <= 64 and set(session_id) <= _ID_CHARS


class SessionStore:
    """Sessions in one SQLite file (WAL: readers never wait for a writer), or in memory.

    One connection per process, opened on first use and again after a fork: uWSGI loads the
    app in its master and forks the workers, and a SQLite connection must not cross a fork."""

    def __init__(
        self,
        path: str | os.PathLike = MEMORY,
        lifetime_s: float = 12 * 3600.0,
        idle_s: float = 120 * 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = str(path)
        self.lifetime_s = lifetime_s
        self.idle_s = idle_s
        self.clock = clock
        self._lock = threading.Lock()  # uWSGI threads share the process's connection
        self._state = state_file.PerProcess(self.path, _SCHEMA)

    @property
    def in_memory(self) -> bool:
        return self.path == MEMORY

    def _conn(self) -> sqlite3.Connection:
        return self._state.get()

    def check(self) -> None:
        """Open the store once and close it again (before uWSGI forks): a sessions file that
        cannot be written is an error at startup, naming the file."""
        try:
            self._conn()
        except (OSError, sqlite3.Error) as exc:
            raise RuntimeError(f"[auth] sessions_file {self.path}: {exc}") from exc
        finally:
            self.close()

    def _write(self, sql: str, args: Iterable = ()) -> int:
        """Run a statement; how many rows it changed."""
        with self._lock:  # read out under the lock: the threads share one connection
            return self._conn().execute(sql, tuple(args)).rowcount

    def _read(self, sql: str, args: Iterable = ()) -> list[tuple]:
        with self._lock:
            return self._conn().execute(sql, tuple(args)).fetchall()

    def create(self, user: str, fingerprint: str) -> tuple[str, float]:
        """A new session for ``user``: (the id for the cookie, the login time)."""
        now = self.clock()
        session_id = secrets.token_urlsafe(32)
        self.prune()
        self._write(
            "INSERT INTO sessions (id_hash, user, fingerprint, created, last_used) VALUES (?, ?, ?, ?, ?)",
            (hash_id(session_id), user, fingerprint, now, now),
        )
        return session_id, now

    def lookup(self, session_id: str | None) -> Session | None:
        """The live session with this id, its last use noted; None if there is none. A session
        past its lifetime or idle timeout is deleted here."""
        if not _well_formed(session_id):
            return None
        key = hash_id(session_id)
        rows = self._read(
            "SELECT user, fingerprint, created, last_used FROM sessions WHERE id_hash = ?", (key,)
        )
        if not rows:
            return None
        found = Session(*rows[0])
        now = self.clock()
        if now >= found.created + self.lifetime_s or now >= found.last_used + self.idle_s:
            self._write("DELETE FROM sessions WHERE id_hash = ?", (key,))
            return None
        if now - found.last_used >= TOUCH_S:
            self._write("UPDATE sessions SET last_used = ? WHERE id_hash = ?", (now, key))
        return found

    def end(self, session_id: str | None) -> int:
        if not _well_formed(session_id):
            return 0
        return self._write("DELETE FROM sessions WHERE id_hash = ?", (hash_id(session_id),))

    def end_user(self, user: str) -> int:
        return self._write("DELETE FROM sessions WHERE user = ?", (user,))

    def end_all(self) -> int:
        return self._write("DELETE FROM sessions")

    def end_stale(self, fingerprints: dict[str, str]) -> int:
        """End every session whose user is gone or whose password changed since its login
        (``fingerprints``: user -> fingerprint of the current password hash)."""
        return self._drop_unless_current("sessions", "fingerprint", fingerprints)

    def prune(self) -> int:
        """Delete sessions past their lifetime or idle timeout (they are refused anyway)."""
        now = self.clock()
        return self._write(
            "DELETE FROM sessions WHERE created <= ? OR last_used <= ?",
            (now - self.lifetime_s, now - self.idle_s),
        )

    def own_password(self, user: str) -> tuple[bytes, str] | None:
        """The password ``user`` set in the viewer: (its bcrypt hash, the SHA-256 of the users
        file's hash it replaced); None if the user never set one."""
        rows = self._read("SELECT hash, replaces FROM own_passwords WHERE user = ?", (user,))
        return (rows[0][0].encode(), rows[0][1]) if rows else None

    def set_own_password(self, user: str, hashed: bytes, replaces: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO own_passwords (user, hash, replaces, set_at) VALUES (?, ?, ?, ?)",
            (user, hashed.decode(), replaces, self.clock()),
        )

    def forget_replaced_passwords(self, current: dict[str, str]) -> int:
        """Drop the viewer-set passwords whose user is gone or whose users-file hash changed
        since (``current``: user -> SHA-256 of its hash there): the inventory won, for good."""
        return self._drop_unless_current("own_passwords", "replaces", current)

    def _drop_unless_current(self, table: str, column: str, current: dict[str, str]) -> int:
        """Delete the rows of ``table`` whose (user, ``column``) is not ``current``'s (one of
        this module's table and column names, never a caller's text)."""
        pairs = self._read(f"SELECT DISTINCT user, {column} FROM {table}")  # noqa: S608 - our names
        dropped = 0
        for user, value in pairs:
            if current.get(user) != value:
                dropped += self._write(f"DELETE FROM {table} WHERE user = ? AND {column} = ?", (user, value))  # noqa: S608
        return dropped

    def note_password_failure(self, user: str) -> None:
        self._write("INSERT INTO password_failures (user, at) VALUES (?, ?)", (user, self.clock()))

    def password_failures(self, user: str, within_s: float) -> int:
        """How many wrong current passwords ``user``'s sessions typed in the last ``within_s``."""
        since = self.clock() - within_s
        self._write("DELETE FROM password_failures WHERE at <= ?", (since,))
        return self._read("SELECT COUNT(*) FROM password_failures WHERE user = ?", (user,))[0][0]

    def clear_password_failures(self, user: str) -> None:
        self._write("DELETE FROM password_failures WHERE user = ?", (user,))

    def sessions(self) -> list[Session]:
        rows = self._read("SELECT user, fingerprint, created, last_used FROM sessions ORDER BY user, created")
        return [Session(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._state.close()


def from_section(section: dict) -> SessionStore:
    """The store an [auth] section describes (in memory without a sessions_file)."""
    return SessionStore(
        section.get("sessions_file") or MEMORY,
        lifetime_s=float(section.get("session_hours", 12)) * 3600,
        idle_s=float(section.get("idle_minutes", 120)) * 60,
    )


def _store_for(config: str | None) -> SessionStore:
    from labstats.viewer.sources import config_path, load_auth

    path = config_path(config)
    if not path:
        raise SystemExit("no viewer config: give --config or set LABSTATS_VIEWER_CONFIG")
    section = load_auth(path) or {}
    if not section.get("sessions_file"):
        raise SystemExit(f"{path}: no [auth] sessions_file; sessions live in the viewer's memory only")
    return from_section(section)


def end_sessions(user: str, config: str | None = None) -> int:
    """End every session of ``user`` at once (all workers); returns how many there were."""
    return _store_for(config).end_user(user)


def end_all(config: str | None = None) -> int:
    """End every session of every user at once; returns how many there were."""
    return _store_for(config).end_all()


def _become_owner(folder: Path) -> None:
    """As root, become the sessions folder's owner: SQLite may create its -wal and -shm files,
    and root-owned ones would lock the viewer out of its own sessions."""
    if os.geteuid() != 0 or not folder.is_dir():
        return
    owner = folder.stat()
    if owner.st_uid == 0:
        return
    os.setgroups([])
    os.setgid(owner.st_gid)
    os.setuid(owner.st_uid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labstats.viewer.sessions", description=__doc__.split("\n")[0]
    )
    config_help = "the viewer's TOML config (default: $LABSTATS_VIEWER_CONFIG)"
    parser.add_argument("--config", help=config_help)
    # --config also after the command ("end alice --config FILE"); SUPPRESS keeps the one above.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", parents=[common], help="the live sessions: user, login time, last use")
    end = commands.add_parser("end", parents=[common], help="end every session of USER")
    end.add_argument("user")
    commands.add_parser("end-all", parents=[common], help="end every session")
    commands.add_parser("prune", parents=[common], help="delete expired sessions")
    args = parser.parse_args(argv)

    store = _store_for(args.config)  # the config is read first: it may be readable by root only
    if not Path(store.path).exists():  # not made here: as root it would be root's
        print(f"{store.path} does not exist yet: no sessions")
        return 0
    _become_owner(Path(store.path).parent)
    try:
        if args.command == "list":
            store.prune()
            for s in store.sessions():
                print(f"{s.user}\tlogin {_when(s.created)}\tlast use {_when(s.last_used)}")
        elif args.command == "end":
            print(_count(store.end_user(args.user), f"ended for {args.user}"))
        elif args.command == "end-all":
            print(_count(store.end_all(), "ended"))
        else:
            print(_count(store.prune(), "pruned"))
    finally:
        store.close()
    return 0


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _count(n: int, what: str) -> str:
    return f"{n} session{'' if n == 1 else 's'} {what}"


if __name__ == "__main__":
    sys.exit(main())
