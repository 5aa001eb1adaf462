"""The topology role with real ansible-playbook runs: addresses and ports come from each
training box's stable id, so removing or reordering boxes leaves the others' untouched, and
a wrong inventory fails before anything changes, saying what is wrong."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLAY = """
- hosts: training:web
  gather_facts: false
  roles: [topology]
  tasks:
    - ansible.builtin.copy:
        content: "{{ topology_lab | to_json }}"
        dest: "{{ out }}"
        mode: "0644"
      run_once: true
"""


def topology(tmp_path: Path, training: dict, web=("web",)) -> tuple[int, dict | None, str]:
    inventory = {
        "all": {"children": {"training": {"hosts": training}, "web": {"hosts": {key: {} for key in web}}}}
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(PLAY)
    out = tmp_path / "topology.json"
    out.unlink(missing_ok=True)
    env = {"ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
         "-c", "local", "-e", f"out={out}", str(tmp_path / "play.yml")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    return result.returncode, json.loads(out.read_text()) if out.exists() else None, result.stdout


def by_host(topo: dict) -> dict:
    return {b["host"]: (b["address"], b["replica_port"], b["instance"]) for b in topo["boxes"]}


def test_a_box_keeps_its_address_and_port_when_others_come_and_go(tmp_path):
    rc, both, _ = topology(tmp_path, {"gpu-a": {"labstats_box_id": 1}, "gpu-b": {"labstats_box_id": 2}})
    assert rc == 0
    assert by_host(both) == {
        "gpu-a": ("10.77.0.10", 6379, "replica-gpu-a"),
        "gpu-b": ("10.77.0.11", 6380, "replica-gpu-b"),
    }
    assert both["hub"]["address"] == "10.77.0.1"
    assert [p["name"] for p in both["peers"]["web"]] == ["gpu-a", "gpu-b"]
    assert both["peers"]["gpu-b"] == [{"name": "web", "address": "10.77.0.1", "endpoint": "web"}]
    # gpu-a retired, a new box added before gpu-b in the inventory: gpu-b keeps everything.
    rc, later, _ = topology(tmp_path, {"gpu-new": {"labstats_box_id": 3}, "gpu-b": {"labstats_box_id": 2}})
    assert rc == 0
    assert by_host(later)["gpu-b"] == by_host(both)["gpu-b"]
    assert by_host(later)["gpu-new"] == ("10.77.0.12", 6381, "replica-gpu-new")
    assert [b["host"] for b in later["boxes"]] == ["gpu-b", "gpu-new"]  # by id


@pytest.mark.parametrize(
    ("training", "said"),
    [
        ({"a": {"labstats_box_id": 1}, "b": {"labstats_box_id": 1}}, "b and a both have labstats_box_id=1"),
        ({"a": {}}, "a has labstats_box_id=unset"),
        ({"a": {"labstats_box_id": 0}}, "a has labstats_box_id=0"),
        ({"a": {"labstats_box_id": 201}}, "a has labstats_box_id=201"),
        ({"a": {"labstats_box_id": "one"}}, "a has labstats_box_id=one"),
    ],
)
def test_a_wrong_id_fails_early_and_says_which_box(tmp_path, training, said):
    rc, topo, out = topology(tmp_path, training)
    assert rc != 0
    assert topo is None
    assert said in " ".join(out.split())


def test_two_web_boxes_are_refused(tmp_path):
    rc, _, out = topology(tmp_path, {"a": {"labstats_box_id": 1}}, web=("w1", "w2"))
    assert rc != 0
    assert "must hold exactly one host (it holds 2)" in " ".join(out.split())
