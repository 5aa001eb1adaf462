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


def test_a_link_asked_for_again_and_again_is_drawn_once_yet_its_changes_show_at_once(
    tmp_path, url, store, monkeypatch
):
    import labstats
    from labstats.viewer import create_app, share
    from labstats.viewer.sources import Source

    with labstats.Stats(tmp_path / "r", name="drawn-run") as stats:
        for step in range(20):
            stats.log(step=step, loss=1.0 / (step + 1))
    run_id = stats.run_id
    app = create_app({"local": Source("local", url, artifact_dir=str(store.root), annotate_url=url)})
    editor = app.test_client()
    editor.environ_base["HTTP_ORIGIN"] = "http://localhost"
    drawn = []
    real_render = share._render  # noqa: SLF001 (the real drawing, counted)

    def counted(kind, *args):
        drawn.append(kind)
        return real_render(kind, *args)

    monkeypatch.setattr(share, "_render", counted)
    panel = f"```labstats\nchart run=local/{run_id} series=loss\n```\n"
    saved = editor.post("/reports", data={"title": "Findings one", "body": panel})
    report_id = saved.headers["Location"].rstrip("/").rsplit("/", 1)[1]

    def link(**form) -> str:
        made = editor.post("/share", data=form)
        assert made.status_code == 200, made.text
        return re.search(r"/s/([A-Za-z0-9_-]{43})", made.text).group(1)

    report_token, run_token = link(kind="report", report=report_id), link(run=f"local/{run_id}")
    drawn.clear()
    anonymous = app.test_client()
    for _ in range(5):
        assert "Findings one" in anonymous.get(f"/s/{report_token}").text
        assert anonymous.get(f"/s/{run_token}").status_code == 200
    assert drawn == ["report", "run"]  # once each, then from this worker's memory
    # A new version shows at once; a run put in the trash is gone at once; a revoke is a 410.
    editor.post(f"/reports/{report_id}", data={"title": "Findings two", "body": panel, "base": "1"})
    assert "Findings two" in anonymous.get(f"/s/{report_token}").text
    assert editor.post(f"/api/runs/local/{run_id}/trash").status_code == 200
    assert anonymous.get(f"/s/{run_token}").status_code == 410
    (mine,) = [x for x in app.extensions["labstats_share"].links() if x.kind == "report"]
    assert editor.post(f"/links/{mine.id}/revoke").status_code == 303
    assert anonymous.get(f"/s/{report_token}").status_code == 410


def test_making_a_report_s_link_does_not_draw_the_report(url, monkeypatch):
    from labstats.viewer import create_app, reports
    from labstats.viewer.sources import Source

    app = create_app({"local": Source("local", url)})
    editor = app.test_client()
    editor.environ_base["HTTP_ORIGIN"] = "http://localhost"
    saved = editor.post("/reports", data={"title": "Findings <one>", "body": "text"})
    report_id = saved.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    drawn = []
    real_export = reports.report_export_html

    def counted(*args):
        drawn.append(args)
        return real_export(*args)

    monkeypatch.setattr(reports, "report_export_html", counted)
    assert editor.post("/share", data={"report": report_id}).status_code == 200
    assert editor.post("/share", data={"report": report_id, "version": "2"}).status_code == 404
    assert drawn == []  # seconds for a report of many panels: not for its title
    (link,) = app.extensions["labstats_share"].links()
    assert link.title == f"report {report_id}: Findings <one>"
