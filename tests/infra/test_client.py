"""The labstats client on a training box: a script as the training user lands its run in
the master, and the run reaches the web box's replica."""

import json

from conftest import box, log_run_on_trainbox, redis_cli, wait_until

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
