"""Faults while a training script logs about 1,000 points a second, counted: the tunnel
cut, the web box's replica restarted, the master killed with SIGKILL (and restarted by
systemd). What the script logged must be on the web box's replica afterwards: every point
once, none lost, none twice."""

import shlex
import time

from conftest import box, wait_until

testinfra_hosts = ["trainbox"]
REPLICA = "redis-server@replica-trainbox"

LOGGER = """
import sys, time, labstats
name, seconds = sys.argv[1], float(sys.argv[2])
step = 0
with labstats.Stats("runs/" + name, flush_interval=0.05) as stats:
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


def researcher(host, command: str) -> str:
    with host.sudo("researcher"):
        return host.check_output(f"cd ~ && {command}")


def test_link_cut_replica_restart_and_master_sigkill_lose_and_duplicate_nothing(host):
    web = box("webbox")
    name = f"faults-{int(time.time())}"
    researcher(host, f"(nohup /opt/labstats/venv/bin/python -c {shlex.quote(LOGGER)} {name} 40 "
                     f">{name}.log 2>&1 &)")  # fmt: skip
    assert wait_until(lambda: host.run(f"sudo -u researcher test -s ~researcher/{name}.id").rc == 0, 20)
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
    assert wait_until(lambda: host.run(f"sudo -u researcher test -s ~researcher/{name}.count").rc == 0, 90)
    count = int(researcher(host, f"cat {name}.count"))
    assert count > 10_000  # about 1,000 points a second, through all of the above

    def replica_has_all() -> bool:
        with web.sudo("jupyter"):
            out = web.run(
                f"cd /tmp && /opt/labstats-jupyter/venv/bin/python -c {shlex.quote(CHECK)} {name} {count}"
            )
        return out.rc == 0 and out.stdout.split() == ["finished", str(count), "True", "True"]

    assert wait_until(replica_has_all, timeout=120), researcher(host, f"cat {name}.log")
    print(f"{count} points logged through a 10 s tunnel cut, a replica restart and a master SIGKILL: "
          "all on the replica, once")  # fmt: skip
