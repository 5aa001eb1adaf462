"""Key names and naming rules of the store (schema version 2; docs/schema.md has the table).

    keys = Keys("ls")
    keys.run("alice.20261204-101500-3fa2c1")      # ls:run:alice.20261204-101500-3fa2c1
    keys.runs_index("alice"), keys.runs_index(None)  # ls:owner:alice:runs, ls:runs
    keys.annotations(run_id), keys.audit("alice")  # ls:ann:<run id>, ls:audit:alice
    run_owner("alice.20261204-101500-3fa2c1")     # "alice"; None for an unowned run

Every key starts with a prefix (``ls`` by default). Version 2 adds owners: a run logged as
Redis user NAME has the id ``NAME.<id>`` and its own indexes (``ls:owner:NAME:...``), so that
user's ACL may write only its own keys. Runs without an owner (no username, or version-1
data) keep the shared indexes of version 1, read as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEMA_VERSION = 2
DEFAULT_PREFIX = "ls"

# An owner is a Redis username that may own runs: the training users the redis role creates
# (the same pattern it checks). No dot: the first dot of a run id ends its owner.
OWNER_PATTERN = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
NOT_OWNERS = ("default",)  # Redis's own user: a connection without username acts as it

# Internal series: the epoch of update() calls, and the wall-clock time of log()/update()
# calls (unix seconds, at most one per 10 ms), which the viewer's time axes read.
EPOCH_SERIES = "_epoch"
TIME_SERIES = "_time"
# The x axes a chart can have, never charts of their own (_walltime: imports of before).
AXIS_SERIES = frozenset({TIME_SERIES, EPOCH_SERIES, "_walltime"})

MAX_NAME_CHARS = 512


def series_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a series name, or None if it can.

    A series name is shown in pages and travels in URL paths (/api/runs/.../series/NAME),
    so it must survive that round trip: no control characters, and as a path no empty,
    "." or ".." segment (browsers, nginx and Flask would rewrite or refuse those). Any other
    text is fine: "train/loss", "acc@5", "<b>", "λ" (the viewer percent-encodes)."""
    if not isinstance(name, str):
        return f"must be a string, not {type(name).__name__}"
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_CHARS:
        return f"must have at most {MAX_NAME_CHARS} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "must not contain control characters (NUL, newline, tab...)"
    if any("\ud800" <= c <= "\udfff" for c in name):  # os.fsdecode of a non-UTF-8 file name
        return "must be text UTF-8 can hold (it has a lone surrogate, as a non-UTF-8 file name decodes to)"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "must not start or end with '/', hold '//', or have a '.' or '..' part"
    return None


def valid_owner(name: object) -> bool:
    """Whether ``name`` can own runs (see OWNER_PATTERN)."""
    return isinstance(name, str) and name not in NOT_OWNERS and OWNER_PATTERN.match(name) is not None


