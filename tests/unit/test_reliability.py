"""Nothing is lost or duplicated: Redis going away, several writers, killed processes."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
from conftest import wait_for

import labstats
from labstats.write import spool


def test_redis_restart_mid_run_loses_and_duplicates_nothing(tmp_path, own_redis, monkeypatch):
    monkeypatch.setenv("LABSTATS_URL", own_redis.url)
    stats = labstats.Stats(tmp_path / "run", flush_interval=0.02)
    for i in range(3000):
        stats.log(step=i, loss=float(i), tensor=np.full(3, i, dtype=np.int32))
    assert stats.flush(10)
    own_redis.stop()
    for i in range(3000, 6000):  # Redis is away: nothing may raise, nothing may block
        stats.log(step=i, loss=float(i), tensor=np.full(3, i, dtype=np.int32))
    assert stats.flush(10)
    assert stats.pending_spool is not None
    assert stats.pending_spool.stat().st_size > 0
    own_redis.start()
    for i in range(6000, 9000):
        stats.log(step=i, loss=float(i), tensor=np.full(3, i, dtype=np.int32))
    stats.close(timeout=30)
    assert stats.pending_spool is None

    run = labstats.connect(own_redis.url).run("run")
    loss = run.series("loss")
    assert loss.idx.tolist() == list(range(9000))
    assert loss.values.tolist() == [float(i) for i in range(9000)]
    tensors = run.series("tensor")
    assert [int(t[0]) for t in tensors.values] == list(range(9000))
    assert run.status == "finished"


def test_redis_down_at_start_then_up_replays_everything(tmp_path, own_redis, monkeypatch):
    monkeypatch.setenv("LABSTATS_URL", own_redis.url)
    own_redis.stop()
    stats = labstats.Stats(tmp_path / "run", config={"lr": 0.1}, flush_interval=0.02)
    for i in range(500):
        stats.log(step=i, acc=i / 500)
    assert stats.flush(10)
    own_redis.start()
    stats.close(timeout=30)
    run = labstats.connect(own_redis.url).run("run")
    assert run.config == {"lr": 0.1}
    assert run.series("acc").idx.tolist() == list(range(500))


def test_close_while_redis_is_away_keeps_the_spool(tmp_path, own_redis, monkeypatch):
    monkeypatch.setenv("LABSTATS_URL", own_redis.url)
    own_redis.stop()
    stats = labstats.Stats(tmp_path / "run", flush_interval=0.02)
    stats.log(step=0, v=1)
    stats.close(timeout=5)
    kept = list(spool.read_spool(stats.pending_spool))
    assert kept
    assert any(b"APPEND" in c[0] for _, cmds in kept for c in cmds)


def test_a_relative_savedir_stays_where_it_was_after_a_chdir(tmp_path, own_redis, monkeypatch):
    # Hydra and many scripts change the working folder after starting: the spool and the
    # media stay in the folder the run was started with.
    monkeypatch.setenv("LABSTATS_URL", own_redis.url)
    monkeypatch.chdir(tmp_path)
    own_redis.stop()
    stats = labstats.Stats("runs/exp", flush_interval=0.02)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    stats.log(step=0, v=1)
    stats.close(timeout=5)
    assert stats.pending_spool.parent.parent == tmp_path / "runs/exp"
    assert not (tmp_path / "elsewhere/runs").exists()


def test_a_torn_spool_frame_is_dropped_and_the_rest_replays(tmp_path):
    s = spool.Spool(tmp_path / "x.spool")
    s.append(1, [(b"SET", b"a", b"1")])
    s.append(2, [(b"SET", b"b", b"2")])
    s.close()
    data = (tmp_path / "x.spool").read_bytes()
    (tmp_path / "x.spool").write_bytes(data[:-3])  # killed in the middle of frame 2
    assert [seq for seq, _ in spool.read_spool(tmp_path / "x.spool")] == [1]


def test_several_processes_logging_at_once_keep_every_point(tmp_path, url):
    script = textwrap.dedent(
        """
        import sys, labstats
        name = sys.argv[1]
        with labstats.Stats(sys.argv[2], name=name, flush_interval=0.01) as stats:
            for i in range(5000):
                stats.log(step=i, v=float(i), who=name)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, f"p{n}", str(tmp_path / f"p{n}")]) for n in range(4)
    ]
    assert [p.wait(120) for p in procs] == [0, 0, 0, 0]
    lab = labstats.connect(url)
    for n in range(4):
        run = lab.run(f"p{n}")
        assert run.series("v").idx.tolist() == list(range(5000))
        assert set(run.series("who").values) == {f"p{n}"}


KILLED_SCRIPT = """
import sys, time, labstats
stats = labstats.Stats(sys.argv[1], flush_interval=0.05)
i = 0
while True:
    stats.log(step=i, v=float(i))
    i += 1
    if i % 100 == 0:
        time.sleep(0.01)
"""


def test_sigkill_loses_at_most_the_last_flush_interval(tmp_path, url):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, str(tmp_path / "run")])
    lab = labstats.connect(url)
    assert wait_for(lambda: lab.runs(name="run") and "v" in lab.run("run").series_info())
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    killed_at = time.time()
    run = lab.run("run")
    points = run.series("v")
    assert points.idx.tolist() == list(range(len(points)))  # a prefix, no holes, no repeats
    assert killed_at - float(run.meta["heartbeat"]) < 1.0  # last write within the flush bound
    lab.stale_after = 0.5
    time.sleep(0.6)
    assert lab.run("run").status == "crashed"


def test_sigterm_flushes_and_marks_the_run_crashed(tmp_path, url):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, str(tmp_path / "run")])
    lab = labstats.connect(url)
    assert wait_for(lambda: lab.runs(name="run") and "v" in lab.run("run").series_info())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == -signal.SIGTERM
    run = lab.run("run")
    assert run.meta["status"] == "crashed"
    assert run.meta["reason"] == "SIGTERM"
    assert run.series("v").idx.tolist() == list(range(len(run.series("v"))))
    spooled = tmp_path / "run" / ".labstats-spool"
    assert not spooled.exists() or not os.listdir(spooled)
