"""The viewer's /metrics: the real app over real redis-servers as on the web box (a training
box's master and its replica read as the viewer's Redis user, and the replica of a box that
is away), read with prometheus_client's own parser and checked by promtool."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import test_health
from conftest import ACL_PASSWORDS, wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_health import box_state, plant_stalled, replicated, running_run

from labstats.format.keys import Keys
from labstats.viewer import create_app
from labstats.viewer.auth import AuthConfig, hash_token
from labstats.viewer.sources import Source

K = Keys()
# The training box's master, its replica and the replica of a box that is away (test_health's).
master = test_health.master
replica = test_health.replica
down_replica = test_health.down_replica
ROOT = Path(__file__).resolve().parents[2]
READER_TOKEN = "r" * 40
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def viewer_url(server) -> str:
    return server.url_for("viewer", ACL_PASSWORDS["viewer"])


@pytest.fixture
def status_dir(tmp_path):
    folder = tmp_path / "status"
    folder.mkdir()
    (folder / "backup.json").write_text(json.dumps({"ok_at": 1764900000.5, "detail": "snapshot 1a2b"}))
    (folder / "push-gpu1-archive.json").write_text(json.dumps({"ok_at": 1764900100}))
    return folder


@pytest.fixture
def app(tmp_path, master, replica, down_replica, status_dir):
    (tmp_path / "tokens").write_text(f"metrics:{hash_token(READER_TOKEN)}:reader\n")
    login = AuthConfig.load({"tokens_file": str(tmp_path / "tokens")})
    sources = {"gpu1": Source("gpu1", viewer_url(replica)), "gpu2": Source("gpu2", viewer_url(down_replica))}
    config = {"METRICS_STATUS_DIR": str(status_dir), "METRICS_DISK_PATHS": [str(tmp_path)]}
    return create_app(sources, config=config, login=login)


def scrape(app) -> tuple[str, dict]:
    response = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {READER_TOKEN}"})
    assert response.status_code == 200
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    text = response.get_data(as_text=True)
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_show_runs_boxes_and_stamps(app, master, replica, tmp_path):
    stats = running_run(master, tmp_path / "train", 25)
    try:
        plant_stalled(master, "stuck-1", quiet_s=900)
        box_state(master, "gpu1", age_s=5, disks=[{"path": "/srv", "free_bytes": 5, "total_bytes": 100}])
        master.client().hset(K.jobs, "archive", json.dumps({"ok_at": 1764800000, "detail": "2 runs"}))
        assert wait_for(lambda: replicated(replica, K.jobs) and replicated(replica, K.run("stuck-1")))
        assert wait_for(lambda: replicated(replica, K.box("gpu1")))
        run_id = stats.run_id
        text, samples = scrape(app)
    finally:
        stats.close()

    # The boxes: gpu1 linked, gpu2's master away; both replicas answer.
    assert value(samples, "labstats_source_up", source="gpu1") == 1
    assert value(samples, "labstats_source_up", source="gpu2") == 1
    assert value(samples, "labstats_box_link_up", source="gpu1") == 1
    assert value(samples, "labstats_box_link_up", source="gpu2") == 0
    assert 4 <= value(samples, "labstats_box_state_age_seconds", source="gpu1") < 60
    assert value(samples, "labstats_box_state_age_seconds", source="gpu2") is None  # no agent there
    assert value(samples, "labstats_disk_free_bytes", box="gpu1", path="/srv") == 5
    assert value(samples, "labstats_disk_size_bytes", box="gpu1", path="/srv") == 100
    assert value(samples, "labstats_disk_size_bytes", box="web", path=str(tmp_path)) > 0
    # The jobs: the web box's stamps and the training box's hash.
    assert (
        value(samples, "labstats_job_last_success_timestamp_seconds", box="web", job="backup") == 1764900000.5
    )
    assert value(
        samples, "labstats_job_last_success_timestamp_seconds", box="web", job="push-gpu1-archive"
    ) == (1764900100)
    assert (
        value(samples, "labstats_job_last_success_timestamp_seconds", box="gpu1", job="archive") == 1764800000
    )
    # The runs: one running, one stalled, each with its heartbeat age; points of the running one.
    assert value(samples, "labstats_runs", source="gpu1", status="running") == 1
    assert value(samples, "labstats_runs", source="gpu1", status="stalled") == 1
    assert value(samples, "labstats_runs", source="gpu2", status="running") == 0
    owner = run_id.partition(".")[0] if "." in run_id else ""
    running = {"source": "gpu1", "run": run_id, "owner": owner}
    stuck = {"source": "gpu1", "run": "stuck-1", "owner": ""}
    assert value(samples, "labstats_run_stalled", **running) == 0
    assert value(samples, "labstats_run_stalled", **stuck) == 1
    assert value(samples, "labstats_run_heartbeat_age_seconds", **running) < 30
    assert value(samples, "labstats_run_heartbeat_age_seconds", **stuck) < 30
    assert 890 < value(samples, "labstats_run_last_call_age_seconds", **stuck) < 1000
    assert value(samples, "labstats_run_points_total", **running) == 50  # 25 steps x 2 series
    assert "labstats_run_points_created" not in text  # no made-up creation times

    # promtool, Prometheus' own checker, finds nothing to say.
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == ""
    assert checked.stderr.strip() == ""


def test_a_source_that_does_not_answer(tmp_path, status_dir):
    (tmp_path / "tokens").write_text(f"metrics:{hash_token(READER_TOKEN)}:reader\n")
    login = AuthConfig.load({"tokens_file": str(tmp_path / "tokens")})
    sources = {"gone": Source("gone", "redis://127.0.0.1:1/0")}
    app = create_app(sources, config={"METRICS_STATUS_DIR": str(status_dir)}, login=login)
    _, samples = scrape(app)
    assert value(samples, "labstats_source_up", source="gone") == 0
    assert value(samples, "labstats_box_link_up", source="gone") == 0
    assert value(samples, "labstats_runs", source="gone", status="running") is None  # not known: not 0


def test_metrics_need_a_reader_token(app):
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="labstats"'
        assert "labstats_" not in response.get_data(as_text=True)
    assert client.get("/metrics", headers={"Authorization": f"Bearer {READER_TOKEN}"}).status_code == 200


def test_each_scrape_reads_the_lab_afresh(app, master, replica):
    _, before = scrape(app)
    assert value(before, "labstats_job_last_success_timestamp_seconds", box="gpu1", job="file_send") is None
    master.client().hset(K.jobs, "file_send", json.dumps({"ok_at": time.time(), "detail": "pushed"}))
    assert wait_for(lambda: replicated(replica, K.jobs))
    _, after = scrape(app)
    assert value(after, "labstats_job_last_success_timestamp_seconds", box="gpu1", job="file_send") > 0


def test_the_shipped_rules_pass_promtool():
    rules = ROOT / "docs" / "prometheus" / "labstats.rules.yml"
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
