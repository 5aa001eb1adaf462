"""The replicated link: WireGuard between the boxes, Redis master → replica over it."""

import time

import pytest
from conftest import assert_service_running, box, redis_cli, tunnel_address, wait_until

testinfra_hosts = ["trainbox"]

REPLICA = "redis-server@replica-trainbox"
# The training accounts of the lab and the scenario: each its own Redis user.
TRAINER, OTHER = "researcher", "student"


@pytest.fixture(scope="module")
def web():
    return box("webbox")


def replica_link_up(web) -> bool:
    return "master_link_status:up" in redis_cli(web, "ops", "info", "replication").stdout


def write_then_read_on_replica(train, web, key: str, value: str, timeout: float = 30.0) -> float:
    """Write as a training user on the master; return seconds until the viewer reads it on the web box."""
    assert redis_cli(train, TRAINER, "set", key, value).stdout.strip() == "OK"
    start = time.monotonic()
    assert wait_until(lambda: redis_cli(web, "viewer", "get", key).stdout.strip() == value, timeout, 0.1), (
        f"{key} did not reach the replica within {timeout}s"
    )
    return time.monotonic() - start


def test_tunnel_is_up_both_ways(host, web):
    assert_service_running(host, "wg-quick@wg0")
    assert_service_running(web, "wg-quick@wg0")
    with host.sudo():
        handshakes = host.check_output("wg show wg0 latest-handshakes").split()
    assert int(handshakes[1]) > time.time() - 300
    assert host.run(f"ping -c 2 -W 2 {tunnel_address(web)}").rc == 0
    assert web.run(f"bash -c 'echo > /dev/tcp/{tunnel_address(host)}/6379'").rc == 0


def test_training_box_dials_out_and_listens_for_no_tunnel_peer(host):
    with host.sudo():
        conf = host.file("/etc/wireguard/wg0.conf").content_string
    assert "ListenPort" not in conf
    assert "PersistentKeepalive = 25" in conf
    assert "PrivateKey" not in conf  # the key lives in its own 0600 file only
    with host.sudo():
        key = host.file("/etc/wireguard/wg0.key")
        assert key.mode == 0o600
        assert key.user == "root"


def test_master_runs_with_aof_and_listens_on_loopback_and_tunnel_only(host):
    assert_service_running(host, "redis-server")
    config = redis_cli(host, "ops", "config", "get", "appendonly").stdout
    assert "yes" in config
    with host.sudo():
        listening = {line.split()[3] for line in host.check_output("ss -H -tlnp sport = :6379").splitlines()}
    assert listening == {"127.0.0.1:6379", f"{tunnel_address(host)}:6379"}
    assert host.user("redis").uid != 0
    assert host.process.get(comm="redis-server").user == "redis"


def test_replica_link_is_up_and_read_only(web):
    assert_service_running(web, REPLICA)
    assert wait_until(lambda: replica_link_up(web))
    assert "NOPERM" in redis_cli(web, "viewer", "set", "ls:x", "1").stdout
    assert "READONLY" in redis_cli(web, "ops", "set", "ls:x", "1").stdout


def test_a_value_written_as_a_training_user_is_read_by_the_viewer_within_a_bound(host, web):
    elapsed = write_then_read_on_replica(host, web, f"ls:owner:{TRAINER}:test:latency", str(time.time()))
    assert elapsed < 5.0


def test_default_user_cannot_authenticate(host, web):
    for box_ in (host, web):
        out = box_.run("redis-cli -p 6379 --no-auth-warning get ls:anything").stdout
        assert "NOAUTH" in out or "NOPERM" in out
        out = box_.run("redis-cli --user default --pass guess --no-auth-warning get ls:anything")
        assert "WRONGPASS" in out.stdout + out.stderr


@pytest.mark.parametrize(
    "command",
    [["config", "get", "maxmemory"], ["flushall"], ["shutdown"], ["debug", "sleep", "0"], ["acl", "list"],
     ["keys", "*"], ["set", "other:key", "1"]],
)  # fmt: skip
def test_a_training_user_cannot_run_admin_or_dangerous_commands(host, command):
    # ACL DRYRUN answers what the ACL alone decides (DEBUG is also off by configuration).
    verdict = redis_cli(host, "ops", "acl", "dryrun", TRAINER, *command).stdout
    assert "no permissions" in verdict
    assert redis_cli(host, TRAINER, *command).stdout.startswith(("NOPERM", "ERR"))
    assert_service_running(host, "redis-server")


