"""The restore drill's comparison, on real redis-servers: a copy made by Redis itself (an
RDB snapshot loaded into a second server) is equal; a changed byte, a lost run or a
shrunk series is reported."""

import json
import shutil

import numpy as np
import pytest
from conftest import RedisServer

import labstats
from labstats.ops import drill


@pytest.fixture
def stores(tmp_path, own_redis):
    with labstats.Stats(tmp_path / "a", name="done", url=own_redis.url) as stats:
        for i in range(3000):
            stats.log(step=i, loss=float(i), w=np.full(2000, i, dtype=np.float32) if i % 500 == 0 else None)
    running = labstats.Stats(tmp_path / "b", name="running", url=own_redis.url)
    for i in range(100):
        running.log(step=i, acc=i / 100)
    assert running.flush(10)
    live = own_redis.client()
    live.save()  # what the backup takes: an RDB snapshot
    copy_dir = tmp_path / "restored"
    copy_dir.mkdir()
    shutil.copy(own_redis.workdir / "dump.rdb", copy_dir / "dump.rdb")
    restored = RedisServer(copy_dir, extra_args=("--appendonly", "no")).start()
    for i in range(100, 200):  # the live store goes on after the backup
        running.log(step=i, acc=i / 100)
    running.close()
    yield restored.client(), live, stats.run_id
    restored.stop()


def test_a_snapshot_restored_into_another_server_is_equal(stores):
    restored, live, _ = stores
    report = drill.compare(restored, live)
    assert report.equal, report.differences
    assert (report.runs, report.canaries) == (2, 1)
    # loss, w (a tensor or None), the running acc, and the call times the logger kept (_time).
    times = sum(json.loads(info)["count"] for key in restored.scan_iter("ls:run:*:series")
                if (info := restored.hget(key, "_time")))  # fmt: skip
    assert times >= 2
    assert report.points == 3000 + 3000 + 100 + times


def test_differences_are_reported(stores):
    restored, live, run_id = stores
    live.setrange(f"ls:run:{run_id}:s:0:c:0", 20, b"\xff")  # one byte of a finished run
    live.zrem("ls:runs", run_id)
    assert drill.compare(restored, live).differences == [
        f"run {run_id}: in the backup, not in the live store"
    ]
    live.zadd("ls:runs", {run_id: 1})
    assert "data differ" in drill.compare(restored, live).differences[0]


def test_a_run_archived_since_the_backup_is_checked_against_its_archive(stores, tmp_path):
    from labstats.ops import archive
    from labstats.reader import Lab

    restored, live, run_id = stores
    lab = Lab(live, archive_dir=tmp_path / "archive")
    archive.archive(lab, lab.run(run_id), tmp_path / "archive")
    report = drill.compare(restored, live)
    assert report.equal, report.differences
    assert report.canaries == 1
    restored.setrange(f"ls:run:{run_id}:s:0:c:0", 20, b"\xff")  # the copy differs from the archive
    assert (
        "archived since the backup, and the archive differs" in drill.compare(restored, live).differences[0]
    )


def test_owned_runs_are_compared_too(tmp_path, own_redis):
    """A run of a training user (schema 2: its id and indexes under its owner) is in the drill
    like the unowned ones; one gone from its owner's index live is reported."""
    own_redis.client().acl_setuser("alice", enabled=True, passwords=["+pw"], commands=["+@all"], keys=["*"])
    url = f"redis://alice:pw@127.0.0.1:{own_redis.port}/0"
    with labstats.Stats(tmp_path / "a", name="owned", url=url) as owned:
        owned.log(step=0, loss=1.0)
    with labstats.Stats(tmp_path / "b", name="legacy", url=own_redis.url) as legacy:
        legacy.log(step=0, loss=1.0)
    assert owned.run_id.startswith("alice.")
    assert "." not in legacy.run_id
    live = own_redis.client()
    live.save()
    copy_dir = tmp_path / "restored"
    copy_dir.mkdir()
    shutil.copy(own_redis.workdir / "dump.rdb", copy_dir / "dump.rdb")
    restored = RedisServer(copy_dir, extra_args=("--appendonly", "no")).start()
    try:
        report = drill.compare(restored.client(), live)
        assert report.equal, report.differences
        assert (report.runs, report.canaries) == (2, 2)
        live.setrange(f"ls:run:{owned.run_id}:s:0:c:0", 20, b"\xff")
        assert "data differ" in drill.compare(restored.client(), live).differences[0]
        live.zrem("ls:owner:alice:runs", owned.run_id)
        assert drill.compare(restored.client(), live).differences == [
            f"run {owned.run_id}: in the backup, not in the live store"
        ]
    finally:
        restored.stop()
