"""When a finding becomes a message: each (source, run, rule) is sent at most once per
``repeat_after`` while it holds ("still ..." after that), and "resolved" when it clears if its
alert was sent. The state of each rule is kept in the history, so a restart repeats nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import quote

from labstats.ops.alert_history import History
from labstats.ops.alert_messages import NAME_CHARS, Message, duration, one_line, plain
from labstats.ops.alert_rules import Config
from labstats.reader import Run

log = logging.getLogger("labstats.alerts")

MAX_MESSAGES_PER_CHECK = 20  # beyond it, one check's messages go to the channels as one summary
SUMMARY_LINES = 30  # the titles a summary names
LEVEL_ORDER = {"info": 0, "warning": 1, "error": 2}


class Notifier:
    """The rules' state and the messages it makes; ``wake`` tells the channels one is queued."""

    def __init__(self, config: Config, history: History, wake: Callable[[], None]) -> None:
        self.config, self.history, self.wake = config, history, wake
        self.begin_check()

    def begin_check(self) -> None:
        """A check begins: its first MAX_MESSAGES_PER_CHECK messages go to the channels each."""
        self.sent_in_check = 0
        self.held: list[Message] = []  # the first SUMMARY_LINES of those beyond
        self.held_count = 0
        self.held_level = "info"

    def end_check(self) -> None:
        """A check ends: what it found beyond MAX_MESSAGES_PER_CHECK (a flood: thousands of
        runs crashing at once, a NaN everywhere) goes to the channels as one summary; each of
        them is in the history (the viewer's alerts page) all the same."""
        if self.held_count:
            lines = [f"{m.title} ({m.source})" for m in self.held]
            more = self.held_count - len(lines)
            if more:
                lines.append(f"… and {more} more")
            where = f"\n\nAll of them: {self.config.viewer_url}/alerts" if self.config.viewer_url else ""
            sources = ", ".join(sorted({m.source for m in self.held}))
            summary = Message(
                sources[:NAME_CHARS],
                "",
                "",
                "summary",
                "alert",
                self.held_level,
                f"and {self.held_count} more alerts",
                f"This check found {self.sent_in_check + self.held_count} alerts; "
                f"the first {self.sent_in_check} were sent each, these are one message:\n"
                + "\n".join(lines)
                + where,
            )
            self.history.record(summary, self.config.channels, time.time())
            log.warning("alerts: %d alerts in one check: sent as one summary", self.held_count)
            self.wake()
        self.begin_check()

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
            self.send(source, run, rule, "alert", level, title, body, now)
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
        self.send(source, run, rule, kind, level, ("still " if kind == "again" else "") + title, body, now)
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
            title = f"resolved: {rule} · {one_line(run.name)}"
            body = f"Resolved after {duration(now - since)}: {plain(why)}."
            self.send(source, run, rule, "resolved", "info", title, body, now)

    def send(
        self, source: str, run: Run, rule: str, kind: str, level: str, title: str, text: str, now: float
    ) -> None:
        """Keep the message and queue it for every channel."""
        body = self.body(source, run, text)
        message = Message(source, run.id, one_line(run.name), rule, kind, level, title, body)
        if self.sent_in_check >= MAX_MESSAGES_PER_CHECK:  # a flood: kept, told in the summary
            self.history.record(message, [], now)
            if len(self.held) < SUMMARY_LINES:
                self.held.append(message)
            self.held_count += 1
            self.held_level = max(self.held_level, level, key=lambda x: LEVEL_ORDER.get(x, 1))
            return
        self.sent_in_check += 1
        self.history.record(message, self.config.channels, now)
        log.info("alerts: %s %s for %s/%s", message.kind, message.rule, message.source, message.run)
        self.wake()

    def body(self, source: str, run: Run, text: str) -> str:
        if not run.id:  # the lab's own rules
            return f"{text}\n\nbox: {source}"
        lines = [
            text,
            "",
            f"run: {one_line(run.name)} ({one_line(run.id)})",
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
