"""The lab's own rules, from labstats.ops.health: a training box's link down (or its replica
unreachable) too long, the backup or a sync too old, a disk too full, a replica's Redis over
its memory threshold. Each is a rule of the source it is about ("web" for the web box),
resolved when it clears."""

from __future__ import annotations

import time
from dataclasses import dataclass

from labstats.ops import health
from labstats.ops.alert_history import History
from labstats.ops.alert_messages import duration, one_line, plain
from labstats.ops.alert_notifier import Notifier
from labstats.ops.alert_rules import Config
from labstats.reader import Lab


@dataclass
class LabSubject:
    """What a lab rule is about, where a run rule has its run: no run, the box's name."""

    source: str
    id: str = ""
    owner: None = None

    @property
    def name(self) -> str:
        return self.source


class LabChecks:
    """The lab's rules over every source and the web box itself."""

    def __init__(self, config: Config, history: History, notifier: Notifier, labs: dict[str, Lab]) -> None:
        self.config, self.history, self.notifier, self.labs = config, history, notifier, labs
        self._down_since: dict[str, float] = {}  # source -> when its link was first seen down

    def check(self) -> None:
        """One round of the lab's rules (a few commands per source, no scan over series)."""
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
                                              f"{why} for {duration(down_for)}.")  # fmt: skip
            for job, success in src.jobs.items():
                limit = t.sync_max_age if job == "file_send" else t.backup_max_age
                if now - success.ok_at > limit:
                    holds[(name, f"job {one_line(job, 64)}")] = (
                        f"{one_line(job, 64)} on {name} last succeeded {duration(now - success.ok_at)} ago",
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
                what = "the backup" if job == "backup" else f"{one_line(job, 64)}"
                holds[("web", f"job {one_line(job, 64)}")] = (
                    f"{what} last succeeded {duration(now - success.ok_at)} ago",
                    f"Its last success: {plain(success.detail, 300) or 'no detail'}.",
                )
        for (source, rule), (title, body) in holds.items():
            self.notifier.fire(source, LabSubject(source), rule, "error", title, body)
        for source, rule in self.history.sql("SELECT source, rule FROM rule_state WHERE run='' AND active=1"):
            if (source, rule) not in holds:
                self.notifier.resolve(source, LabSubject(source), rule, "back to normal")

    @staticmethod
    def _disk(holds: dict, source: str, disk: health.Disk, percent: float) -> None:
        used = 100 * disk.used_ratio
        if used > percent:
            holds[(source, f"disk {one_line(disk.path, 100)}")] = (
                f"disk {one_line(disk.path, 100)} on {source} {used:.0f} % full",
                f"{disk.free_bytes / 2**30:.1f} GiB free of {disk.total_bytes / 2**30:.1f} GiB.",
            )
