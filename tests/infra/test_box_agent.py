"""The box agent on the lab's training box (role box_agent): its service runs as its own
account, hardened, and ends cleanly on a stop; the box's state it keeps in the master reaches
the web box's replica fresh (within 3 of its intervals) and names the run logging on the box,
with the box's disks and what NVML said (the lab has no GPU); its Redis user may write that
state and nothing of the runs'."""

import json
import re
import shlex
import time

import pytest
from conftest import assert_service_running, box, redis_cli, wait_until

testinfra_hosts = ["trainbox"]

SERVICE = "labstats-agent"
ACCOUNT = "labstats-agent"

# A run that logs for a minute in the background, as the training account.
LOGGER = """
import os, sys, time, labstats
with labstats.Stats("runs/" + sys.argv[1], system_metrics=False) as stats:
    open(sys.argv[1] + ".pid", "w").write(str(os.getpid()))
    open(sys.argv[1] + ".id", "w").write(stats.run_id)
    for step in range(600):
        stats.log(step=step, v=float(step))
        time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def web():
    return box("webbox")


def source_of(host) -> str:
    """The box's source name, as the topology makes it from its inventory name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", host.ansible.get_variables()["inventory_hostname"])


def replica_port(web, host) -> int:
    instance = "replica-" + re.sub(r"[^A-Za-z0-9-]", "-", host.ansible.get_variables()["inventory_hostname"])
    with web.sudo():
        config = web.check_output(f"cat /etc/redis/redis-{instance}.conf")
    return int(next(line.split()[1] for line in config.splitlines() if line.startswith("port ")))


def box_on_replica(web, host) -> dict[str, str]:
    """ls:box:<source> as the viewer reads it on the web box's replica of this box."""
    out = redis_cli(
        web, "viewer", "hgetall", f"ls:box:{source_of(host)}", port=replica_port(web, host)
    ).stdout
    lines = out.splitlines()  # field, value, field, value... (no value holds a newline: JSON, numbers, names)
    return dict(zip(lines[::2], lines[1::2], strict=True))


def now_on(web) -> float:
    return float(web.check_output("date +%s.%N"))


def test_the_agent_runs_as_its_own_account_without_a_shell(host):
    assert_service_running(host, SERVICE)
    account = host.user(ACCOUNT)
    assert account.exists
    assert account.shell in ("/usr/sbin/nologin", "/bin/false")
    assert account.uid < 1000  # a system account
    main_pid = host.check_output(f"systemctl show -p MainPID --value {SERVICE}")
    assert host.check_output(f"ps -o user:32= -p {main_pid}") == ACCOUNT
    with host.sudo():
        config = host.file("/etc/labstats/agent.toml")
        assert (config.user, config.mode) == (ACCOUNT, 0o600)
        assert "redis://agent:" in config.content_string
    with host.sudo(ACCOUNT):  # nobody else reads its password: a training account cannot
        assert host.run("cat /etc/labstats/agent.toml").rc == 0
    with host.sudo("researcher"):
        assert host.run("cat /etc/labstats/agent.toml").rc != 0


def test_the_service_is_hardened(host):
    shown = host.check_output(
        f"systemctl show {SERVICE} -p ProtectSystem -p NoNewPrivileges -p ProtectHome -p DevicePolicy "
        "-p CapabilityBoundingSet -p Restart -p RestartPreventExitStatus"
    )
    settings = dict(line.split("=", 1) for line in shown.splitlines())
    assert settings["ProtectSystem"] == "strict"
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectHome"] == "read-only"
    assert settings["DevicePolicy"] == "closed"
    assert settings["CapabilityBoundingSet"] == ""
    assert settings["Restart"] == "on-failure"
    assert "78" in settings["RestartPreventExitStatus"]


def test_the_boxs_state_on_the_web_box_is_fresh_and_names_the_run_logging_here(host, web):
    name = f"agent-canary-{int(time.time())}"
    with host.sudo("researcher"):
        host.check_output(f"cd ~ && (nohup /opt/labstats/venv/bin/python -c {shlex.quote(LOGGER)} {name} "
                          f">{name}.log 2>&1 &)")  # fmt: skip
    assert wait_until(lambda: host.run(f"sudo -u researcher test -s ~researcher/{name}.id").rc == 0, 30)
    with host.sudo("researcher"):
        run_id = host.check_output(f"cat ~/{name}.id")
    try:
        state: dict = {}

        def names_the_run() -> bool:
            nonlocal state
            found = box_on_replica(web, host)
            state = json.loads(found["state"]) if "state" in found else {}
            return run_id in state.get("runs", [])

        # The run's first heartbeat, then the agent's next sample (10 s), then replication.
        assert wait_until(names_the_run, timeout=60, interval=1), state
        found = box_on_replica(web, host)
        interval = float(found["interval"])
        assert now_on(web) - float(found["at"]) < 3 * interval  # fresh
        assert found["host"] == host.check_output("hostname")
        assert state["gpus"] == []  # the lab has no GPU, and the state says so
        assert state["gpu_status"].startswith("no GPU metrics")
        paths = [d["path"] for d in state["disks"]]
        assert paths == ["/home", "/var/lib/labstats/artifacts", "/var/lib/labstats/archive", "/"]
        assert all(0 < d["free_bytes"] <= d["total_bytes"] for d in state["disks"])
        assert 0 < state["memory_used_bytes"] < state["memory_total_bytes"]
        assert state["cpu_count"] >= 1
        # The history, on the replica too: a sample each interval.
        length = redis_cli(web, "viewer", "xlen", f"ls:box:{source_of(host)}:history",
                           port=replica_port(web, host)).stdout  # fmt: skip
        assert int(length) >= 1
    finally:
        with host.sudo("researcher"):
            host.run(f"kill -TERM $(cat ~/{name}.pid)")


def test_the_agents_redis_user_writes_the_boxs_state_only(host):
    source = source_of(host)
    assert redis_cli(host, "agent", "hset", f"ls:box:{source}", "probe", "1").stdout.strip() == "1"
    assert redis_cli(host, "agent", "hdel", f"ls:box:{source}", "probe").stdout.strip() == "1"
    for command in (("del", f"ls:box:{source}"), ("xtrim", f"ls:box:{source}:history", "MAXLEN", "0"),
                    ("hset", "ls:run:researcher.x", "status", "finished"), ("del", "ls:runs"),
                    ("set", "ls:schema", "0")):  # fmt: skip
        result = redis_cli(host, "agent", *command)
        assert "NOPERM" in result.stdout + result.stderr, command


def test_a_stop_ends_the_agent_cleanly_and_a_start_brings_it_back(host, web):
    with host.sudo():
        host.check_output(f"systemctl stop {SERVICE}")
        shown = host.check_output(f"systemctl show {SERVICE} -p Result -p ExecMainStatus")
        host.check_output(f"systemctl start {SERVICE}")
    assert dict(line.split("=", 1) for line in shown.splitlines()) == {
        "Result": "success",
        "ExecMainStatus": "0",
    }
    started = now_on(web)
    assert wait_until(lambda: float(box_on_replica(web, host).get("at", 0)) > started, timeout=40, interval=1)
    with host.sudo():
        journal = host.check_output(f"journalctl -u {SERVICE} --since '-10min' --no-pager")
    assert "stopped after" in journal
    assert "Traceback" not in journal
