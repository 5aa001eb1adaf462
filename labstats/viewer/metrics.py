"""Prometheus' /metrics: the lab's state in Prometheus' text format.

Each scrape reads the lab once (labstats.ops.health.collect: a few round trips per source)
and writes what it found through a registry made for that scrape only: no state is kept
between scrapes or shared between the viewer's workers. It needs a reader (an API token
through nginx; inside the tunnel, nginx's metrics server adds the ``metrics`` token itself).
Without a valid token it answers 401, never the login page a browser is sent to.

    [metrics]                                  # in the viewer's TOML config (all optional)
    status_dir = "/var/lib/labstats/status"    # the web box's jobs' stamp files
    disk_paths = ["/", "/var/lib/labstats", "/var/lib/labstats-viewer"]

What it shows (docs/prometheus/README.md has the list with examples): per training box
(``source``) whether its replica answers and its link is up, the seconds since the replica
heard from it, the age of its box agent's latest sample, its disks, its Redis memory and its
jobs' last successes; the web box's disks and jobs (``box="web"``); runs running, stalled or
without heartbeat per box; and for each run whose record says running, its heartbeat age,
the age of its loop's last log()/update() call, whether it is stalled and the points it
stored (a counter: ``rate()`` of it summed by source is the points per second per box).
"""

from __future__ import annotations

import re
import time
import tomllib
from pathlib import Path

from flask import Blueprint, Response, current_app, g
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from labstats.ops import health
from labstats.viewer.openapi import content, declare
from labstats.viewer.sources import config_path

bp = Blueprint("metrics", __name__)

# The web box in the ``box`` label of disks and jobs (a training box is named by its source).
WEB_BOX = "web"
# Job names come from files and a hash others write: only names like these, and so many.
JOB_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_JOBS = 32
RUN_STATUSES = ("running", "stalled", "crashed")
# The classic text format, which every Prometheus reads (newer clients default to 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@bp.get("/metrics")
@declare("The lab's state in Prometheus' text format", responses={200: content("text/plain", "metrics")})
def metrics():
    """The lab's state in Prometheus' text format (needs a reader)."""
    settings = _settings()
    started = time.monotonic()
    found = health.collect(
        current_app.extensions["labstats_sources"], settings["status_dir"], disk_paths=settings["disk_paths"]
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LabCollector(found, time.monotonic() - started))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE)


@bp.after_request
def no_login_page(response: Response) -> Response:
    """A scraper without a valid token gets 401, not the redirect to /login a browser gets."""
    denied = g.get("user") is None and current_app.extensions.get("labstats_guard") is not None
    if denied and response.status_code in (301, 302, 303, 307, 308):
        out = Response("a reader's API token is needed (Authorization: Bearer TOKEN)\n", 401)
        out.headers["WWW-Authenticate"] = 'Bearer realm="labstats"'
        out.headers["Content-Type"] = "text/plain; charset=utf-8"
        return out
    return response


def _settings() -> dict:
    """The [metrics] section of the viewer's config, app.config's METRICS_* over it."""
    cached = current_app.extensions.get("labstats_metrics_settings")
    if cached is not None:
        return cached
    path = config_path()
    section = tomllib.loads(Path(path).read_text()).get("metrics", {}) if path else {}
    config = current_app.config
    settings = {
        "status_dir": config.get("METRICS_STATUS_DIR", section.get("status_dir") or health.STATUS_DIR),
        "disk_paths": tuple(
            config.get("METRICS_DISK_PATHS", section.get("disk_paths", health.WEB_DISK_PATHS))
        ),
    }
    current_app.extensions["labstats_metrics_settings"] = settings
    return settings


