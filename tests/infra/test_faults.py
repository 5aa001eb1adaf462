"""Faults while a training script logs about 1,000 points a second, counted: the tunnel
cut, the web box's replica restarted, the master killed with SIGKILL (and restarted by
systemd), the whole web box restarted, and the run's spool on a full filesystem while Redis
is away. What the script logged must be on the web box's replica afterwards: every point
once, none lost, none twice."""

import json
import os
import shlex
import subprocess
import time

from conftest import box, https_get, redis_cli, wait_until, web_token

testinfra_hosts = ["trainbox"]
REPLICA = "redis-server@replica-trainbox"
# The long cut: 30 s in `make test`; `make bench-outage` runs it for 5 minutes on the lab.
OUTAGE_SECONDS = int(os.environ.get("LABSTATS_OUTAGE_SECONDS", "30"))

LOGGER = """
import sys, time, labstats
name, seconds = sys.argv[1], float(sys.argv[2])
system_metrics = float(sys.argv[3]) if len(sys.argv) > 3 else True  # seconds between samples
step = 0
with labstats.Stats("runs/" + name, flush_interval=0.05, system_metrics=system_metrics) as stats:
    open(name + ".id", "w").write(stats.run_id)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stats.log(step=step, v=float(step))
        step += 1
        time.sleep(0.001)
open(name + ".count", "w").write(str(step))
"""

CHECK = """
import sys, labstats
run = labstats.connect().run(sys.argv[1])
points = run.series("v")
print(run.status, len(points), points.idx.tolist() == list(range(int(sys.argv[2]))),
      points.values.tolist() == [float(i) for i in range(int(sys.argv[2]))])
"""


# The run's system series and the box agent's history around a cut, as the web box reads them.
CHECK_SYSTEM = """
import json, sys, labstats
run = labstats.connect().run(sys.argv[1])
since, until = int(float(sys.argv[2]) * 1000), int(float(sys.argv[3]) * 1000)
idx = [i for i in run.series("sys/cpu_percent").idx.tolist() if since <= i <= until]
box = sorted(int(entry_id.split(b"-")[0]) for key in run.lab.redis.scan_iter(match="ls:box:*:history")
             for entry_id, _ in run.lab.redis.xrange(key, min=since, max=until))
gap = lambda times: max((b - a for a, b in zip(times, times[1:])), default=None)
print(json.dumps({"sys": len(idx), "sys_gap_ms": gap(idx), "box": len(box), "box_gap_ms": gap(box)}))
"""


def researcher(host, command: str) -> str:
    with host.sudo("researcher"):
        return host.check_output(f"cd ~ && {command}")


def start_logger(host, name: str, seconds: int, system_metrics: float | None = None) -> None:
    """The logging script in the background, as the training user; returns once it logs.
    ``system_metrics``: seconds between its system samples (the default's 10 s otherwise)."""
    sampling = "" if system_metrics is None else f" {system_metrics}"
    researcher(host, f"(nohup /opt/labstats/venv/bin/python -c {shlex.quote(LOGGER)} {name} {seconds}"
                     f"{sampling} >{name}.log 2>&1 &)")  # fmt: skip
    assert wait_until(lambda: host.run(f"sudo -u researcher test -s ~researcher/{name}.id").rc == 0, 20)


def logged_count(host, name: str) -> int:
    """Waits for the script to end; the number of points it logged."""
    assert wait_until(lambda: host.run(f"sudo -u researcher test -s ~researcher/{name}.count").rc == 0, 90)
    return int(researcher(host, f"cat {name}.count"))


def assert_replica_has_all(host, name: str, count: int) -> None:
    web = box("webbox")

    def replica_has_all() -> bool:
        with web.sudo("jupyter"):
            out = web.run(
                f"cd /tmp && /opt/labstats-jupyter/venv/bin/python -c {shlex.quote(CHECK)} {name} {count}"
            )
        return out.rc == 0 and out.stdout.split() == ["finished", str(count), "True", "True"]

    assert wait_until(replica_has_all, timeout=120), researcher(host, f"cat {name}.log")


def container_of(name: str) -> str:
    """The Docker container of a box, found by its address (Molecule and `make lab` name
    them differently)."""
    address = box(name).ansible.get_variables()["ansible_host"]
    for cid in subprocess.check_output(["docker", "ps", "-q"], text=True).split():
        networks = subprocess.check_output(
            ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", cid], text=True
        )
        if any(n.get("IPAddress") == address for n in json.loads(networks).values()):
            return cid
    raise AssertionError(f"no container has {name}'s address {address}")