OWN_RUN, OWN_INDEX = f"ls:run:{TRAINER}.20261204-000000-abcdef", f"ls:owner:{TRAINER}"
LOGGER_COMMANDS = [
    ["set", OWN_RUN + ":seq", "1"],
    ["append", OWN_RUN + ":s:0:c:0", "2"],
    ["hset", OWN_RUN, "f", "v"],
    ["hdel", OWN_RUN + ":m:x", "0:0"],
    ["zadd", OWN_INDEX + ":runs", "1", "m"],
    ["sadd", OWN_INDEX + ":status:running", "m"],
    ["smove", OWN_INDEX + ":status:running", OWN_INDEX + ":status:finished", "m"],
    ["hsetnx", "ls:names", "exp", "m"],
    ["sadd", "ls:owners", TRAINER],
    ["set", "ls:schema", "2"],
    ["get", "ls:anything"],
    ["hgetall", f"ls:run:{OTHER}.x"],
    ["multi"],
    ["watch", "ls:k"],
]
OTHER_RUN, OTHER_INDEX = f"ls:run:{OTHER}.20261204-000000-abcdef", f"ls:owner:{OTHER}"
# What another training user could do to a run before: erase, hide or forge it.
FORGERIES = [
    ["set", OTHER_RUN + ":s:0:c:0", ""],
    ["hset", OTHER_RUN, "archived", "1"],
    ["hset", OTHER_RUN, "status", "finished", "ended", "not-a-number"],
    ["hdel", OTHER_RUN + ":m:x", "0:0"],
    ["smove", OTHER_INDEX + ":status:running", OTHER_INDEX + ":status:finished", "m"],
    ["zadd", OTHER_INDEX + ":runs", "0", "m"],
    ["hset", "ls:names", "exp", "mine"],
    ["srem", "ls:owners", OTHER],
    ["del", OTHER_RUN],
    ["set", "ls:runs", "x"],
]


def test_a_training_user_can_do_what_the_logger_needs_and_no_scripting(host):
    for command in LOGGER_COMMANDS:
        assert redis_cli(host, "ops", "acl", "dryrun", TRAINER, *command).stdout.strip() == "OK", command
    for command in (["eval", "return 1", "0"], ["function", "flush"], ["rpush", OWN_RUN + ":l", "1"]):
        assert "no permissions" in redis_cli(host, "ops", "acl", "dryrun", TRAINER, *command).stdout


@pytest.mark.parametrize("command", FORGERIES, ids=lambda c: " ".join(c)[:40])
def test_a_training_user_cannot_touch_another_users_runs(host, command):
    verdict = redis_cli(host, "ops", "acl", "dryrun", TRAINER, *command).stdout
    assert "no permissions" in verdict, command


def test_values_written_while_the_replica_is_down_arrive(host, web):
    with web.sudo():
        web.check_output(f"systemctl stop {REPLICA}")
    try:
        assert (
            redis_cli(host, TRAINER, "set", f"ls:owner:{TRAINER}:test:gap1", "outage").stdout.strip() == "OK"
        )
    finally:
        with web.sudo():
            web.check_output(f"systemctl start {REPLICA}")
    assert wait_until(lambda: replica_link_up(web))
    assert wait_until(
        lambda: redis_cli(web, "viewer", "get", f"ls:owner:{TRAINER}:test:gap1").stdout.strip() == "outage"
    )


def test_values_written_while_the_tunnel_is_down_arrive(host, web):
    key = f"ls:owner:{TRAINER}:test:gap2:{time.time_ns()}"  # a set of its own, also when run again on a lab
    with web.sudo():
        web.check_output("systemctl stop wg-quick@wg0")
    try:
        for i in range(50):
            assert redis_cli(host, TRAINER, "sadd", key, str(i)).stdout.strip() == "1"
    finally:
        with web.sudo():
            web.check_output("systemctl start wg-quick@wg0")
    assert wait_until(lambda: replica_link_up(web), timeout=90)
    assert wait_until(lambda: redis_cli(web, "viewer", "scard", key).stdout.strip() == "50")