class LabCollector:
    """The metric families of one reading of the lab (a collector made for one scrape)."""

    def __init__(self, found: health.LabHealth, took_s: float) -> None:
        self.found, self.took_s = found, took_s

    def collect(self):
        found = self.found
        yield from self._sources(found)
        yield from self._disks(found)
        yield from self._jobs(found)
        yield from self._runs(found)
        took = GaugeMetricFamily(
            "labstats_health_read_seconds", "How long this scrape took to read the lab's state.", unit=""
        )
        took.add_metric([], self.took_s)
        yield took

    def _sources(self, found: health.LabHealth):
        up = gauge(
            "labstats_source_up", "1 when the web box's replica of the training box answers.", ["source"]
        )
        link = gauge(
            "labstats_box_link_up",
            "1 when the training box's replica is connected to its master.",
            ["source"],
        )
        last_io = gauge("labstats_box_replication_last_io_age_seconds",
                        "Seconds since the replica last heard from its master (INFO; where allowed).",
                        ["source"])  # fmt: skip
        down = gauge(
            "labstats_box_link_down_seconds", "Seconds the replica's link has been down (INFO).", ["source"]
        )
        age = gauge("labstats_box_state_age_seconds",
                    "Age of the box agent's latest sample as the web box sees it: replication lag plus "
                    "at most one sampling interval.", ["source"])  # fmt: skip
        memory = gauge(
            "labstats_redis_used_memory_bytes", "Memory the replica's Redis uses (INFO).", ["source"]
        )
        for name, source in sorted(found.sources.items()):
            up.add_metric([name], 1 if source.reachable else 0)
            if source.link_up is not None:
                link.add_metric([name], 1 if source.link_up else 0)
            elif not source.reachable:
                link.add_metric([name], 0)  # a replica that does not answer shows no box
            optional = ((last_io, source.master_last_io_s), (down, source.link_down_s),
                        (age, source.box_age_s), (memory, source.used_memory_bytes))  # fmt: skip
            for family, value in optional:
                if value is not None:
                    family.add_metric([name], value)
        yield from (up, link, last_io, down, age, memory)

    def _disks(self, found: health.LabHealth):
        labels = ["box", "path"]
        free = gauge(
            "labstats_disk_free_bytes", "Free bytes on a box's disk (box: a source, or web).", labels
        )
        size = gauge(
            "labstats_disk_size_bytes", "Size in bytes of a box's disk (box: a source, or web).", labels
        )
        boxes = [(WEB_BOX, found.web_disks)] + [(n, s.box_disks) for n, s in sorted(found.sources.items())]
        for box, disks in boxes:
            for disk in disks[:16]:
                free.add_metric([box, disk.path], disk.free_bytes)
                size.add_metric([box, disk.path], disk.total_bytes)
        yield from (free, size)

    def _jobs(self, found: health.LabHealth):
        last = gauge("labstats_job_last_success_timestamp_seconds",
                     "When a job last succeeded (unix seconds): the web box's (box=web: backup, each "
                     "box's pushes received) and each training box's (archive, purge, file_send).",
                     ["box", "job"])  # fmt: skip
        boxes = [(WEB_BOX, found.stamps)] + [(n, s.jobs) for n, s in sorted(found.sources.items())]
        for box, jobs in boxes:
            names = [job for job in sorted(jobs) if JOB_NAME.match(job)][:MAX_JOBS]
            for job in names:
                last.add_metric([box, job], jobs[job].ok_at)
        yield last

    def _runs(self, found: health.LabHealth):
        counts = gauge(
            "labstats_runs",
            "Runs whose record says running, by what they are: running, stalled (its loop stopped "
            "calling), crashed (no heartbeat).",
            ["source", "status"],
        )
        labels = ["source", "run", "owner"]
        heartbeat = gauge("labstats_run_heartbeat_age_seconds", "Age of a running run's heartbeat.", labels)
        last_call = gauge(
            "labstats_run_last_call_age_seconds",
            "Seconds since a running run's loop last called log() or update().",
            labels,
        )
        stalled = gauge("labstats_run_stalled", "1 when a running run is stalled.", labels)
        points = CounterMetricFamily(
            "labstats_run_points", "Points a running run stored (its series' counts).", labels=labels
        )
        for name, source in sorted(found.sources.items()):
            if not source.reachable:
                continue
            tally = dict.fromkeys(RUN_STATUSES, 0)
            for run in source.runs:
                tally[run.status] = tally.get(run.status, 0) + 1
                if run.status == "crashed":
                    continue  # no longer running: no per-run series
                key = [name, run.run_id, run.owner or ""]
                heartbeat.add_metric(key, run.heartbeat_age_s)
                stalled.add_metric(key, 1 if run.status == "stalled" else 0)
                if run.last_call_age_s is not None:
                    last_call.add_metric(key, run.last_call_age_s)
                if run.points is not None:
                    points.add_metric(key, run.points)
            for status in RUN_STATUSES:
                counts.add_metric([name, status], tally[status])
        yield from (counts, heartbeat, last_call, stalled, points)


def gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)
