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

Where things are: this module is the service's loop and its command;
:mod:`~labstats.ops.alert_run_checks` and :mod:`~labstats.ops.alert_lab_checks` find what
holds, :mod:`~labstats.ops.alert_notifier` decides what is sent,
:mod:`~labstats.ops.alert_history` keeps it (SQLite), :mod:`~labstats.ops.alert_channels`
delivers it, :mod:`~labstats.ops.alert_rules` reads the config.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import tomllib
from pathlib import Path

from labstats.config import LabstatsError, client
from labstats.ops import alert_rules
from labstats.ops.alert_channels import Channel, Redacting, secrets_of
from labstats.ops.alert_history import KEEP_SENT, KEEP_STATE, History
from labstats.ops.alert_lab_checks import LabChecks
from labstats.ops.alert_notifier import Notifier
from labstats.ops.alert_rules import Config
from labstats.ops.alert_run_checks import RunChecks
from labstats.reader import UNREACHABLE, Lab

log = logging.getLogger("labstats.alerts")


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
        self.redacting = Redacting(secrets)
        logging.getLogger("apprise").addFilter(self.redacting)
        self.notifier = Notifier(config, self.history, self.wake_channels)
        self.runs = RunChecks(config, self.history, self.notifier)
        self.lab = LabChecks(config, self.history, self.notifier, self.labs)
        self.away: dict[str, str] = {}
        self._lab_due = self._prune_due = 0.0

    def start(self) -> None:
        for channel in self.channels:
            channel.start()

    def wake_channels(self) -> None:
        for channel in self.channels:
            channel.wake.set()

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
            try:
                self.check()
            except Exception:  # its own file busy, a bug: logged, and the next check tries again
                log.exception("alerts: a check failed")
            self.stopping.wait(max(0.0, self.config.interval - (time.monotonic() - began)))

    def check(self) -> None:
        """One round over every source; one that is away is logged once and tried next time."""
        with self.history.batch():
            try:
                self._check_all()
            finally:
                self.notifier.end_check()

    def _check_all(self) -> None:
        for source, lab in self.labs.items():
            try:
                self.runs.check_source(source, lab)
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
                self.lab.check()
            except Exception:  # the runs' checks go on whatever the lab's state reads as
                log.exception("alerts: checking the lab's health failed")

    # ---- the lab itself ----------------------------------------------------------------------


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
