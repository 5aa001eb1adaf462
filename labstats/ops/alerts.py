"""The alerts service (web box, role ``alerts``): checks the runs of every training box's
replica every few seconds and tells people through Apprise (mail, ntfy, Slack, Matrix, JSON
webhooks).

    python -m labstats.ops.alerts --config /etc/labstats/alerts.toml           # the service
    python -m labstats.ops.alerts --check < config.json                        # the role's check

What it tells: a run crashed (its process ended without closing it, or it closed as crashed),
a run stalled (its loop stopped calling log()/update() while its process lives) and later
that it logs again, the first NaN or infinity in a run's series, a run's own alerts
(``Stats.alert``), and the user rules of the config (``val/loss > 2 after step 1000`` for
runs matching a name glob or a tag). Each (run, rule) is sent at most once per
``repeat_after`` (an hour), and "resolved" when it clears. What was sent, and the state of
each rule, are kept in a SQLite file of its own (the viewer's alerts page reads it), so a
restart repeats nothing. Each channel has a thread of its own: one that is down is retried
with growing pauses for ``retry_for`` (a day) while checking and the other channels go on.
Channel URLs hold passwords and tokens: they are never logged, only their masked forms.

Reading is cheap: per check and source, the running runs' records (one pipeline), each
running run's series list, and of each float series only the bytes appended since the last
check (GETRANGE of its open chunk).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import signal
import sqlite3
import sys
import threading
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labstats.config import LabstatsError, client
from labstats.format import chunk, run_record
from labstats.format.keys import run_owner
from labstats.ops import alert_rules, health
from labstats.ops.alert_rules import Config, channel_label, redact, secrets_of
from labstats.reader import UNREACHABLE, Lab, Run

log = logging.getLogger("labstats.alerts")

# Rules built in (their names as the history shows them).
CRASHED, STALLED, NONFINITE, RUN_ALERT = "crashed", "stalled", "nan", "run alert"
ENDED = "ended"  # not a rule: marks a run whose end was seen (its state row says so)
FIRST_READ_CHUNKS = 64  # of a series first seen mid-run (a restart): its newest chunks only
MAX_RUN_ALERTS = 10_000  # a run's own alerts hash read at most this long
TEXT_CHARS, NAME_CHARS = 2000, 200
BACKOFF_FIRST, BACKOFF_MAX = 5.0, 600.0
KEEP_STATE, KEEP_SENT = 7 * 86400.0, 90 * 86400.0  # the rules' state of runs gone; the history

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def plain(text: Any, limit: int = TEXT_CHARS) -> str:
    """Text from a run (its name, its alert) as a message may carry it: plain characters, no
    control or direction marks, cut at ``limit``."""
    text = _CONTROL.sub("?", str(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- the history and the rules' state (SQLite) -----------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rule_state (
    source TEXT NOT NULL, run TEXT NOT NULL, rule TEXT NOT NULL,
    active INTEGER NOT NULL,        -- 1 while the condition holds
    since REAL NOT NULL,            -- when it last began to hold
    last_sent REAL,                 -- when it was last sent (NULL: never)
    notified INTEGER NOT NULL,      -- whether this episode was sent (a resolve is sent only then)
    PRIMARY KEY (source, run, rule)
);
CREATE TABLE IF NOT EXISTS sent (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL, source TEXT NOT NULL, run TEXT NOT NULL, run_name TEXT NOT NULL,
    rule TEXT NOT NULL,
    kind TEXT NOT NULL,             -- alert, again (still holds after repeat_after), resolved
    level TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL,
    channels INTEGER NOT NULL,      -- how many channels it goes to
    delivered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,    -- channels that gave up after retry_for
    last_error TEXT NOT NULL DEFAULT ''   -- masked: no secret
);
CREATE INDEX IF NOT EXISTS sent_at ON sent (at);
CREATE TABLE IF NOT EXISTS outbox (
    sent_id INTEGER NOT NULL, channel TEXT NOT NULL,   -- channel: a digest of its URL
    attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
    PRIMARY KEY (sent_id, channel)
);
CREATE TABLE IF NOT EXISTS watched (
    source TEXT NOT NULL, run TEXT NOT NULL, cursor TEXT NOT NULL DEFAULT '',  -- its own alerts read up to
    PRIMARY KEY (source, run)
);
"""


def channel_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


