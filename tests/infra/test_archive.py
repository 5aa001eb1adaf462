"""The archive tier on the real boxes: an ended run moved to Parquet on the training box,
its points gone from Redis (master and replica), the file pulled to the web box over the
tunnel, and the run read the same from the training user's reader, the viewer's API and
Jupyter's reader; the pull key can do nothing but a read-only rsync, from the tunnel only."""

import json

import pytest
from conftest import box, https_get, log_run_on_trainbox, redis_cli, tunnel_address, wait_until, web_token

testinfra_hosts = ["trainbox"]

READ = """
import sys, labstats
run = labstats.connect().run(sys.argv[1])
s = run.series("loss")
print(run.archived, len(s), s.values[10:13].tolist())
"""
SYNC_SSH = (
    "ssh -i /var/lib/labstats-sync/.ssh/id_ed25519 -o BatchMode=yes -o ConnectTimeout=10 "
    "-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=/var/lib/labstats-sync/.ssh/known_hosts"
)


def point_keys(host, run_id: str, port: int = 6379) -> int:
    out = redis_cli(host, "ops", "--scan", "--pattern", f"ls:run:{run_id}:s:*", port=port).stdout
    return len(out.split())


@pytest.fixture(scope="module")
def archived_run(host):
    name, run_id = log_run_on_trainbox("archive-check", steps=300)
    web = box("webbox")
    assert wait_until(lambda: point_keys(web, run_id) > 0, timeout=30)
    with host.sudo():
        result = host.run("labstats-archiver archive %s", name)
    assert result.rc == 0, result.stderr
    assert f"archived  {name}  " in result.stdout
    return name, run_id


def test_a_training_account_asking_to_archive_is_told_who_can(host):
    """`labstats archive RUN`, as the README lists it, typed by the training account in its
    shell: one line saying who archives, no traceback, nothing archived."""
    name, run_id = log_run_on_trainbox("archive-asked", steps=20)
    with host.sudo("researcher"):
        asked = host.run("cd ~ && /opt/labstats/venv/bin/labstats archive %s", name)
    assert asked.rc == 1
    assert "Traceback" not in asked.stderr
    assert asked.stderr.strip().splitlines()[-1] == (  # (ssh may say a line of its own first)
        "labstats: cannot write the archive folder /var/lib/labstats/archive; on a lab's training "
        "box the archive account does it: sudo labstats-archiver archive RUN..."
    )
    assert redis_cli(host, "viewer", "hget", f"ls:run:{run_id}", "archived").stdout.strip() == ""


def test_the_timer_and_the_archive_folder_are_in_place(host):
    timer = host.service("labstats-archive.timer")
    assert timer.is_enabled
    assert timer.is_running
    folder = host.file("/var/lib/labstats/archive")
    assert folder.user == "labstats-archive"
    assert folder.mode == 0o755
    with host.sudo():
        assert host.file("/etc/labstats/archiver.toml").mode == 0o600
    assert host.run("cat /etc/labstats/archiver.toml").rc != 0


def test_archiving_frees_master_and_replica_and_the_trainer_reads_the_same(host, archived_run):
    name, run_id = archived_run
    assert point_keys(host, run_id) == 0
    assert wait_until(lambda: point_keys(box("webbox"), run_id) == 0, timeout=30)
    assert (
        redis_cli(host, "viewer", "hget", f"ls:run:{run_id}", "archived").stdout.strip()
        == f"{run_id}.parquet"
    )
    with host.sudo("researcher"):
        out = host.check_output("cd ~ && /opt/labstats/venv/bin/python -c %s %s", READ, name)
    assert out.split()[:2] == ["True", "300"]
    assert json.loads(out.split(" ", 2)[2]) == [1 / 11, 1 / 12, 1 / 13]


def test_the_web_box_pulls_the_file_and_the_viewer_and_jupyter_read_it(archived_run):
    name, run_id = archived_run
    web = box("webbox")
    with web.sudo():
        pulled = web.run("systemctl start labstats-archive-sync.service")
        assert pulled.rc == 0, pulled.stderr
        copy = web.file(f"/var/lib/labstats/archive/trainbox/{run_id}.parquet")
        assert copy.exists
        assert copy.mode == 0o644
    status, _, body = https_get(
        f"/api/runs/trainbox/{run_id}/series/loss?start=10&stop=12", token=web_token()
    )
    assert status == 200, body
    assert json.loads(body)["values"] == [1 / 11, 1 / 12, 1 / 13]
    with web.sudo("jupyter"):
        out = web.check_output(
            "cd /var/lib/labstats-jupyter && HOME=/var/lib/labstats-jupyter "
            "/opt/labstats-jupyter/venv/bin/python -c %s %s",
            READ,
            name,
        )
    assert out.split()[:2] == ["True", "300"]


def test_the_pull_key_only_reads_the_archive_and_only_over_the_tunnel(host, archived_run):
    web = box("webbox")
    trainer = tunnel_address(host)
    public = host.ansible.get_variables()["ansible_host"]
    with web.sudo("labstats-sync"):
        listing = web.run(f"rsync -e {SYNC_SSH!r} labstats-archive@{trainer}:")
        assert listing.rc == 0, listing.stderr
        assert f"{archived_run[1]}.parquet" in listing.stdout
        # ssh exits 255 when refused, which testinfra raises on: the status is printed instead.
        shell = web.run(f"{SYNC_SSH} labstats-archive@{trainer} cat /etc/passwd; echo status=$?")
        assert "status=0" not in shell.stdout
        assert "root:" not in shell.stdout
        push = web.run(f"rsync -e {SYNC_SSH!r} /etc/hostname labstats-archive@{trainer}:x; echo status=$?")
        assert "status=0" not in push.stdout
        outside = web.run(f"rsync -e {SYNC_SSH!r} labstats-archive@{public}:; echo status=$?")
        assert "status=0" not in outside.stdout
        assert "Permission denied (publickey)" in outside.stderr  # the key is for the tunnel only
    with host.sudo():
        assert not host.file("/var/lib/labstats/archive/x").exists


def test_unarchive_puts_the_points_back(host, archived_run):
    name, run_id = archived_run
    with host.sudo():
        result = host.run("labstats-archiver unarchive %s", name)
    assert result.rc == 0, result.stderr
    assert f"restored  {name}  " in result.stdout
    assert point_keys(host, run_id) > 0
    with host.sudo("researcher"):
        out = host.check_output("cd ~ && /opt/labstats/venv/bin/python -c %s %s", READ, name)
    assert out.split()[:2] == ["False", "300"]
