"""The artifact store: files by content, read-only once stored, shared by a group's users."""

import os
import stat

import pytest

from labstats.store import ArtifactStore


def test_a_stored_file_is_read_only(tmp_path):
    store = ArtifactStore(tmp_path)
    digest = store.put(b"weights")
    assert stat.S_IMODE(store.path(digest).stat().st_mode) == 0o444
    assert store.read(digest) == b"weights"


def test_the_same_content_stored_meanwhile_by_another_user_is_taken_as_stored(tmp_path, monkeypatch):
    """In the training box's sticky store another user's file may not be replaced: when the
    same content arrived between the check and the rename, the rename's PermissionError
    means it is stored (the race is forced here: a real one needs two users and timing)."""
    store = ArtifactStore(tmp_path)
    digest = store.put(b"first")  # to learn the path
    target = store.path(digest)
    target.unlink()
    real_replace = os.replace

    def another_user_was_first(src, dst):
        target.write_bytes(b"same")  # their copy (its content does not matter to the check)
        raise PermissionError(1, "Operation not permitted", str(dst))

    monkeypatch.setattr(os, "replace", another_user_was_first)
    assert store.put(b"first") == digest
    monkeypatch.setattr(os, "replace", real_replace)
    assert [p.name for p in target.parent.iterdir()] == [digest]  # no temporary file left


def test_a_refused_rename_with_nothing_there_is_an_error(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)

    def refused(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(PermissionError):
        store.put(b"nowhere")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
