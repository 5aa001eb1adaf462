"""API and page answers of the viewer are bounded whatever a run holds (issue 22, findings
10 and 11): live requests capped in points, huge configs summarised in lists and live
updates, a panicking downsampler (Rust) answered by a fallback, unknown query parameters
kept away from url_for. Each test failed (or crashed the worker) on the old code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import redis

import labstats
from labstats.format import keys
from labstats.viewer import create_app
from labstats.viewer.sources import Source

K = keys.Keys()


@pytest.fixture
def client(url, tmp_path):
    app = create_app({"local": Source("local", url, artifact_dir=str(tmp_path / "artifacts"))})
    app.testing = False  # errors answered as in production
    return app.test_client()


# ---- per-request caps --------------------------------------------------------------------------


def test_live_requests_are_capped_in_points(client, tmp_path):
    with labstats.Stats(tmp_path / "long") as stats:
        for i in range(5000):
            stats.log(step=i, loss=float(i))
    url = f"/api/runs/local/{stats.run_id}/series/loss?columns=1"
    answer = client.post("/api/live", json={"series": [f"{url}&max_points=100000"] * 40})
    assert answer.status_code == 413
    assert "4,000,000 points in all, over the 800,000" in answer.get_json()["error"]
    ok = client.post("/api/live", json={"series": [url] * 400})  # what the fullest page sends
    assert ok.status_code == 200
    assert len(ok.get_json()["series"]) == 400


def test_a_huge_config_is_summarised_in_lists_and_live_updates(client, url, tmp_path):
    config = {"lr": 0.1, "notes": "n" * 5_000_000, **{f"k{i}": i for i in range(100_000)}}
    with labstats.Stats(tmp_path / "cfg", name="big-config") as stats:
        stats.log(step=0, loss=1.0)
    # 6.7 MB, written as a training user can (the logger itself refuses configs this large)
    redis.Redis.from_url(url).hset(K.run(stats.run_id), "config", json.dumps(config))
    listing = client.get("/api/runs")
    (run,) = [r for r in listing.get_json()["runs"] if r["id"] == stats.run_id]
    assert run["config_truncated"] is True
    assert run["config"]["lr"] == 0.1
    assert "over 256 bytes" in run["config"]["notes"]
    assert len(listing.data) < 20_000
    live = client.post("/api/live", json={"runs": [f"local/{stats.run_id}"]})
    assert len(live.data) < 10_000
    assert len(client.get("/").data) < 200_000
    page = client.get(f"/runs/local/{stats.run_id}").get_data(as_text=True)
    assert "too large to show whole" in page
    assert len(page) < 500_000
    compare = client.get(f"/compare?run=local/{stats.run_id}&run=local/{stats.run_id}")
    assert compare.status_code == 200
    assert len(compare.data) < 1_000_000  # a row per key of 100,000 was 30 MB
    whole = client.get(f"/api/runs/local/{stats.run_id}").get_json()
    assert whole["config"] == config  # the run's own answer has it whole


# ---- 6. no 500, no 502 -------------------------------------------------------------------------


def test_20000_points_at_one_step_are_drawn_zoomed_and_live(client, tmp_path):
    """tsdownsample (Rust) panicked on them when zoomed: a BaseException, a dead worker, 502."""
    with labstats.Stats(tmp_path / "flat") as stats:
        for i in range(20_000):
            stats.log(step=7, spike=float(i % 100))
        stats.log(step=8, other=1.0)
    base = f"/api/runs/local/{stats.run_id}/series"
    answer = client.get(f"{base}/spike?start=0&stop=100")
    assert answer.status_code == 200
    body = answer.get_json()
    assert 2 < len(body["idx"]) <= 2000
    assert max(body["values"]) == 99
    assert min(body["values"]) == 0
    live = client.post("/api/live", json={"series": [f"{base}/spike?columns=1&start=0&stop=100",
                                                     f"{base}/other?columns=1"]})  # fmt: skip
    assert live.status_code == 200
    assert [len(s["idx"]) > 0 for s in live.get_json()["series"]] == [True, True]


def test_a_panic_of_the_downsampler_falls_back_to_min_max_buckets(monkeypatch):
    from tsdownsample import MinMaxLTTBDownsampler

    from labstats.read import downsample

    try:  # the real exception type: pyo3_runtime.PanicException, a BaseException
        MinMaxLTTBDownsampler().downsample(np.zeros(5000), np.arange(5000.0), n_out=100)
        panic = RuntimeError
    except BaseException as exc:
        panic = type(exc)

    def panics(self, *args, **kwargs):
        raise panic("index out of bounds")

    monkeypatch.setattr(MinMaxLTTBDownsampler, "downsample", panics)
    values = np.sin(np.arange(50_000) / 100.0)
    values[12_345] = 9.0
    idx, kept = downsample.downsample(np.arange(50_000), values, 2000)
    assert len(idx) <= 2000
    assert kept.max() == 9.0
    assert idx[0] == 0
    assert idx[-1] == 49_999


def test_unknown_query_parameters_never_reach_url_for(client, tmp_path):
    with labstats.Stats(tmp_path / "grouped") as stats:
        stats.log(step=0, **{"train/loss": 1.0, "train/acc": 0.5})
    for query in ("?_method=POST", "?_external=1&_scheme=javascript", "?_anchor=x&merge=train&y=log"):
        answer = client.get(f"/runs/local/{stats.run_id}{query}")
        assert answer.status_code == 200, query
        assert "javascript:" not in answer.get_data(as_text=True)
