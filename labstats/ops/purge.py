"""Purge trashed runs for good, and check a store for what no run holds (fsck).

A run in the trash (labstats.curation) is hidden but whole: restoring it brings it back. A
purge removes everything it holds, on its training box only (the web box cannot purge):

- its keys on its master (the record, series, chunks, blobs, media and their thumbnails, its
  diff, package list, annotations), so on every replica too;
- its entries in the indexes (its owner's runs, statuses and tags, the name it held);
- its Parquet archive, if it was archived;
- the files of the artifact store (media originals, large tensors) that no other run refers
  to. The store is shared and content-addressed: one file can belong to many runs, so the
  references of every other run (in Redis and in archives) are counted first.

A run is due when it has been in the trash longer than the retention (30 days by default),
counted both by its annotations and by this box's own note of when it first saw it there (the
web box writes annotations and could backdate them); a purge asked for in the viewer is only
listed, root carries it out by naming the run. A protected run is never purged. Each purge is appended to the
archiver's audit stream. ``fsck`` lists keys of runs that have no record, index entries that
name no run, archives of no run and store files that no run refers to: 0 of each after a
purge. Backups keep a purged run until their own retention drops it.

A file a running run stored while Redis was away, whose record still waits in that run's
spool, has no reference in Redis yet: a purge of the only other run that used the same bytes
removes it. The purge therefore leaves files younger than ``min_file_age`` (1 day) alone.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from labstats.config import LabstatsError
from labstats.format import chunk, media_record, run_record, tensor_file
from labstats.format import curation as curation_format
from labstats.format.keys import Keys, run_owner
from labstats.read import regenerate
from labstats.read.archive_file import SUFFIX, ArchiveFile, path_for
from labstats.store import ArtifactStore

log = logging.getLogger("labstats")

DEFAULT_RETENTION_DAYS = 30.0
MIN_FILE_AGE = 86400.0  # seconds: younger store files are never removed (see the docstring)
SCAN_COUNT = 1000
WRITER = "archiver"  # the Redis user the purge runs as on a training box (its audit stream)


@dataclass
class KeyMap:
    """Every key under the prefix, sorted by what it belongs to."""

    records: set[str] = field(default_factory=set)  # run ids that have a record
    run_keys: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))  # id -> its keys
    annotations: set[str] = field(default_factory=set)  # run ids with an annotation hash
    other: list[bytes] = field(default_factory=list)  # indexes, names, audit, schema...


@dataclass
class Purged:
    run_id: str
    keys: int = 0
    files: int = 0
    archive: bool = False
    kept_shared: int = 0  # its files that another run still refers to


@dataclass
class Report:
    """What fsck found: nothing in any list means the store is whole."""

    orphan_keys: list[str] = field(default_factory=list)
    orphan_index_entries: list[str] = field(default_factory=list)
    orphan_archives: list[str] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)  # referred to, not in the store
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.orphan_keys or self.orphan_index_entries or self.orphan_archives or self.orphan_files
        )


def scan_keys(client: redis.Redis, keys: Keys) -> KeyMap:
    found = KeyMap()
    run_prefix, ann_prefix = keys.run(""), keys.annotations("")
    for raw in client.scan_iter(match=f"{keys.prefix}:*", count=SCAN_COUNT):
        key = raw.decode("utf-8", "replace")
        if key.startswith(run_prefix):
            run_id, _, rest = key[len(run_prefix) :].partition(":")
            if rest:
                found.run_keys[run_id].append(raw)
            else:
                found.records.add(run_id)
                found.run_keys[run_id].append(raw)
        elif key.startswith(ann_prefix):
            found.annotations.add(key[len(ann_prefix) :])
        else:
            found.other.append(raw)
    return found


def references(
    client: redis.Redis, keys: Keys, keymap: KeyMap, archive_dir: str | Path | None, skip: Iterable[str] = ()
) -> tuple[set[str], list[str]]:
    """The digests of store files that the runs (but those in ``skip``) refer to: media
    records and tensor references, in Redis and in archives; and what could not be read.
    Only an object chunk can hold a tensor reference: each chunk's kind byte is read first."""
    skipped = set(skip)
    digests: set[str] = set()
    problems: list[str] = []
    for run_id, run_keys in keymap.run_keys.items():
        if run_id in skipped:
            continue
        media_keys, chunk_keys = [], []
        for raw in run_keys:
            rest = raw.decode("utf-8", "replace")[len(keys.run(run_id)) :]
            parts = rest.split(":")
            if len(parts) == 3 and parts[1] == "m":  # :m:<mid>  (its thumbnails: :m:<mid>:t)
                media_keys.append(raw)
            elif len(parts) == 5 and parts[1] == "s" and parts[3] == "c":  # :s:<sid>:c:<n>
                chunk_keys.append(raw)
        digests |= _media_digests(client, media_keys)
        digests |= _chunk_digests(client, chunk_keys)
        meta = run_record.decode(client.hgetall(keys.run(run_id))) if run_id in keymap.records else {}
        bundle = regenerate.bundle_digest(meta)
        if bundle is not None:  # the run's code, for regenerate (labstats.capture.code_bundle)
            digests.add(bundle)
        if meta.get("archived") and archive_dir is not None:
            try:
                digests |= _archive_digests(path_for(archive_dir, run_id))
            except (LabstatsError, OSError) as exc:
                problems.append(f"run {run_id}: its archive cannot be read ({exc}); its files are all kept")
                digests.add("*")  # nothing may be removed while a run's references are unknown
    return digests, problems