class History:
    """The SQLite file: the rules' state, what was sent and what waits for a channel.
    Plain rollback journal (not WAL), so that the viewer can read it with a read-only file."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._db.executescript(_SCHEMA)
        self.lock = threading.Lock()

    def sql(self, query: str, args: Iterable[Any] = ()) -> list[tuple]:
        with self.lock:
            return self._db.execute(query, tuple(args)).fetchall()

    def state(self, source: str, run: str, rule: str) -> tuple | None:
        found = self.sql(
            "SELECT active, since, last_sent, notified FROM rule_state WHERE source=? AND run=? AND rule=?",
            (source, run, rule),
        )
        return found[0] if found else None

    def set_state(
        self,
        source: str,
        run: str,
        rule: str,
        active: bool,
        since: float,
        last_sent: float | None,
        notified: bool,
    ) -> None:
        self.sql(
            "INSERT OR REPLACE INTO rule_state VALUES (?, ?, ?, ?, ?, ?, ?)",
            (source, run, rule, int(active), since, last_sent, int(notified)),
        )

    def record(self, message: Message, channels: list[str], now: float) -> int:
        """Keep a message and queue it for every channel; its id."""
        with self.lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute(
                    "INSERT INTO sent (at, source, run, run_name, rule, kind, level, title, body, channels)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        now,
                        message.source,
                        message.run,
                        message.run_name,
                        message.rule,
                        message.kind,
                        message.level,
                        message.title,
                        message.body,
                        len(channels),
                    ),
                )
                sent_id = cur.lastrowid
                db.executemany(
                    "INSERT INTO outbox (sent_id, channel, next_at) VALUES (?, ?, ?)",
                    [(sent_id, channel_id(url), now) for url in channels],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return sent_id

    def prune(self, now: float, keep_state: float, keep_sent: float, channels: list[str]) -> None:
        """Forget what can no longer matter: the rules' state of runs no longer watched (after
        ``keep_state``: by then a dead run is no longer alerted as newly seen), messages older
        than ``keep_sent`` that wait for nothing, and what waits for a channel no longer set."""
        ids = [channel_id(url) for url in channels]
        self.sql(
            "DELETE FROM rule_state WHERE run != '' AND since < ? AND NOT EXISTS (SELECT 1 FROM watched w"
            " WHERE w.source = rule_state.source AND w.run = rule_state.run)",
            (now - keep_state,),
        )
        for (channel,) in self.sql("SELECT DISTINCT channel FROM outbox"):
            if channel not in ids:
                self.sql("DELETE FROM outbox WHERE channel = ?", (channel,))
        self.sql(
            "DELETE FROM sent WHERE at < ? AND id NOT IN (SELECT sent_id FROM outbox)", (now - keep_sent,)
        )

    def watched(self, source: str) -> dict[str, str]:
        return dict(self.sql("SELECT run, cursor FROM watched WHERE source=?", (source,)))

    def watch(self, source: str, run: str, cursor: str | None = None) -> None:
        if cursor is None:
            self.sql("INSERT OR IGNORE INTO watched (source, run) VALUES (?, ?)", (source, run))
        else:
            self.sql("INSERT OR REPLACE INTO watched VALUES (?, ?, ?)", (source, run, cursor))

    def unwatch(self, source: str, run: str) -> None:
        self.sql("DELETE FROM watched WHERE source=? AND run=?", (source, run))


def read_history(path: str, limit: int = 200, before: int | None = None) -> list[dict[str, Any]]:
    """The newest messages sent (before id ``before``), newest first, from the service's file
    opened read-only (the viewer's alerts page); [] when there is none yet."""
    if not Path(path).is_file():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT id, at, source, run, run_name, rule, kind, level, title, body, channels, delivered,"
            " failed, last_error FROM sent WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before if before is not None else 2**62, limit),
        ).fetchall()
    except sqlite3.OperationalError as exc:  # no table yet: the service has not started
        if "no such table" in str(exc):
            return []
        raise
    finally:
        db.close()
    return [dict(row) for row in rows]


# ---- channels ---------------------------------------------------------------------------------


