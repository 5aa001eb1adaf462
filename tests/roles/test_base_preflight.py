"""The base role's preflight with real ansible-playbook runs on this machine: a system the kit
is not tested on stops the converge before anything changes, naming what it found and what
is supported."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLAY = """
- hosts: localhost
  gather_facts: true
  gather_subset: [min]
  tasks:
    - ansible.builtin.include_role:
        name: base
        tasks_from: preflight
    - ansible.builtin.copy:
        content: passed
        dest: "{{ out }}"
        mode: "0644"
"""


def preflight(tmp_path: Path, supported: str) -> tuple[bool, str]:
    (tmp_path / "play.yml").write_text(PLAY)
    out = tmp_path / "passed"
    env = {"ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}  # fmt: skip
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-c", "local", "-e", f"out={out}",
         "-e", f'{{"base_supported_debian_versions": {supported}}}', str(tmp_path / "play.yml")],
        capture_output=True, text=True, env=env, cwd=tmp_path,  # not the repository's ansible.cfg
    )  # fmt: skip
    return out.exists(), result.stdout + result.stderr


def this_debian() -> str:
    return Path("/etc/debian_version").read_text().split(".")[0]


def test_the_system_the_kit_is_tested_on_passes(tmp_path):
    passed, said = preflight(tmp_path, f'["{this_debian()}"]')
    assert passed, said


def test_another_system_stops_before_anything_changes_and_says_why(tmp_path):
    passed, said = preflight(tmp_path, '["99"]')
    assert not passed  # the task after the preflight never ran
    assert f"localhost runs Debian {Path('/etc/debian_version').read_text().strip()}" in said
    assert "The kit supports Debian 99" in said
    assert "Nothing was changed." in said
