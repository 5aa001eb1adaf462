"""When a finding becomes a message: each (source, run, rule) is sent at most once per
``repeat_after`` while it holds ("still ..." after that), and "resolved" when it clears if its
alert was sent. The state of each rule is kept in the history, so a restart repeats nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import quote

from labstats.ops.alert_history import History
from labstats.ops.alert_messages import NAME_CHARS, Message, duration, plain
from labstats.ops.alert_rules import Config
from labstats.reader import Run

log = logging.getLogger("labstats.alerts")


class Notifier:
    """The rules' state and the messages it makes; ``wake`` tells the channels one is queued."""

    def __init__(self, config: Config, history: History, wake: Callable[[], None]) -> None:
        self.config, self.history, self.wake = config, history, wake

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
                    self.body(source, run, body),
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
                self.body(source, run, body),
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
            body = f"Resolved after {duration(now - since)}: {plain(why)}."
            self.send(
                Message(
                    source,
                    run.id,
                    plain(run.name, NAME_CHARS),
                    rule,
                    "resolved",
                    "info",
                    title,
                    self.body(source, run, body),
                ),
                now,
            )

    def send(self, message: Message, now: float) -> None:
        self.history.record(message, self.config.channels, now)
        log.info("alerts: %s %s for %s/%s", message.kind, message.rule, message.source, message.run)
        self.wake()

    def body(self, source: str, run: Run, text: str) -> str:
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
            lines.append(f"{self.config.viewer_url}/runs/{quote(source, safe='')}/{quote(run.id, safe='')}")
        return "\n".join(lines)

    def active_rules(self, source: str, run_id: str) -> list[str]:
        return [
            r
            for (r,) in self.history.sql(
                "SELECT rule FROM rule_state WHERE source=? AND run=? AND active=1", (source, run_id)
            )
        ]