class Channel(threading.Thread):
    """One Apprise URL and its own thread: sends what the outbox holds for it, in order; one
    that fails is tried again after 5 s, 10 s, 20 s... (at most 10 min apart) for
    ``retry_for``, while everything else goes on."""

    def __init__(self, url: str, history: History, retry_for: float, stopping: threading.Event) -> None:
        self.label = channel_label(url)
        super().__init__(name=f"alerts-channel-{self.label[:40]}", daemon=True)
        self.url, self.id, self.history, self.retry_for = url, channel_id(url), history, retry_for
        self.secrets = secrets_of(url)
        self.wake = threading.Event()
        self.stopping = stopping
        self.down_since: float | None = None

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                wait = self.send_due()
            except Exception as exc:  # never end the thread: the next round tries again
                log.error("alerts: channel %s: %s", self.label, redact(str(exc), self.secrets))
                wait = BACKOFF_FIRST
            self.wake.wait(wait)
            self.wake.clear()

    def send_due(self) -> float:
        """Send every due message; seconds until the next one is due."""
        while not self.stopping.is_set():
            now = time.time()
            due = self.history.sql(
                "SELECT o.sent_id, o.attempts, o.next_at, s.at, s.title, s.body, s.level FROM outbox o"
                " JOIN sent s ON s.id = o.sent_id WHERE o.channel=? ORDER BY o.sent_id LIMIT 1",
                (self.id,),
            )
            if not due:
                return 60.0
            sent_id, attempts, next_at, at, title, body, level = due[0]
            if next_at > now:
                return next_at - now
            error = self.deliver(title, body, level)
            if error is None:
                self.history.sql("DELETE FROM outbox WHERE sent_id=? AND channel=?", (sent_id, self.id))
                self.history.sql("UPDATE sent SET delivered = delivered + 1 WHERE id=?", (sent_id,))
                if self.down_since is not None:
                    log.warning("alerts: channel %s works again", self.label)
                    self.down_since = None
                continue
            self.down_since = self.down_since or now
            if now - at > self.retry_for:
                log.error(
                    "alerts: channel %s: gave up on message %d after %d tries (%s)",
                    self.label,
                    sent_id,
                    attempts + 1,
                    error,
                )
                self.history.sql("DELETE FROM outbox WHERE sent_id=? AND channel=?", (sent_id, self.id))
                self.history.sql(
                    "UPDATE sent SET failed = failed + 1, last_error=? WHERE id=?", (error, sent_id)
                )
                continue
            pause = min(BACKOFF_MAX, BACKOFF_FIRST * 2**attempts)
            log.warning(
                "alerts: channel %s failed (%s); message %d tried again in %.0f s",
                self.label,
                error,
                sent_id,
                pause,
            )
            self.history.sql(
                "UPDATE outbox SET attempts=?, next_at=? WHERE sent_id=? AND channel=?",
                (attempts + 1, now + pause, sent_id, self.id),
            )
            self.history.sql("UPDATE sent SET last_error=? WHERE id=?", (f"{self.label}: {error}", sent_id))
            return pause
        return 0.0

    def deliver(self, title: str, body: str, level: str) -> str | None:
        """None when the channel took it, else why not (masked)."""
        import apprise

        notify_type = {"info": apprise.NotifyType.INFO, "error": apprise.NotifyType.FAILURE}.get(
            level, apprise.NotifyType.WARNING
        )
        sender = apprise.Apprise()
        if not sender.add(self.url):
            return "Apprise cannot parse this URL"
        try:
            ok = sender.notify(
                body=body, title=title, notify_type=notify_type, body_format=apprise.NotifyFormat.TEXT
            )
        except Exception as exc:  # a plugin's bug must not end the channel
            return redact(f"{type(exc).__name__}: {exc}", self.secrets)[:300]
        return None if ok else "not delivered (the service's log says why)"


class _Redacting(logging.Filter):
    """Hides the channels' secrets in every record Apprise logs (it masks most itself)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


# ---- messages ---------------------------------------------------------------------------------


@dataclass
class Message:
    source: str
    run: str
    run_name: str
    rule: str
    kind: str  # alert, again, resolved
    level: str
    title: str
    body: str


# ---- the checks -------------------------------------------------------------------------------


@dataclass
class _Cursor:
    """Where the last check stopped reading one series: its chunk, the byte offset in it and
    the chunk's kind."""

    sid: int
    chunk: int
    offset: int
    kind: bytes


