"""The replicated link: WireGuard between the boxes, Redis master → replica over it."""

import time

import pytest
from conftest import assert_service_running, box, redis_cli, tunnel_address, wait_until

testinfra_hosts = ["trainbox"]

REPLICA = "redis-server@replica-trainbox"


@pytest.fixture(scope="module")
def web():
    return box("webbox")


def replica_link_up(web) -> bool:
    return "master_link_status:up" in redis_cli(web, "ops", "info", "replication").stdout


def write_then_read_on_replica(train, web, key: str, value: str, timeout: float = 30.0) -> float:
    """Write as the trainer on the master; return seconds until the viewer reads it on the web box."""
    assert redis_cli(train, "trainer", "set", key, value).stdout.strip() == "OK"
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


def test_a_value_written_as_trainer_is_read_by_the_viewer_within_a_bound(host, web):
    elapsed = write_then_read_on_replica(host, web, "ls:test:latency", str(time.time()))
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
def test_trainer_cannot_run_admin_or_dangerous_commands(host, command):
    # ACL DRYRUN answers what the ACL alone decides (DEBUG is also off by configuration).
    verdict = redis_cli(host, "ops", "acl", "dryrun", "trainer", *command).stdout
    assert "no permissions" in verdict
    assert redis_cli(host, "trainer", *command).stdout.startswith(("NOPERM", "ERR"))
    assert_service_running(host, "redis-server")


LOGGER_COMMANDS = [["set", "ls:k", "1"], ["append", "ls:k", "2"], ["hset", "ls:h", "f", "v"],
                   ["hsetnx", "ls:h", "f", "v"], ["zadd", "ls:z", "1", "m"], ["sadd", "ls:s", "m"],
                   ["smove", "ls:s", "ls:t", "m"], ["get", "ls:k"], ["multi"], ["watch", "ls:k"]]  # fmt: skip


def test_trainer_can_do_what_the_logger_needs_and_no_scripting(host):
    for command in LOGGER_COMMANDS:
        assert redis_cli(host, "ops", "acl", "dryrun", "trainer", *command).stdout.strip() == "OK", command
    for command in (["eval", "return 1", "0"], ["function", "flush"], ["rpush", "ls:l", "1"]):
        assert "no permissions" in redis_cli(host, "ops", "acl", "dryrun", "trainer", *command).stdout


def test_values_written_while_the_replica_is_down_arrive(host, web):
    with web.sudo():
        web.check_output(f"systemctl stop {REPLICA}")
    try:
        assert redis_cli(host, "trainer", "set", "ls:test:gap1", "outage").stdout.strip() == "OK"
    finally:
        with web.sudo():
            web.check_output(f"systemctl start {REPLICA}")
    assert wait_until(lambda: replica_link_up(web))
    assert wait_until(lambda: redis_cli(web, "viewer", "get", "ls:test:gap1").stdout.strip() == "outage")


def test_values_written_while_the_tunnel_is_down_arrive(host, web):
    key = f"ls:test:gap2:{time.time_ns()}"  # a set of its own, also when run again on a lab
    with web.sudo():
        web.check_output("systemctl stop wg-quick@wg0")
    try:
        for i in range(50):
            assert redis_cli(host, "trainer", "sadd", key, str(i)).stdout.strip() == "1"
    finally:
        with web.sudo():
            web.check_output("systemctl start wg-quick@wg0")
    assert wait_until(lambda: replica_link_up(web), timeout=90)
    assert wait_until(lambda: redis_cli(web, "viewer", "scard", key).stdout.strip() == "50")
