"""The alerts service's config, read and checked: its channels (Apprise URLs), its user rules
and its thresholds. The role runs :func:`check` on the box before the service changes, so a
rule or a channel that does not parse fails the converge with a message naming it.

    rule = parse_condition("val/loss > 2 after step 1000")
    rule.holds(1500, 2.3)                 # True: over 2, and after step 1000
    parse_condition('"my metric" <= 0.1') # a name with spaces, quoted

A condition is ``METRIC OP NUMBER [after step N]``: METRIC a series name (in double quotes
when it has spaces or quotes, JSON-style escapes), OP one of ``> >= < <= == !=``, NUMBER a
decimal number (``1e-3``, ``-2``, ``inf``). A tiny parser of its own: never eval.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from labstats.config import LabstatsError, parse_sources
from labstats.ops.alert_channels import channel_problem

OPERATORS = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
LEVELS = ("info", "warning", "error")
MAX_RULE_CHARS = 600

_NAME = r'(?P<name>"(?:[^"\\]|\\.)*"|[^\s"<>=!]+)'
_NUMBER = r"(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf)"
_CONDITION = re.compile(
    rf"^\s*{_NAME}\s*(?P<op>>=|<=|==|!=|>|<)\s*{_NUMBER}\s*(?:after\s+step\s+(?P<step>\d+)\s*)?$"
)


@dataclass(frozen=True)
class Condition:
    """``metric op threshold``, counted only for points after step ``after``."""

    metric: str
    op: str
    threshold: float
    after: int | None = None

    def holds(self, step: int, value: Any) -> bool:
        """Whether the point (step, value) meets the condition (a NaN never does)."""
        if self.after is not None and step <= self.after:
            return False
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            return False
        return not math.isnan(number) and OPERATORS[self.op](number, self.threshold)

    def __str__(self) -> str:
        name = self.metric if re.fullmatch(r'[^\s"<>=!]+', self.metric) else json.dumps(self.metric)
        after = f" after step {self.after}" if self.after is not None else ""
        return f"{name} {self.op} {self.threshold:g}{after}"


def parse_condition(text: str) -> Condition:
    """The condition ``text`` says; a ValueError that says what is wrong when it does not parse."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a rule needs a condition such as 'val/loss > 2 after step 1000'")
    if len(text) > MAX_RULE_CHARS:
        raise ValueError(f"a condition has at most {MAX_RULE_CHARS} characters")
    found = _CONDITION.match(text)
    if found is None:
        raise ValueError(
            f"{text!r} is not METRIC OP NUMBER [after step N] (OP one of {' '.join(OPERATORS)}; "
            'a metric with spaces in double quotes), e.g. "val/loss > 2 after step 1000"'
        )
    name = found["name"]
    if name.startswith('"'):
        try:
            name = json.loads(name)
        except ValueError:
            raise ValueError(f"{text!r}: the quoted metric name is not valid") from None
    step = found["step"]
    return Condition(name, found["op"], float(found["number"]), int(step) if step is not None else None)


@dataclass(frozen=True)
class UserRule:
    """A rule from the inventory: its name, its condition, which runs it watches (a glob over
    the run's name or display name, and a tag; both optional) and the level it is sent at."""

    name: str
    condition: Condition
    runs: str = "*"
    tag: str | None = None
    level: str = "warning"

    def watches(self, names: list[str], tags: list[str]) -> bool:
        if self.tag is not None and self.tag not in tags:
            return False
        return any(fnmatch.fnmatchcase(n, self.runs) for n in names)


