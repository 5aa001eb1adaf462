"""Resumed runs: ``Stats(name, resume=True)`` goes on with a run that crashed, was killed or
stopped: one run id, its series continuous, blobs and batches numbered on (nothing written
before is overwritten), the resume in the record; and a run started again without resume
names the run before it. Against a real redis-server, the real ACL where owners matter."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import redis
from conftest import password

import labstats
from labstats.config import LabstatsError
from labstats.format import keys, run_record

K = keys.Keys()
BIG = np.arange(4096, dtype=np.float32)  # over the inline limit: a blob of the run


def first_part(tmp_path, name: str, steps: range, **options) -> labstats.Stats:
    with labstats.Stats(tmp_path / "a", name=name, capture_git=False, **options) as stats:
        for step in steps:
            stats.log(step=step, loss=1.0 / (step + 1), note=f"step {step}")
            if step % 10 == 0:
                stats.log(step=step, weights=BIG + step)
    return stats


def test_a_finished_run_goes_on_with_its_id_series_and_blobs(url, lab, tmp_path):
    first = first_part(tmp_path, "sweep-7", range(100))
    with labstats.Stats(tmp_path / "b", name="sweep-7", resume=True, capture_git=False) as again:
        assert (again.run_id, again.name) == (first.run_id, "sweep-7")
        for step in range(100, 200):
            again.log(step=step, loss=1.0 / (step + 1), note=f"step {step}")
            if step % 10 == 0:
                again.log(step=step, weights=BIG + step)
        again.log(late=1.0)  # no step: after the run's last one, not at 0
    run = lab.run(first.run_id)
    assert [r.name for r in lab.runs()] == ["sweep-7"]  # one run, not two
    loss = run.series("loss")
    assert list(loss.idx) == list(range(200))
    np.testing.assert_allclose(loss.values, [1.0 / (s + 1) for s in range(200)])
    assert run.series("note").values == [f"step {s}" for s in range(200)]
    weights = run.series("weights")  # blobs of both parts: the second numbered after the first
    assert list(weights.idx) == list(range(0, 200, 10))
    for step, value in zip(weights.idx, weights.values, strict=True):
        np.testing.assert_array_equal(value, BIG + step)
    assert list(run.series("late").idx) == [200]
    assert run.status == run_record.FINISHED
    resumes = run.meta["resumes"]
    assert len(resumes) == 1
    assert resumes[0]["after_idx"] == 99
    assert resumes[0]["at"] > float(run.meta["started"])


KILLED = """
import os, signal, labstats
stats = labstats.Stats({savedir!r}, name="killed", capture_git=False, flush_interval=0.05)
for step in range(300):
    stats.log(step=step, loss=float(step))
assert stats.flush(20)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_sigkilled_run_resumes_at_once_on_its_host(url, lab, tmp_path):
    child = subprocess.run([sys.executable, "-c", KILLED.format(savedir=str(tmp_path / "k"))], timeout=60)
    assert child.returncode == -signal.SIGKILL
    (killed,) = lab.runs()
    assert killed.meta["status"] == run_record.RUNNING  # as a kill leaves it: no end written
    time.sleep(1.0)  # a gap a time axis shows
    with labstats.Stats(tmp_path / "k", name="killed", resume=True, capture_git=False) as again:
        assert again.run_id == killed.id  # at once: its pid is gone on this host
        for step in range(300, 400):
            again.log(step=step, loss=float(step))
    run = lab.run(killed.id)
    assert list(run.series("loss").idx) == list(range(400))
    assert run.status == run_record.FINISHED
    times = run.series("_time")  # the wall clock of the calls: the gap is in it
    gaps = np.diff(np.asarray(times.values, dtype=float))
    assert gaps.max() >= 1.0
    assert run.meta["resumes"][0]["after_idx"] == 299


def test_what_the_last_process_spooled_is_stored_before_going_on(own_redis, tmp_path, monkeypatch):
    monkeypatch.setenv("LABSTATS_URL", own_redis.url)
    stats = labstats.Stats(tmp_path / "s", name="spooled", capture_git=False, flush_interval=0.05)
    for step in range(50):
        stats.log(step=step, loss=float(step))
    assert stats.flush(20)
    own_redis.stop()  # Redis goes away: the rest and the end wait in the spool
    for step in range(50, 80):
        stats.log(step=step, loss=float(step))
    stats.close(timeout=5)
    assert stats.pending_spool is not None
    own_redis.start()
    with labstats.Stats(tmp_path / "s", name="spooled", resume=True, capture_git=False) as again:
        assert again.run_id == stats.run_id
        for step in range(80, 100):
            again.log(step=step, loss=float(step))
    assert stats.pending_spool is None  # stored, then gone
    run = labstats.connect(own_redis.url).run(stats.run_id)
    assert list(run.series("loss").idx) == list(range(100))  # none lost, none twice
    assert run.status == run_record.FINISHED


