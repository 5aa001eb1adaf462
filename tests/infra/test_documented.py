"""The docs' shell blocks marked `<!-- run: box GROUP NAME -->` (README.md, docs/*.md), run as
written on a box of that group as its admin user, who types them there; then what each
promised is checked (the run is in the viewer, the runs are archived and back, the sessions
ended)."""

import base64
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import box, credentials_dir, https_get, wait_until, web_token

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import doc_blocks

testinfra_hosts = ["trainbox"]
ROOT = doc_blocks.ROOT
ADMIN = "labadmin"


def run_block(host, text: str, *, as_root: bool = False):
    """The block as one script, as the admin user (or root, after `sudo -i`) types it."""
    script = f"/tmp/doc-block-{time.monotonic_ns()}.sh"
    encoded = base64.b64encode(text.encode()).decode()
    host.run_expect([0], f"echo {encoded} | base64 -d > {script} && chmod 0755 {script}")
    with host.sudo("root" if as_root else ADMIN):
        result = host.run(f"cd ~ && bash -e {script}")
    host.run(f"rm -f {script}")
    return result


def block(name: str) -> doc_blocks.Block:
    (found,) = [b for b in doc_blocks.of_kind("box") if b.name == name]
    return found


def test_every_box_block_is_run_here():
    names = {"quickstart", "viewer-sessions", "archiver", "notebook-restore"}  # each has its test below
    assert {b.name for b in doc_blocks.of_kind("box")} == names


def test_the_quickstart_logs_a_run_the_viewer_shows():
    quickstart = block("quickstart")
    first, rest = quickstart.text.split("\n", 1)
    # The first line takes the reader to the lab's training box: it must name that box.
    lab = yaml.safe_load((ROOT / "inventory/lab/hosts.yml").read_text())
    address = lab["all"]["children"]["training"]["hosts"]["trainbox"]["ansible_host"]
    assert first == f"ssh -i credentials/lab_ssh_ed25519 {ADMIN}@{address}", first
    result = run_block(box("trainbox"), rest)
    assert result.rc == 0, result.stderr
    assert "hello" in result.stdout, result.stdout
    assert "loss" in result.stdout, result.stdout
    token = web_token()

    def listed() -> bool:
        status, _, body = https_get("/api/runs?q=hello", token=token)
        return status == 200 and any(r["name"] == "hello" for r in json.loads(body)["runs"])

    assert wait_until(listed, timeout=10), "the quickstart's run is not in the viewer"


@pytest.fixture
def back_in_redis(host):
    """The block leaves exp43 archived: put it back afterwards, so that the newest runs are not
    an archive still on its way to the web box when later tests (the example notebook) read."""

    def unarchive():
        with host.sudo():
            for name in ("exp42", "exp43"):
                host.run("labstats-archiver unarchive %s", name)

    unarchive()  # what an interrupted run of this test left
    yield
    unarchive()


def test_the_archiver_commands_archive_and_bring_back(host, back_in_redis):
    for name in ("exp42", "exp43"):  # ended runs of those names, as the block assumes
        with host.sudo("researcher"):
            host.run_expect([0], "cd ~ && /opt/labstats/venv/bin/python -c %s %s", LOG, name)
    result = run_block(host, block("archiver").text)
    assert result.rc == 0, result.stderr
    for name in ("exp42", "exp43"):
        assert f"archived  {name}  " in result.stdout, result.stdout
    with host.sudo("researcher"):
        back = host.run("/opt/labstats/venv/bin/python -c %s", READ)
    assert back.rc == 0, back.stderr
    assert back.stdout.split() == ["False", "True"], back.stdout  # exp42 back in Redis, exp43 archived


LOG = "import sys, labstats\nwith labstats.Stats('runs/' + sys.argv[1]) as s:\n    s.log(step=0, loss=1.0)\n"
READ = "import labstats\nrun = labstats.connect().run\nprint(run('exp42').archived, run('exp43').archived)"


def test_the_session_commands_end_sessions():
    web = box("webbox")
    result = run_block(web, block("viewer-sessions").text)
    assert result.rc == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "0 sessions ended for alice", lines
    assert lines[1].endswith(" ended"), lines  # every session, whatever the other tests left
    assert lines[2:] == [], lines  # and none is listed after


def test_the_notebook_restore_brings_a_lost_notebook_back():
    web = box("webbox")
    notebook = "/var/lib/labstats-jupyter/notebooks/labstats-example.ipynb"
    with web.sudo():
        web.run_expect([0], "systemctl start labstats-backup.service")  # a snapshot holding it
        web.run_expect([0], "rm -f %s", notebook)
    first, rest = block("notebook-restore").text.split("\n", 1)
    assert first == "sudo -i", first  # the reader becomes root, then types the rest
    result = run_block(web, rest, as_root=True)
    assert result.rc == 0, result.stderr
    with web.sudo():  # the notebooks folder is jupyter's alone
        restored = web.file(notebook)
        assert restored.exists
        assert restored.user == "jupyter"


def _prose(document: str) -> str:
    return re.sub(r"```.*?```", "", (ROOT / document).read_text(), flags=re.S)


def test_the_api_example_answers_with_the_fetched_certificate():
    """README's curl line, as written: the certificate the converge copied checks the site."""
    (command,) = [c for c in re.findall(r"`(curl [^`]*)`", _prose("README.md"))]
    web = box("webbox").ansible.get_variables()
    name, port = web.get("nginx_server_name", web["ansible_host"]), web.get("nginx_public_https_port", 443)
    site = f"https://{name}:{port}"
    command = command.replace("https://127.0.0.1:8443", site).replace("credentials/", f"{credentials_dir()}/")
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "runs" in json.loads(done.stdout), done.stdout[:300]


# What a unit's name in the docs stands for, on the boxes the tests have.
PLACEHOLDERS = {"<account>": "researcher", "<box>": "trainbox"}


def _documented_units() -> set[str]:
    units = set()
    for document in doc_blocks.DOCUMENTS:
        text = (ROOT / document).read_text()
        units |= {m + ".service" for m in re.findall(r"journalctl -u ([\w@<>.-]+[\w>])", text)}
        units |= set(re.findall(r"\b((?:labstats|redis-server|wg-quick)[\w@<>-]*\.(?:timer|service))", text))
        started = re.findall(r"systemctl (?:stop|start|restart) ([\w@<>-]+)(?![\w.@<>-])", text)
        units |= {f"{m}.service" for m in started}
    return {re.sub("|".join(PLACEHOLDERS), lambda m: PLACEHOLDERS[m[0]], u) for u in units}


def test_every_unit_the_docs_name_exists():
    units = _documented_units()
    assert len(units) >= 10, units
    boxes = [box(name) for name in ("trainbox", "webbox")]
    missing = [u for u in sorted(units) if not any(b.run("systemctl cat %s", u).rc == 0 for b in boxes)]
    assert not missing, f"units the docs name that no box has: {missing}"


@pytest.fixture(autouse=True, scope="module")
def _admin_exists():
    for name in ("trainbox", "webbox"):
        assert box(name).user(ADMIN).exists
