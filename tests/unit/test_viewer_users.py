"""The viewer role's writer of the users file (labstats.viewer.users), with real bcrypt."""

import io
import json
import os

import bcrypt
import pytest

from labstats.viewer import users
from labstats.viewer.auth import read_pairs


def run(path, passwords, monkeypatch, capsys) -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(passwords)))
    assert users.main([str(path)]) == 0
    return capsys.readouterr().out.strip()


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
