"""Every run of a source, read for the runs table's sorts and filters across all pages, with
what an ended run will not change kept between requests.

Reading 10,000 run records whole takes about 0.9 s (most of it parsing Redis' replies);
a run that has ended changes only when it is archived, quarantined or closed again, so its
decoded record, series infos and metric summaries are kept, and each request reads only a
few fields of its record to see that it is still the same (its fingerprint). Running runs
are read whole every time. A fingerprint read less than RECHECK_AFTER seconds ago is not
read again (paging through a sorted table, the next page costs no read per run), so an
ended run archived meanwhile shows its badge that much later. Each source's cache holds at
most MAX_CACHED_RUNS runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from labstats.format import run_record
from labstats.reader import Lab, Run

# The record fields that change once a run has ended (closing it again, archiving it,
# quarantining a series): the same values here mean the same record.
FINGERPRINT = ("status", "ended", "heartbeat", "archived", "archive_digest", "quarantined")
ENDED = (run_record.FINISHED, run_record.CRASHED)
MAX_CACHED_RUNS = 200_000
# Reduced series (the explorer's ≤ 2,000 points of a run's metric) kept at most: about
# 32 kB each, so some 64 MB.
MAX_CACHED_SERIES = 2000
# Config keys of one run told apart (encoded_configs): the table shows at most a dozen
# columns, and a trainer may write a config of 100,000 keys. A longer value is kept as a
# digest of its JSON text: equal values still compare equal.
MAX_CONFIG_KEYS = 1000
MAX_KEPT_VALUE_CHARS = 256
RECHECK_AFTER = 5.0  # seconds a checked fingerprint is trusted


class SourceCache:
    """One source's kept records, series infos and summaries (run id → ...)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.lock = threading.Lock()
        self.records: dict[str, tuple[tuple, dict[str, Any]]] = {}  # id → (fingerprint, meta)
        self.checked: dict[str, float] = {}  # id → when its fingerprint was last read
        self.infos: dict[str, tuple[tuple, dict]] = {}
        self.summaries: dict[tuple[str, str], tuple[tuple, dict | None]] = {}
        self.reduced: dict[tuple, tuple[tuple, Any]] = {}  # (run id, what) → (stamp, value)
        self.configs: dict[str, tuple[tuple, dict[str, str]]] = {}  # run id → (stamp, encoded)

    def _trim(self) -> None:
        for kept in (self.records, self.checked, self.infos, self.summaries, self.configs):
            if len(kept) > MAX_CACHED_RUNS:
                kept.clear()  # rare, and refilled by the next request
        if len(self.reduced) > MAX_CACHED_SERIES:
            self.reduced.clear()

    def runs(self, ids: list[str]) -> list[Run]:
        """The runs of ``ids`` that have a record, in order: ended runs whose fingerprint
        is unchanged from the kept record, the others read whole."""
        lab, keys = self.lab, self.lab.keys
        now = time.monotonic()
        with self.lock:
            kept = [self.records.get(run_id) for run_id in ids]
            recent = {
                run_id for run_id in ids if now - self.checked.get(run_id, -RECHECK_AFTER) < RECHECK_AFTER
            }
        pipe = lab.redis.pipeline(transaction=False)
        asked = []
        for run_id, found in zip(ids, kept, strict=True):
            if found is None:
                pipe.hgetall(keys.run(run_id))
            elif run_id not in recent:
                pipe.hmget(keys.run(run_id), FINGERPRINT)
            else:
                continue
            asked.append(run_id)
        answered = dict(zip(asked, pipe.execute(), strict=True))
        # A recently checked record answers as its own fingerprint: unchanged.
        replies = [answered[run_id] if run_id in answered else list(found[0])  # type: ignore[index]
                   for run_id, found in zip(ids, kept, strict=True)]  # fmt: skip
        stale = [run_id for run_id, found, reply in zip(ids, kept, replies, strict=True)
                 if found is not None and tuple(reply) != found[0]]  # fmt: skip
        if stale:
            pipe = lab.redis.pipeline(transaction=False)
            for run_id in stale:
                pipe.hgetall(keys.run(run_id))
            fresh = dict(zip(stale, pipe.execute(), strict=True))
        else:
            fresh = {}
        out: list[Run] = []
        with self.lock:
            for run_id, found, reply in zip(ids, kept, replies, strict=True):
                raw = fresh.get(run_id, reply if found is None else None)
                if raw is None:  # the kept record still holds
                    out.append(Run(lab, run_id, found[1]))  # type: ignore[index]
                    if run_id in answered:
                        self.checked[run_id] = now
                    continue
                if not raw:
                    self.records.pop(run_id, None)
                    continue
                meta = run_record.decode(raw)
                if meta.get("status") in ENDED:
                    self.records[run_id] = (fingerprint(raw), meta)
                    self.checked[run_id] = now
                else:
                    self.records.pop(run_id, None)
                out.append(Run(lab, run_id, meta))
            self._trim()
        return out

    def series_infos(self, runs: list[Run]) -> dict[str, dict[str, dict[str, Any]]]:
        """Lab.series_infos, an ended run's kept while its record is the same."""
        out, missing = self._kept(self.infos, runs, lambda run: run.id)
        if missing:
            read = self.lab.series_infos(missing)
            out.update(read)
            self._keep(self.infos, missing, lambda run: run.id, read)
        return out

    def metric_summaries(self, runs: list[Run], name: str) -> dict[str, dict[str, float | None] | None]:
        """Lab.summaries of one series, an ended run's kept while its record is the same."""
        out, missing = self._kept(self.summaries, runs, lambda run: (run.id, name))
        if missing:
            read = self.lab.summaries(missing, name)
            out.update(read)
            self._keep(self.summaries, missing, lambda run: (run.id, name), read)
        return out

    def reduced_series(self, run: Run, what: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()`` (a run's series reduced for a chart, named by ``what``), an ended
        run's kept while its record is the same: its points will not change."""
        key = (run.id, *what)
        with self.lock:
            found = self.reduced.get(key)
        if found is not None and found[0] == _stamp(run):
            return found[1]
        value = compute()
        if run.meta.get("status") in ENDED:
            with self.lock:
                self.reduced[key] = (_stamp(run), value)
                self._trim()
        return value

    def encoded_configs(self, runs: Iterable[Run]) -> list[dict[str, str]]:
        """Each run's config (its first MAX_CONFIG_KEYS keys) with its values as JSON text
        (how the table tells values apart), an ended run's kept while its record is the same."""
        out = []
        for run in runs:
            with self.lock:
                found = self.configs.get(run.id)
            if found is not None and found[0] == _stamp(run):
                out.append(found[1])
                continue
            encoded = {
                key: _encoded(value) for key, value in itertools.islice(run.config.items(), MAX_CONFIG_KEYS)
            }
            if run.meta.get("status") in ENDED:
                with self.lock:
                    self.configs[run.id] = (_stamp(run), encoded)
            out.append(encoded)
        with self.lock:
            self._trim()
        return out

    def _kept(self, kept: dict, runs: Iterable[Run], key) -> tuple[dict, list[Run]]:
        out, missing = {}, []
        with self.lock:
            for run in runs:
                found = kept.get(key(run))
                if found is not None and found[0] == _stamp(run):
                    out[run.id] = found[1]
                else:
                    missing.append(run)
        return out, missing

    def _keep(self, kept: dict, runs: list[Run], key, read: dict) -> None:
        with self.lock:
            for run in runs:
                if run.meta.get("status") in ENDED and run.id in read:
                    kept[key(run)] = (_stamp(run), read[run.id])
            self._trim()


def _encoded(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    if len(text) > MAX_KEPT_VALUE_CHARS:
        return "#" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    return text


def fingerprint(raw: dict[bytes, bytes]) -> tuple:
    """What HMGET of FINGERPRINT answers for a record read whole (HGETALL)."""
    return tuple(raw.get(field.encode()) for field in FINGERPRINT)


def _stamp(run: Run) -> tuple:
    """What must be the same for an ended run's kept infos and summaries to hold."""
    meta = run.meta
    return tuple(str(meta.get(field)) for field in ("status", "ended", "archived", "quarantined"))


def source_cache(kept: dict[str, SourceCache], source: str, lab: Lab) -> SourceCache:
    """The cache of ``source`` in ``kept`` (an app's), made anew when its Lab is another."""
    cache = kept.get(source)
    if cache is None or cache.lab is not lab:
        cache = kept[source] = SourceCache(lab)
    return cache