def test_link_cut_replica_restart_and_master_sigkill_lose_and_duplicate_nothing(host):
    web = box("webbox")
    name = f"faults-{int(time.time())}"
    start_logger(host, name, 40)
    time.sleep(3)
    with web.sudo():
        web.check_output("systemctl stop wg-quick@wg0")  # the tunnel is cut...
    time.sleep(10)
    with web.sudo():
        web.check_output("systemctl start wg-quick@wg0")  # ...for 10 s
        time.sleep(3)
        web.check_output(f"systemctl restart {REPLICA}")
    time.sleep(3)
    with host.sudo():
        host.check_output("systemctl kill --signal=SIGKILL redis-server")  # systemd restarts it
        assert wait_until(lambda: host.run("systemctl is-active redis-server").rc == 0, 30)
    count = logged_count(host, name)
    assert count > 10_000  # about 1,000 points a second, through all of the above
    assert_replica_has_all(host, name, count)
    print(f"{count} points logged through a 10 s tunnel cut, a replica restart and a master SIGKILL: "
          "all on the replica, once")  # fmt: skip


def sync_counts(host) -> tuple[int, int]:
    """The master's count of full and of partial resyncs it has served."""
    out = redis_cli(host, "ops", "info", "stats").stdout
    stats = dict(line.split(":", 1) for line in out.split() if ":" in line)
    return int(stats["sync_full"]), int(stats["sync_partial_ok"])


def test_a_long_tunnel_cut_loses_and_duplicates_nothing(host):
    """The tunnel down for OUTAGE_SECONDS while the script logs: the master keeps the
    backlog and the replica catches up by itself when the link returns."""
    web = box("webbox")
    name = f"outage-{int(time.time())}"
    start_logger(host, name, OUTAGE_SECONDS + 20, system_metrics=1.0)
    full_before, partial_before = sync_counts(host)
    time.sleep(5)
    with web.sudo():
        web.check_output("systemctl stop wg-quick@wg0")
        cut = float(web.check_output("date +%s.%N"))
    try:
        time.sleep(OUTAGE_SECONDS)
    finally:
        with web.sudo():
            web.check_output("systemctl start wg-quick@wg0")
            healed = float(web.check_output("date +%s.%N"))
    count = logged_count(host, name)
    ended = time.monotonic()
    assert_replica_has_all(host, name, count)
    caught_up = time.monotonic() - ended
    full, partial = sync_counts(host)
    # The run's system series (a sample a second) and the box agent's history (one each
    # interval) have no gap across the cut, on the web box.
    check = f"/opt/labstats-jupyter/venv/bin/python -c {shlex.quote(CHECK_SYSTEM)} {name} {cut} {healed}"
    with web.sudo("jupyter"):
        system = json.loads(web.check_output(f"cd /tmp && {check}"))
    assert system["sys"] >= OUTAGE_SECONDS * 0.8, system
    assert system["sys_gap_ms"] < 2_500, system
    assert system["box"] >= OUTAGE_SECONDS // 10 - 1, system
    assert system["box"] < 2 or system["box_gap_ms"] < 25_000, system
    print(f"\n{count} points logged through a {OUTAGE_SECONDS} s tunnel cut: all on the replica, once, "
          f"{caught_up:.1f} s after the script ended (it ran on 15 s after the link returned); "
          f"resyncs: {full - full_before} full, {partial - partial_before} partial; across the cut "
          f"{system['sys']} system samples (largest gap {system['sys_gap_ms'] / 1000:.1f} s) and "
          f"{system['box']} box agent samples")  # fmt: skip


def test_a_web_box_restart_loses_and_duplicates_nothing(host):
    name = f"webrestart-{int(time.time())}"
    start_logger(host, name, 30)
    time.sleep(3)
    subprocess.run(["docker", "restart", "--time", "20", container_of("webbox")], check=True, timeout=120)
    count = logged_count(host, name)
    assert count > 10_000
    assert_replica_has_all(host, name, count)
    # The web front is back by itself (every unit enabled, the tunnel up again).
    assert wait_until(lambda: https_get("/api/health", token=web_token())[0] == 200, timeout=60)
    print(f"{count} points logged through a web box restart: all on the replica, once")


def test_a_full_spool_disk_warns_keeps_training_and_loses_nothing(host):
    """Redis away and the run's spool on a 64 KiB filesystem: the script is told once and goes
    on; what the disk refuses waits in memory; when Redis returns every point arrives."""
    name = f"fulldisk-{int(time.time())}"
    folder = f"/home/researcher/runs/{name}"
    with host.sudo():
        host.check_output(f"install -d -o researcher -g researcher {folder}")
        host.check_output(f"mount -t tmpfs -o size=64k,uid=researcher,gid=researcher tmpfs {folder}")
        host.check_output("systemctl stop redis-server")
    try:
        start_logger(host, name, 15)
        time.sleep(6)
        with host.sudo():
            host.check_output("systemctl start redis-server")
        count = logged_count(host, name)
        log = researcher(host, f"cat {name}.log")
        assert "cannot write the spool" in log
        assert log.count("cannot write the spool") == 1  # told once, not per batch
        assert "Traceback" not in log
        assert count > 5_000  # the script went on logging throughout
        assert_replica_has_all(host, name, count)
    finally:
        with host.sudo():
            host.run("systemctl start redis-server")
            host.run(f"umount {folder}")
    print(f"{count} points logged with Redis away and the spool's disk full: all on the replica, once")
