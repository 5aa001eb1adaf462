"""The viewer role's writer of the users file (labstats.viewer.users), with real bcrypt: one
``name:hash:role`` line per user, written again only when a password or role changed."""

import io
import json
import os

import bcrypt
import pytest

from labstats.viewer import users
from labstats.viewer.auth import read_entries


def run(path, passwords, monkeypatch, capsys) -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(passwords)))
    assert users.main([str(path)]) == 0
    return capsys.readouterr().out.strip()


def read_pairs(path: str, convert) -> dict:
    """name -> hash, roles left out."""
    return {name: hashed for name, (hashed, _) in read_entries(path, convert).items()}


def roles(path) -> dict:
    return {name: role for name, (_, role) in read_entries(str(path), str.encode).items()}


def test_a_second_write_with_the_same_passwords_changes_nothing(tmp_path, monkeypatch, capsys):
    path = tmp_path / "viewer-users"
    assert run(path, {"alice": "a-pw", "bob": "b-pw"}, monkeypatch, capsys) == "changed"
    first = path.read_text()
    stored = read_pairs(str(path), str.encode)
    assert bcrypt.checkpw(b"a-pw", stored["alice"])
    assert bcrypt.checkpw(b"b-pw", stored["bob"])
    assert run(path, {"bob": "b-pw", "alice": "a-pw"}, monkeypatch, capsys) == "unchanged"
    assert path.read_text() == first


def test_a_new_password_is_hashed_again_and_a_user_no_longer_listed_is_dropped(tmp_path, monkeypatch, capsys):
    path = tmp_path / "viewer-users"
    run(path, {"alice": "a-pw", "bob": "b-pw"}, monkeypatch, capsys)
    os.chmod(path, 0o640)
    kept = read_pairs(str(path), str.encode)["alice"]
    assert run(path, {"alice": "new-pw"}, monkeypatch, capsys) == "changed"
    stored = read_pairs(str(path), str.encode)
    assert stored.keys() == {"alice"}
    assert stored["alice"] != kept
    assert bcrypt.checkpw(b"new-pw", stored["alice"])
    assert path.stat().st_mode & 0o777 == 0o640  # the mode the role set is kept
    assert [p.name for p in tmp_path.iterdir()] == ["viewer-users"]  # no temporary file left


def test_htpasswd_hashes_are_kept_and_a_line_that_is_not_bcrypt_is_replaced(tmp_path, monkeypatch, capsys):
    path = tmp_path / "viewer-users"
    # What community.general.htpasswd (passlib) wrote before: the $2y$ variant.
    old = bcrypt.hashpw(b"a-pw", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)
    path.write_text(f"alice:{old}\nbob:plain-text\n")
    assert run(path, {"alice": "a-pw", "bob": "b-pw"}, monkeypatch, capsys) == "changed"
    stored = read_pairs(str(path), str.encode)
    assert stored["alice"].decode() == old
    assert bcrypt.checkpw(b"b-pw", stored["bob"])
    assert run(path, {"alice": "a-pw", "bob": "b-pw"}, monkeypatch, capsys) == "unchanged"


@pytest.mark.parametrize("name", ["", "a:b", "a\nb", " bob", "bob\r", "#x", "a b", "a\x00"])
def test_a_name_that_would_break_the_file_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="user name"):
        users.write(tmp_path / "f", {name: "pw"})
    assert not (tmp_path / "f").exists()


def test_each_line_carries_the_users_role(tmp_path, monkeypatch, capsys):
    path = tmp_path / "viewer-users"
    given = {"alice": {"password": "a-pw", "role": "admin"}, "bob": {"password": "b-pw", "role": "editor"}}
    assert (
        run(path, {**given, "carol": {"password": "c-pw", "role": "reader"}}, monkeypatch, capsys)
        == "changed"
    )
    assert roles(path) == {"alice": "admin", "bob": "editor", "carol": "reader"}
    assert [line.rsplit(":", 1)[1] for line in path.read_text().splitlines()] == ["admin", "editor", "reader"]
    hashes = read_pairs(str(path), str.encode)
    # A role changed: that line is written again, the hashes all kept (same passwords).
    given["bob"]["role"] = "reader"
    assert (
        run(path, {**given, "carol": {"password": "c-pw", "role": "reader"}}, monkeypatch, capsys)
        == "changed"
    )
    assert roles(path)["bob"] == "reader"
    assert read_pairs(str(path), str.encode) == hashes
    assert (
        run(path, {**given, "carol": {"password": "c-pw", "role": "reader"}}, monkeypatch, capsys)
        == "unchanged"
    )


def test_a_file_of_before_roles_is_rewritten_with_them_once_keeping_its_hashes(tmp_path, monkeypatch, capsys):
    path = tmp_path / "viewer-users"
    old = bcrypt.hashpw(b"a-pw", bcrypt.gensalt(4)).decode()
    path.write_text(f"labstats:{old}\n")
    assert roles(path) == {"labstats": "reader"}  # what the viewer reads it as until the converge
    given = {"labstats": {"password": "a-pw", "role": "admin"}}
    assert run(path, given, monkeypatch, capsys) == "changed"
    assert path.read_text() == f"labstats:{old}:admin\n"
    assert run(path, given, monkeypatch, capsys) == "unchanged"


def test_a_bare_password_of_before_makes_a_reader(tmp_path, monkeypatch, capsys):
    path = tmp_path / "viewer-users"
    run(path, {"alice": "a-pw"}, monkeypatch, capsys)
    assert roles(path) == {"alice": "reader"}


@pytest.mark.parametrize(
    "entry",
    [
        {"password": "pw", "role": "root"},
        {"password": "pw", "role": "Admin"},
        {"password": "pw", "role": ""},
        {"password": "pw"},
        {"role": "admin"},
        {"password": 5, "role": "admin"},
        ["pw", "admin"],
    ],
)
def test_a_bad_role_or_entry_is_refused_and_nothing_is_written(tmp_path, monkeypatch, capsys, entry):
    path = tmp_path / "viewer-users"
    path.write_text("kept:x:admin\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"ok": "pw-ok", "bad": entry})))
    assert users.main([str(path)]) == 2
    assert "refused" in capsys.readouterr().err
    assert path.read_text() == "kept:x:admin\n"
