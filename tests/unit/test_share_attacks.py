"""Read-only links attacked: an editor making and revoking links in a loop (the store and the
admin's Links page stay bounded). Real SQLite file, real store."""

from __future__ import annotations

import re

import pytest

from labstats.viewer import share_store
from labstats.viewer.share_store import DAY, ShareError, ShareStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_making_and_revoking_links_in_a_loop_is_bounded_per_day_and_in_what_is_listed(tmp_path, monkeypatch):
    monkeypatch.setattr(share_store, "MAX_MADE_PER_DAY", 30)
    monkeypatch.setattr(share_store, "MAX_LISTED", 20)
    clock = Clock()
    store = ShareStore(tmp_path / "sessions.sqlite", clock=clock)
    target = {"runs": [["gpu1", "x" * 500]] * 20, "series": None}  # a large row each
    for n in range(30):
        _, link = store.create("mallory", "compare", target, f"flood {n}", 7, 30)
        assert store.revoke(link.id, "mallory")  # never more than one in force
        clock.now += 1
    with pytest.raises(ShareError, match="30 links in the last 24 hours"):
        store.create("mallory", "compare", target, "one more", 7, 30)
    store.create("alice", "run", {"source": "gpu1", "run": "r"}, "hers", 7, 30)  # per user
    listed = store.links()
    assert len(listed) == 20
    assert listed[0].title == "hers"  # the newest first
    clock.now += DAY
    store.create("mallory", "compare", target, "the next day", 7, 30)


def test_a_shared_page_itself_says_no_referrer_as_nginx_replaces_the_apps_header(tmp_path, url, store):
    import labstats
    from labstats.viewer import create_app
    from labstats.viewer.sources import Source

    with labstats.Stats(tmp_path / "r", name="shared") as stats:
        stats.log(step=0, loss=1.0)
    app = create_app({"local": Source("local", url, artifact_dir=str(store.root))})
    client = app.test_client()
    client.environ_base["HTTP_ORIGIN"] = "http://localhost"
    made = client.post("/share", data={"run": f"local/{stats.run_id}"})
    assert made.status_code == 200
    token = re.search(r"/s/([A-Za-z0-9_-]{43})", made.text).group(1)
    for path, status in ((f"/s/{token}", 200), ("/s/" + "A" * 43, 404)):
        page = app.test_client().get(path)
        assert page.status_code == status
        head = page.text[page.text.lower().index("<head") :]
        first = re.search(r"<(meta|link|script|a)\b[^>]*>", head[head.index(">") + 1 :]).group(0)
        assert first == '<meta name="referrer" content="no-referrer">', path
