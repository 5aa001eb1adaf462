"""The run page says what happened to a run after it was logged: the name people gave it, when
it was resumed and after which step, the run it was started again after, and, right after an
archive on its box, that its file is on its way (never a page of malformed series)."""

import json

import redis

import labstats
from labstats.curation import Curation
from labstats.format.keys import Keys
from labstats.viewer import create_app
from labstats.viewer.sources import Source


def page(url, tmp_path, run_id: str) -> str:
    app = create_app({"local": Source("local", url, archive_dir=str(tmp_path / "archive"))})
    app.testing = False
    answer = app.test_client().get(f"/runs/local/{run_id}")
    assert answer.status_code == 200
    return answer.get_data(as_text=True)


def log(tmp_path, name: str, steps: range, **options) -> labstats.Stats:
    with labstats.Stats(tmp_path / name, name=name, capture_git=False, **options) as stats:
        for step in steps:
            stats.log(step=step, loss=float(step), note=f"at {step}")
    return stats


def test_a_resumed_run_says_when_and_after_which_step(url, tmp_path):
    first = log(tmp_path, "long", range(100))
    log(tmp_path, "long", range(100, 150), resume=True)
    html = page(url, tmp_path, first.run_id)
    assert "<th>resumed</th>" in html
    assert "after step 99" in html


def test_a_run_started_again_links_the_one_before(url, tmp_path):
    first = log(tmp_path, "again", range(3))
    second = log(tmp_path, "again", range(3))
    assert second.name == "again.2"
    html = page(url, tmp_path, second.run_id)
    assert f'href="/runs/local/{first.run_id}"' in html
    assert "started again after" not in page(url, tmp_path, first.run_id)


def test_the_name_people_gave_it_heads_the_page(url, tmp_path):
    stats = log(tmp_path, "raw-name", range(3))
    Curation(redis.Redis.from_url(url), actor="ann", writer="default").change(
        stats.run_id, name="<b>best</b>"
    )
    html = page(url, tmp_path, stats.run_id)
    assert "<title>&lt;b&gt;best&lt;/b&gt; · labstats</title>" in html
    assert "raw-name" in html  # the logged name stays beside it


def test_a_run_archived_a_moment_ago_says_its_file_is_on_its_way(url, tmp_path):
    stats = log(tmp_path, "archived", range(50))
    redis.Redis.from_url(url).hset(Keys().run(stats.run_id), "archived", f"{stats.run_id}.parquet")
    html = page(url, tmp_path, stats.run_id)  # the file is not in this box's archive folder
    assert (
        "arrives here with the box&#39;s next push" in html or "arrives here with the box's next push" in html
    )
    assert "malformed" not in html


def test_a_hostile_resumes_list_shows_bounded_and_escaped(url, tmp_path):
    stats = log(tmp_path, "planted", range(3))
    planted = [{"at": "x", "after_idx": "<b>9</b>", "host": "<script>" + "h" * 100_000}] * 50 + [
        "not an entry"
    ]
    redis.Redis.from_url(url).hset(Keys().run(stats.run_id), "resumes", json.dumps(planted))
    html = page(url, tmp_path, stats.run_id)
    assert "<th>resumed</th>" in html
    assert "<script>" not in html
    assert "after step ?" in html  # a step that is not a number reads as unknown
    assert "h" * 65 not in html  # each host at most 64 characters, 20 entries at most
    assert html.count("after step") == 20
