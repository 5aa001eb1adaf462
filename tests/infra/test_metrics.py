"""Prometheus' /metrics in the lab: served on the web box's tunnel address without a token
(nginx adds the viewer's metrics token), and through nginx's HTTPS only with one; every
training box's link is up in it, the jobs' stamps arrive, and promtool has nothing to say
about the live output."""

import json
import shutil
import subprocess
import time
import tomllib

import pytest
from conftest import box, hosts_in, https_get, tunnel_address, wait_until, web_token

testinfra_hosts = ["webbox"]

PORT = 9187  # nginx_metrics_port's default
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

# GET a URL from a box with its own python3 (curl need not be there): prints the status, then
# the body; an optional Authorization header as the scraper would send it.
FETCH = """
import sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1], method=sys.argv[2])
if len(sys.argv) > 3:
    request.add_header("Authorization", sys.argv[3])
try:
    with urllib.request.urlopen(request, timeout=10) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as error:
    status, body = error.code, error.read()
sys.stdout.write(f"{status}\\n")
sys.stdout.write(body.decode("utf-8", "replace"))
"""


def fetch(host, url: str, method: str = "GET", authorization: str | None = None) -> tuple[int, str]:
    args = [url, method] + ([authorization] if authorization else [])
    result = host.run("python3 -c %s " + " ".join(["%s"] * len(args)), FETCH, *args)
    assert result.rc == 0, result.stderr
    status, _, body = result.stdout.partition("\n")
    return int(status), body


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(metric name, sorted labels): value} of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


@pytest.fixture(scope="module")
def metrics_url(host) -> str:
    return f"http://{tunnel_address(host)}:{PORT}/metrics"


@pytest.fixture(scope="module")
def sources(host) -> list[str]:
    """The training boxes' source names, as the viewer's config names them."""
    with host.sudo():
        config = tomllib.loads(host.file("/etc/labstats/viewer.toml").content_string)
    names = [source["name"] for source in config["sources"]]
    assert len(names) == len(hosts_in("training"))
    return names


def test_the_tunnel_serves_metrics_without_a_token_with_every_box_linked(host, metrics_url, sources):
    def linked() -> bool:
        status, text = fetch(host, metrics_url)
        found = samples(text) if status == 200 else {}
        return all(value(found, "labstats_box_link_up", source=name) == 1 for name in sources)

    assert wait_until(linked, timeout=60), fetch(host, metrics_url)[1][:2000]
    status, text = fetch(host, metrics_url)
    assert status == 200
    found = samples(text)
    for name in sources:
        assert value(found, "labstats_source_up", source=name) == 1
        assert value(found, "labstats_runs", source=name, status="running") is not None
    assert value(found, "labstats_disk_size_bytes", box="web", path="/") > 0


def test_a_scrapers_own_authorization_is_replaced_and_nothing_else_is_served(host, metrics_url):
    status, text = fetch(host, metrics_url, authorization="Bearer not-a-token")
    assert status == 200  # nginx sends the metrics token instead of the scraper's
    assert "labstats_source_up" in text
    base = metrics_url.removesuffix("/metrics")
    for path in ("/", "/api/runs", "/login", "/metrics/", "/s/anything"):
        assert fetch(host, base + path)[0] == 404, path
    assert fetch(host, metrics_url, method="POST")[0] == 403


def test_a_training_box_in_the_tunnel_may_scrape(host, metrics_url):
    status, text = fetch(box(hosts_in("training")[0]), metrics_url)
    assert status == 200
    assert "labstats_box_link_up" in text


def test_through_nginx_metrics_need_a_reader_token():
    status, _, body = https_get("/metrics")
    assert status == 401
    assert b"labstats_" not in body
    assert https_get("/metrics", token="not-a-token")[0] == 401
    status, headers, body = https_get("/metrics", token=web_token())
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert https_get("/metrics", token=web_token("metrics"))[0] == 200  # the metrics token is a reader


def test_the_web_box_keeps_only_the_metrics_tokens_digest(host):
    token = web_token("metrics")
    with host.sudo():
        tokens = host.file("/etc/labstats/viewer-tokens").content_string
        site = host.file("/etc/nginx/sites-available/labstats.conf").content_string
        header = host.file("/etc/nginx/labstats-metrics-token.conf")
        assert header.mode == 0o600
        assert header.user == "root"
    assert token not in tokens
    assert "\nmetrics:" in tokens
    assert tokens.split("\nmetrics:", 1)[1].split("\n", 1)[0].endswith(":reader")
    assert token not in site


def test_each_boxs_pushes_are_stamped_on_both_sides(host, metrics_url, sources):
    """file_send pushes every few seconds: its note in the training box's master and the web
    box's stamps of what it received are recent."""

    def recent() -> bool:
        found = samples(fetch(host, metrics_url)[1])
        now = time.time()
        wanted = [("web", f"push-{name}-{kind}") for name in sources for kind in ("artifacts", "archive")]
        wanted += [(name, "file_send") for name in sources]
        stamps = [
            value(found, "labstats_job_last_success_timestamp_seconds", box=b, job=j) for b, j in wanted
        ]
        return all(stamp is not None and now - stamp < 300 for stamp in stamps)

    assert wait_until(recent, timeout=90), fetch(host, metrics_url)[1][:3000]


def test_a_backup_leaves_its_stamp_and_holds_the_viewers_state(host, metrics_url):
    with host.sudo():
        assert host.run("systemctl start labstats-backup.service").rc == 0
        stamp_file = host.file("/var/lib/labstats/status/backup.json")
        stamp = json.loads(stamp_file.content_string)
        assert stamp_file.mode == 0o644
        listed = host.run("bash -c %s", "set -a; . /etc/labstats/backup/env; restic ls latest --tag labstats")
    assert listed.rc == 0, listed.stderr
    assert time.time() - stamp["ok_at"] < 900
    assert stamp["detail"].startswith("restic snapshot ")
    found = samples(fetch(host, metrics_url)[1])
    assert (
        value(found, "labstats_job_last_success_timestamp_seconds", box="web", job="backup") == stamp["ok_at"]
    )
    # The viewer's SQLite state, copied consistently (SQLite's backup) before restic ran.
    assert "/var/lib/labstats-backup/sqlite/var/lib/labstats-viewer/sessions.sqlite" in listed.stdout.split()


def test_promtool_finds_nothing_to_say_about_the_live_output(host, metrics_url):
    status, text = fetch(host, metrics_url)
    assert status == 200
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == ""
    assert checked.stderr.strip() == ""
