"""Reports attacked by an editor: saving large versions in a loop (every version is kept) is
bounded per user and day; the refusal is a 409 with a sentence. Real SQLite file, real app."""

from __future__ import annotations

import pytest

from labstats.viewer import report_store
from labstats.viewer.report_store import MAX_BODY_BYTES, ReportError, ReportStore


def test_an_editor_saving_large_versions_in_a_loop_is_stopped_by_a_daily_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(report_store, "MAX_SAVED_BYTES_PER_DAY", 10 * MAX_BODY_BYTES)
    store = ReportStore(tmp_path / "sessions.sqlite")
    body = "x" * (MAX_BODY_BYTES - 10)
    report, version = store.create("flood", body, "mallory")
    for _ in range(9):  # ten versions of ~64 KiB: the budget
        version = store.save(report, "flood", body, "mallory", base=version)
    with pytest.raises(ReportError, match="in the last 24 hours") as refused:
        store.save(report, "flood", body, "mallory", base=version)
    assert refused.value.status == 409
    with pytest.raises(ReportError, match="in the last 24 hours") as refused:
        store.create("another", body, "mallory")
    assert refused.value.status == 409
    assert store.save(report, "flood", "a short fix", "alice", base=version) == version + 1  # per user


def test_the_refusal_is_the_form_again_with_its_sentence(tmp_path, monkeypatch):
    from labstats.viewer import create_app

    monkeypatch.setattr(report_store, "MAX_SAVED_BYTES_PER_DAY", 100)
    app = create_app({})
    app.extensions["labstats_reports"] = ReportStore(tmp_path / "sessions.sqlite")
    client = app.test_client()
    answer = client.post("/reports", data={"title": "big", "body": "y" * 200})
    assert answer.status_code == 409
    assert b"in the last 24 hours" in answer.data