def _media_digests(client: redis.Redis, media_keys: list[bytes]) -> set[str]:
    pipe = client.pipeline(transaction=False)
    for key in media_keys:
        pipe.hvals(key)
    found = set()
    for values in pipe.execute() if media_keys else []:
        for raw in values:
            record = media_record.decode(raw)
            if record is not None:
                found.add(record["digest"])
    return found


def _chunk_digests(client: redis.Redis, chunk_keys: list[bytes]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(chunk_keys), SCAN_COUNT):
        group = chunk_keys[i : i + SCAN_COUNT]
        pipe = client.pipeline(transaction=False)
        for key in group:
            pipe.getrange(key, 0, 0)
        objects = [key for key, kind in zip(group, pipe.execute(), strict=True) if kind == chunk.KIND_OBJECT]
        for start in range(0, len(objects), 64):  # object chunks are up to 16 KiB each
            for data in client.mget(objects[start : start + 64]):
                for _, payload in chunk.object_payloads(data or b""):
                    if tensor_file.is_ref(payload):
                        found.add(tensor_file.digest_of(payload))
    return found


def _archive_digests(path: Path) -> set[str]:
    archived = ArchiveFile(path)
    found = set()
    for name, entry in archived.meta["index"].items():
        if "o" not in entry.get("kinds", []):
            continue
        for _, _, values in archived.groups(name, raw=True):
            for payload in values.get("o", []):
                if tensor_file.is_ref(payload):
                    found.add(tensor_file.digest_of(payload))
    return found


@dataclass
class Due:
    """What the nightly purge may remove, and what it only says."""

    ids: list[str] = field(default_factory=list)  # past the retention, here too
    waiting: list[tuple[str, float]] = field(default_factory=list)  # (id, first seen here): not yet
    asked: list[str] = field(default_factory=list)  # a purge asked for in the viewer: root names it


def trashed(client: redis.Redis, keys: Keys) -> dict[str, dict[bytes, bytes]]:
    """The raw annotations of every run in the trash that is not protected."""
    ids = sorted(scan_keys(client, keys).annotations)
    pipe = client.pipeline(transaction=False)
    for run_id in ids:
        pipe.hgetall(keys.annotations(run_id))
    found = {}
    for run_id, raw in zip(ids, pipe.execute() if ids else [], strict=True):
        notes = curation_format.decode(raw)
        if notes.trashed is not None and not notes.protected:
            found[run_id] = raw
    return found


def due(client: redis.Redis, keys: Keys, retention_days: float, now: float | None = None) -> Due:
    """The trashed runs whose time is up: in the trash longer than the retention both by their
    annotations and by this training box's own note of when it first saw them there
    (``ls:purge:seen``, kept here). The web box writes annotations: one taken over could
    backdate ``trashed`` or ask for a purge (``purge`` = "requested"), and what it does must
    stay undoable for the retention. Such a request is only listed; root carries it out by
    naming the run. Protected runs never are due."""
    now = time.time() if now is None else now
    found = trashed(client, keys)
    seen = {
        k.decode("utf-8", "replace"): (run_record.number(v) or 0.0)
        for k, v in client.hgetall(keys.trash_seen).items()
    }
    first_seen = {run_id: seen.get(run_id) or now for run_id in found}
    pipe = client.pipeline(transaction=True)
    if first_seen:
        pipe.hset(keys.trash_seen, mapping={k: f"{v:.3f}" for k, v in first_seen.items()})
    gone = [run_id for run_id in seen if run_id not in found]  # restored or purged since
    if gone:
        pipe.hdel(keys.trash_seen, *gone)
    pipe.execute()
    limit = now - retention_days * 86400
    result = Due()
    for run_id, raw in found.items():
        when = curation_format.decode(raw).trashed
        if when is not None and when <= limit and first_seen[run_id] <= limit:
            result.ids.append(run_id)
        elif when is not None and when <= limit:
            result.waiting.append((run_id, first_seen[run_id]))
        elif raw.get(b"purge") == b"requested":
            result.asked.append(run_id)
    return result


