"""Annotations of a run and the audit trail of their changes, as stored (docs/schema.md).

    ls:ann:<run id>   hash: name, project, note, tags (JSON list), starred "1", protected "1",
                      trashed (unix time), trashed_by, updated (unix time), updated_by
    ls:audit:<writer> stream, one per Redis user that writes annotations: who, when, run,
                      action (change|trash|restore|refused|purge), changes (JSON {field: [before,
                      after]}), via (viewer|api|cli), what (a refused attempt, in words)

A run's owner may write its own runs' annotation hashes, so decoding trusts nothing: a field
that is not what it should be reads as empty. What a person enters is checked before it is
stored (``text_problem``, ``tags_problem``): a clear refusal, never a silent cut.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from labstats.format.run_record import number

MAX_NAME_CHARS = 200  # display name and project
MAX_TAG_CHARS = 64
MAX_TAGS = 100
MAX_NOTE_BYTES = 64 * 1024  # of UTF-8
MAX_WHAT_CHARS = 200  # a refused attempt's description

TEXT_FIELDS = ("name", "project", "note")
FLAG_FIELDS = ("starred", "protected")
ACTIONS = ("change", "trash", "restore", "refused", "purge")  # purge: the archiver's (labstats.ops.purge)
VIAS = ("viewer", "api", "cli")
ANNOTATOR = "annotator"  # the viewer's Redis user on the masters
# Writers besides the training users: the viewer's, the archiver (purges), and a store's
# default user (no ACL: a laptop). The first and last say who acted; the ACL cannot check it.
OTHER_WRITERS = (ANNOTATOR, "archiver", "default")
CLAIMING_WRITERS = (ANNOTATOR, "default")


@dataclass(frozen=True)
class Annotations:
    """What people said about a run after it was logged. Text fields are "" when unset;
    ``tags`` are the run's logged tags until someone changes them, then the changed list."""

    name: str = ""
    project: str = ""
    note: str = ""
    tags: tuple[str, ...] = ()
    starred: bool = False
    protected: bool = False
    trashed: float | None = None  # unix time it went to the trash; None if it is not there
    trashed_by: str = ""
    updated: float | None = None
    updated_by: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON for the API (tags as a list)."""
        out = asdict(self)
        out["tags"] = list(self.tags)
        return out


def _control(c: str) -> bool:
    return ord(c) < 32 or 127 <= ord(c) < 160 or "\ud800" <= c <= "\udfff"


def text_problem(field: str, value: object) -> str | None:
    """Why ``value`` cannot be stored as the display name, project or note, or None."""
    if not isinstance(value, str):
        return f"the {field} must be text, not {type(value).__name__}"
    if field == "note":
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_NOTE_BYTES:
            return f"the note has {size} bytes; at most {MAX_NOTE_BYTES} (64 KiB) are kept"
        if any(_control(c) and c not in "\n\t" for c in value):
            return "the note must not contain control characters (newline and tab are fine)"
        return None
    if len(value) > MAX_NAME_CHARS:
        return f"the {field} has {len(value)} characters; at most {MAX_NAME_CHARS}"
    if any(_control(c) for c in value):
        return f"the {field} must not contain control characters (newline, tab, NUL...)"
    return None


def tag_problem(tag: object) -> str | None:
    """Why ``tag`` cannot be a tag, or None."""
    if not isinstance(tag, str):
        return f"a tag must be text, not {type(tag).__name__}"
    if not tag.strip():
        return "a tag must not be empty"
    if len(tag) > MAX_TAG_CHARS:
        return f"the tag {tag[:20]!r}... has {len(tag)} characters; at most {MAX_TAG_CHARS}"
    if any(_control(c) for c in tag):
        return f"the tag {tag!r} must not contain control characters"
    return None


def tags_problem(tags: tuple[str, ...]) -> str | None:
    """Why a run cannot have these tags, or None."""
    for tag in tags:
        problem = tag_problem(tag)
        if problem:
            return problem
    if len(tags) > MAX_TAGS:
        return f"a run may have at most {MAX_TAGS} tags ({len(tags)} asked)"
    return None


def clean_text(field: str, value: str) -> str:
    """What is stored of an entered text: a name or project without the blanks around it, a
    note with Windows line ends as plain newlines."""
    return value.replace("\r\n", "\n") if field == "note" else value.strip()


def decode_tags(raw: Any) -> tuple[str, ...] | None:
    """A stored tags field (JSON list of strings) → the tags that are tags; None when it is
    not a list at all."""
    try:
        found = json.loads(raw)
    except (TypeError, ValueError, RecursionError):
        return None
    if not isinstance(found, list):
        return None
    return tuple(dict.fromkeys(t for t in found if tag_problem(t) is None))[:MAX_TAGS]


def decode(raw: dict[bytes, bytes], logged_tags: bytes | None = None) -> Annotations:
    """Annotations from the hash as read (HGETALL) and the run record's own ``tags`` field
    (the tags it was logged with, used while the hash has none)."""
    fields = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in raw.items()}
    found: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        value = fields.get(name, "")
        found[name] = value if "\ufffd" not in value and text_problem(name, value) is None else ""
    for name in ("trashed_by", "updated_by"):
        value = fields.get(name, "")
        found[name] = value if text_problem("name", value) is None else ""
    for name in FLAG_FIELDS:
        found[name] = fields.get(name) == "1"
    for name in ("trashed", "updated"):
        found[name] = number(fields[name]) if name in fields else None
    if "tags" in fields:
        found["tags"] = decode_tags(fields["tags"]) or ()
    else:
        found["tags"] = decode_tags(logged_tags) or ()
    return Annotations(**found)


def encode_tags(tags: tuple[str, ...]) -> str:
    return json.dumps(list(tags), ensure_ascii=False)


def encode_time(ts: float) -> str:
    return f"{ts:.3f}"


def encode_audit(
    *, who: str, when: float, run: str, action: str, changes: dict[str, list[Any]], via: str, what: str = ""
) -> dict[str, str]:
    """The fields of one audit entry (XADD)."""
    entry = {
        "who": who,
        "when": encode_time(when),
        "run": run,
        "action": action,
        "changes": json.dumps(changes, ensure_ascii=False),
        "via": via,
    }
    if what:
        entry["what"] = what[:MAX_WHAT_CHARS]
    return entry


def decode_audit(writer: str, entry_id: bytes | str, raw: dict[bytes, bytes]) -> dict[str, Any]:
    """One audit entry as a dict: id, writer (the Redis user whose stream holds it: only that
    user may append there), who, when, run, action, changes, via, what. A training user's own
    stream names that user as ``who`` whatever the entry claims; the annotator's names the
    viewer's user (the web box vouches for it), a store without users whoever said so. Fields
    that are not what they should be read as empty."""
    eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    fields = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in raw.items()}
    try:
        server_ms = int(eid.split("-", 1)[0])
    except ValueError:
        server_ms = 0
    try:
        changes = json.loads(fields.get("changes", "{}"))
    except (ValueError, RecursionError):
        changes = {}
    if not isinstance(changes, dict):
        changes = {}
    changes = {str(k): v for k, v in changes.items() if isinstance(v, list) and len(v) == 2}
    action = fields.get("action", "")
    via = fields.get("via", "")
    return {
        "id": eid,
        "writer": writer,
        "who": fields.get("who", "")[:MAX_NAME_CHARS] if writer in CLAIMING_WRITERS else writer,
        "when": number(fields.get("when", "")) or server_ms / 1000,
        "run": fields.get("run", "")[: MAX_NAME_CHARS * 4],
        "action": action if action in ACTIONS else "",
        "changes": changes,
        "via": via if via in VIAS else "",
        "what": fields.get("what", "")[:MAX_WHAT_CHARS],
    }