class Alerts:
    """The checks over every source, the rules' state, and the channels."""

    def __init__(self, config: Config, *, history: History | None = None) -> None:
        self.config = config
        self.history = history or History(config.state_file)
        self.labs = {
            name: Lab(
                client(s, timeout=5),
                s.prefix,
                f"source {name}",
                stale_after=config.stale_after,
                archive_dir=s.archive_dir or None,
                artifact_dir=s.artifact_dir or None,
                stall_after=config.stall_after,
            )
            for name, s in config.sources.items()
        }
        self.stopping = threading.Event()
        self.channels = [
            Channel(url, self.history, config.retry_for, self.stopping) for url in config.channels
        ]
        secrets = [s for url in config.channels for s in secrets_of(url)]
        self.redacting = _Redacting(secrets)
        logging.getLogger("apprise").addFilter(self.redacting)
        self.cursors: dict[tuple[str, str, str], _Cursor] = {}
        self.latest: dict[tuple[str, str, str], tuple[int, float]] = {}
        self.away: dict[str, str] = {}
        self._down_since: dict[str, float] = {}  # source -> when its link was first seen down
        self._lab_due = self._prune_due = 0.0
        self._warned_big: set[tuple[str, str]] = set()

    def start(self) -> None:
        for channel in self.channels:
            channel.start()

    def stop(self) -> None:
        self.stopping.set()
        for channel in self.channels:
            channel.wake.set()
        logging.getLogger("apprise").removeFilter(self.redacting)

    def run_forever(self) -> None:
        self.start()
        log.info(
            "alerts: watching %s every %.0f s; %d channels (%s)",
            ", ".join(self.labs) or "no source",
            self.config.interval,
            len(self.channels),
            ", ".join(c.label for c in self.channels),
        )
        while not self.stopping.is_set():
            began = time.monotonic()
            self.check()
            self.stopping.wait(max(0.0, self.config.interval - (time.monotonic() - began)))

    def check(self) -> None:
        """One round over every source; one that is away is logged once and tried next time."""
        for source, lab in self.labs.items():
            try:
                self.check_source(source, lab)
            except UNREACHABLE as exc:
                if source not in self.away:
                    log.warning(
                        "alerts: source %s is unreachable (%s); its runs are checked when it is back",
                        source,
                        exc,
                    )
                self.away[source] = str(exc)
                continue
            except Exception:  # a bug or a malformed record: the other sources still get checked
                log.exception("alerts: checking source %s failed", source)
                continue
            if self.away.pop(source, None) is not None:
                log.warning("alerts: source %s is reachable again", source)
        if time.monotonic() >= self._prune_due:
            self._prune_due = time.monotonic() + 3600
            keep_state = max(KEEP_STATE, 2 * self.config.repeat_after)
            self.history.prune(time.time(), keep_state, KEEP_SENT, self.config.channels)
        if time.monotonic() >= self._lab_due:
            self._lab_due = time.monotonic() + self.config.lab.every
            try:
                self.check_lab()
            except Exception:  # the runs' checks go on whatever the lab's state reads as
                log.exception("alerts: checking the lab's health failed")

    # ---- the lab itself ----------------------------------------------------------------------

    def check_lab(self) -> None:
        """The lab's own rules, from labstats.ops.health: a training box's link down (or its
        replica unreachable) too long, the backup or a sync too old, a disk too full, a
        replica's Redis over its memory threshold. Each is a rule of the source it is about
        ("web" for the web box), resolved when it clears."""
        t = self.config.lab
        now = time.time()
        state = health.collect(self.labs, t.status_dir)
        holds: dict[tuple[str, str], tuple[str, str]] = {}  # (source, rule) -> (title, body)
        for name, src in state.sources.items():
            down = not src.reachable or src.link_up is False
            since = self._down_since.setdefault(name, now) if down else self._down_since.pop(name, None)
            down_for = src.link_down_s if src.link_down_s is not None else (now - since if down else 0.0)
            if down and down_for >= t.link_down_after:
                why = plain(src.error, 300) if not src.reachable else "its replication link is down"
                holds[(name, "link down")] = (f"training box {name} unreachable",
                                              f"{why} for {_duration(down_for)}.")  # fmt: skip
            for job, success in src.jobs.items():
                limit = t.sync_max_age if job == "file_send" else t.backup_max_age
                if now - success.ok_at > limit:
                    holds[(name, f"job {plain(job, 64)}")] = (
                        f"{plain(job, 64)} on {name} last succeeded {_duration(now - success.ok_at)} ago",
                        f"Its last success: {plain(success.detail, 300) or 'no detail'}.",
                    )
            for disk in src.box_disks:
                self._disk(holds, name, disk, t.disk_percent)
            if t.redis_memory_bytes and (src.used_memory_bytes or 0) > t.redis_memory_bytes:
                holds[(name, "redis memory")] = (
                    f"Redis of {name} uses {src.used_memory_bytes / 2**30:.1f} GiB",
                    f"Over the threshold of {t.redis_memory_bytes / 2**30:.1f} GiB: archive ended runs.",
                )
        for disk in state.web_disks:
            self._disk(holds, "web", disk, t.disk_percent)
        for job, success in state.stamps.items():
            limit = t.backup_max_age if job == "backup" else t.sync_max_age
            if now - success.ok_at > limit:
                what = "the backup" if job == "backup" else f"{plain(job, 64)}"
                holds[("web", f"job {plain(job, 64)}")] = (
                    f"{what} last succeeded {_duration(now - success.ok_at)} ago",
                    f"Its last success: {plain(success.detail, 300) or 'no detail'}.",
                )
        for (source, rule), (title, body) in holds.items():
            self.fire(source, _LabSubject(source), rule, "error", title, body)
        for source, rule in self.history.sql("SELECT source, rule FROM rule_state WHERE run='' AND active=1"):
            if (source, rule) not in holds:
                self.resolve(source, _LabSubject(source), rule, "back to normal")

    @staticmethod
    def _disk(holds: dict, source: str, disk: health.Disk, percent: float) -> None:
        used = 100 * disk.used_ratio
        if used > percent:
            holds[(source, f"disk {plain(disk.path, 100)}")] = (
                f"disk {plain(disk.path, 100)} on {source} {used:.0f} % full",
                f"{disk.free_bytes / 2**30:.1f} GiB free of {disk.total_bytes / 2**30:.1f} GiB.",
            )

    # ---- one source ------------------------------------------------------------------------

    def check_source(self, source: str, lab: Lab) -> None:
        watched = self.history.watched(source)
        ids = dict.fromkeys([*lab.index.candidates(None, None, run_record.RUNNING), *watched])
        # A run that started and ended between two checks (a crash at start-up) was never
        # seen running: it is taken as watched once, so its end and its alerts are told.
        for run_id in self.ended_unseen(source, lab, ids):
            watched[run_id] = ""
            ids[run_id] = None
        runs = _load(lab, list(ids))
        for run_id in set(watched) - {r.id for r in runs}:  # purged: nothing left to say
            self.history.unwatch(source, run_id)
            self._forget(source, run_id)
        live = [r for r in runs if r.status in (run_record.RUNNING, run_record.STALLED)]
        infos = lab.series_infos(live)
        live_ids = {r.id for r in live}
        for run in runs:
            status = run.status
            if run.id in live_ids:
                if run.id not in watched:
                    self.history.watch(source, run.id)
                self.own_alerts(source, lab, run, watched.get(run.id, ""))
                self.resolve(source, run, CRASHED, "the run was resumed")
                self.stalled_rule(source, run, status == run_record.STALLED)
                self.series_rules(source, lab, run, infos.get(run.id, {}))
            elif run.id in watched:  # it ended since the last check: its last alerts, then its end
                self.own_alerts(source, lab, run, watched[run.id])
                self.ended(source, run, status)
                self.history.unwatch(source, run.id)
                self.history.set_state(source, run.id, ENDED, False, time.time(), None, False)
                self._forget(source, run.id)
            elif status == run_record.CRASHED and run.heartbeat_age < self.config.repeat_after:
                self.ended(source, run, status)  # died before this service first saw it (a restart)

    def ended_unseen(self, source: str, lab: Lab, known: dict[str, None]) -> list[str]:
        """Runs started within repeat_after that ended without this service seeing them end
        (no ENDED mark): one ZRANGEBYSCORE per owner, one HGET of the status per such run."""
        since = time.time() - self.config.repeat_after
        pipe = lab.redis.pipeline(transaction=False)
        groups = lab.index.groups()
        for owner in groups:
            pipe.zrangebyscore(lab.keys.runs_index(owner), since, "+inf")
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
            self.fire(
                source,
                run,
                CRASHED,
                "error",
                f"crashed: {plain(run.name, NAME_CHARS)}",
                f"The run crashed: {plain(run.reason) or 'no reason recorded'}.",
                repeat=False,
            )
        for rule in self._active_rules(source, run.id):
            if rule == STALLED or rule.startswith("rule: "):
                # A crash ends them quietly (its message says what happened); a finish resolves.
                self.resolve(source, run, rule, f"the run {status}", quiet=status == run_record.CRASHED)

    def stalled_rule(self, source: str, run: Run, stalled: bool) -> None:
        if stalled:
            self.fire(
                source,
                run,
                STALLED,
                "warning",
                f"stalled: {plain(run.name, NAME_CHARS)}",
                f"The run stalled: {plain(run.reason)}.",
            )
        else:
            self.resolve(source, run, STALLED, "it logs again")

    def own_alerts(self, source: str, lab: Lab, run: Run, cursor: str) -> None:
        """The run's own alerts (Stats.alert) written since ``cursor`` (the last field sent)."""
        key = lab.keys.run_alerts(run.id)
        size = lab.redis.hlen(key)
        if not size:
            return
        if size > MAX_RUN_ALERTS:
            if (source, run.id) not in self._warned_big:
                log.warning(
                    "alerts: run %s/%s has %d alerts of its own; not read (at most %d)",
                    source,
                    run.id,
                    size,
                    MAX_RUN_ALERTS,
                )
                self._warned_big.add((source, run.id))
            return
        found = sorted(
            (_field_order(f), f.decode("utf-8", "replace"), v) for f, v in lab.redis.hgetall(key).items()
        )
        newest = cursor
        for order, field, raw in found:
            if order is None or (cursor and order <= _field_order(cursor.encode())):
                continue
            alert = _run_alert(raw)
            title = plain(alert["title"], NAME_CHARS)
            self.fire(
                source,
                run,
                f"{RUN_ALERT}: {title}",
                alert["level"],
                f"{title} ({plain(run.name, NAME_CHARS)})",
                plain(alert["text"]),
                event=True,
            )
            newest = field
        if newest != cursor:
            self.history.watch(source, run.id, newest)

    def series_rules(self, source: str, lab: Lab, run: Run, infos: dict[str, dict[str, Any]]) -> None:
        """The first NaN or infinity among the points written since the last check, and the
        user rules on each series' newest point."""
        nonfinite = self.read_new_points(source, lab, run.id, infos)
        if nonfinite:
            lines = [
                f"{plain(name, NAME_CHARS)}: {value} at step {step}" for name, step, value in nonfinite[:10]
            ]
            more = f"\n(and {len(nonfinite) - 10} more series)" if len(nonfinite) > 10 else ""
            self.fire(
                source,
                run,
                NONFINITE,
                "error",
                f"NaN or infinity: {plain(run.name, NAME_CHARS)}",
                "First non-finite values:\n" + "\n".join(lines) + more,
                repeat=False,
            )
        if not self.config.rules:
            return
        names = [run.name, run.annotations.name or run.name]
        tags = sorted(set(run.tags) | set(run.annotations.tags))
        for rule in self.config.rules:
            if not rule.watches(names, tags):
                continue
            point = self.latest.get((source, run.id, rule.condition.metric))
            key = f"rule: {rule.name}"
            if point is not None and rule.condition.holds(*point):
                self.fire(
                    source,
                    run,
                    key,
                    rule.level,
                    f"{plain(rule.name, NAME_CHARS)}: {plain(run.name, NAME_CHARS)}",
                    f"{plain(rule.condition)}: {rule.condition.metric} is {point[1]:g} at step {point[0]}.",
                )
            elif point is not None:
                self.resolve(
                    source,
                    run,
                    key,
                    f"{plain(rule.condition.metric, NAME_CHARS)} is {point[1]:g} at step {point[0]}",
                )

    def read_new_points(self, source: str, lab: Lab, run_id: str, infos: dict[str, dict[str, Any]]) -> list:
        """Read each numeric series' bytes appended since the last check (GETRANGE of its open
        chunk, whole chunks for those begun since); keep each one's newest point (for the user
        rules) and return (series, step, value) of the float series that got a NaN or infinity."""
        plans = []
        pipe = lab.redis.pipeline(transaction=False)
        for name, info in infos.items():
            if "error" in info or info.get("kind") not in chunk.NUMERIC_KINDS or name.startswith("_"):
                continue
            cur = self.cursors.get((source, run_id, name))
            if cur is None or cur.sid != info["sid"]:
                cur = _Cursor(info["sid"], max(0, info["last_chunk"] - FIRST_READ_CHUNKS + 1), 0, b"")
            if cur.chunk > info["last_chunk"]:
                continue
            numbers = list(range(cur.chunk, info["last_chunk"] + 1))
            for n in numbers:
                start = cur.offset if n == cur.chunk else 0
                pipe.getrange(lab.keys.chunk(run_id, info["sid"], n), start, -1)
            plans.append((name, cur, numbers))
        results = iter(pipe.execute()) if plans else iter(())
        bad = []
        for name, cur, numbers in plans:
            first_bad = None
            for n in numbers:
                data = next(results) or b""
                start = cur.offset if n == cur.chunk else 0
                kind = cur.kind if start else data[:1]
                body = data if start else data[1:]
                dtype = chunk.RECORD_DTYPES.get(kind)
                if dtype is None:  # an object chunk (the series' kind changed): nothing to scan
                    cur.chunk, cur.offset, cur.kind = n, start + len(data), kind
                    continue
                count = len(body) // dtype.itemsize
                records = np.frombuffer(body, dtype=dtype, count=count)
                cur.chunk, cur.offset, cur.kind = (
                    n,
                    start + (0 if start else 1) + count * dtype.itemsize,
                    kind,
                )
                if not count:
                    continue
                self.latest[(source, run_id, name)] = (int(records["idx"][-1]), float(records["value"][-1]))
                if kind == chunk.KIND_FLOAT and first_bad is None:
                    where = np.flatnonzero(~np.isfinite(records["value"]))
                    if len(where):
                        first_bad = (int(records["idx"][where[0]]), float(records["value"][where[0]]))
            self.cursors[(source, run_id, name)] = cur
            if first_bad is not None:
                bad.append((name, first_bad[0], _number_text(first_bad[1])))
        return bad

    # ---- the rules' state --------------------------------------------------------------------

    def fire(
        self,
        source: str,
        run: Run,
        rule: str,
        level: str,
        title: str,
        body: str,
        *,
        repeat: bool = True,
        event: bool = False,
    ) -> None:
        """The rule holds for the run: sent unless it was sent within repeat_after (then
        again after it while it still holds, when ``repeat``). An ``event`` (a run's own
        alert) holds no state: sent unless one of that rule was sent within repeat_after."""
        now = time.time()
        state = self.history.state(source, run.id, rule)
        active, since, last_sent, notified = state if state else (0, now, None, 0)
        if event:
            if last_sent is not None and now - last_sent < self.config.repeat_after:
                log.info(
                    "alerts: %s of %s/%s again within %.0f s: not sent",
                    rule,
                    source,
                    run.id,
                    self.config.repeat_after,
                )
                return
            self.send(
                Message(
                    source,
                    run.id,
                    plain(run.name, NAME_CHARS),
                    rule,
                    "alert",
                    level,
                    title,
                    self._body(source, run, body),
                ),
                now,
            )
            self.history.set_state(source, run.id, rule, False, now, now, True)
            return
        if active and not repeat:
            return
        recent = last_sent is not None and now - last_sent < self.config.repeat_after
        if active and recent:
            return
        if not active:
            since, notified = now, 0
        if recent:  # it cleared and came back within the hour: kept quiet, its state is noted
            self.history.set_state(source, run.id, rule, True, since, last_sent, bool(notified))
            return
        kind = "again" if active and notified else "alert"
        self.send(
            Message(
                source,
                run.id,
                plain(run.name, NAME_CHARS),
                rule,
                kind,
                level,
                ("still " if kind == "again" else "") + title,
                self._body(source, run, body),
            ),
            now,
        )
        self.history.set_state(source, run.id, rule, True, since, now, True)

    def resolve(self, source: str, run: Run, rule: str, why: str, *, quiet: bool = False) -> None:
        """The rule no longer holds: "resolved" is sent when its alert was (not when ``quiet``)."""
        state = self.history.state(source, run.id, rule)
        if not state or not state[0]:
            return
        _, since, last_sent, notified = state
        now = time.time()
        self.history.set_state(source, run.id, rule, False, since, last_sent, False)
        if notified and not quiet:
            title = f"resolved: {rule} · {plain(run.name, NAME_CHARS)}"
            body = f"Resolved after {_duration(now - since)}: {plain(why)}."
            self.send(
                Message(
                    source,
                    run.id,
                    plain(run.name, NAME_CHARS),
                    rule,
                    "resolved",
                    "info",
                    title,
                    self._body(source, run, body),
                ),
                now,
            )

    def send(self, message: Message, now: float) -> None:
        self.history.record(message, self.config.channels, now)
        log.info("alerts: %s %s for %s/%s", message.kind, message.rule, message.source, message.run)
        for channel in self.channels:
            channel.wake.set()

    def _body(self, source: str, run: Run, text: str) -> str:
        if not run.id:  # the lab's own rules
            return f"{text}\n\nbox: {source}"
        lines = [
            text,
            "",
            f"run: {plain(run.name, NAME_CHARS)} ({plain(run.id, NAME_CHARS)})",
            f"source: {source}",
        ]
        if run.owner:
            lines.append(f"owner: {run.owner}")
        if self.config.viewer_url:
            from urllib.parse import quote

            lines.append(f"{self.config.viewer_url}/runs/{quote(source, safe='')}/{quote(run.id, safe='')}")
        return "\n".join(lines)

    def _active_rules(self, source: str, run_id: str) -> list[str]:
        return [
            r
            for (r,) in self.history.sql(
                "SELECT rule FROM rule_state WHERE source=? AND run=? AND active=1", (source, run_id)
            )
        ]

    def _forget(self, source: str, run_id: str) -> None:
        for store in (self.cursors, self.latest):
            for key in [k for k in store if k[0] == source and k[1] == run_id]:
                del store[key]


