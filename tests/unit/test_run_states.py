"""Run states that say the truth. A live process whose loop stopped calling log()/update() (a
stuck data loader) reads as stalled: its heartbeat, beaten by the writer thread, stays fresh,
so it once read "running" for ever. A killed one reads as crashed, with the time of its last
heartbeat. Each says why. Real processes against the real redis-server."""

import subprocess
import sys
import time

from conftest import wait_for

import labstats
from labstats import cli

HUNG = """
import sys, threading, time, labstats
stats = labstats.Stats(sys.argv[1], flush_interval=0.05)
for i in range(40):
    stats.log(step=i, loss=1.0 / (i + 1))
    time.sleep(0.02)  # a loop calling every 20 ms
stats.flush()
print("hung", flush=True)
threading.Event().wait()  # the process lives; its loop never calls again
"""


def test_a_hung_loop_reads_stalled_then_crashed_once_killed(tmp_path, url):
    proc = subprocess.Popen(
        [sys.executable, "-c", HUNG, str(tmp_path / "hung")], stdout=subprocess.PIPE, text=True
    )
    lab = labstats.connect(url)
    lab.stall_after = 1.0
    try:
        assert proc.stdout.readline().strip() == "hung"
        assert lab.run("hung").status == "running"  # it called a moment ago
        assert wait_for(lambda: lab.run("hung").status == "stalled")
        stalled = lab.run("hung")
        assert float(stalled.meta["call_interval"]) < 0.2
        assert stalled.heartbeat_age < 15  # the process lives: only its loop stopped
        assert stalled.reason.startswith("no log() or update() for ")
        assert stalled.reason.endswith("its process lives")
        assert [r.name for r in lab.runs(status="stalled")] == ["hung"]
        assert lab.runs(status="running") == []
    finally:
        proc.kill()
        proc.wait()
    lab.stale_after = 0.5
    time.sleep(0.6)
    dead = lab.run("hung")
    assert dead.status == "crashed"
    assert dead.reason.startswith("no heartbeat since ")


def test_a_slow_loop_is_stalled_only_after_five_of_its_intervals(tmp_path, url):
    lab = labstats.connect(url)
    lab.stall_after = 0.3  # below five of this loop's intervals: those decide
    with labstats.Stats(tmp_path / "slow", flush_interval=0.05) as stats:
        for i in range(5):
            stats.log(step=i, v=1.0)
            time.sleep(0.4)
        stats.flush()
        assert 0.3 < float(lab.run("slow").meta["call_interval"]) < 0.6
        time.sleep(0.5)  # quiet for about 0.9 s, under 5 x 0.4 s
        assert lab.run("slow").status == "running"
        assert wait_for(lambda: lab.run("slow").status == "stalled", timeout=5)
        stats.log(step=5, v=1.0)  # it goes on
        stats.flush()
        assert lab.run("slow").status == "running"
    assert lab.run("slow").status == "finished"
    assert lab.run("slow").reason == ""


def test_the_cli_lists_stalled_runs(tmp_path, url, capsys):
    with labstats.Stats(tmp_path / "plain", flush_interval=0.05) as stats:
        stats.log(step=0, v=1.0)
    assert cli.main(["--url", url, "ls", "--status", "stalled"]) == 0
    assert "plain" not in capsys.readouterr().out


def test_the_viewer_filters_and_shows_the_states(tmp_path, url):
    from labstats.viewer import create_app
    from labstats.viewer.sources import Source

    client = create_app({"local": Source("local", url)}).test_client()
    with labstats.Stats(tmp_path / "done", flush_interval=0.05) as stats:
        stats.log(step=0, v=1.0)
    assert client.get("/api/runs?status=stalled").json["runs"] == []
    assert [r["name"] for r in client.get("/api/runs?status=finished").json["runs"]] == ["done"]
    page = client.get("/").get_data(as_text=True)
    assert '<option value="stalled"' in page
    assert client.get("/api/runs?status=asleep").status_code == 400


def test_a_heartbeat_no_clock_can_show_still_gives_a_reason_and_a_page(tmp_path, url):
    # The record is the training user's to write: a heartbeat of -1e300 reads as crashed, and
    # its reason (and the run page that shows it) must not fail on the time.
    from labstats.viewer import create_app
    from labstats.viewer.sources import Source

    with labstats.Stats(tmp_path / "odd", flush_interval=0.05) as stats:
        stats.log(step=0, v=1.0)
        stats.flush()
        lab = labstats.connect(url)
        lab.redis.hset(lab.keys.run(stats.run_id), mapping={"heartbeat": "-1e300", "started": "-1e300"})
        run = lab.run("odd")
        assert run.status == "crashed"
        assert run.reason == "no heartbeat since -1e+300: its process ended without closing the run"
        client = create_app({"local": Source("local", url)}).test_client()
        page = client.get(f"/runs/local/{stats.run_id}")
        assert page.status_code == 200
        assert "no heartbeat since -1e+300" in page.get_data(as_text=True)
