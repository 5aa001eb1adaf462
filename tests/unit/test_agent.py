"""The box agent (labstats.ops.agent) against real redis-servers: what it writes for the box
(ls:box:<source> and its history), which run each GPU process belongs to (real processes as
runs and their workers), riding out Redis killed and restarted, an NVML error mid-way, and
SIGTERM; and the redis role's ``agent`` user, loaded into a real server, which may write the
box's state and nothing of the runs'. NVML is the system metrics tests' stand-in."""

import getpass
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis
from conftest import ACL_PASSWORDS, password, render_acl, start_acl_server, wait_for
from test_system_metrics import FakeNvml

import labstats
from labstats import config as cfg
from labstats.format.keys import Keys
from labstats.ops import agent

HOST = socket.gethostname()
ME = getpass.getuser()
KEYS = Keys("ls")

# A run's process with a worker of its own (as a DataLoader's): prints the worker's pid, and
# both end when its stdin closes.
RUN = (
    "import subprocess, sys\n"
    "waits = [sys.executable, '-c', 'import sys; sys.stdin.read()']\n"
    "worker = subprocess.Popen(waits, stdin=subprocess.PIPE)\n"
    "print(worker.pid, flush=True)\n"
    "sys.stdin.read()\n"
)


class NamedNvml(FakeNvml):
    """The stand-in, with the GPUs' names and UUIDs."""

    def nvmlDeviceGetName(self, handle):
        return b"Stand-in H100"

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-{handle:04d}"


@pytest.fixture
def run_process():
    """A real process as a run, and its worker's pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    worker = int(proc.stdout.readline())
    yield proc, worker
    proc.stdin.close()
    proc.wait(10)


@pytest.fixture
def sleeper():
    """A process that belongs to no run."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    yield proc
    proc.stdin.close()
    proc.wait(10)


def record_run(client, run_id, pid, *, host=HOST, status="running", heartbeat=None):
    """A run's record and index entries as the logger writes them (the fields the agent reads)."""
    owner = run_id.split(".")[0]
    now = time.time()
    client.hset(KEYS.run(run_id), mapping={"name": run_id, "status": status, "host": host, "pid": pid,
                                           "started": now, "heartbeat": heartbeat or now})  # fmt: skip
    client.sadd(KEYS.owners, owner)
    client.zadd(KEYS.owner_runs(owner), {run_id: now})
    client.sadd(KEYS.owner_status(owner, status), run_id)


def make_agent(client, tmp_path, nvml, **options):
    sampler = agent.BoxSampler([tmp_path, "/"], nvml)
    return agent.BoxAgent(client, "gpu-a", sampler, **{"interval": 10.0, **options})