def run_owner(run_id: str) -> str | None:
    """The owner a run id names ("alice" for ``alice.20261204-101500-3fa2c1``), or None for
    an unowned run. Only the owner's Redis user may write ``ls:run:<owner>.*``, so the id
    (unlike the run's ``owner`` field, which its writer sets) cannot be forged by another."""
    head, dot, _ = run_id.partition(".")
    return head if dot and valid_owner(head) else None


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = DEFAULT_PREFIX

    @property
    def schema(self) -> str:
        return f"{self.prefix}:schema"

    @property
    def runs(self) -> str:  # zset: run id -> start time (unix seconds)
        return f"{self.prefix}:runs"

    @property
    def names(self) -> str:  # hash: run name -> run id
        return f"{self.prefix}:names"

    def status(self, status: str) -> str:  # set of run ids
        return f"{self.prefix}:status:{status}"

    def tag(self, tag: str) -> str:  # set of run ids
        return f"{self.prefix}:tag:{tag}"

    @property
    def owners(self) -> str:  # set of owner names (every training user SADDs its own)
        return f"{self.prefix}:owners"

    def owner_runs(self, owner: str) -> str:  # zset: run id -> start time, one owner's runs
        return f"{self.prefix}:owner:{owner}:runs"

    def owner_status(self, owner: str, status: str) -> str:  # set of one owner's run ids
        return f"{self.prefix}:owner:{owner}:status:{status}"

    def owner_tag(self, owner: str, tag: str) -> str:  # set of one owner's run ids
        return f"{self.prefix}:owner:{owner}:tag:{tag}"

    # The index a run of ``owner`` goes to: its owner's, or the shared one (owner None).
    def runs_index(self, owner: str | None) -> str:
        return self.runs if owner is None else self.owner_runs(owner)

    def status_index(self, owner: str | None, status: str) -> str:
        return self.status(status) if owner is None else self.owner_status(owner, status)

    def tag_index(self, owner: str | None, tag: str) -> str:
        return self.tag(tag) if owner is None else self.owner_tag(owner, tag)

    def run(self, run_id: str) -> str:  # hash: metadata
        return f"{self.prefix}:run:{run_id}"

    def diff(self, run_id: str) -> str:  # string: git diff at start
        return f"{self.prefix}:run:{run_id}:diff"

    def freeze(self, run_id: str) -> str:  # string: pip freeze (or conda list) at start
        return f"{self.prefix}:run:{run_id}:freeze"

    def seq(self, run_id: str) -> str:  # string: last batch number applied
        return f"{self.prefix}:run:{run_id}:seq"

    def series(self, run_id: str) -> str:  # hash: series name -> JSON info
        return f"{self.prefix}:run:{run_id}:series"

    def chunk(self, run_id: str, sid: int, n: int) -> str:
        return f"{self.prefix}:run:{run_id}:s:{sid}:c:{n}"

    def chunk_lo(self, run_id: str, sid: int) -> str:  # zset: chunk number -> lowest idx
        return f"{self.prefix}:run:{run_id}:s:{sid}:lo"

    def chunk_hi(self, run_id: str, sid: int) -> str:  # zset: chunk number -> highest idx
        return f"{self.prefix}:run:{run_id}:s:{sid}:hi"

    def chunk_summary(self, run_id: str, sid: int) -> str:  # hash: chunk number -> SUMMARY
        return f"{self.prefix}:run:{run_id}:s:{sid}:sum"

    def blob(self, run_id: str, n: int) -> str:  # hash: part number -> bytes
        return f"{self.prefix}:run:{run_id}:b:{n}"

    def media(self, run_id: str) -> str:  # hash: media name -> JSON {mid, kind}
        return f"{self.prefix}:run:{run_id}:media"

    def media_records(self, run_id: str, mid: str) -> str:  # hash: "step:item" -> JSON record
        return f"{self.prefix}:run:{run_id}:m:{mid}"

    def media_thumbs(self, run_id: str, mid: str) -> str:  # hash: "step:item" -> thumbnail
        return f"{self.prefix}:run:{run_id}:m:{mid}:t"

    # Annotations (labstats.format.curation): beside the run's keys, not under them, so that
    # the annotator's ACL pattern (ls:ann:*) reaches none of what the run logged.
    def annotations(self, run_id: str) -> str:  # hash: name, project, note, tags, trashed...
        return f"{self.prefix}:ann:{run_id}"

    def audit(self, writer: str) -> str:  # stream: the changes one Redis user made
        return f"{self.prefix}:audit:{writer}"

    @property
    def trash_seen(self) -> str:  # hash: run id -> when the training box's purge first saw it trashed
        return f"{self.prefix}:purge:seen"

    # What is not a run. The box agent (labstats.ops.agent) keeps its box's state beside the
    # runs of the box's master; the web box reads it through replication.
    def box(self, host: str) -> str:  # hash: the box's latest sample (at, interval, state JSON...)
        return f"{self.prefix}:box:{host}"

    def box_history(self, host: str) -> str:  # stream: the box's samples, capped (24 h at 10 s)
        return f"{self.prefix}:box:{host}:history"

    def run_alerts(self, run_id: str) -> str:  # hash: alerts a run raised (Stats.alert), by time
        return f"{self.prefix}:run:{run_id}:alerts"

    @property
    def jobs(self) -> str:  # hash: a training box's job -> JSON {ok_at, ...} of its last success
        return f"{self.prefix}:jobs"