def parse_rule(entry: Any, where: str = "rule") -> UserRule:
    """One [[rules]] entry: {name, when, runs?, tag?, level?}."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: a rule is a table with name and when")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 100 or not name.isprintable():
        raise ValueError(f"{where}: a rule needs a name (1 to 100 printable characters)")
    unknown = set(entry) - {"name", "when", "runs", "tag", "level"}
    if unknown:
        raise ValueError(
            f"rule {name!r}: unknown keys {', '.join(sorted(unknown))} (name, when, runs, tag, level)"
        )
    try:
        condition = parse_condition(entry.get("when", ""))
    except ValueError as exc:
        raise ValueError(f"rule {name!r}: {exc}") from None
    runs, tag, level = entry.get("runs", "*"), entry.get("tag"), entry.get("level", "warning")
    if not isinstance(runs, str) or not runs:
        raise ValueError(f"rule {name!r}: runs is a glob over run names, e.g. 'resnet-*'")
    if tag is not None and (not isinstance(tag, str) or not tag):
        raise ValueError(f"rule {name!r}: tag is one tag's name")
    if level not in LEVELS:
        raise ValueError(f"rule {name!r}: level is one of {', '.join(LEVELS)}")
    return UserRule(name.strip(), condition, runs, tag, level)


# ---- the whole config ----------------------------------------------------------------------


@dataclass
class LabThresholds:
    """When the lab's own state is worth an alert (labstats.ops.health's figures)."""

    link_down_after: float = 300.0  # a training box's replication link down this long
    backup_max_age: float = 26 * 3600.0  # the last successful backup at most this old
    sync_max_age: float = 2 * 3600.0  # artifact and archive pushes
    disk_percent: float = 90.0  # any disk of any box
    redis_memory_bytes: float = 0.0  # a replica's used memory (0: not checked)
    every: float = 15.0  # seconds between the lab checks (a few commands per source)
    status_dir: str = "/var/lib/labstats/status"


@dataclass
class Config:
    channels: list[str]
    rules: list[UserRule]
    sources: dict[str, Any]  # name -> labstats.config.Settings
    interval: float = 15.0
    repeat_after: float = 3600.0
    stall_after: float = 120.0
    stale_after: float = 60.0
    state_file: str = "/var/lib/labstats-alerts/alerts.sqlite"
    viewer_url: str = ""
    retry_for: float = 24 * 3600.0  # a channel that is down: its alerts are retried this long
    lab: LabThresholds = field(default_factory=LabThresholds)


NUMBERS = ("interval", "repeat_after", "stall_after", "stale_after", "retry_for")


def problems(data: dict[str, Any]) -> list[str]:
    """Everything wrong with a config (channels, rules, numbers), each naming what it is about
    and never a secret; [] when it is fine."""
    found = []
    channels = data.get("channels", [])
    if not isinstance(channels, list):
        return ["channels is a list of Apprise URLs"]
    found += [p for n, url in enumerate(channels, 1) if (p := channel_problem(url, n))]
    names: set[str] = set()
    rules = data.get("rules", [])
    for n, entry in enumerate(rules if isinstance(rules, list) else [rules], 1):
        try:
            rule = parse_rule(entry, f"rule {n}")
        except ValueError as exc:
            found.append(str(exc))
            continue
        if rule.name in names:
            found.append(f"rule {rule.name!r}: two rules have this name")
        names.add(rule.name)
    for key in NUMBERS:
        value = data.get(key)
        if value is not None and (
            not isinstance(value, int | float) or isinstance(value, bool) or value <= 0
        ):
            found.append(f"{key} must be a number of seconds over 0")
    if isinstance(data.get("interval"), int | float) and data["interval"] > 15:
        found.append("interval: rules are checked at least every 15 s")
    lab = data.get("lab", {})
    if not isinstance(lab, dict):
        found.append("lab is a table of thresholds")
    for key, value in lab.items() if isinstance(lab, dict) else []:
        if key not in LabThresholds.__dataclass_fields__:
            found.append(f"lab.{key}: unknown threshold")
        elif key == "redis_memory_bytes" and value == 0:
            continue
        elif key == "status_dir" and not isinstance(value, str):
            found.append("lab.status_dir must be a folder's path")
        elif key != "status_dir" and (
            not isinstance(value, int | float) or isinstance(value, bool) or value <= 0
        ):
            found.append(f"lab.{key} must be a number over 0")
    return found


def load(data: dict[str, Any], path: str = "alerts config") -> Config:
    """The config a parsed TOML file (or the role's JSON) gives; LabstatsError naming every problem."""
    found = problems(data)
    if found:
        raise LabstatsError(f"{path}: " + "; ".join(found))
    rules = data.get("rules", [])
    return Config(
        channels=list(data.get("channels", [])),
        rules=[parse_rule(entry) for entry in (rules if isinstance(rules, list) else [rules])],
        sources=dict(parse_sources(data, path)),
        **{k: float(data[k]) for k in NUMBERS if k in data},
        state_file=str(data.get("state_file", Config.state_file)),
        viewer_url=str(data.get("viewer_url", "")).rstrip("/"),
        lab=LabThresholds(**data.get("lab", {})),
    )
