"""Where the viewer reads runs: one Redis per training box (its replica on the web box).

Config: the TOML file named by $LABSTATS_VIEWER_CONFIG (the viewer role writes it), e.g.

    [[sources]]
    name = "gpu1"
    url = "redis://viewer:secret@127.0.0.1:6379/0"
    archive_dir = "/var/lib/labstats/archive/gpu1"   # its archived runs (synced copy)
    artifact_dir = "/var/lib/labstats/artifacts/gpu1" # its media files (synced copy)

or, for one store, the usual labstats lookup ($LABSTATS_URL, config file, local Redis).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from labstats import config as cfg
from labstats.reader import Lab


@dataclass
class Source:
    name: str
    url: str
    prefix: str = "ls"
    archive_dir: str = ""  # where this source's archived runs' files are ("": the default)
    artifact_dir: str = ""  # where this source's media files are (its synced artifact store)
    _lab: Lab | None = None

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
        return self._lab


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
            name: Source(name, s.url, s.prefix, s.archive_dir, s.artifact_dir)
            for name, s in cfg.parse_sources(data, path)
        }
        if not sources:
            raise cfg.LabstatsError(f"{path}: no [[sources]]")
        return sources
    settings = cfg.resolve()
    return {
        "local": Source("local", settings.url, settings.prefix, settings.archive_dir, settings.artifact_dir)
    }
