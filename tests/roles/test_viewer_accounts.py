"""The viewer role's accounts, through Ansible's own templating (no host): what the role sends
the users-file writer and writes as the tokens file is what labstats.viewer reads, roles
included; the role's checks know the package's roles and refuse anything else early."""

import io
import json
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from labstats.viewer import users
from labstats.viewer.auth import ROLES, hash_token, read_entries

ROLE = Path(__file__).resolve().parents[2] / "roles" / "viewer"
TASKS = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
SPEC = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]


def templar(**variables) -> Templar:
    return Templar(loader=DataLoader(), variables={"ansible_managed": "Ansible managed", **variables})


def task(module: str, key: str | None = None) -> dict:
    return next(t for t in TASKS if module in t and (key is None or key in t[module]))


def accounts(viewer_users: list[dict]) -> dict:
    """viewer__accounts as the role's set_fact loop builds it (each password given here)."""
    set_fact = task("ansible.builtin.set_fact", "viewer__accounts")["ansible.builtin.set_fact"]
    expression = trust_as_template(set_fact["viewer__accounts"])
    built = None
    for item in viewer_users:
        variables = {"item": item, "viewer_credentials_dir": "/nowhere"}
        if built is not None:
            variables["viewer__accounts"] = built
        built = templar(**variables).template(expression)
    return built


def role_check(viewer_users: list[dict], viewer_api_tokens: list[dict]) -> bool:
    check = task("ansible.builtin.assert")
    t = templar(viewer_users=viewer_users, viewer_api_tokens=viewer_api_tokens, **check["vars"])
    return all(t.evaluate_conditional(trust_as_template(c)) for c in check["ansible.builtin.assert"]["that"])


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
    validator = ArgumentSpecValidator({name: SPEC[name] for name in ("viewer_users", "viewer_api_tokens")})
    for option in ("viewer_users", "viewer_api_tokens"):
        other = "viewer_api_tokens" if option == "viewer_users" else "viewer_users"
        errors = [str(e) for e in validator.validate({option: [entry], other: []}).errors]
        assert errors == ([] if error is None else [f"{error} found in {option}"])


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
    assert role_check(viewer_users, tokens) is ok
    assert role_check(tokens, viewer_users) is ok


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
    text = templar(
        viewer_api_tokens=[{"name": "labstats", "role": "admin"}, {"name": "ci", "role": "reader"}],
        viewer__tokens=tokens,
    ).template(trust_as_template(template))
    assert all(token not in text for token in tokens.values())
    (tmp_path / "viewer-tokens").write_text(text)
    read = read_entries(str(tmp_path / "viewer-tokens"), bytes.fromhex)
    assert read == {
        "ci": (bytes.fromhex(hash_token("c" * 40)), "reader"),
        "labstats": (bytes.fromhex(hash_token("l" * 40)), "admin"),
    }
