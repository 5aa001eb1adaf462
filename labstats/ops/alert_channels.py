"""The alerts' channels: each Apprise URL (mail, ntfy, Slack, Matrix, a JSON webhook) gets a
thread of its own that sends what the outbox holds for it, in order, and retries one that is
down with growing pauses while the checks and the other channels go on. Channel URLs hold
passwords and tokens: they are only ever shown or logged masked (:func:`channel_label`,
:func:`redact`, :class:`Redacting` on every log handler)."""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from typing import Any

from labstats.ops.alert_history import History, channel_id

log = logging.getLogger("labstats.alerts")

BACKOFF_FIRST, BACKOFF_MAX = 5.0, 600.0
DELIVER_TIMEOUT = 120.0  # seconds one try may take (a slow mail server's whole session)


def secrets_of(url: str) -> list[str]:
    """The parts of a channel URL that may be secret: its password, and every path part or
    query value of 6 characters or more (tokens: slack://T/B/C, ntfy's tokens, webhook keys).
    Hidden wherever the service logs."""
    parts = urllib.parse.urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [p for p in parts.path.split("/") if len(p) >= 6]
    found += [v for _, v in urllib.parse.parse_qsl(parts.query) if len(v) >= 6]
    if parts.username and len(parts.username) >= 20:  # a token given as the user part
        found.append(parts.username)
    if _token_host(parts.hostname):  # a webhook's id or a workspace token given as the host
        found.append(parts.hostname)
    return sorted({urllib.parse.unquote(s) for s in found} | set(found), key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def channel_label(url: str) -> str:
    """A channel as it may be shown and logged: Apprise's own private form (secrets masked),
    else its scheme and host only."""
    plugin = _instantiate(url)
    if plugin is not None:
        return redact(plugin.url(privacy=True).split("?", 1)[0], secrets_of(url))
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{'***' if _token_host(host) else host}/…"


def _token_host(host: str | None) -> bool:
    """Whether a URL's host part is more likely a token than a machine's name: 6 characters or
    more, no dot, not localhost (Slack's T..., Discord's webhook id)."""
    return bool(host) and len(host) >= 6 and "." not in host and host != "localhost"


def _instantiate(url: str):
    import apprise  # the alerts extra: only the service and its check need it

    try:
        return apprise.Apprise.instantiate(url, suppress_exceptions=True)
    except Exception:  # a plugin that raises on odd input is a URL it cannot parse
        return None


def channel_problem(url: Any, n: int) -> str | None:
    """Why channel number ``n`` (from 1) is not an Apprise URL that Apprise can use, or None.
    The message names it without its secrets."""
    if not isinstance(url, str) or "://" not in url:
        return f"channel {n} is not an Apprise URL (scheme://...)"
    if _instantiate(url) is None:
        return (
            f"channel {n} ({channel_label(url)}): Apprise cannot parse this URL (see its wiki for the scheme)"
        )
    return None


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
        self._try: threading.Thread | None = None  # the last try to send (see deliver)

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
        """None when the channel took it, else why not (masked). A try that has no answer
        within DELIVER_TIMEOUT (a receiver that answers a byte at a time: no read ever times
        out) is a failure, retried as any other; the next try waits until that one ends."""
        if self._try is not None and self._try.is_alive():
            return f"still waiting on an earlier try (no answer within {DELIVER_TIMEOUT:.0f} s)"
        outcome: list[str | None] = []

        def attempt() -> None:
            try:
                outcome.append(self.notify(title, body, level))
            except Exception as exc:  # whatever it is, it is this try's failure
                outcome.append(redact(f"{type(exc).__name__}: {exc}", self.secrets)[:300])

        self._try = threading.Thread(target=attempt, name=f"{self.name}-try", daemon=True)
        self._try.start()
        self._try.join(DELIVER_TIMEOUT)
        return outcome[0] if outcome else f"no answer within {DELIVER_TIMEOUT:.0f} s"

    def notify(self, title: str, body: str, level: str) -> str | None:
        """One try through Apprise: None when the channel took it, else why not (masked)."""
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


class Redacting(logging.Filter):
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