@dataclass
class _LabSubject:
    """What a lab rule is about, where a run rule has its run: no run, the box's name."""

    source: str
    id: str = ""
    owner: None = None

    @property
    def name(self) -> str:
        return self.source


def _load(lab: Lab, ids: list[str]) -> list[Run]:
    pipe = lab.redis.pipeline(transaction=False)
    for run_id in ids:
        pipe.hgetall(lab.keys.run(run_id))
    return [
        Run(lab, run_id, run_record.decode(raw))
        for run_id, raw in zip(ids, pipe.execute(), strict=True)
        if raw
    ]


def _field_order(field: bytes) -> tuple[int, int] | None:
    """A run alert's field "<unix ms>-<n>" as a sortable pair; None when it is not one."""
    ms, _, n = field.partition(b"-")
    return (int(ms), int(n)) if ms.isdigit() and n.isdigit() and len(ms) < 20 and len(n) < 20 else None


def _run_alert(raw: bytes) -> dict[str, str]:
    """A run's own alert as its owner wrote it, read without trusting it."""
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        return {"title": "alert", "text": raw.decode("utf-8", "replace")[:TEXT_CHARS], "level": "warning"}
    level = value.get("level")
    return {
        "title": str(value.get("title") or "alert"),
        "text": str(value.get("text") or ""),
        "level": level if level in alert_rules.LEVELS else "warning",
    }