def test_each_gpu_process_is_named_with_its_user_and_the_run_it_belongs_to(
    url, redis_server, tmp_path, run_process, sleeper
):
    client = redis_server.client()
    proc, worker = run_process
    record_run(client, "alice.r1", proc.pid)
    nvml = NamedNvml(gpus=3, users={0: [proc.pid], 1: [worker, sleeper.pid, worker]})
    box = make_agent(client, tmp_path, nvml)
    box.sampler.start()
    before = time.time()
    state = box.step()

    assert state["runs"] == ["alice.r1"]
    gpus = state["gpus"]
    assert [g["index"] for g in gpus] == [0, 1, 2]
    assert gpus[0]["processes"] == [{"pid": proc.pid, "user": ME, "run": "alice.r1"}]
    assert gpus[1]["processes"] == [  # the worker through its parent; each pid once
        {"pid": worker, "user": ME, "run": "alice.r1"},
        {"pid": sleeper.pid, "user": ME, "run": None},
    ]
    assert gpus[2]["processes"] == []
    assert gpus[1] | {"processes": []} == {
        "index": 1, "name": "Stand-in H100", "uuid": "GPU-0001", "util_percent": 41.0,
        "memory_used_bytes": 2 * 2**30, "memory_total_bytes": 80 * 2**30, "power_watts": 250.001,
        "temperature_celsius": 61.0, "processes": [],
    }  # fmt: skip
    assert state["gpu_status"] == "3 GPU(s) through NVML, driver 550.54.15"
    assert state["cpu_count"] == os.cpu_count()
    assert 0 < state["memory_used_bytes"] < state["memory_total_bytes"]
    assert 0 < state["memory_available_bytes"] <= state["memory_total_bytes"]
    assert [d["path"] for d in state["disks"]] == [str(tmp_path), "/"]
    assert all(0 < d["free_bytes"] <= d["total_bytes"] for d in state["disks"])

    stored = {k.decode(): v.decode() for k, v in client.hgetall("ls:box:gpu-a").items()}
    assert json.loads(stored["state"]) == state
    assert before - 0.001 <= float(stored["at"]) <= time.time()  # to the ms
    assert (stored["interval"], stored["host"], stored["agent_version"]) == ("10", HOST, labstats.__version__)
    [(entry_id, fields)] = client.xrange("ls:box:gpu-a:history")
    assert abs(int(entry_id.split(b"-")[0]) - float(stored["at"]) * 1000) < 2  # the sample's own time
    fields = {k.decode(): float(v) for k, v in fields.items()}
    assert fields["gpu2_util_percent"] == 42.0
    assert fields["gpu0_memory_used_bytes"] == 2**30
    assert fields["gpu1_temperature_celsius"] == 61.0
    assert fields["gpu1_power_watts"] == 250.001
    assert fields["disk1_free_bytes"] == state["disks"][1]["free_bytes"]
    assert {"cpu_percent", "memory_used_bytes"} <= set(fields)
    for key in ("ls:box:gpu-a", "ls:box:gpu-a:history"):  # a retired box's state leaves by itself
        assert agent.KEEP_AFTER_LAST - 5 < client.ttl(key) <= agent.KEEP_AFTER_LAST


def test_the_runs_on_this_box_are_the_live_running_ones_logged_here(url, redis_server, run_process, sleeper):
    client = redis_server.client()
    proc, _ = run_process
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    record_run(client, "alice.live", proc.pid)
    record_run(client, "bob.live", sleeper.pid)
    record_run(client, "alice.elsewhere", proc.pid, host="other-box")
    record_run(client, "alice.stale", proc.pid, heartbeat=time.time() - 2 * agent.STALE_AFTER)
    record_run(client, "alice.gone", ended.pid)  # SIGKILLed: still "running", heartbeat fresh
    record_run(client, "alice.done", proc.pid, status="finished")
    client.sadd(KEYS.owner_status("bob", "running"), "alice.forged")  # not bob's to list
    client.hset(KEYS.run("alice.forged"), mapping={"status": "running", "host": HOST, "pid": proc.pid,
                                                   "heartbeat": time.time()})  # fmt: skip
    found = agent.running_on_box(client, KEYS, HOST, time.time())
    assert found == {proc.pid: "alice.live", sleeper.pid: "bob.live"}


def test_the_history_keeps_its_hours_of_samples(url, redis_server, tmp_path):
    client = redis_server.client()
    box = make_agent(client, tmp_path, NamedNvml(gpus=1), history_hours=50 * 10 / 3600)  # 50 samples
    assert box.history_max == 50
    box.sampler.start()
    for _ in range(300):
        box.step()
    # Trimmed as Redis trims cheaply (whole nodes of 100 entries): at least the 50 newest.
    assert 50 <= client.xlen("ls:box:gpu-a:history") <= 150
    newest = [int(i.split(b"-")[0]) for i, _ in client.xrevrange("ls:box:gpu-a:history", count=50)]
    assert newest == sorted(newest, reverse=True)


def agent_logs(caplog, text):
    return [r for r in caplog.records if r.name == "labstats.agent" and text in r.getMessage()]


