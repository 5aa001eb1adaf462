"""The labstats client on a training box: a script as the training user lands its run in
the master, and the run reaches the web box's replica."""

import json

from conftest import box, redis_cli, wait_until

testinfra_hosts = ["trainbox"]

SCRIPT = """
import numpy as np, labstats
w = np.zeros(4, dtype=np.float32)
with labstats.Stats("runs/infra-check", config={"lr": 0.01}) as stats:
    stats.watch(w, "weights")
    for step in range(200):
        w += 1
        stats.update(0, 200, 1, step)
        stats.log(step=step, loss=1.0 / (step + 1))
print(stats.name)
"""


def test_config_is_readable_by_the_training_user_only(host):
    with host.sudo():
        config = host.file("/home/researcher/.config/labstats/config.toml")
        assert config.mode == 0o600
        assert config.user == "researcher"
        assert host.file("/home/researcher/.config/labstats").mode == 0o700
    assert host.run("cat /home/researcher/.config/labstats/config.toml").rc != 0  # not for the admin


def test_a_training_script_reaches_master_and_replica(host):
    with host.sudo("researcher"):
        result = host.run("cd ~ && /opt/labstats/venv/bin/python -c %s", SCRIPT)
    assert result.rc == 0, result.stderr
    name = result.stdout.strip().splitlines()[-1]
    run_id = redis_cli(host, "ops", "hget", "ls:names", name).stdout.strip()
    assert run_id

    def finished_on(box_):
        return redis_cli(box_, "viewer", "hget", f"ls:run:{run_id}", "status").stdout.strip() == "finished"

    assert finished_on(host)
    web = box("webbox")
    assert wait_until(lambda: finished_on(web), timeout=30)
    info = json.loads(redis_cli(web, "viewer", "hget", f"ls:run:{run_id}:series", "loss").stdout)
    assert info["count"] == 200
    weights = json.loads(redis_cli(web, "viewer", "hget", f"ls:run:{run_id}:series", "weights").stdout)
    assert weights["count"] == 200
