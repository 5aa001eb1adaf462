"""The checks of each training box's runs, turned into findings for the :class:`Notifier`: a
run crashed (its process ended without closing it, or it closed as crashed), a run stalled and
later logs again, the first NaN or infinity in its series, its own alerts (``Stats.alert``),
and the user rules of the config on each series' newest point.

Reading is cheap: per check and source, the running runs' records (one pipeline), each
running run's series list, and of each float series only the bytes appended since the last
check (:class:`SeriesTails`)."""

from __future__ import annotations

import json
import logging
import time

from labstats.format import run_record
from labstats.format.keys import run_owner
from labstats.ops import alert_rules
from labstats.ops.alert_history import History
from labstats.ops.alert_messages import (
    CRASHED,
    ENDED,
    NONFINITE,
    RUN_ALERT,
    STALLED,
    TEXT_CHARS,
    one_line,
    plain,
)
from labstats.ops.alert_notifier import Notifier
from labstats.ops.alert_rules import Config
from labstats.ops.alert_series import SeriesTails
from labstats.reader import Lab, Run

log = logging.getLogger("labstats.alerts")

MAX_RUN_ALERTS = 10_000  # a run's own alerts hash read at most this long
MAX_OWN_ALERTS_PER_CHECK = 100  # of one run; the rest the next check
MAX_RECENT_RUNS = 2_000  # of one owner started within repeat_after, looked at for ends unseen
MAX_SERIES_READ = 20_000  # a run with more series is not checked for NaN nor user rules
MAX_ALERT_BYTES = 64 * 1024  # Stats.alert writes at most 200 + 4,000 characters