def test_redis_killed_and_restarted_mid_way_the_agent_samples_on_and_writes_what_it_missed(
    own_redis, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="labstats.agent")
    client = cfg.client(cfg.Settings(own_redis.url, "ls", "test"))  # as the command makes it: no retries
    box = make_agent(client, tmp_path, NamedNvml(gpus=1), interval=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=box.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: box.written >= 3)
        own_redis.proc.kill()  # SIGKILL: no goodbye
        own_redis.proc.wait(10)
        killed = time.time()
        taken, written = box.samples, box.written
        assert wait_for(lambda: box.samples >= taken + 10)  # sampling goes on...
        assert thread.is_alive()
        assert box.away_since is not None
        restarted = time.time()
        own_redis.proc = None
        own_redis.start()
        assert wait_for(lambda: box.away_since is None and box.written > written)
        assert wait_for(lambda: float(client.hget("ls:box:gpu-a", "at") or 0) > restarted)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    # ...and the samples taken while Redis was away are in the history, at their own times.
    ids = [int(i.split(b"-")[0]) / 1000 for i, _ in client.xrange("ls:box:gpu-a:history")]
    assert sum(killed < at < restarted for at in ids) >= 9
    assert ids == sorted(ids)
    assert len(agent_logs(caplog, "Redis is away")) == 1  # once per outage, not once per sample
    assert len(agent_logs(caplog, "Redis is back")) == 1


def test_an_nvml_error_stops_the_gpus_with_one_warning_and_the_status_says_why(
    url, redis_server, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="labstats.agent")
    nvml = NamedNvml(gpus=2, fail_after=4)  # the start reads each GPU once, a sample twice
    box = make_agent(redis_server.client(), tmp_path, nvml)
    box.sampler.start()
    assert len(box.step()["gpus"]) == 2
    states = [box.step() for _ in range(3)]
    assert all(s["gpus"] == [] for s in states)
    assert states[-1]["gpu_status"] == "GPU metrics stopped: NVML failed mid-run (GPU is lost)"
    assert all(s["cpu_percent"] is not None and s["disks"] for s in states)  # the rest goes on
    assert len(agent_logs(caplog, "GPU metrics stopped")) == 1
    assert nvml.shutdowns == 1
    stored = json.loads(redis_server.client().hget("ls:box:gpu-a", "state"))
    assert stored["gpu_status"] == states[-1]["gpu_status"]


