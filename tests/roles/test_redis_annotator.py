"""The annotator, end to end through the roles' own templates: the redis role generates its
password like the others (a 0600 file in the credentials folder), its ACL lets it write
annotations only, and the viewer role gives each source an annotate_url, the training box's
master over the tunnel as that user, which labstats.config reads and labstats.curation writes
through. Ansible runs in a child process (see test_viewer_accounts.py)."""

import json
import stat
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import redis
import yaml

from labstats import config as cfg
from labstats.curation import Curation, read_audit

ROOT = Path(__file__).resolve().parents[2]
REDIS_TASKS = yaml.safe_load((ROOT / "roles" / "redis" / "tasks" / "main.yml").read_text())
VIEWER_DEFAULTS = yaml.safe_load((ROOT / "roles" / "viewer" / "defaults" / "main.yml").read_text())

BOXES = [
    {"host": "gpu-a", "source": "gpu-a", "address": "10.77.0.10", "redis_port": 6379, "replica_port": 6379},
    {"host": "gpu-b", "source": "gpu-b", "address": "10.77.0.11", "redis_port": 6390, "replica_port": 6380},
]


def passwords_task() -> dict:
    return next(t for t in REDIS_TASKS if "redis__passwords" in t.get("ansible.builtin.set_fact", {}))


def generated_passwords(tmp_path: Path) -> dict:
    """The role's own password task, run by ansible-playbook on this host: what it sets."""
    out = tmp_path / "passwords.json"
    given = {f"redis_{name}_password": "" for name in passwords_task()["loop"]}  # none: all generated
    keep = {"content": "{{ redis__passwords | to_json }}", "dest": str(out), "mode": "0600"}
    play = [{"hosts": "localhost", "gather_facts": False,
             "vars": {"redis_credentials_dir": str(tmp_path / "credentials"), **given},
             "tasks": [passwords_task(), {"ansible.builtin.copy": keep}]}]  # fmt: skip
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_LOCALHOST_WARNING": "false"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         str(tmp_path / "play.yml")], capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())


def test_the_annotator_password_is_generated_once_into_a_private_file(tmp_path):
    assert "annotator" in passwords_task()["loop"]
    first, second = generated_passwords(tmp_path), generated_passwords(tmp_path)
    assert first == second  # kept, not made again
    assert len(first["annotator"]) == 32
    assert first["annotator"] not in {first[n] for n in ("viewer", "ops", "archiver", "replication")}
    path = tmp_path / "credentials" / "annotator.password"
    assert path.read_text().split()[0] == first["annotator"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_annotator_is_a_reserved_name_for_training_users():
    check = next(t for t in REDIS_TASKS if "_redis_reserved" in t.get("vars", {}))
    assert "annotator" in check["vars"]["_redis_reserved"]


def render_viewer_toml(annotator_password: str) -> str:
    templates = ROOT / "roles" / "viewer" / "templates"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates), trim_blocks=True)
    return env.get_template("viewer.toml.j2").render(
        ansible_managed="Ansible managed", viewer_sources=BOXES, viewer_redis_password="v@pw",
        viewer_annotator_password=annotator_password, viewer_archive_dir="/a", viewer_artifact_dir="/m",
        viewer_session_hours=12, viewer_session_idle_minutes=120, viewer_share_max_days=30,
        viewer_alerts_history_file="/var/lib/labstats-alerts/alerts.sqlite",
    )  # fmt: skip


def sources_of(text: str, tmp_path: Path) -> dict[str, cfg.Settings]:
    import tomllib

    path = tmp_path / "viewer.toml"
    path.write_text(text)
    return dict(cfg.parse_sources(tomllib.loads(text), str(path)))


def test_each_source_writes_to_its_master_over_the_tunnel_as_the_annotator(tmp_path):
    assert VIEWER_DEFAULTS["viewer_annotator_password"] == "{{ redis__passwords.annotator | default('') }}"
    sources = sources_of(render_viewer_toml("anno:t@tor"), tmp_path)
    assert sources["gpu-a"].url == "redis://viewer:v%40pw@127.0.0.1:6379/0"  # reads: the replica here
    assert sources["gpu-a"].annotate_url == "redis://annotator:anno%3At%40tor@10.77.0.10:6379/0"
    assert sources["gpu-b"].annotate_url == "redis://annotator:anno%3At%40tor@10.77.0.11:6390/0"
    without = sources_of(render_viewer_toml(""), tmp_path)
    assert without["gpu-a"].annotate_url == ""  # no password: read-only sources


@pytest.mark.parametrize("bad", ["annotate_url = 3", 'annotate_url = "not a url"'])
def test_a_bad_annotate_url_is_refused_by_name(tmp_path, bad):
    text = f'[[sources]]\nname = "gpu"\nurl = "redis://127.0.0.1/0"\n{bad}\n'
    with pytest.raises(cfg.LabstatsError, match="source gpu's annotate_url"):
        sources_of(text, tmp_path)


def test_the_rendered_url_logs_in_as_the_annotator_of_the_rendered_acl(tmp_path):
    """The viewer's config and the master's ACL, rendered from the roles with one password:
    the annotate_url (pointed at this test's server) changes a run's annotations, and the
    audit names the viewer's user; a run's own keys it cannot touch."""
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from conftest import ACL_PASSWORDS, start_acl_server

    acl_server = start_acl_server(tmp_path / "redis")
    try:
        acl_server.client().hset("ls:run:alice.r1", "name", "r1")
        url = sources_of(render_viewer_toml(ACL_PASSWORDS["annotator"]), tmp_path)["gpu-a"].annotate_url
        url = url.replace("10.77.0.10:6379", f"127.0.0.1:{acl_server.port}")
        client = cfg.client(cfg.Settings(url, "ls", "test"))
        Curation(client, actor="erin", writer="annotator", via="viewer").change("alice.r1", tags_add=["ok"])
        assert [(e["who"], e["writer"]) for e in read_audit(client)] == [("erin", "annotator")]
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.delete("ls:run:alice.r1")
    finally:
        acl_server.stop()
