"""The labstats client on a training box: a script as the training user lands its run in
the master, and the run reaches the web box's replica."""

import json
import shlex

from conftest import RUN_SCRIPT, box, https_get, log_run_on_trainbox, redis_cli, wait_until, web_token

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
    timer = host.service("labstats-replay-researcher.timer")  # one per training account
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
        host.check_output("systemctl start labstats-replay-researcher.service")  # what the timer runs
    status = redis_cli(host, "viewer", "hget", f"ls:run:{run_id}", "status").stdout.strip()
    assert status == "finished"
    info = json.loads(redis_cli(host, "viewer", "hget", f"ls:run:{run_id}:series", "loss").stdout)
    assert info["count"] == 300
    with host.sudo("researcher"):
        assert host.run("ls ~/runs/offline-check/.labstats-spool/%s.spool", run_id).rc != 0  # replayed


FORGE = """
import sys, redis, labstats
from labstats import config
victim = sys.argv[1]
client = config.client(config.resolve(None, None))  # this account's own Redis user
tries = {
    "erase a chunk": lambda: client.set(f"ls:run:{victim}:s:0:c:0", b""),
    "hide behind an archive": lambda: client.hset(f"ls:run:{victim}", "archived", "1"),
    "end it falsely": lambda: client.hset(f"ls:run:{victim}", mapping={"status": "finished", "ended": "x"}),
    "take its name": lambda: client.hset("ls:names", "forged", victim),
    "delete it": lambda: client.delete(f"ls:run:{victim}"),
}
for what, attempt in tries.items():
    try:
        attempt()
        print("ALLOWED", what)
    except redis.exceptions.NoPermissionError:
        print("refused", what)
"""


def test_one_training_account_cannot_erase_hide_or_forge_anothers_run(host):
    """Each training account logs as its own Redis user: the other account, with its own
    deployed config, is refused every forgery the attack used, and both runs are listed."""
    _, victim = log_run_on_trainbox("owned-by-researcher", steps=50)
    assert victim.startswith("researcher.")  # the run id names its owner
    with host.sudo("student"):
        theirs = host.run(
            "cd ~ && /opt/labstats/venv/bin/python -c %s %s %s", RUN_SCRIPT, "owned-by-student", "20"
        )
        assert theirs.rc == 0, theirs.stderr
        said = host.check_output("cd ~ && /opt/labstats/venv/bin/python -c %s %s", FORGE, victim)
    assert "ALLOWED" not in said
    assert said.count("refused") == 5
    student_run = theirs.stdout.strip().splitlines()[-1]
    assert student_run.startswith("student.")
    assert redis_cli(host, "viewer", "hget", f"ls:run:{victim}", "status").stdout.strip() == "finished"
    assert redis_cli(host, "viewer", "hget", f"ls:run:{victim}", "archived").stdout.strip() == ""

    def both_listed() -> bool:
        status, _, body = https_get("/api/runs?q=owned-by", token=web_token())
        ids = {run["id"] for run in json.loads(body)["runs"]} if status == 200 else set()
        return {victim, student_run} <= ids

    assert wait_until(both_listed, timeout=30)


TB_EVENTS = """
import sys, time
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
writer = EventFileWriter(sys.argv[1])
for step in range(50):
    value = summary_pb2.Summary.Value(tag="loss", simple_value=1.0 / (step + 1))
    summary = summary_pb2.Summary(value=[value])
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
writer.close()
"""


def test_a_training_user_imports_tensorboard_runs_with_the_installed_reader(host):
    # import-tb's dependency is in the shared venv: a training user could not add it there.
    with host.sudo("researcher"):
        host.check_output("rm -rf ~/tb_logs && mkdir -p ~/tb_logs/first")
        host.check_output("/opt/labstats/venv/bin/python -c %s ~/tb_logs/first", TB_EVENTS)
        result = host.run("cd ~ && /opt/labstats/venv/bin/labstats import-tb ~/tb_logs")
    assert result.rc == 0, result.stderr
    assert "Traceback" not in result.stderr
    with host.sudo("researcher"):
        listed = host.check_output("/opt/labstats/venv/bin/labstats ls")
    assert "first" in listed


KILLED = """
import os, signal, sys, labstats
stats = labstats.Stats("runs/resume-check", resume=sys.argv[1] == "resume")
start = stats.last_step + 1
for step in range(start, start + 100):
    stats.log(step=step, loss=float(step))
print(stats.run_id, flush=True)
if sys.argv[1] == "kill":
    assert stats.flush(20)
    os.kill(os.getpid(), signal.SIGKILL)
stats.close()
"""


def test_a_run_killed_on_the_training_box_is_resumed_by_its_owner(host):
    with host.sudo("researcher"):
        host.run("rm -rf ~/runs/resume-check")
        killed = host.run("cd ~ && /opt/labstats/venv/bin/python -c %s kill", KILLED)
        assert killed.rc == -9 or killed.rc == 137, killed.stderr
        resumed = host.run("cd ~ && /opt/labstats/venv/bin/python -c %s resume", KILLED)
    assert resumed.rc == 0, resumed.stderr
    run_id = killed.stdout.split()[0]
    assert resumed.stdout.split()[0] == run_id  # one run id
    info = json.loads(redis_cli(host, "viewer", "hget", f"ls:run:{run_id}:series", "loss").stdout)
    assert info["count"] == 200  # continuous: 0..199
    assert info["last_idx"] == 199
    resumes = json.loads(redis_cli(host, "viewer", "hget", f"ls:run:{run_id}", "resumes").stdout)
    assert [r["after_idx"] for r in resumes] == [99]
    status = redis_cli(host, "viewer", "hget", f"ls:run:{run_id}", "status").stdout.strip()
    assert status == "finished"


BUNDLED = """
import labstats
with labstats.Stats("runs/bundled", capture_freeze=False) as stats:
    for step in range(20):
        stats.log(step=step, loss=1.0 / (step + 1))
print(stats.run_id)
"""


def test_a_run_from_a_repository_without_a_remote_regenerates_on_the_web_box(host):
    # The repository exists only on the training box; its commit's bundle goes to the web box
    # with the media (the artifact push), and the web box's CLI checks it out from there.
    with host.sudo("researcher"):
        host.check_output(
            "rm -rf ~/bundled && mkdir ~/bundled && cd ~/bundled && git init -q -b main"
            " && git config user.email r@example.org && git config user.name r"
            f" && printf %s {shlex.quote(BUNDLED)} > train.py && git add train.py && git commit -q -m first"
        )
        run_id = host.check_output("cd ~/bundled && /opt/labstats/venv/bin/python train.py").split()[-1]
    digest = redis_cli(host, "ops", "hget", f"ls:run:{run_id}", "code_bundle").stdout.strip()
    assert len(digest) == 64, redis_cli(host, "ops", "hget", f"ls:run:{run_id}", "code_bundle_note").stdout
    web = box("webbox")
    assert wait_until(lambda: web.run(f"sudo find /var/lib/labstats/artifacts -name {digest}").stdout, 90, 2)
    with web.sudo("jupyter"):
        done = web.run(f"cd /tmp && rm -rf regen-{run_id} && /opt/labstats-jupyter/venv/bin/labstats "
                       f"regenerate {run_id} /tmp/regen-{run_id}")  # fmt: skip
        assert done.rc == 0, done.stderr
        assert "Traceback" not in done.stderr
        assert web.check_output(f"cat /tmp/regen-{run_id}/train.py").strip() == BUNDLED.strip()
        web.run(f"rm -rf /tmp/regen-{run_id}")
