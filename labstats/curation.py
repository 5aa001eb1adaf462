"""Annotations after the fact (display name, project, note, tags, star, protect), the trash
that can be undone, and the audit trail of every change: read and written on a run's master.

    cur = Curation(client, actor="alice", writer="alice")        # client: the master, as alice
    cur.change("alice.20261204-101500-3fa2c1", tags_add=["baseline"], name="lr sweep 3")
    cur.trash(run_id); cur.restore(run_id)
    read_annotations(replica, "ls", [run_id])[run_id].tags          # ("baseline",)
    read_audit(replica, "ls", run_id=run_id)                        # newest first

Every call that changes something appends exactly ONE entry to the writer's own audit stream
(``ls:audit:<writer>``) in the same transaction as the change. Two people changing one run at
once both end in the audit: each change is applied on what the other left (WATCH, retried),
so the last one wins and its entry shows what it replaced. The Redis ACL decides who may:
the owner's Redis user its own runs, the viewer's ``annotator`` any run (docs/security.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis

from labstats.format import curation as fmt
from labstats.format.curation import Annotations
from labstats.format.keys import DEFAULT_PREFIX, Keys, run_owner, valid_owner

__all__ = ["UNSET", "Annotations", "Curation", "CurationError", "read_annotations", "read_audit"]

RETRIES = 50  # transactions retried while others change the same run
SCAN_PER_STREAM = 20_000  # audit entries read at most per writer when looking for one run's


class CurationError(ValueError):
    """A change that was refused, in a sentence a user can read (nothing was stored)."""


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # a field left as it is


def _refusal(exc: redis.ResponseError, writer: str, run_id: str) -> CurationError | None:
    if "NOPERM" not in str(exc) and not isinstance(exc, redis.exceptions.NoPermissionError):
        return None
    owner = run_owner(run_id)
    whose = f"{owner}'s run" if owner else "an unowned run"
    return CurationError(
        f"Redis user {writer} may not change {run_id} ({whose}): "
        "only its owner or an editor in the viewer can"
    )


class Curation:
    """Changes to runs' annotations through ``client`` (a master, as the Redis user ``writer``:
    ``annotator`` for the viewer, a training user for its own runs). ``actor`` is who the audit
    names (the viewer's user; the Redis user for the CLI); ``via`` is viewer, api or cli."""

    def __init__(
        self, client: redis.Redis, prefix: str = DEFAULT_PREFIX, *, actor: str, writer: str, via: str = "cli"
    ) -> None:
        if via not in fmt.VIAS:
            raise ValueError(f"via must be one of {', '.join(fmt.VIAS)}")
        if writer not in fmt.OTHER_WRITERS and not valid_owner(writer):
            raise ValueError(f"{writer!r} cannot write annotations")
        self.client, self.keys = client, Keys(prefix)
        self.actor, self.writer, self.via = actor, writer, via

    # ---- reading -------------------------------------------------------------------------

    def get(self, run_id: str) -> Annotations:
        """The run's annotations (as the master has them now)."""
        return self.get_many([run_id])[run_id]

    def get_many(self, run_ids: Iterable[str]) -> dict[str, Annotations]:
        """The annotations of many runs, in one round trip."""
        return read_annotations(self.client, self.keys.prefix, run_ids)

    # ---- changing ------------------------------------------------------------------------

    def change(
        self,
        run_id: str,
        *,
        name: Any = UNSET,
        project: Any = UNSET,
        note: Any = UNSET,
        tags_add: Iterable[str] = (),
        tags_remove: Iterable[str] = (),
        starred: Any = UNSET,
        protected: Any = UNSET,
    ) -> Annotations:
        """Change what is given ("" clears a text; tags are added, then removed) and append one
        audit entry with each changed field's [before, after]. Refused (CurationError, nothing
        stored) when a value breaks the rules of labstats.format.curation or the run does not
        exist. Returns the annotations as they are after the change."""
        texts = {}
        for field, value in (("name", name), ("project", project), ("note", note)):
            if value is UNSET:
                continue
            if isinstance(value, str):  # a note from a browser form or a Windows file has CRLF
                value = fmt.clean_text(field, value)
            problem = fmt.text_problem(field, value)
            if problem:
                raise CurationError(problem)
            texts[field] = value
        adding = _tags(tags_add)
        removing = _tags(tags_remove)
        flags = {}
        for field, value in (("starred", starred), ("protected", protected)):
            if value is not UNSET:
                if not isinstance(value, bool):
                    raise CurationError(f"{field} must be true or false")
                flags[field] = value

        def plan(before: Annotations) -> tuple[dict[str, str], list[str], dict[str, list[Any]]]:
            sets: dict[str, str] = {}
            dels: list[str] = []
            changes: dict[str, list[Any]] = {}
            for field, value in texts.items():
                old = getattr(before, field)
                if value != old:
                    changes[field] = [old, value]
                    _put(sets, dels, field, value)
            if adding or removing:
                tags = tuple(t for t in dict.fromkeys((*before.tags, *adding)) if t not in removing)
                problem = fmt.tags_problem(tags)
                if problem:
                    raise CurationError(problem)
                if tags != before.tags:
                    changes["tags"] = [list(before.tags), list(tags)]
                    sets["tags"] = fmt.encode_tags(tags)
            for field, value in flags.items():
                if value != getattr(before, field):
                    changes[field] = [getattr(before, field), value]
                    _put(sets, dels, field, "1" if value else "")
            return sets, dels, changes

        return self._apply(run_id, "change", plan)

    def trash(self, run_id: str) -> Annotations:
        """Put the run in the trash: hidden from every list until restored (or purged on its
        training box after the retention). Refused for a protected run, or one already there."""

        def plan(before: Annotations) -> tuple[dict[str, str], list[str], dict[str, list[Any]]]:
            if before.protected:
                raise CurationError(f"run {run_id} is protected: unprotect it before trashing it")
            if before.trashed is not None:
                raise CurationError(f"run {run_id} is already in the trash")
            now = time.time()
            sets = {"trashed": fmt.encode_time(now), "trashed_by": self.actor}
            return sets, [], {"trashed": [None, round(now, 3)], "trashed_by": [before.trashed_by, self.actor]}

        return self._apply(run_id, "trash", plan)

    def restore(self, run_id: str) -> Annotations:
        """Take the run out of the trash."""

        def plan(before: Annotations) -> tuple[dict[str, str], list[str], dict[str, list[Any]]]:
            if before.trashed is None:
                raise CurationError(f"run {run_id} is not in the trash")
            return {}, ["trashed", "trashed_by", "purge"], {"trashed": [before.trashed, None]}

        return self._apply(run_id, "restore", plan)

    def refused(self, run_id: str, what: str) -> None:
        """Note in the audit an attempt that was refused (a reader's change, a training user's
        change to another's run): ``what`` says what was tried."""
        entry = fmt.encode_audit(who=self.actor, when=time.time(), run=run_id, action="refused",
                                 changes={}, via=self.via, what=what)  # fmt: skip
        self.client.xadd(self.keys.audit(self.writer), entry)

    def _apply(self, run_id: str, action: str, plan) -> Annotations:
        key, run_key = self.keys.annotations(run_id), self.keys.run(run_id)
        with self.client.pipeline() as pipe:
            for _ in range(RETRIES):
                try:
                    pipe.watch(key)
                    if not pipe.exists(run_key):
                        raise CurationError(f"no run {run_id!r} in this store")
                    before = fmt.decode(pipe.hgetall(key), pipe.hget(run_key, "tags"))
                    sets, dels, changes = plan(before)
                    now = time.time()
                    sets = {**sets, "updated": fmt.encode_time(now), "updated_by": self.actor}
                    entry = fmt.encode_audit(who=self.actor, when=now, run=run_id, action=action,
                                             changes=changes, via=self.via)  # fmt: skip
                    pipe.multi()
                    pipe.hset(key, mapping=sets)
                    if dels:
                        pipe.hdel(key, *dels)
                    pipe.xadd(self.keys.audit(self.writer), entry)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
                except redis.ResponseError as exc:
                    if "WRONGTYPE" in str(exc):
                        raise CurationError(
                            f"the annotations of run {run_id} are damaged (not a hash)"
                        ) from None
                    refusal = _refusal(exc, self.writer, run_id)
                    if refusal is None:
                        raise
                    raise refusal from None
            else:
                raise CurationError(f"run {run_id} is being changed by others all the time; try again")
        return self.get(run_id)


def _put(sets: dict[str, str], dels: list[str], field: str, value: str) -> None:
    """Store a value, or remove the field for an empty one (an unset field reads as empty)."""
    if value:
        sets[field] = value
    else:
        dels.append(field)


def _tags(tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        tags = (tags,)
    found = tuple(dict.fromkeys(t.strip() if isinstance(t, str) else t for t in tags))
    for tag in found:
        problem = fmt.tag_problem(tag)
        if problem:
            raise CurationError(problem)
    return found


def read_annotations(client: redis.Redis, prefix: str, run_ids: Iterable[str]) -> dict[str, Annotations]:
    """The annotations of these runs (read commands only: a replica does), in one round trip.
    A run never annotated reads as empty annotations with its logged tags."""
    keys = Keys(prefix)
    ids = list(dict.fromkeys(run_ids))
    pipe = client.pipeline(transaction=False)
    for run_id in ids:
        pipe.hgetall(keys.annotations(run_id))
        pipe.hget(keys.run(run_id), "tags")
    # A key of another type (an owner's SET where a hash belongs) reads as empty, never
    # stops the listing for everyone.
    replies = [None if isinstance(r, redis.ResponseError) else r for r in pipe.execute(raise_on_error=False)]
    return {run_id: fmt.decode(replies[2 * n] or {}, replies[2 * n + 1]) for n, run_id in enumerate(ids)}


def audit_writers(client: redis.Redis, keys: Keys) -> list[str]:
    """Whose audit streams there can be: the annotator, the archiver, a store's default user,
    and every owner of runs (a training user annotates only its own runs, so it is one)."""
    owners = (raw.decode("utf-8", "replace") for raw in client.smembers(keys.owners))
    return [*fmt.OTHER_WRITERS, *sorted(o for o in owners if valid_owner(o))]


def read_audit(
    client: redis.Redis, prefix: str = DEFAULT_PREFIX, *, run_id: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """The audit trail, newest first, of every writer merged by the time the store received
    each entry (at most ``limit`` entries; only ``run_id``'s when given). Each entry: id,
    writer, who, when, run, action, changes ({field: [before, after]}), via, what."""
    keys = Keys(prefix)
    writers = audit_writers(client, keys)
    found: list[tuple[tuple[int, int], dict[str, Any]]] = []
    for writer in writers:
        found += _read_stream(client, keys.audit(writer), writer, run_id, limit)
    found.sort(key=lambda pair: pair[0], reverse=True)
    return [entry for _, entry in found[: max(limit, 0)]]


def _read_stream(client: redis.Redis, key: str, writer: str, run_id: str | None, limit: int):
    out: list[tuple[tuple[int, int], dict[str, Any]]] = []
    upper, scanned = "+", 0
    page = limit if run_id is None else 500
    while len(out) < limit and scanned < SCAN_PER_STREAM and page > 0:
        batch = client.xrevrange(key, max=upper, min="-", count=page)
        if not batch:
            break
        for entry_id, raw in batch:
            entry = fmt.decode_audit(writer, entry_id, raw)
            if run_id is None or entry["run"] == run_id:
                out.append((_order(entry["id"]), entry))
        scanned += len(batch)
        if len(batch) < page:
            break
        ms, seq = _order(batch[-1][0].decode() if isinstance(batch[-1][0], bytes) else batch[-1][0])
        upper = f"{ms}-{seq - 1}" if seq > 0 else f"{ms - 1}-18446744073709551615"
    return out[:limit]


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0