def _number_text(value: float) -> str:
    return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _duration(seconds: float) -> str:
    s = int(seconds)
    return (
        f"{s // 3600} h {s % 3600 // 60} min"
        if s >= 3600
        else (f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s")
    )


# ---- the command ------------------------------------------------------------------------------


def load_config(path: str) -> Config:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LabstatsError(f"{path}: {exc}") from None
    return alert_rules.load(data, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labstats.ops.alerts", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", help="the service's TOML file (/etc/labstats/alerts.toml)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="check channels and rules (JSON on stdin, or --config) and exit: 0 when all parse",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("apprise").setLevel(logging.WARNING)
    if args.check:
        if args.config:
            try:
                data = tomllib.loads(Path(args.config).read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                print(f"{args.config}: {exc}")
                return 1
        else:
            data = json.load(sys.stdin)
        found = alert_rules.problems(data)
        for problem in found:
            print(problem)
        return 1 if found else 0
    if not args.config:
        parser.error("--config FILE is needed (or --check)")
    try:
        config = load_config(args.config)
    except LabstatsError as exc:
        log.error("%s", exc)
        return 2
    os.umask(0o027)  # its file is read by the viewer's group (the folder's), nobody else
    service = Alerts(config)
    for handler in logging.getLogger().handlers:  # whatever logs a channel's secret, it is hidden
        handler.addFilter(service.redacting)
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    signal.signal(signal.SIGINT, lambda *_: service.stop())
    service.run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
