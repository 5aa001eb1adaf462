"""Where Redis is: an explicit URL, else the environment, else a config file.

Order: ``url=`` argument, ``$LABSTATS_URL``, the file named by ``$LABSTATS_CONFIG``,
``~/.config/labstats/config.toml``, ``/etc/labstats/config.toml``, then a local Redis.
The ``labstats_client`` and ``jupyter`` roles write such a file (mode 0600) with the
credentials of the user that box should act as. A file looks like::

    url = "redis://alice:secret@127.0.0.1:6379/0"
    prefix = "ls"          # optional
    archive_dir = "/var/lib/labstats/archive"   # optional: where archived runs' files are
    artifact_dir = "/var/lib/labstats/artifacts" # optional: where media files are

A file may name several stores instead, one per training box (the web box's Jupyter config
does): ``labstats.connect()`` then reads them all (see ``labstats.reader.Labs``)::

    [[sources]]
    name = "gpu1"
    url = "redis://viewer:secret@127.0.0.1:6379/0"
    archive_dir = "/var/lib/labstats/archive/gpu1"   # optional
    artifact_dir = "/var/lib/labstats/artifacts/gpu1" # optional
    annotate_url = "redis://annotator:secret@10.77.0.2:6379/0"  # optional: the viewer's
                   # writer of annotations, the training box's master over the tunnel

The username in the URL is the owner of the runs logged with it (see :func:`url_owner`):
each training user's Redis user may write only its own runs.

The archive folder: ``$LABSTATS_ARCHIVE_DIR``, else the file's ``archive_dir``, else
/var/lib/labstats/archive when that exists (the training box's), else
~/.local/share/labstats/archive. The artifact store (media files) likewise:
``$LABSTATS_ARTIFACT_DIR``, the file's ``artifact_dir``, /var/lib/labstats/artifacts when this
user may write there, else ~/.local/share/labstats/artifacts (see labstats.store).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.connection import parse_url

from labstats.format.keys import DEFAULT_PREFIX, valid_owner

DEFAULT_URL = "redis://127.0.0.1:6379/0"
SYSTEM_ARCHIVE_DIR = Path("/var/lib/labstats/archive")


class LabstatsError(Exception):
    """An error a user can act on (message says what and how)."""


@dataclass(frozen=True)
class Settings:
    url: str
    prefix: str
    source: str  # where the URL came from, for error messages
    archive_dir: str = ""  # "" for the default (see default_archive_dir)
    artifact_dir: str = ""  # "" for the default (see labstats.store.default_artifact_dir)
    # Several stores (a [[sources]] file): each one's settings, by source name. Empty for one.
    sources: tuple[tuple[str, Settings], ...] = ()
    # Where annotations of this store's runs are written (its master, as the annotator):
    # "" for none, a source that is read-only for annotations (labstats.curation).
    annotate_url: str = ""


SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def parse_sources(data: dict, path: str) -> tuple[tuple[str, Settings], ...]:
    """The [[sources]] of a config file: (name, settings) each, checked."""
    found = []
    for entry in data.get("sources", []):
        name = str(entry.get("name", "")) if isinstance(entry, dict) else ""
        if not SOURCE_NAME.match(name) or "url" not in entry:
            raise LabstatsError(f"{path}: each source needs a simple name and a url (got {name!r})")
        if name in dict(found):
            raise LabstatsError(f"{path}: two sources are named {name!r}")
        annotate_url = entry.get("annotate_url", "")
        if not isinstance(annotate_url, str) or (annotate_url and "://" not in annotate_url):
            raise LabstatsError(f"{path}: source {name}'s annotate_url must be a redis:// URL")
        settings = Settings(
            str(entry["url"]), str(entry.get("prefix", DEFAULT_PREFIX)), f"source {name}",
            str(entry.get("archive_dir", "")), str(entry.get("artifact_dir", "")),
            annotate_url=annotate_url,
        )  # fmt: skip
        found.append((name, settings))
    return tuple(found)


def default_archive_dir() -> Path:
    if os.environ.get("LABSTATS_ARCHIVE_DIR"):
        return Path(os.environ["LABSTATS_ARCHIVE_DIR"])
    if SYSTEM_ARCHIVE_DIR.is_dir():
        return SYSTEM_ARCHIVE_DIR
    return Path.home() / ".local" / "share" / "labstats" / "archive"


def config_files() -> list[Path]:
    files = []
    if os.environ.get("LABSTATS_CONFIG"):
        files.append(Path(os.environ["LABSTATS_CONFIG"]))
    files.append(Path.home() / ".config" / "labstats" / "config.toml")
    files.append(Path("/etc/labstats/config.toml"))
    return files


def resolve(url: str | None = None, prefix: str | None = None) -> Settings:
    if url:
        return Settings(url, prefix or DEFAULT_PREFIX, "argument")
    if os.environ.get("LABSTATS_URL"):
        return Settings(
            os.environ["LABSTATS_URL"], prefix or os.environ.get("LABSTATS_PREFIX") or DEFAULT_PREFIX, "env"
        )
    for path in config_files():
        try:
            data = tomllib.loads(path.read_text())
        except (FileNotFoundError, PermissionError):
            continue
        except tomllib.TOMLDecodeError as exc:
            raise LabstatsError(f"{path}: not valid TOML ({exc})") from exc
        if "url" not in data and data.get("sources"):
            first = parse_sources(data, str(path))
            return Settings(first[0][1].url, prefix or first[0][1].prefix, str(path), sources=first)
        if "url" not in data:
            raise LabstatsError(f"{path}: no 'url' key (or [[sources]])")
        archive_dir = "" if os.environ.get("LABSTATS_ARCHIVE_DIR") else str(data.get("archive_dir", ""))
        artifact_dir = "" if os.environ.get("LABSTATS_ARTIFACT_DIR") else str(data.get("artifact_dir", ""))
        return Settings(
            str(data["url"]),
            prefix or str(data.get("prefix", DEFAULT_PREFIX)),
            str(path),
            archive_dir,
            artifact_dir,
        )
    return Settings(DEFAULT_URL, prefix or DEFAULT_PREFIX, "default")


def redacted(url: str) -> str:
    """The URL with its password hidden, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    auth, host = rest.rsplit("@", 1)
    user = auth.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in auth else url


def url_owner(url: str) -> str | None:
    """The owner of the runs logged through ``url``: its Redis username
    (``redis://alice:pw@host/0`` -> "alice"), when it has one that can own runs (not
    ``default``, and ``labstats.format.keys.OWNER_PATTERN``); else None: a store without ACL users (a
    laptop, an old setup), whose runs keep the shared layout of schema version 1."""
    try:
        username = parse_url(url).get("username")
    except (ValueError, TypeError):
        return None  # not a URL redis-py takes: the connection will say so
    return username if valid_owner(username) else None


def client(settings: Settings, *, timeout: float = 5.0) -> redis.Redis:
    """A Redis client with explicit timeouts and no hidden retries (callers decide)."""
    return redis.Redis.from_url(
        settings.url,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 2.0),
        health_check_interval=30,
        retry_on_timeout=False,
    )