def purge(
    client: redis.Redis,
    keys: Keys,
    run_ids: Iterable[str],
    *,
    archive_dir: str | Path | None,
    store: ArtifactStore | None,
    who: str = WRITER,
    min_file_age: float = MIN_FILE_AGE,
) -> list[Purged]:
    """Purge runs that are in the trash (see the module docstring). A run not in the trash,
    or protected, is refused with a LabstatsError before anything is removed."""
    wanted = list(dict.fromkeys(run_ids))
    for run_id in wanted:
        notes = curation_format.decode(client.hgetall(keys.annotations(run_id)))
        if notes.protected:
            raise LabstatsError(f"run {run_id} is protected: it cannot be purged (unprotect it first)")
        if notes.trashed is None:
            raise LabstatsError(f"run {run_id} is not in the trash: trash it first (labstats trash)")
    if not wanted:
        return []
    keymap = scan_keys(client, keys)
    kept, problems = references(client, keys, keymap, archive_dir, skip=wanted)
    for problem in problems:
        log.warning("labstats: %s", problem)
    done = []
    for run_id in wanted:
        own, _ = references(client, keys, _only(keymap, run_id), archive_dir)
        result = Purged(run_id)
        meta = run_record.decode(client.hgetall(keys.run(run_id)))
        # The keys first: a purge refused there (a user that may not remove them) has removed
        # nothing; one stopped after leaves files that fsck names, never a run without them.
        result.keys = _remove_keys(client, keys, run_id, meta, keymap.run_keys.get(run_id, []))
        if store is not None and "*" not in kept:
            for digest in own - {"*"}:
                if digest in kept:
                    result.kept_shared += 1
                elif _remove_file(store, digest, min_file_age):
                    result.files += 1
        if meta.get("archived") and archive_dir is not None:
            path = path_for(archive_dir, run_id)
            result.archive = path.exists()
            path.unlink(missing_ok=True)
        client.hdel(keys.trash_seen, run_id)
        _audit(client, keys, run_id, who, meta, result)
        done.append(result)
    return done


def _only(keymap: KeyMap, run_id: str) -> KeyMap:
    only = KeyMap()
    only.run_keys[run_id] = keymap.run_keys.get(run_id, [])
    if run_id in keymap.records:
        only.records.add(run_id)
    return only


def _remove_file(store: ArtifactStore, digest: str, min_age: float) -> bool:
    try:
        path = store.path(digest)
        if time.time() - path.stat().st_mtime < min_age:
            return False
        path.unlink()
    except (FileNotFoundError, ValueError):
        return False
    return True


def _remove_keys(client: redis.Redis, keys: Keys, run_id: str, meta: dict[str, Any], run_keys: list) -> int:
    owner = run_owner(run_id)
    pipe = client.pipeline(transaction=True)
    pipe.zrem(keys.runs_index(owner), run_id)
    for status in run_record.STATUSES:
        pipe.srem(keys.status_index(owner, status), run_id)
    tags = meta.get("tags")
    for tag in tags if isinstance(tags, list) else []:
        pipe.srem(keys.tag_index(owner, str(tag)), run_id)
    name = meta.get("name")
    doomed = [*run_keys, keys.annotations(run_id)]
    for start in range(0, len(doomed), 1000):
        pipe.unlink(*doomed[start : start + 1000])
    pipe.execute()
    # The name is given back only if it still names this run (compare, then delete).
    if isinstance(name, str) and client.hget(keys.names, name) == run_id.encode():
        client.hdel(keys.names, name)
    return len(run_keys)


def _audit(
    client: redis.Redis, keys: Keys, run_id: str, who: str, meta: dict[str, Any], result: Purged
) -> None:
    what = f"{result.keys} keys, {result.files} files, archive {'removed' if result.archive else 'none'}"
    entry = curation_format.encode_audit(
        who=who, when=time.time(), run=run_id, action="purge",
        changes={"purged": [meta.get("name", run_id), None]}, via="cli", what=what,
    )  # fmt: skip
    try:
        client.xadd(keys.audit(WRITER), entry)
    except redis.ResponseError as exc:  # a user that may not append there: said, not fatal
        log.warning("labstats: the purge of %s could not be audited (%s)", run_id, exc)


