"""Which runs a store holds: its indexes of runs, read with the owners' rules.

Every training user writes its own indexes (``ls:owner:NAME:...``); unowned runs of schema
version 1 are in the shared ones. An index entry is a hint, not the truth: an owner can put
any id at any score in its own index, so only ids it owns count there, and only ids whose run
record exists. A page of the newest runs costs one short read per index, whatever the number
of runs.
"""

from __future__ import annotations

import redis

from labstats.format import run_record
from labstats.format.keys import Keys, run_owner, valid_owner

# How deep the unfiltered page reads each index at most while entries there do not count
# (made-up ids an owner put at the top of their own index): a bound on what one page costs.
MAX_WINDOW = 1 << 16


class RunIndex:
    """The run indexes of one store."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client, self.keys = client, keys

    def owners(self) -> list[str]:
        """The owners whose runs are listed: the members of ``ls:owners`` that can be owners
        (every training user adds itself there when it logs a run) and have an index of runs.
        Anyone who may log can add names there, never an index under another name: junk
        names are read once here, never once per index a listing reads."""
        found = (raw.decode("utf-8", "replace") for raw in self.client.smembers(self.keys.owners))
        names = sorted(name for name in found if valid_owner(name))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.exists(self.keys.owner_runs(name))
        return [name for name, exists in zip(names, pipe.execute(), strict=True) if exists]

    def groups(self) -> list[str | None]:
        """Whose indexes to read: None for the shared (legacy) ones, then each name in the
        owners list (a name without an index reads as an empty one, in the same round trip)."""
        found = (raw.decode("utf-8", "replace") for raw in self.client.smembers(self.keys.owners))
        return [None, *sorted(name for name in found if valid_owner(name))]

    def newest(self, offset: int, limit: int | None) -> list[str]:
        """Ids of the runs at [offset, offset + limit) of the list, newest first, from each
        index's own newest offset + limit (its start times as scores), merged. So a page costs
        one short ZREVRANGE per index, whatever the number of runs. An index may show ids it
        does not own (forged, or written before owners): those are left out, and the windows
        grow until no index could still hold one of the page's runs."""
        want = None if limit is None else offset + limit
        if want is not None and want <= 0:
            return []
        groups = self.groups()
        window = want
        while True:
            pipe = self.client.pipeline(transaction=False)
            for owner in groups:
                pipe.zrevrange(
                    self.keys.runs_index(owner), 0, -1 if window is None else window - 1, withscores=True
                )
            best: dict[str, tuple[float, str]] = {}
            cut: list[tuple[float, str]] = []  # of each index read only in part: its last entry
            for owner, found in zip(groups, pipe.execute(), strict=True):
                for raw, score in found:
                    run_id = raw.decode("utf-8", "replace")
                    if run_owner(run_id) == owner:
                        best.setdefault(run_id, (score, run_id))
                if window is not None and len(found) >= window:
                    cut.append((found[-1][1], found[-1][0].decode("utf-8", "replace")))
            best = self._recorded(best)
            ordered = sorted(best, key=best.__getitem__, reverse=True)
            if want is None or window is None or not cut:
                break
            # Exact when the page's last run ranks above what each cut index left unread.
            if len(ordered) >= want and all(best[ordered[want - 1]] >= last for last in cut):
                break
            if window >= MAX_WINDOW:  # entries that count no more than this deep: made up
                break
            window *= 2
        return ordered[offset : None if limit is None else offset + limit]

    def _recorded(self, entries: dict[str, tuple[float, str]]) -> dict[str, tuple[float, str]]:
        """The index entries that are runs (their record exists). An owner can put any id at
        any score in their own index: made-up ids at the top would otherwise fill a page with
        nothing and push everyone's runs off it. (Their own real runs they may order as they
        like, as with any start time they log.)"""
        if not entries:
            return entries
        pipe = self.client.pipeline(transaction=False)
        for run_id in entries:
            pipe.exists(self.keys.run(run_id))
        return {
            run_id: entry
            for (run_id, entry), exists in zip(entries.items(), pipe.execute(), strict=True)
            if exists
        }

    def candidates(self, name: str | None, tag: str | None, status: str | None) -> list[str]:
        """Ids that may match the filters, from the indexes (every match is among them); the
        caller checks each against its own record (an index entry is a hint, not the truth)."""
        if tag is None and status is None:
            if name is None:
                return self.newest(0, None)
            names = self.client.hgetall(self.keys.names)
            found = (v.decode("utf-8", "replace") for k, v in names.items()
                     if name.lower() in k.decode("utf-8", "replace").lower())  # fmt: skip
            return list(dict.fromkeys(found))
        statuses: list[str | None] = [status]
        if status == run_record.CRASHED:
            statuses.append(run_record.RUNNING)  # stale running runs read as crashed too
        elif status == run_record.STALLED:
            statuses = [run_record.RUNNING]  # stalled is never stored: running runs read as it
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        asked: list[str | None] = []
        for owner in self.groups():
            for wanted in statuses:
                keys = ([k.tag_index(owner, tag)] if tag is not None else []) + (
                    [k.status_index(owner, wanted)] if wanted is not None else []
                )
                pipe.sinter(keys)
                asked.append(owner)
        ids: dict[str, None] = {}
        for owner, found in zip(asked, pipe.execute(), strict=True):
            for raw in found:
                run_id = raw.decode("utf-8", "replace")
                if run_owner(run_id) == owner:  # only an owner's own runs count there
                    ids[run_id] = None
        return list(ids)
