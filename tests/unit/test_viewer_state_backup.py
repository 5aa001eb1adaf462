"""The viewer's SQLite file is copied by the nightly backup while the workers hold it open
(roles/backup: SQLite's backup API in another process). A worker that has several stores on
the file (sessions, saved views, reports, links) must keep working after each copy: it once
dropped its own locks (opening and closing the file again), the copy then believed it was the
only user and removed the -wal and -shm files, and every page answered 500."""

import sqlite3
import subprocess
import sys

from labstats.viewer.report_store import ReportStore
from labstats.viewer.saved_views import ViewStore
from labstats.viewer.sessions import SessionStore

COPY = """
import sqlite3, sys
source, copy = sqlite3.connect(sys.argv[1], timeout=60), sqlite3.connect(sys.argv[2])
source.backup(copy)
copy.close(); source.close()
"""


def test_a_worker_with_every_store_open_outlives_the_backups_copy(tmp_path):
    path = tmp_path / "sessions.sqlite"
    SessionStore(path).check()  # as uWSGI's master at start: the file is made, in WAL mode
    # A worker's first requests: another store connects first (a share link, a saved view),
    # then the sessions store (the first request with a login).
    views = ViewStore(path)
    views.save("alice", "mine", [("sort", "name")])
    reports = ReportStore(path)
    reports.create("a report", "text", "alice")
    sessions = SessionStore(path)
    session_id, _ = sessions.create("alice", "fingerprint")
    for n in range(3):
        subprocess.run([sys.executable, "-c", COPY, str(path), str(tmp_path / f"copy{n}.sqlite")], check=True,
                       timeout=60)  # fmt: skip
        assert (tmp_path / "sessions.sqlite-wal").exists()  # the copy knew it was not alone
        assert sessions.lookup(session_id).user == "alice"
        views.save("alice", f"view {n}", [("sort", "name")])
        assert len(views.views("alice")) == n + 2
        assert len(reports.listed()) == 1


def test_whichever_store_makes_the_file_makes_it_for_the_viewer_only_in_wal_mode(tmp_path):
    for n, store in enumerate((ViewStore, ReportStore, SessionStore)):
        path = tmp_path / f"state{n}" / "viewer.sqlite"
        made = store(path)
        made._conn()  # noqa: SLF001 (the first use makes the file)
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
