"""Several training boxes, one web box: every box's runs reach the web box (viewer and
Jupyter); a training box that goes away is shown as such while the others' runs stay; a box
retired from the inventory leaves the others' tunnel address, replica port and data as they
were, without a full resync, and comes back when it is added again."""

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import (
    box,
    hosts_in,
    https_get,
    inventory_file,
    redis_cli,
    tunnel_address,
    wait_until,
    web_token,
)

testinfra_hosts = ["webbox"]
TRAINERS = hosts_in("training")
ROOT = Path(__file__).resolve().parents[2]

LOG = """
import sys, labstats
with labstats.Stats("runs/" + sys.argv[1]) as stats:
    for step in range(5):
        stats.log(step=step, loss=float(step))
print(stats.run_id)
"""
JUPYTER = """
import json, warnings, labstats
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    lab = labstats.connect()
    runs = lab.runs(limit=None)
said = [str(w.message) for w in caught]
print(json.dumps({"runs": {r.name: r.lab.source for r in runs}, "warnings": said}))
"""


def log_on(name: str, run_name: str) -> str:
    train = box(name)
    with train.sudo("researcher"):
        return train.check_output("cd ~ && /opt/labstats/venv/bin/python -c %s %s", LOG, run_name).split()[-1]


def listed() -> dict:
    status, _, body = https_get("/api/runs?limit=10000", token=web_token())
    assert status == 200, body
    return json.loads(body)


def as_jupyter(web) -> dict:
    with web.sudo("jupyter"):
        out = web.check_output(
            f"cd /var/lib/labstats-jupyter && HOME=/var/lib/labstats-jupyter "
            f"/opt/labstats-jupyter/venv/bin/python -c {shlex.quote(JUPYTER)}"
        )
    return json.loads(out.splitlines()[-1])


def test_runs_of_every_training_box_reach_the_viewer_and_jupyter(host):
    stamp = int(time.time())
    names = {trainer: f"topology-{trainer}-{stamp}" for trainer in TRAINERS}
    for trainer, run_name in names.items():
        log_on(trainer, run_name)

    def all_listed() -> bool:
        runs = {r["name"]: r["source"] for r in listed()["runs"]}
        return all(runs.get(run_name) == trainer for trainer, run_name in names.items())

    assert wait_until(all_listed, timeout=30), listed()["sources"]
    seen = as_jupyter(host)
    for trainer, run_name in names.items():
        assert seen["runs"][run_name] == f"source {trainer}"
    assert seen["warnings"] == []


def test_a_training_box_that_goes_away_is_said_and_the_others_stay_listed(host):
    away, others = TRAINERS[-1], TRAINERS[:-1]
    kept = {trainer: log_on(trainer, f"stays-{trainer}-{int(time.time())}") for trainer in others}
    train = box(away)
    with train.sudo():
        train.check_output("systemctl stop redis-server")  # the box's Redis gone, as when it is off
    try:
        assert wait_until(lambda: listed()["sources"][away]["link"] == "down", timeout=30)
        body = listed()
        ids = {r["id"] for r in body["runs"]}
        assert set(kept.values()) <= ids  # every other box's runs still listed
        assert any(r["source"] == away for r in body["runs"])  # its own, as last copied
        page = https_get("/", token=web_token())[2].decode()
        assert f"Training box <b>{away}</b> is not connected" in page
        seen = as_jupyter(host)
        assert f"the training box of source {away} is not connected" in " ".join(seen["warnings"])
        assert set(seen["runs"].values()) == {f"source {t}" for t in TRAINERS}
    finally:
        with train.sudo():
            train.check_output("systemctl start redis-server")
    assert wait_until(lambda: listed()["sources"][away]["link"] == "up", timeout=60)


def ansible_playbook(inventory: Path) -> str:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), "site.yml"],
        cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


def sync_full(name: str) -> int:
    out = redis_cli(box(name), "ops", "info", "stats").stdout
    return int(dict(line.split(":", 1) for line in out.split() if ":" in line)["sync_full"])


@pytest.mark.skipif(
    len(TRAINERS) < 2, reason="needs two training boxes (Molecule has them; `make lab` has one)"
)
def test_retiring_the_first_box_leaves_the_second_as_it_was(host):
    first, second = TRAINERS[0], TRAINERS[1]
    run_id = log_on(second, f"kept-{int(time.time())}")
    address = tunnel_address(box(second))
    port = replica_port(host, second)
    full_before = sync_full(second)

    inventory = Path(inventory_file())
    retired = inventory.with_name("retired.yml")
    data = yaml.safe_load(inventory.read_text())
    data["training"]["hosts"].pop(first)
    retired.write_text(yaml.safe_dump(data))
    try:
        ansible_playbook(retired)
        assert tunnel_address(box(second)) == address
        assert replica_port(host, second) == port
        assert sync_full(second) == full_before  # the replica was not resynced from scratch
        stored = redis_cli(host, "viewer", "hget", f"ls:run:{run_id}", "status", port=port).stdout.strip()
        assert stored == "finished"
        assert not host.service(f"redis-server@replica-{first}").is_running
        with host.sudo():
            assert host.file(f"/var/lib/redis/replica-{first}").is_directory  # its data kept
            assert address_of_peers(host) == {address}
        assert first not in listed()["sources"]
    finally:
        retired.unlink()
        ansible_playbook(inventory)  # the first box is back, with its data
    assert host.service(f"redis-server@replica-{first}").is_running
    assert wait_until(lambda: listed()["sources"].get(first, {}).get("link") == "up", timeout=60)


def replica_port(web, trainer: str) -> int:
    with web.sudo():
        config = web.check_output(f"cat /etc/redis/redis-replica-{trainer}.conf")
    return int(next(line.split()[1] for line in config.splitlines() if line.startswith("port ")))


def address_of_peers(web) -> set[str]:
    out = web.check_output("wg show wg0 allowed-ips")
    return {part.split("/")[0] for line in out.splitlines() for part in line.split()[1:]}
