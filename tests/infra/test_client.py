"""The labstats client on a training box: a script as the training user lands its run in
the master, and the run reaches the web box's replica."""

import json

from conftest import RUN_SCRIPT, box, log_run_on_trainbox, redis_cli, wait_until

testinfra_hosts = ["trainbox"]


def test_config_is_readable_by_the_training_user_only(host):
    with host.sudo():
        config = host.file("/home/researcher/.config/labstats/config.toml")
        assert config.mode == 0o600
        assert config.user == "researcher"
        assert host.file("/home/researcher/.config/labstats").mode == 0o700
    assert host.run("cat /home/researcher/.config/labstats/config.toml").rc != 0  # not for the admin


def test_a_training_script_reaches_master_and_replica(host):
    # watch/update of a weight array and log of a loss, as the training user
    name, run_id = log_run_on_trainbox("infra-check", steps=200)
    assert redis_cli(host, "ops", "hget", "ls:names", name).stdout.strip() == run_id

    def finished_on(box_):
        return redis_cli(box_, "viewer", "hget", f"ls:run:{run_id}", "status").stdout.strip() == "finished"

    assert finished_on(host)
    web = box("webbox")
    assert wait_until(lambda: finished_on(web), timeout=30)
    info = json.loads(redis_cli(web, "viewer", "hget", f"ls:run:{run_id}:series", "loss").stdout)
    assert info["count"] == 200
    weights = json.loads(redis_cli(web, "viewer", "hget", f"ls:run:{run_id}:series", "weights").stdout)
    assert weights["count"] == 200


def test_a_run_that_ended_while_redis_was_away_is_replayed_by_the_timer(host):
    timer = host.service("labstats-replay.timer")
    assert timer.is_enabled
    assert timer.is_running
    with host.sudo():
        host.check_output("systemctl stop redis-server")
    try:
        with host.sudo("researcher"):
            result = host.run(
                "cd ~ && /opt/labstats/venv/bin/python -c %s %s %s", RUN_SCRIPT, "offline-check", "300"
            )
        assert result.rc == 0, result.stderr
        run_id = result.stdout.strip().splitlines()[-1]
        with host.sudo("researcher"):
            assert run_id in host.check_output("ls ~/runs/offline-check/.labstats-spool")
    finally:
        with host.sudo():
            host.check_output("systemctl start redis-server")
    with host.sudo():
        host.check_output("systemctl start labstats-replay.service")  # what the timer runs
    status = redis_cli(host, "viewer", "hget", f"ls:run:{run_id}", "status").stdout.strip()
    assert status == "finished"
    info = json.loads(redis_cli(host, "viewer", "hget", f"ls:run:{run_id}:series", "loss").stdout)
    assert info["count"] == 300
    with host.sudo("researcher"):
        assert host.run("ls ~/runs/offline-check/.labstats-spool/%s.spool", run_id).rc != 0  # replayed
