"""The jobs' notes of success that the lab's health reads (labstats.ops.health), rendered
from the roles and run here, no box needed:

- a training box's push (file_send) leaves the time it started, and labstats-job-ok (archive
  role) writes it into the master's ls:jobs as the archiver Redis user of the real ACL;
- the web box's receiving module notes each push that ended well in the box's stamp;
- the web box's backup copies SQLite databases consistently and writes its stamp."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_file_sync import ROLES, Lab, render

from labstats.ops import health
from labstats.reader import Lab as Store

sys.path.insert(0, str(ROLES.parent / "tests" / "unit"))
from conftest import ACL_PASSWORDS, start_acl_server


@pytest.fixture
def master(tmp_path):
    server = start_acl_server(tmp_path / "redis")
    yield server
    server.stop()


def job_ok(tmp_path: Path, port: int) -> Path:
    """labstats-job-ok as the archive role renders it, reading the archiver's password here."""
    script = render("archive", "labstats-job-ok.j2", archive_prefix="ls", archive_redis_host="127.0.0.1",
                    archive_redis_port=port, archive_redis_user="archiver")  # fmt: skip
    (tmp_path / "archiver.redis-password").write_text(ACL_PASSWORDS["archiver"] + "\n")
    path = tmp_path / "labstats-job-ok"
    path.write_text(
        script.replace("/etc/labstats/archiver.redis-password", str(tmp_path / "archiver.redis-password"))
    )
    return path


