"""The viewer role's accounts, through Ansible's own templating and spec validation (no host):
what the role sends the users-file writer and writes as the tokens file is what labstats.viewer
reads, roles included; the role's checks know the package's roles and refuse anything else
early. Ansible runs in a child process: importing it patches sys.intern for the whole process,
which breaks torch.compile in the integration tests that follow."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labstats.viewer import users
from labstats.viewer.auth import ROLES, hash_token, read_entries

ROLE = Path(__file__).resolve().parents[2] / "roles" / "viewer"
TASKS = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
SPEC = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]

# Runs jobs (JSON on stdin) with Ansible's Templar and ArgumentSpecValidator; answers JSON.
ANSIBLE = """
import json, sys
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

def templar(variables):
    return Templar(loader=DataLoader(), variables={"ansible_managed": "Ansible managed", **variables})

def run(job):
    if "validate" in job:
        return [str(e) for e in ArgumentSpecValidator(job["validate"]).validate(job["params"]).errors]
    if "conditions" in job:
        t = templar(job["vars"])
        return all(t.evaluate_conditional(trust_as_template(c)) for c in job["conditions"])
    if "loop" in job:  # a set_fact over a loop: each item sees the fact as the last one left it
        built = None
        for item in job["loop"]:
            variables = {**job["vars"], "item": item}
            if built is not None:
                variables[job["fact"]] = built
            built = templar(variables).template(trust_as_template(job["template"]))
        return built
    return templar(job["vars"]).template(trust_as_template(job["template"]))

print(json.dumps([run(job) for job in json.load(sys.stdin)]))
"""


def in_ansible(*jobs: dict) -> list:
    done = subprocess.run(
        [sys.executable, "-c", ANSIBLE], input=json.dumps(jobs), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def task(module: str, key: str | None = None) -> dict:
    return next(t for t in TASKS if module in t and (key is None or key in t[module]))


def accounts(viewer_users: list[dict]) -> dict:
    """viewer__accounts as the role's set_fact loop builds it (each password given here)."""
    set_fact = task("ansible.builtin.set_fact", "viewer__accounts")["ansible.builtin.set_fact"]
    job = {"loop": viewer_users, "fact": "viewer__accounts", "template": set_fact["viewer__accounts"]}
    return in_ansible({**job, "vars": {"viewer_credentials_dir": "/nowhere"}})[0]


def role_checks(*cases: tuple[list[dict], list[dict]]) -> list[bool]:
    check = task("ansible.builtin.assert")
    conditions = check["ansible.builtin.assert"]["that"]
    return in_ansible(
        *(
            {"conditions": conditions, "vars": {"viewer_users": u, "viewer_api_tokens": t, **check["vars"]}}
            for u, t in cases
        )
    )


def test_the_default_single_user_and_token_are_admins():
    assert DEFAULTS["viewer_users"] == [{"name": "labstats", "role": "admin"}]
    assert DEFAULTS["viewer_api_tokens"] == [{"name": "labstats", "role": "admin"}]


@pytest.mark.parametrize("option", ["viewer_users", "viewer_api_tokens"])
def test_the_argument_spec_knows_the_packages_roles_and_requires_one(option):
    role = SPEC[option]["options"]["role"]
    assert role["choices"] == list(ROLES)
    assert role["required"] is True
    assert task("ansible.builtin.assert")["vars"]["_viewer_roles"] == list(ROLES)


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ({"name": "bob", "role": "editor"}, None),
        ({"name": "bob", "role": "root"}, "value of role must be one of: reader, editor, admin, got: root"),
        ({"name": "bob"}, "missing required arguments: role"),
    ],
)
def test_ansibles_validation_of_the_spec_refuses_an_unknown_or_missing_role(entry, error):
    spec = {name: SPEC[name] for name in ("viewer_users", "viewer_api_tokens")}
    found = in_ansible(
        {"validate": spec, "params": {"viewer_users": [entry], "viewer_api_tokens": []}},
        {"validate": spec, "params": {"viewer_users": [], "viewer_api_tokens": [entry]}},
    )
    assert found == [
        [] if error is None else [f"{error} found in {option}"]
        for option in ("viewer_users", "viewer_api_tokens")
    ]


@pytest.mark.parametrize(
    ("viewer_users", "ok"),
    [
        ([{"name": "labstats", "role": "admin"}, {"name": "bob", "role": "reader"}], True),
        ([{"name": "bob", "role": "root"}], False),
        ([{"name": "bob"}], False),
        ([{"name": "bob", "role": "Admin"}], False),
        ([{"name": "bob", "role": "reader"}, {"name": "bob", "role": "admin"}], False),  # one name twice
    ],
)
def test_the_role_refuses_a_bad_role_or_a_name_twice_before_anything_changes(viewer_users, ok):
    assert TASKS.index(task("ansible.builtin.assert")) == 0
    tokens = [{"name": "ci", "role": "editor"}]
    assert role_checks((viewer_users, tokens), (tokens, viewer_users)) == [ok, ok]


def test_the_users_writer_gets_each_users_password_and_role(tmp_path, monkeypatch, capsys):
    given = accounts(
        [
            {"name": "alice", "role": "admin", "password": "a-pw"},
            {"name": "bob", "role": "reader", "password": "b-pw"},
        ]
    )
    stdin = task("ansible.builtin.command")["ansible.builtin.command"]["stdin"]
    assert stdin == "{{ viewer__accounts | to_json }}"
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(given)))
    assert users.main([str(tmp_path / "viewer-users")]) == 0
    assert capsys.readouterr().out.strip() == "changed"
    read = read_entries(str(tmp_path / "viewer-users"), str.encode)
    assert {name: role for name, (_, role) in read.items()} == {"alice": "admin", "bob": "reader"}


def test_the_tokens_file_holds_each_tokens_digest_and_role(tmp_path):
    template = (ROLE / "templates" / "viewer-tokens.j2").read_text()
    tokens = {"ci": "c" * 40, "labstats": "l" * 40}
    variables = {
        "viewer_api_tokens": [{"name": "labstats", "role": "admin"}, {"name": "ci", "role": "reader"}],
        "viewer__tokens": tokens,
    }
    text = in_ansible({"template": template, "vars": variables})[0]
    assert all(token not in text for token in tokens.values())
    (tmp_path / "viewer-tokens").write_text(text)
    read = read_entries(str(tmp_path / "viewer-tokens"), bytes.fromhex)
    assert read == {
        "ci": (bytes.fromhex(hash_token("c" * 40)), "reader"),
        "labstats": (bytes.fromhex(hash_token("l" * 40)), "admin"),
    }