def fsck(
    client: redis.Redis, keys: Keys, archive_dir: str | Path | None, store: ArtifactStore | None
) -> Report:
    """What no run holds (see the module docstring); nothing is changed."""
    report = Report()
    keymap = scan_keys(client, keys)
    runs = keymap.records
    for run_id, run_keys in sorted(keymap.run_keys.items()):
        if run_id not in runs:
            report.orphan_keys += [k.decode("utf-8", "replace") for k in run_keys]
    report.orphan_keys += [keys.annotations(r) for r in sorted(keymap.annotations - runs)]
    report.orphan_index_entries = _orphan_entries(client, keys, keymap, runs)
    if archive_dir is not None and Path(archive_dir).is_dir():
        for path in sorted(Path(archive_dir).glob(f"*{SUFFIX}")):
            if path.name[: -len(SUFFIX)] not in runs:
                report.orphan_archives.append(str(path))
    digests, report.problems = references(client, keys, keymap, archive_dir)
    if store is not None and store.root.is_dir() and "*" not in digests:
        stored = {p.name for p in _stored(store)}
        report.orphan_files = sorted(stored - digests)
        report.missing_files = sorted(digests - stored)
    return report


def _stored(store: ArtifactStore) -> list[Path]:
    """The files of a store (named by their SHA-256, under a folder of its first two digits)."""
    if not store.root.is_dir():
        return []
    return [p for p in store.root.glob("??/*") if p.is_file() and len(p.name) == 64]


def _orphan_entries(client: redis.Redis, keys: Keys, keymap: KeyMap, runs: set[str]) -> list[str]:
    """Index entries (runs, statuses, tags, names) that name a run without a record."""
    found = []
    for raw in keymap.other:
        key = raw.decode("utf-8", "replace")
        kind = client.type(raw)
        if key == keys.names and kind == b"hash":
            found += [
                f"{key} {n.decode()!r}" for n, v in client.hgetall(raw).items() if v.decode() not in runs
            ]
        elif kind == b"zset" and (
            key == keys.runs or (key.startswith(f"{keys.prefix}:owner:") and key.endswith(":runs"))
        ):
            found += [f"{key} {m.decode()}" for m in client.zrange(raw, 0, -1) if m.decode() not in runs]
        elif kind == b"set" and (":status:" in key or ":tag:" in key):
            found += [f"{key} {m.decode()}" for m in client.smembers(raw) if m.decode() not in runs]
    return found


def report_text(report: Report) -> str:
    lines = []
    for title, items in (
        ("keys of no run", report.orphan_keys),
        ("index entries naming no run", report.orphan_index_entries),
        ("archives of no run", report.orphan_archives),
        ("store files no run refers to", report.orphan_files),
        ("files referred to but missing from the store", report.missing_files),
        ("problems", report.problems),
    ):
        lines.append(f"{len(items)} {title}")
        lines += [f"  {item}" for item in items[:50]]
        if len(items) > 50:
            lines.append(f"  ... and {len(items) - 50} more")
    return "\n".join(lines)


def as_json(report: Report) -> str:
    return json.dumps(report.__dict__ | {"clean": report.clean}, indent=1)


@dataclass
class Pruned:
    """What prune_copies removed from a web box's copies of one training box's files."""

    archives: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    refused: str = ""  # why nothing was removed


def prune_copies(
    client: redis.Redis,
    keys: Keys,
    archive_dir: str | Path,
    store: ArtifactStore,
    *,
    min_age: float = MIN_FILE_AGE,
    max_share: float = 0.5,
) -> Pruned:
    """On the web box: remove the copies that no run of its replica holds any more (a run
    purged on its training box). The copies arrive by the box's push, which never deletes:
    this is how a purge reaches them. Only files older than ``min_age``; nothing at all while
    the replica's link to its master is down (an empty or stale replica would make every copy
    look orphaned), nor when more than ``max_share`` of the files would go (said, for a
    person to look at)."""
    result = Pruned()
    role = client.execute_command("ROLE")
    if not role or role[0] != b"slave" or (len(role) > 3 and role[3] != b"connected"):
        result.refused = "this Redis is not a replica connected to its master: nothing removed"
        return result
    keymap = scan_keys(client, keys)
    digests, problems = references(client, keys, keymap, archive_dir)
    if "*" in digests:
        result.refused = "; ".join(problems) + ": nothing removed"
        return result
    now = time.time()

    def old(path: Path) -> bool:
        return now - path.stat().st_mtime >= min_age

    archives = sorted(Path(archive_dir).glob(f"*{SUFFIX}")) if Path(archive_dir).is_dir() else []
    stale_archives = [p for p in archives if p.name[: -len(SUFFIX)] not in keymap.records and old(p)]
    stored = (
        [p for p in store.root.glob("??/*") if p.is_file() and len(p.name) == 64]
        if store.root.is_dir()
        else []
    )
    stale_files = [p for p in stored if p.name not in digests and old(p)]
    total, going = len(archives) + len(stored), len(stale_archives) + len(stale_files)
    if total and going > max_share * total:
        result.refused = f"{going} of {total} copies would go (over {max_share:.0%}): nothing removed"
        return result
    for path in [*stale_archives, *stale_files]:
        path.unlink(missing_ok=True)
    result.archives = [p.name for p in stale_archives]
    result.files = [p.name for p in stale_files]
    return result