def test_without_nvml_the_state_says_why(url, redis_server, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml fails
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # and import amdsmi
    box = make_agent(redis_server.client(), tmp_path, None)
    box.sampler.start()
    state = box.step()
    assert state["gpus"] == []
    assert state["gpu_status"] == (
        "no GPU metrics: pynvml is not installed (pip install 'labstats[gpu]');"
        " amdsmi is not installed (ROCm's Python package, for AMD GPUs)"
    )


def agent_command(*args):
    return [sys.executable, "-m", "labstats.ops.agent", *args]


def test_the_command_samples_until_sigterm_and_ends_cleanly(url, redis_server, tmp_path):
    client = redis_server.client()
    proc = subprocess.Popen(agent_command("--source", "box-1", "--interval", "5", "--url", url,
                                          "--disk", str(tmp_path)),
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert wait_for(lambda: client.exists("ls:box:box-1"), timeout=30)  # its first sample: 1 s in
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert time.monotonic() - stopped < 4  # not the 5 s interval's end
    assert "stopped after 1 samples (1 written)" in err
    assert "Traceback" not in err
    assert json.loads(client.hget("ls:box:box-1", "state"))["disks"][0]["path"] == str(tmp_path)
    assert client.hget("ls:box:box-1", "interval") == b"5"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--interval", "1"], "--interval must be 5 to 300 seconds, not 1"),
        (["--interval", "301"], "--interval must be 5 to 300 seconds, not 301"),
        (["--history-hours", "0"], "--history-hours must be over 0 and at most 168, not 0"),
        (["--source", "a b"], "--source 'a b' is not a source name"),
        (["--url", "redis://agent:a/b@127.0.0.1:6379/0"], "Port could not be cast"),  # a / unquoted
    ],
)
def test_a_bad_argument_ends_it_with_the_status_its_unit_does_not_restart(args, said):
    done = subprocess.run(
        agent_command("--source", "box-1", *args), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == agent.EX_CONFIG == 78
    assert said in done.stderr


# ---- the redis role's agent user --------------------------------------------------------------


@pytest.fixture
def agent_acl(tmp_path, monkeypatch):
    """A redis-server with the role's users, the agent among them (its password as the
    role's password task would know it)."""
    monkeypatch.setitem(ACL_PASSWORDS, "agent", "agent-pw")
    server = start_acl_server(tmp_path / "acl")
    yield server
    server.stop()


# What the agent must never do: touch what runs logged, their annotations or audits, remove
# or rename any key (its own included), trim a stream, or anything of an admin.
AGENT_DENIED = [
    ("DEL", "ls:run:alice.r1"),
    ("UNLINK", "ls:run:alice.r1"),
    ("HSET", "ls:run:alice.r1", "status", "finished"),
    ("HDEL", "ls:run:alice.r1", "pid"),
    ("EXPIRE", "ls:run:alice.r1", "1"),
    ("SET", "ls:run:alice.r1:seq", "0"),
    ("APPEND", "ls:run:alice.r1:s:0:c:0", "x"),
    ("SREM", "ls:owner:alice:status:running", "alice.r1"),
    ("ZADD", "ls:runs", "1", "x"),
    ("HSET", "ls:ann:alice.r1", "trashed", "1"),
    ("XADD", "ls:audit:agent", "*", "a", "1"),
    ("DEL", "ls:box:gpu-a"),
    ("UNLINK", "ls:box:gpu-a:history"),
    ("RENAME", "ls:box:gpu-a", "ls:box:other"),
    ("XTRIM", "ls:box:gpu-a:history", "MAXLEN", "0"),
    ("XDEL", "ls:box:gpu-a:history", "0-1"),
    ("SET", "ls:box:gpu-a:x", "1"),
    ("HSET", "other:box:gpu-a", "a", "1"),
    ("EVAL", "return 1", "0"),
    ("FCALL", "f", "0"),
    ("CONFIG", "GET", "*"),
    ("KEYS", "*"),
    ("FLUSHALL",),
    ("SHUTDOWN", "NOSAVE"),
    ("ACL", "LIST"),
    ("XREAD", "BLOCK", "0", "STREAMS", "ls:box:gpu-a:history", "$"),
    ("SRANDMEMBER", "ls:owners", "-600"),
    ("PUBLISH", "channel", "x"),
]


def test_the_agent_user_exists_on_masters_only():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(ACL_PASSWORDS, "agent", "agent-pw")
        assert sum(line.startswith("user agent on ") for line in render_acl("master").splitlines()) == 1
        assert "user agent" not in render_acl("replica")


def test_the_agent_user_writes_the_boxs_state_and_nothing_else(agent_acl, tmp_path, run_process):
    proc, worker = run_process
    ops = agent_acl.client()
    record_run(ops, "alice.r1", proc.pid)
    ops.set("ls:run:alice.r1:s:0:c:0", "points")
    as_agent = agent_acl.client("agent", password("agent"))
    box = make_agent(as_agent, tmp_path, NamedNvml(gpus=1, users={0: [worker]}))
    box.sampler.start()
    box.step()
    state = json.loads(as_agent.hget("ls:box:gpu-a", "state"))  # written, and read back
    assert state["runs"] == ["alice.r1"]
    assert state["gpus"][0]["processes"][0]["run"] == "alice.r1"
    assert as_agent.xlen("ls:box:gpu-a:history") == 1
    assert as_agent.hdel("ls:box:gpu-a", "host") == 1
    refused = []
    for command in AGENT_DENIED:
        try:
            as_agent.execute_command(*command)
        except redis.exceptions.NoPermissionError:
            refused.append(command)
    assert refused == AGENT_DENIED
    assert ops.hget("ls:run:alice.r1", "status") == b"running"  # nothing of the run changed
    assert ops.get("ls:run:alice.r1:s:0:c:0") == b"points"
    assert ops.ttl("ls:run:alice.r1") == -1
    assert ops.exists("ls:box:gpu-a", "ls:box:gpu-a:history") == 2


def test_the_history_cap_is_a_whole_number_of_samples():
    sampler = agent.BoxSampler(["/"], NamedNvml(gpus=0))
    box = agent.BoxAgent(None, "gpu-a", sampler, interval=7.0, history_hours=24)
    assert box.history_max == math.ceil(24 * 3600 / 7)
    assert box.pending.maxlen == math.ceil(agent.PENDING_SECONDS / 7)
