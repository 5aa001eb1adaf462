"""The box_agent role, no box needed: the redis role generates the agent's password like the
others', the role's check refuses settings out of bounds before anything changes (its own
task, run by ansible-playbook here), the unit systemd would run passes `systemd-analyze
verify` with its hardening, and its command, as the unit says it, with the config the role
writes, logs in to the rendered ACL as the agent, writes the box's state and ends cleanly on
SIGTERM. The play wires it after the client, with the topology's source name."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jinja2
import pytest
import yaml
from test_redis_annotator import REDIS_TASKS, generated_passwords, passwords_task

from labstats.ops import agent

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "box_agent"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
TASKS = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
VENV = Path(sys.executable).parent.parent


def render(template: str, **options) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), trim_blocks=True)
    env.filters["quote"] = shlex.quote
    env.filters["comment"] = lambda text: f"#\n# {text}\n#"
    settings = {**DEFAULTS, "box_agent_source": "gpu-a", "box_agent_venv": str(VENV), **options}
    return env.get_template(template).render(ansible_managed="Ansible managed", **settings)


def unit_settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_the_agent_password_is_generated_once_into_a_private_file(tmp_path):
    assert "agent" in passwords_task()["loop"]
    first, second = generated_passwords(tmp_path), generated_passwords(tmp_path)
    assert first == second
    assert len(first["agent"]) == 32
    assert first["agent"] not in {v for k, v in first.items() if k != "agent"}
    path = tmp_path / "credentials" / "agent.password"
    assert path.read_text().split()[0] == first["agent"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_agent_is_a_reserved_name_for_training_users():
    check = next(t for t in REDIS_TASKS if "_redis_reserved" in t.get("vars", {}))
    assert "agent" in check["vars"]["_redis_reserved"]


CASES = {
    "defaults": {},
    "fastest": {"box_agent_interval": 5, "box_agent_history_hours": 168},
    "too fast": {"box_agent_interval": 4.9},
    "too slow": {"box_agent_interval": 301},
    "too long": {"box_agent_history_hours": 169},
    "bad source": {"box_agent_source": "gpu a"},
    "relative disk": {"box_agent_disks": ["/", "data"]},
}


def test_the_roles_check_refuses_settings_out_of_bounds_before_anything_changes(tmp_path):
    """The role's first task (before the account or any file): each case its own play here."""
    check = TASKS[0]
    assert "ansible.builtin.assert" in check
    assert "always" in check["tags"]
    plays = []
    for name, options in CASES.items():
        out = tmp_path / f"{name}.json"
        keep = {"content": "{{ _checked | to_json }}", "dest": str(out), "mode": "0600"}
        plays.append({"name": name, "hosts": "localhost", "gather_facts": False,
                      "vars": {**DEFAULTS, **options},
                      "tasks": [{**check, "register": "_checked", "ignore_errors": True},
                                {"ansible.builtin.copy": keep}]})  # fmt: skip
    (tmp_path / "play.yml").write_text(yaml.safe_dump(plays))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_LOCALHOST_WARNING": "false"}
    command = [
        str(VENV / "bin" / "ansible-playbook"),
        "-i",
        "localhost,",
        "-c",
        "local",
        str(tmp_path / "play.yml"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    failed = {name for name in CASES if json.loads((tmp_path / f"{name}.json").read_text()).get("failed")}
    assert failed == {"too fast", "too slow", "too long", "bad source", "relative disk"}
    said = json.loads((tmp_path / "too fast.json").read_text())["msg"]
    assert "box_agent_interval must be 5 to 300 seconds (got 4.9)" in said
    # The agent's own bounds are the same.
    assert (agent.MIN_INTERVAL, agent.MAX_INTERVAL, agent.MAX_HISTORY_HOURS) == (5, 300, 168)


def test_the_unit_is_hardened_and_leaves_the_gpus_device_files_open():
    unit = unit_settings(render("labstats-agent.service.j2"))
    expected = {
        "User": ["labstats-agent"], "Group": ["labstats-agent"], "Restart": ["on-failure"],
        "RestartPreventExitStatus": [str(agent.EX_CONFIG)], "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"], "ProtectHome": ["read-only"], "PrivateDevices": ["no"],
        "DevicePolicy": ["closed"],
        # The GPUs' device files by their names before driver 545 and since (not nvidia-uvm: no CUDA).
        "DeviceAllow": ["char-nvidia-frontend rw", "char-nvidia rw", "char-nvidiactl rw",
                        "char-nvidia-caps r"],
        "CapabilityBoundingSet": [""], "Environment": ["LABSTATS_CONFIG=/etc/labstats/agent.toml"],
        "WantedBy": ["multi-user.target"],
    }  # fmt: skip
    assert {key: unit.get(key) for key in expected} == expected
    assert "SupplementaryGroups" not in unit
    assert unit_settings(render("labstats-agent.service.j2", box_agent_groups=["video"]))[
        "SupplementaryGroups"
    ] == ["video"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_systemd_takes_every_line_of_the_unit(tmp_path):
    path = tmp_path / "labstats-agent.service"
    path.write_text(render("labstats-agent.service.j2", box_agent_user="root"))  # a user that exists here
    done = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if str(path) in line] == [], done.stderr


def test_the_units_command_with_the_roles_config_writes_the_box_as_the_agent(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from conftest import ACL_PASSWORDS, start_acl_server

    monkeypatch.setitem(ACL_PASSWORDS, "agent", "a:g@nt+pw")  # : and @ survive the URL
    server = start_acl_server(tmp_path / "redis")
    config = tmp_path / "agent.toml"
    config.write_text(render("agent.toml.j2", box_agent_redis_password="a:g@nt+pw",
                             box_agent_redis_port=server.port))  # fmt: skip
    exec_start = unit_settings(render("labstats-agent.service.j2", box_agent_disks=[str(tmp_path), "/"]))
    command = shlex.split(exec_start["ExecStart"][0])
    assert command[:3] == [f"{VENV}/bin/python", "-m", "labstats.ops.agent"]
    env = {**os.environ, "LABSTATS_CONFIG": str(config), "HOME": str(tmp_path)}
    env.pop("LABSTATS_URL", None)
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        ops = server.client()
        deadline = time.monotonic() + 30
        while not ops.exists("ls:box:gpu-a") and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
        server.stop()
    assert proc.returncode == 0, err
    assert "as redis://agent:***@127.0.0.1" in err
    assert "Redis is away" not in err  # it logged in at once
    assert "stopped after 1 samples (1 written)" in err


def test_the_training_play_runs_the_agent_after_the_client_with_the_topologys_name():
    play = yaml.safe_load((ROOT / "playbooks" / "training.yml").read_text())[0]
    names = [r["role"] for r in play["roles"]]
    assert names.index("redis") < names.index("labstats_client") < names.index("box_agent")
    options = play["roles"][names.index("box_agent")]["vars"]
    assert options["box_agent_source"] == "{{ _box.source }}"
    assert options["box_agent_venv"] == "{{ _venv }}"
    assert options["box_agent_redis_port"] == "{{ _box.redis_port }}"
    assert options["box_agent_redis_password"] == "{{ redis__passwords.agent }}"
