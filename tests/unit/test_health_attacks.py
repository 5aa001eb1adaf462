"""The lab's health (labstats.ops.health, what /metrics and the alerts read) against a training
user's hostile records: any training user may mark any number of its own runs running, with
fresh heartbeats and wide series infos. A scrape stays bounded and the other users' runs stay
in it. Real redis-server."""

from __future__ import annotations

import time

import pytest
from conftest import RedisServer

from labstats.format import series_info
from labstats.format.keys import Keys
from labstats.ops import health
from labstats.reader import Lab

K = Keys()


@pytest.fixture
def master(tmp_path):
    server = RedisServer(tmp_path / "master").start()
    yield server
    server.stop()


def plant_running(client, run_id: str, series: int = 1) -> None:
    """A running record with a fresh heartbeat, listed in its owner's running index, as its
    owner's Redis user may write it."""
    owner = run_id.split(".")[0]
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.hset(K.run(run_id), mapping={"name": run_id, "status": "running", "started": f"{now:.3f}",
                                      "heartbeat": f"{now:.3f}", "last_call": f"{now:.3f}"})  # fmt: skip
    pipe.sadd(K.owners, owner)
    pipe.zadd(K.owner_runs(owner), {run_id: now})
    pipe.sadd(K.owner_status(owner, "running"), run_id)
    info = series_info.encode(sid=0, kind="f", count=5, last_chunk=0, last_idx=4, monotonic=True)
    pipe.hset(K.series(run_id), mapping={f"s{n}": info for n in range(series)})
    pipe.execute()


def test_thousands_of_forged_running_runs_of_one_user_are_read_within_a_bound(master):
    client = master.client()
    plant_running(client, "alice.20261205-100000-aaaaaa")
    for n in range(3 * health.MAX_RUNNING_PER_OWNER):
        plant_running(client, f"mallory.20261205-{n:06d}-ffffff")
    found = health.collect({"gpu1": Lab(client, source="gpu1")}, None)
    runs = found.sources["gpu1"].runs
    owners = [r.owner for r in runs]
    assert owners.count("mallory") == health.MAX_RUNNING_PER_OWNER
    assert owners.count("alice") == 1  # the honest run is not crowded out
    newest = sorted(r.run_id for r in runs if r.owner == "mallory")
    assert newest[0] == f"mallory.20261205-{2 * health.MAX_RUNNING_PER_OWNER:06d}-ffffff"


def test_the_points_of_a_source_are_counted_from_a_bounded_number_of_series(master, monkeypatch):
    monkeypatch.setattr(health, "MAX_SERIES_READ", 25)
    client = master.client()
    for n in range(5):
        plant_running(client, f"mallory.20261205-{n:06d}-ffffff", series=10)
    found = health.collect({"gpu1": Lab(client, source="gpu1")}, None)
    points = sorted((r.points for r in found.sources["gpu1"].runs), key=lambda p: p is None)
    assert points == [50, 50, None, None, None]  # 20 of the 25 series read; the rest not counted


def test_a_forged_run_id_a_megabyte_long_or_with_line_breaks_is_left_out(master):
    client = master.client()
    plant_running(client, "alice.20261205-100000-aaaaaa")
    plant_running(client, "mallory." + "x" * 1_000_000)
    plant_running(client, 'mallory.1"\n} 1\nlabstats_forged{a="b')
    found = health.collect({"gpu1": Lab(client, source="gpu1")}, None)
    assert [r.run_id for r in found.sources["gpu1"].runs] == ["alice.20261205-100000-aaaaaa"]