def test_a_running_run_is_not_resumed_beside_its_process(url, tmp_path):
    with labstats.Stats(tmp_path / "r", name="busy", capture_git=False) as stats:
        stats.log(step=0, loss=1.0)
        assert stats.flush(10)
        with pytest.raises(LabstatsError, match="still running"):
            labstats.Stats(tmp_path / "r2", name="busy", resume=True, capture_git=False)


def test_only_its_owner_resumes_a_run(acl_server, tmp_path):
    ops = acl_server.client()
    ops.flushall()
    bob = acl_server.url_for("bob", password("bob"))
    alice = acl_server.url_for("alice", password("alice"))
    with labstats.Stats(tmp_path / "b", name="bobs", url=bob, capture_git=False) as stats:
        stats.log(step=0, loss=1.0)
    before = {key: ops.dump(key) for key in ops.scan_iter(f"ls:run:{stats.run_id}*")}
    with pytest.raises(LabstatsError, match="only its owner"):
        labstats.Stats(tmp_path / "a", name="bobs", url=alice, resume=True, capture_git=False)
    assert {key: ops.dump(key) for key in ops.scan_iter(f"ls:run:{stats.run_id}*")} == before
    # Its owner can, through the ACL (every command of a resume is one bob may send).
    with labstats.Stats(tmp_path / "b", name="bobs", url=bob, resume=True, capture_git=False) as again:
        again.log(step=1, loss=0.5)
    assert again.run_id == stats.run_id
    assert again.pending_spool is None
    run = labstats.connect(acl_server.url_for("viewer", password("viewer"))).run(stats.run_id)
    assert list(run.series("loss").idx) == [0, 1]
    assert ops.sismember(K.owner_status("bob", run_record.FINISHED), stats.run_id)
    assert not ops.sismember(K.owner_status("bob", run_record.RUNNING), stats.run_id)


def test_an_archived_run_is_not_resumed(url, tmp_path):
    stats = first_part(tmp_path, "old", range(3))
    redis.Redis.from_url(url).hset(K.run(stats.run_id), "archived", "old.parquet")
    with pytest.raises(LabstatsError, match="archived"):
        labstats.Stats(tmp_path / "x", name="old", resume=True, capture_git=False)


def test_resume_without_such_a_run_or_without_redis_starts_one(url, tmp_path, monkeypatch, caplog):
    with labstats.Stats(tmp_path / "n", name="fresh", resume=True, capture_git=False) as stats:
        stats.log(step=0, loss=1.0)
    assert stats.name == "fresh"
    monkeypatch.setenv("LABSTATS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    options = {"resume": True, "capture_git": False, "resend_window": 0}
    with labstats.Stats(tmp_path / "m", name="fresh", **options) as away:
        away.log(step=0, loss=1.0)  # the training goes on: a new run, spooled
    assert away.run_id != stats.run_id
    assert "cannot reach Redis to resume" in caplog.text


def test_a_run_started_again_without_resume_names_the_one_before(url, lab, tmp_path):
    runs = [first_part(tmp_path, "again", range(2)) for _ in range(3)]
    assert [r.name for r in runs] == ["again", "again.2", "again.3"]
    previous = [lab.run(r.run_id).meta.get("previous") for r in runs]
    assert previous == [None, runs[0].run_id, runs[1].run_id]


def test_a_resumed_record_keeps_a_bounded_list_of_resumes(url, lab, tmp_path):
    stats = first_part(tmp_path, "often", range(2))
    for n in range(3):
        with labstats.Stats(tmp_path / "a", name="often", resume=True, capture_git=False) as again:
            again.log(step=10 + n, loss=0.1)
    resumes = json.loads(redis.Redis.from_url(url).hget(K.run(stats.run_id), "resumes"))
    assert [r["after_idx"] for r in resumes] == [1, 10, 11]
    assert all(r["pid"] == os.getpid() for r in resumes)


def test_a_series_started_after_the_resume_gets_the_next_number(url, lab, tmp_path):
    stats = first_part(tmp_path, "grow", range(5))
    with labstats.Stats(tmp_path / "a", name="grow", resume=True, capture_git=False) as again:
        again.log(step=5, loss=0.1, val_loss=0.2)
    run = lab.run(stats.run_id)
    sids = sorted(info["sid"] for info in run.series_info().values())
    assert sids == list(range(len(sids)))
    assert list(run.series("val_loss").idx) == [5]
    assert list(run.series("loss").idx) == [0, 1, 2, 3, 4, 5]
