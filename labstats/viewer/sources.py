"""Where the viewer reads runs: one Redis per training box (its replica on the web box).

Config: the TOML file named by $LABSTATS_VIEWER_CONFIG (the viewer role writes it), e.g.

    [[sources]]
    name = "gpu1"
    url = "redis://viewer:secret@127.0.0.1:6379/0"
    archive_dir = "/var/lib/labstats/archive/gpu1"   # its archived runs (synced copy)
    artifact_dir = "/var/lib/labstats/artifacts/gpu1" # its media files (synced copy)
    annotate_url = "redis://annotator:secret@10.8.0.2:6379/0"  # optional: its master, as annotator

or, for one store, the usual labstats lookup ($LABSTATS_URL, config file, local Redis), whose
url is also where annotations are written.

Runs are read from ``url`` (the replica); annotations, the trash and the audit trail are
written through ``annotate_url`` (the training box's master, as the Redis user ``annotator``)
and read back from the replica, which has them within milliseconds. A source without
``annotate_url`` is read-only: the viewer shows its annotations and refuses changes (409).
The runs a source lists leave out those in the trash (see TrashAwareIndex).
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import redis

from labstats import config as cfg
from labstats.curation import Curation
from labstats.format.curation import ANNOTATOR
from labstats.read.run_index import RunIndex
from labstats.reader import Lab

# How many annotation hashes the Trash page reads at most per source (SCAN ls:ann:*): runs
# put in the trash by hand, so far fewer.
MAX_ANNOTATED_SCAN = 200_000


@dataclass
class Source:
    name: str
    url: str
    prefix: str = "ls"
    archive_dir: str = ""  # where this source's archived runs' files are ("": the default)
    artifact_dir: str = ""  # where this source's media files are (its synced artifact store)
    annotate_url: str = ""  # its master, as the annotator ("": annotations are read-only here)
    _lab: Lab | None = None
    _master: redis.Redis | None = None

    @property
    def lab(self) -> Lab:
        if self._lab is None:
            settings = cfg.Settings(self.url, self.prefix, f"source {self.name}")
            self._lab = Lab(
                cfg.client(settings, timeout=5),
                self.prefix,
                settings.source,
                archive_dir=self.archive_dir or None,
                artifact_dir=self.artifact_dir or None,
            )
            self._lab.index = TrashAwareIndex(self._lab.redis, self._lab.keys)
        return self._lab

    @property
    def writable(self) -> bool:
        """Whether annotations can be changed here (the source has an annotate_url)."""
        return bool(self.annotate_url)

    def curation(self, actor: str, via: str) -> Curation:
        """Changes to this source's annotations in the name of ``actor`` (the viewer's user),
        made ``via`` the viewer's pages or its API; ReadOnlySource when it has no annotate_url."""
        if not self.annotate_url:
            raise ReadOnlySource(self.name)
        if self._master is None:
            settings = cfg.Settings(self.annotate_url, self.prefix, f"source {self.name} (annotate_url)")
            self._master = cfg.client(settings, timeout=5)
        return Curation(self._master, self.prefix, actor=actor, writer=ANNOTATOR, via=via)

    def trashed(self) -> dict[str, float]:
        """{run id: when it went to the trash} of this source's trashed runs (read from the
        replica: every annotation hash, SCANned, then their ``trashed`` fields in one pipeline)."""
        lab = self.lab
        head = lab.keys.annotations("")
        ids = []
        for raw in lab.redis.scan_iter(match=_glob_escape(head) + "*", count=1000):
            ids.append(raw.decode("utf-8", "replace")[len(head) :])
            if len(ids) >= MAX_ANNOTATED_SCAN:
                break
        times = {run_id: when for run_id, when in trash_times(lab.redis, lab.keys, ids).items() if when}
        # An annotation hash can outlive its run (a purge on the training box): not listed.
        pipe = lab.redis.pipeline(transaction=False)
        for run_id in times:
            pipe.exists(lab.keys.run(run_id))
        there = pipe.execute()
        return {run_id: when for (run_id, when), exists in zip(times.items(), there, strict=True) if exists}


class ReadOnlySource(Exception):
    """A change asked of a source without annotate_url (the viewer answers 409)."""

    def __init__(self, source: str) -> None:
        super().__init__(
            f"source {source} is read-only here: the viewer's config gives it no annotate_url "
            "(its master, as the annotator), so its annotations and trash cannot be changed"
        )


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def trash_times(client: redis.Redis, keys, run_ids: list[str]) -> dict[str, float | None]:
    """{run id: when it went to the trash, or None} in one round trip. A ``trashed`` field
    that is not a finite number (a run's owner may write its own runs' hashes) is not there,
    as labstats.format.curation reads it."""
    if not run_ids:
        return {}
    pipe = client.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hget(keys.annotations(run_id), "trashed")
    out: dict[str, float | None] = {}
    for run_id, raw in zip(run_ids, pipe.execute(), strict=True):
        try:
            when = float(raw) if raw is not None else None
        except ValueError:
            when = None
        out[run_id] = when if when is not None and math.isfinite(when) else None
    return out


class TrashAwareIndex(RunIndex):
    """A store's run indexes whose candidates leave out the runs in the trash: the runs table
    reads every run it filters, sorts or groups through them (labstats.viewer.table), so a
    trashed run is in none of those lists; the newest page leaves them out in Lab.runs, and a
    run's page still opens by id (and says it is in the trash). The Trash page lists them."""

    def candidates(self, name: str | None, tag: str | None, status: str | None) -> list[str]:
        ids = super().candidates(name, tag, status)
        times = trash_times(self.client, self.keys, ids)
        return [run_id for run_id in ids if times.get(run_id) is None]


def config_path(path: str | None = None) -> str | None:
    return path or os.environ.get("LABSTATS_VIEWER_CONFIG")


def load_auth(path: str | None = None) -> dict | None:
    """The [auth] section of the viewer's config (see labstats.viewer.auth), if any."""
    path = config_path(path)
    return tomllib.loads(Path(path).read_text()).get("auth") if path else None


def load_sources(path: str | None = None) -> dict[str, Source]:
    path = config_path(path)
    if path:
        data = tomllib.loads(Path(path).read_text())
        sources = {
            name: Source(name, s.url, s.prefix, s.archive_dir, s.artifact_dir, s.annotate_url)
            for name, s in cfg.parse_sources(data, path)
        }
        if not sources:
            raise cfg.LabstatsError(f"{path}: no [[sources]]")
        return sources
    settings = cfg.resolve()
    # One store, as on a laptop: annotations are written where the runs are.
    return {
        "local": Source(
            "local", settings.url, settings.prefix, settings.archive_dir, settings.artifact_dir, settings.url
        )
    }