def test_a_push_that_sent_everything_is_noted_in_the_masters_jobs(tmp_path, master):
    lab = Lab(tmp_path / "lab")
    before = time.time()
    lab.push()
    pushed_ok = lab.home / "pushed.ok"
    started = float(pushed_ok.read_text())
    assert before - 1 < started <= time.time()
    note = job_ok(tmp_path, master.port)
    done = subprocess.run(["sh", note, "file_send", "pushed to the web box", pushed_ok],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not pushed_ok.exists()  # taken: the next success writes it again
    # Nothing to note without the file (a push that failed wrote none): the note stays.
    assert subprocess.run(["sh", note, "file_send", "x", pushed_ok], check=False).returncode == 0
    jobs = health.collect({"box": Store(master.client(), source="box")}, None).sources["box"].jobs
    assert jobs == {
        "file_send": health.Success("file_send", pytest.approx(started, abs=1e-3), "pushed to the web box")
    }


def test_the_note_of_a_job_is_now_and_refuses_what_is_not_a_time(tmp_path, master):
    note = job_ok(tmp_path, master.port)
    done = subprocess.run(
        ["sh", note, "archive", 'archived "due" runs\n{}'], capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    raw = json.loads(master.client().hget("ls:jobs", "archive"))
    assert raw["detail"] == "archived due runs"  # only characters JSON needs no escape for
    assert abs(raw["ok_at"] - time.time()) < 5
    # A file the pushing account planted: a link to root's files is never read, junk refused.
    planted = tmp_path / "pushed.ok"
    planted.symlink_to("/etc/hostname")
    assert subprocess.run(["sh", note, "file_send", "x", planted], check=False).returncode == 0
    assert master.client().hget("ls:jobs", "file_send") is None
    planted.unlink()
    planted.write_text("1764900000; FLUSHALL\n")
    refused = subprocess.run(
        ["sh", note, "file_send", "x", planted], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2
    assert "FLUSHALL" not in refused.stderr
    assert master.client().hget("ls:jobs", "file_send") is None


def test_the_receiving_module_notes_each_push_that_ended_well(tmp_path):
    lab = Lab(tmp_path / "lab")
    status = tmp_path / "status"
    status.mkdir()
    for module in ("artifacts", "archive"):  # made by the role, empty until a push
        (status / f"push-trainbox-{module}.json").touch()
    assert health.read_stamps(status) == {}
    stamp = render("file_receive", "labstats-file-stamp.j2", file_receive_status_dir=status)
    (tmp_path / "stamp").write_text(stamp)
    conf = lab.root / "web/module.conf"
    assert "post-xfer exec = /usr/local/sbin/labstats-file-stamp 'trainbox'" in conf.read_text()
    conf.write_text(conf.read_text().replace("/usr/local/sbin/labstats-file-stamp", f"sh {tmp_path}/stamp"))
    before = time.time()
    lab.archive_file("alice.run1.parquet", b"content")
    lab.push()
    stamps = health.read_stamps(status)
    assert set(stamps) == {"push-trainbox-artifacts", "push-trainbox-archive"}
    assert all(before - 1 < s.ok_at <= time.time() + 1 for s in stamps.values())
    assert stamps["push-trainbox-archive"].detail == "archive push received from trainbox"


def run_backup(
    work: Path, restic: str, sqlite_dirs: list[str], paths: list[str]
) -> subprocess.CompletedProcess:
    """The backup script as the role renders it, its fixed paths under ``work``, no Redis
    replica, and ``restic`` (a shell script's body) in place of restic."""
    (work / "bin").mkdir(parents=True)
    (work / "env").write_text("LABSTATS_BACKUP_REDIS_USER=ops\n")
    (work / "bin/restic").write_text("#!/bin/sh\n" + restic)
    (work / "bin/restic").chmod(0o755)
    keep = {"backup_keep_daily": 7, "backup_keep_weekly": 5, "backup_keep_monthly": 12}
    script = render("backup", "labstats-backup.j2", backup_paths=paths, backup_sqlite_dirs=sqlite_dirs,
                    backup_status_dir=str(work / "status"), **keep)  # fmt: skip
    script = script.replace("/etc/labstats/backup/env", str(work / "env"))
    script = script.replace("/var/lib/labstats-backup", str(work / "staging"))
    script = script.replace("/etc/redis/redis-replica-*.conf", str(work / "no-replicas-*.conf"))
    (work / "labstats-backup").write_text(script)
    env = {**os.environ, "PATH": f"{work}/bin:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", work / "labstats-backup"], env=env, capture_output=True, text=True, check=False
    )


def test_backup_copies_sqlite_databases_consistently_and_stamps_its_success(tmp_path):
    """The backup script with a stand-in restic (it records what it was asked to back up): a
    database in WAL mode, its last rows still only in the WAL, is copied whole."""
    live = tmp_path / "viewer-state"
    live.mkdir()
    db = sqlite3.connect(live / "sessions.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")  # the rows stay in the WAL while the viewer runs
    db.execute("CREATE TABLE views (name TEXT)")
    db.executemany("INSERT INTO views VALUES (?)", [(f"view {i}",) for i in range(100)])
    db.commit()
    (live / "notes.txt").write_text("not a database: not copied")
    work = tmp_path / "backup"
    snapshots = """'[{"short_id": "1a2b3c4d"}]'"""
    restic = f'echo "$*" >>{work}/restic.calls\ncase "$*" in *--json*) echo {snapshots} ;; esac\n'
    before = time.time()
    done = run_backup(work, restic, [str(live)], ["/srv/files"])
    assert done.returncode == 0, done.stderr
    copy = work / "staging/sqlite" / str(live / "sessions.sqlite").lstrip("/")
    assert sqlite3.connect(copy).execute("SELECT count(*) FROM views").fetchone() == (100,)
    assert not (work / "staging/sqlite" / str(live / "notes.txt").lstrip("/")).exists()
    backed_up = (work / "restic.calls").read_text().splitlines()[0]
    assert f"{work}/staging/sqlite" in backed_up.split()
    assert "/srv/files" in backed_up.split()
    assert db.execute("SELECT count(*) FROM views").fetchone() == (100,)  # the live one untouched
    stamps = health.read_stamps(work / "status")
    assert list(stamps) == ["backup"]
    assert before - 1 < stamps["backup"].ok_at <= time.time() + 1
    assert stamps["backup"].detail == "restic snapshot 1a2b3c4d"
    assert not list((work / "status").glob(".*"))  # no temporary file left


def test_a_failed_backup_writes_no_stamp(tmp_path):
    work = tmp_path / "backup"
    done = run_backup(work, "echo 'repository unreachable' >&2\nexit 1\n", [], [])
    assert done.returncode != 0
    assert not (work / "status/backup.json").exists()


def test_the_units_note_their_success_after_it():
    archive = {"archive_dir": "/a", "archive_venv": "/v", "archive_user": "u"}
    unit = render("archive", "labstats-archive.service.j2", archive_older_than_days=30,
                  archive_memory_above="", **archive)  # fmt: skip
    assert (
        'ExecStartPost=-+/usr/local/sbin/labstats-job-ok archive "archived the due runs"' in unit.splitlines()
    )
    purge = render("archive", "labstats-purge.service.j2", archive_dir="/a", archive_venv="/v",
                   archive_artifacts_dir="/s", archive_trash_retention_days=30)  # fmt: skip
    assert 'ExecStartPost=-+/usr/local/sbin/labstats-job-ok purge "purged the due runs"' in purge.splitlines()
    push = render("file_send", "labstats-file-push.service.j2", file_send_user="labstats-push",
                  file_send_job_note="/usr/local/sbin/labstats-job-ok")  # fmt: skip
    line = ('ExecStartPost=-+/usr/local/sbin/labstats-job-ok file_send "pushed to the web box" '
            "/var/lib/labstats-push/pushed.ok")  # fmt: skip
    assert line in push.splitlines()
    assert "ExecStartPost" not in render("file_send", "labstats-file-push.service.j2", file_send_user="p",
                                         file_send_job_note="")  # fmt: skip