class RunChecks:
    """The runs' rules over every source; what each check found goes to ``notifier``."""

    def __init__(self, config: Config, history: History, notifier: Notifier) -> None:
        self.config, self.history, self.notifier = config, history, notifier
        self.tails = SeriesTails()
        self._alerts_seen: dict[tuple[str, str], int] = {}  # (source, run) -> its alerts' HLEN read
        self._too_many: set[tuple[str, str]] = set()  # runs with too many series, logged

    def check_source(self, source: str, lab: Lab) -> None:
        watched = self.history.watched(source)
        ids = dict.fromkeys([*lab.index.candidates(None, None, run_record.RUNNING), *watched])
        # A run that started and ended between two checks (a crash at start-up) was never
        # seen running: it is taken as watched once, so its end and its alerts are told.
        for run_id in self.ended_unseen(source, lab, ids):
            watched[run_id] = ""
            ids[run_id] = None
        # The reader's own loader: records and annotations (the user rules' tags) in two round trips.
        runs = lab._load(list(ids))  # noqa: SLF001
        for run_id in set(watched) - {r.id for r in runs}:  # purged: nothing left to say
            self.history.unwatch(source, run_id)
            self.forget(source, run_id)
        live = [r for r in runs if r.status in (run_record.RUNNING, run_record.STALLED)]
        alert_counts, series_counts = self._sizes(lab, runs)
        infos = lab.series_infos(self._readable(source, live, series_counts))
        nonfinite = self.tails.read_new(source, lab, infos)
        live_ids = {r.id for r in live}
        for run in runs:
            status = run.status
            if run.id in live_ids:
                if run.id not in watched:
                    self.history.watch(source, run.id)
                self.own_alerts(source, lab, run, watched.get(run.id, ""), alert_counts[run.id])
                self.notifier.resolve(source, run, CRASHED, "the run was resumed")
                self.stalled_rule(source, run, status == run_record.STALLED)
                self.series_rules(source, run, nonfinite.get(run.id, []))
            elif run.id in watched:  # it ended since the last check: its last alerts, then its end
                self.own_alerts(source, lab, run, watched[run.id], alert_counts[run.id])
                self.ended(source, run, status)
                self.history.unwatch(source, run.id)
                self.history.set_state(source, run.id, ENDED, False, time.time(), None, False)
                self.forget(source, run.id)
            elif status == run_record.CRASHED and run.heartbeat_age < self.config.repeat_after:
                self.ended(source, run, status)  # died before this service first saw it (a restart)

    @staticmethod
    def _sizes(lab: Lab, runs: list[Run]) -> tuple[dict[str, int], dict[str, int]]:
        """How many alerts of its own and how many series each run has (one round trip)."""
        pipe = lab.redis.pipeline(transaction=False)
        for run in runs:
            pipe.hlen(lab.keys.run_alerts(run.id))
            pipe.hlen(lab.keys.series(run.id))
        found = pipe.execute() if runs else []
        ids = [run.id for run in runs]
        return dict(zip(ids, found[::2], strict=True)), dict(zip(ids, found[1::2], strict=True))

    def _readable(self, source: str, live: list[Run], series_counts: dict[str, int]) -> list[Run]:
        """The live runs whose series are read: not those with over MAX_SERIES_READ series (a
        run that made up names by the million); each of those is logged once."""
        for run in live:
            if series_counts[run.id] > MAX_SERIES_READ and (source, run.id) not in self._too_many:
                self._too_many.add((source, run.id))
                log.warning(
                    "alerts: run %s/%s has %d series; its series are not checked (at most %d)",
                    source,
                    run.id,
                    series_counts[run.id],
                    MAX_SERIES_READ,
                )
        return [run for run in live if series_counts[run.id] <= MAX_SERIES_READ]

    def forget(self, source: str, run_id: str) -> None:
        """Drop what is kept in memory of a run that ended or is gone."""
        self.tails.forget(source, run_id)
        self._alerts_seen.pop((source, run_id), None)
        self._too_many.discard((source, run_id))

    def ended_unseen(self, source: str, lab: Lab, known: dict[str, None]) -> list[str]:
        """Runs started within repeat_after that ended without this service seeing them end
        (no ENDED mark): one ZRANGEBYSCORE per owner, one HGET of the status per such run."""
        now = time.time()
        since = now - self.config.repeat_after
        pipe = lab.redis.pipeline(transaction=False)
        groups = lab.index.groups()
        for owner in groups:
            # The oldest first, none dated over an hour ahead (clocks differ), at most
            # MAX_RECENT_RUNS: an index filled with ids of no run costs a bounded number of reads.
            pipe.zrangebyscore(lab.keys.runs_index(owner), since, now + 3600, start=0, num=MAX_RECENT_RUNS)
        found = [
            raw.decode("utf-8", "replace")
            for owner, ids in zip(groups, pipe.execute(), strict=True)
            for raw in ids
            if run_owner(raw.decode("utf-8", "replace")) == owner
        ]
        fresh = [run_id for run_id in dict.fromkeys(found) if run_id not in known]
        pipe = lab.redis.pipeline(transaction=False)
        for run_id in fresh:
            pipe.hget(lab.keys.run(run_id), "status")
        ended = (run_record.FINISHED.encode(), run_record.CRASHED.encode())
        return [
            run_id
            for run_id, status in zip(fresh, pipe.execute() if fresh else [], strict=True)
            if status in ended and self.history.state(source, run_id, ENDED) is None
        ]

    def ended(self, source: str, run: Run, status: str) -> None:
        """A crash is said once (a resumed run that crashes again is said again); what held
        while the run lived resolves with its end."""
        if status == run_record.CRASHED:
            self.notifier.fire(
                source,
                run,
                CRASHED,
                "error",
                f"crashed: {one_line(run.name)}",
                f"The run crashed: {plain(run.reason) or 'no reason recorded'}.",
                repeat=False,
            )
        for rule in self.notifier.active_rules(source, run.id):
            if rule == STALLED or rule.startswith("rule: "):
                # A crash ends them quietly (its message says what happened); a finish resolves.
                self.notifier.resolve(
                    source, run, rule, f"the run {status}", quiet=status == run_record.CRASHED
                )

    def stalled_rule(self, source: str, run: Run, stalled: bool) -> None:
        if stalled:
            self.notifier.fire(
                source,
                run,
                STALLED,
                "warning",
                f"stalled: {one_line(run.name)}",
                f"The run stalled: {plain(run.reason)}.",
            )
        else:
            self.notifier.resolve(source, run, STALLED, "it logs again")

    def own_alerts(self, source: str, lab: Lab, run: Run, cursor: str, size: int) -> None:
        """The run's own alerts (Stats.alert) written since ``cursor`` (the last field sent):
        read only when the hash grew (``size``, its HLEN), at most MAX_OWN_ALERTS_PER_CHECK
        a check (the oldest first, the rest the next check), each value at most
        MAX_ALERT_BYTES (a longer one is told as too long, unread)."""
        seen = self._alerts_seen.get((source, run.id))
        if not size or size == seen:
            return
        if size > MAX_RUN_ALERTS:
            if seen is None:
                log.warning(
                    "alerts: run %s/%s has %d alerts of its own; not read (at most %d)",
                    source,
                    run.id,
                    size,
                    MAX_RUN_ALERTS,
                )
            self._alerts_seen[(source, run.id)] = size
            return
        key = lab.keys.run_alerts(run.id)
        after = _field_order(cursor.encode()) if cursor else None
        fields = [(order, f) for f in lab.redis.hkeys(key) if (order := _field_order(f)) is not None]
        new = sorted(item for item in fields if after is None or item[0] > after)
        if len(new) <= MAX_OWN_ALERTS_PER_CHECK:
            self._alerts_seen[(source, run.id)] = size  # all read: not again until it grows
        new = new[:MAX_OWN_ALERTS_PER_CHECK]
        if not new:
            return
        pipe = lab.redis.pipeline(transaction=False)
        for _, field in new:
            pipe.hstrlen(key, field)
        lengths = pipe.execute()
        short = [field for (_, field), n in zip(new, lengths, strict=True) if n <= MAX_ALERT_BYTES]
        values = dict(zip(short, lab.redis.hmget(key, short), strict=True)) if short else {}
        for (_, field), n in zip(new, lengths, strict=True):
            raw = values.get(field)
            alert = _run_alert(raw) if raw is not None else _too_long(n)
            title = one_line(alert["title"])
            self.notifier.fire(
                source,
                run,
                f"{RUN_ALERT}: {title}",
                alert["level"],
                f"{title} ({one_line(run.name)})",
                plain(alert["text"]),
                event=True,
            )
        self.history.watch(source, run.id, new[-1][1].decode())

    def series_rules(self, source: str, run: Run, nonfinite: list[tuple[str, int, str]]) -> None:
        """The first NaN or infinity among the points written since the last check, and the
        user rules on each series' newest point."""
        if nonfinite:
            lines = [f"{one_line(name)}: {value} at step {step}" for name, step, value in nonfinite[:10]]
            more = f"\n(and {len(nonfinite) - 10} more series)" if len(nonfinite) > 10 else ""
            self.notifier.fire(
                source,
                run,
                NONFINITE,
                "error",
                f"NaN or infinity: {one_line(run.name)}",
                "First non-finite values:\n" + "\n".join(lines) + more,
                repeat=False,
            )
        if not self.config.rules:
            return
        # As read with the run at this check's start: not again for each run of a long check.
        annotations = run.loaded_annotations or run.annotations
        names = [run.name, annotations.name or run.name]
        tags = sorted(set(run.tags) | set(annotations.tags))
        for rule in self.config.rules:
            if not rule.watches(names, tags):
                continue
            point = self.tails.newest(source, run.id, rule.condition.metric)
            key = f"rule: {rule.name}"
            if point is not None and rule.condition.holds(*point):
                self.notifier.fire(
                    source,
                    run,
                    key,
                    rule.level,
                    f"{one_line(rule.name)}: {one_line(run.name)}",
                    f"{plain(rule.condition)}: {rule.condition.metric} is {point[1]:g} at step {point[0]}.",
                )
            elif point is not None:
                self.notifier.resolve(
                    source,
                    run,
                    key,
                    f"{one_line(rule.condition.metric)} is {point[1]:g} at step {point[0]}",
                )


def _field_order(field: bytes) -> tuple[int, int] | None:
    """A run alert's field "<unix ms>-<n>" as a sortable pair; None when it is not one."""
    ms, _, n = field.partition(b"-")
    return (int(ms), int(n)) if ms.isdigit() and n.isdigit() and len(ms) < 20 and len(n) < 20 else None


def _too_long(size: int) -> dict[str, str]:
    return {"title": "alert", "text": f"(too long to read: {size} bytes)", "level": "warning"}


def _run_alert(raw: bytes) -> dict[str, str]:
    """A run's own alert as its owner wrote it, read without trusting it."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        return {"title": "alert", "text": raw.decode("utf-8", "replace")[:TEXT_CHARS], "level": "warning"}
    level = value.get("level")
    return {
        "title": str(value.get("title") or "alert"),
        "text": str(value.get("text") or ""),
        "level": level if level in alert_rules.LEVELS else "warning",
    }
