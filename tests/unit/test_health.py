"""The lab's health (labstats.ops.health): real redis-servers as on the web box (a master for
a training box, its replica read as the viewer's Redis user with the role's ACL), real runs
logged by Stats, the box agent's hash and the jobs' stamps as their writers leave them."""

from __future__ import annotations

import json
import time

import pytest
import redis
from conftest import ACL_PASSWORDS, RedisServer, free_port, render_acl, wait_for

import labstats
from labstats.format.keys import Keys
from labstats.ops import health
from labstats.reader import Lab

K = Keys()


@pytest.fixture
def master(tmp_path):
    server = RedisServer(tmp_path / "master").start()
    yield server
    server.stop()


def start_replica(workdir, master_port: int) -> RedisServer:
    """A replica with the redis role's replica ACL (the viewer user: reads and ROLE only)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "users.acl").write_text(render_acl("replica"))
    args = (
        "--appendonly",
        "no",
        "--replicaof",
        "127.0.0.1",
        str(master_port),
        "--aclfile",
        str(workdir / "users.acl"),
    )
    server = RedisServer(workdir, extra_args=args)
    server.username, server.password = "ops", ACL_PASSWORDS["ops"]
    return server.start()


@pytest.fixture
def replica(tmp_path, master):
    server = start_replica(tmp_path / "replica", master.port)
    assert wait_for(lambda: server.client().execute_command("ROLE")[3] == b"connected")
    yield server
    server.stop()


@pytest.fixture
def down_replica(tmp_path):
    """The replica of a training box that is away (nothing listens where its master was)."""
    server = start_replica(tmp_path / "down", free_port())
    yield server
    server.stop()


def viewer_lab(server: RedisServer, source: str) -> Lab:
    client = redis.Redis(
        port=server.port, username="viewer", password=ACL_PASSWORDS["viewer"], socket_timeout=5
    )
    return Lab(client, source=source)


def running_run(master: RedisServer, savedir, values: int) -> labstats.Stats:
    stats = labstats.Stats(savedir, url=master.url, system_metrics=False, capture_git=False,
                           handle_signals=False, console=False, flush_interval=0.05)  # fmt: skip
    for step in range(values):
        stats.log(step=step, loss=1.0 / (step + 1), acc=0.5)
    stats.flush()
    return stats


def plant_stalled(master: RedisServer, run_id: str, quiet_s: float) -> None:
    """A run whose process beats (fresh heartbeat) but whose loop last called quiet_s ago, as
    its writer leaves the record (unowned: the shared indexes)."""
    now = time.time()
    r = master.client()
    r.hset(K.run(run_id), mapping={"name": run_id, "status": "running", "started": f"{now - 600:.3f}",
                                   "heartbeat": f"{now:.3f}", "last_call": f"{now - quiet_s:.3f}",
                                   "call_interval": "0.5"})  # fmt: skip
    r.zadd(K.runs, {run_id: now - 600})
    r.sadd(K.status("running"), run_id)


def box_state(master: RedisServer, source: str, age_s: float, disks: list[dict]) -> None:
    state = {"cpu_percent": 3.0, "disks": disks, "gpus": [], "runs": []}
    master.client().hset(K.box(source), mapping={"at": f"{time.time() - age_s:.3f}", "interval": "10",
                                                  "host": source, "state": json.dumps(state)})  # fmt: skip


def replicated(replica: RedisServer, key: str) -> bool:
    return bool(replica.client().exists(key))


def test_a_source_with_a_running_and_a_stalled_run_its_agent_and_its_jobs(master, replica, tmp_path):
    stats = running_run(master, tmp_path / "train", 30)
    try:
        plant_stalled(master, "stuck-1", quiet_s=900)
        box_state(master, "gpu1", age_s=4, disks=[{"path": "/", "free_bytes": 10, "total_bytes": 100}])
        master.client().hset(K.jobs, "archive", json.dumps({"ok_at": 1700000000.5, "detail": "3 runs"}))
        master.client().hset(K.jobs, "purge", "not json")  # a broken entry is left out, nothing else
        assert wait_for(lambda: replicated(replica, K.jobs) and replicated(replica, K.run("stuck-1")))
        assert wait_for(lambda: replica.client().hget(K.jobs, "purge") is not None)

        found = health.collect({"gpu1": viewer_lab(replica, "gpu1")}, None)
        gpu1 = found.sources["gpu1"]
        assert gpu1.reachable
        assert gpu1.error == ""
        assert gpu1.link_up is True
        assert gpu1.used_memory_bytes > 0  # the viewer may ask INFO: the replica's memory
        assert 3 <= gpu1.box_age_s < 30
        assert gpu1.box_interval_s == 10
        assert gpu1.box_disks == [health.Disk("/", 10, 100)]
        assert gpu1.box_disks[0].used_ratio == pytest.approx(0.9)
        assert gpu1.jobs == {"archive": health.Success("archive", 1700000000.5, "3 runs")}
        runs = {r.name: r for r in found.runs()}
        assert set(runs) == {"train", "stuck-1"}
        assert runs["train"].status == "running"
        assert runs["train"].points == 60
        assert runs["train"].heartbeat_age_s < 30
        assert runs["train"].last_call_age_s < 60
        assert runs["stuck-1"].status == "stalled"
        assert runs["stuck-1"].owner is None
        assert 890 < runs["stuck-1"].last_call_age_s < 1000
        assert runs["stuck-1"].heartbeat_age_s < 30
        assert runs["stuck-1"].points == 0
        assert found.problems == []
    finally:
        stats.close()
    # Closed: no longer a running run.
    lab = viewer_lab(replica, "gpu1")
    assert wait_for(lambda: [r.name for r in health.collect({"gpu1": lab}, None).runs()] == ["stuck-1"])


def test_info_is_read_where_the_user_may(master):
    # The ops user (or a viewer given +info) reads memory; a master has no link to report.
    found = health.collect({"local": Lab(master.client(), source="local")}, None)
    assert found.sources["local"].used_memory_bytes > 0
    assert found.sources["local"].link_up is None


def test_a_box_whose_link_is_down_and_a_store_that_does_not_answer(down_replica):
    closed = Lab(redis.Redis(port=free_port(), socket_timeout=1), source="gone")
    found = health.collect({"gpu2": viewer_lab(down_replica, "gpu2"), "gone": closed}, None)
    assert found.sources["gpu2"].reachable
    assert found.sources["gpu2"].link_up is False
    assert found.sources["gpu2"].box_age_s is None
    assert found.sources["gpu2"].runs == []
    assert not found.sources["gone"].reachable
    assert "ConnectionError" in found.sources["gone"].error
    assert found.problems == [f"source gone: {found.sources['gone'].error}"]


def test_stamps_of_the_web_box_and_its_disks(tmp_path):
    status = tmp_path / "status"
    status.mkdir()
    (status / "backup.json").write_text(json.dumps({"ok_at": 1764900000, "detail": "snapshot 1a2b"}))
    (status / "push-gpu1-archive.json").write_text('{"ok_at": 1764900100.25}')
    (status / "broken.json").write_text('{"ok_at": "yesterday"}')
    (status / "notes.txt").write_text("not a stamp")
    (status / "push-gpu2-artifacts.json").write_text("")  # made by its role: no push yet
    found = health.collect({}, status, disk_paths=[str(tmp_path), str(status), "/no/such/path"])
    assert found.stamps == {
        "backup": health.Success("backup", 1764900000.0, "snapshot 1a2b"),
        "push-gpu1-archive": health.Success("push-gpu1-archive", 1764900100.25, ""),
    }
    assert found.problems == [f"{status / 'broken.json'}: not a stamp (JSON with a number ok_at)"]
    # tmp_path and status are on one disk: reported once, by the first path.
    assert [d.path for d in found.web_disks] == [str(tmp_path)]
    assert 0 < found.web_disks[0].free_bytes <= found.web_disks[0].total_bytes
    assert health.collect({}, tmp_path / "missing").stamps == {}  # no folder yet: no stamps


def test_a_run_with_too_many_series_is_not_counted(master, monkeypatch, tmp_path):
    monkeypatch.setattr(health, "MAX_SERIES_COUNTED", 1)
    stats = running_run(master, tmp_path / "wide", 3)
    try:
        found = health.collect({"local": Lab(master.client(), source="local")}, None)
        assert [(r.name, r.points) for r in found.runs()] == [("wide", None)]
    finally:
        stats.close()
