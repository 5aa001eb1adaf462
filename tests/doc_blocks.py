"""The commands and code examples of README.md and docs/*.md, and how each one is run.

Every fenced block carries a marker on the line before its fence:

    <!-- run: python NAME -->      run by tests/unit/test_docs.py against a real redis-server,
                                   after the setup of that NAME (the names the example assumes)
    <!-- run: shell NAME -->       shell commands run by tests/unit/test_docs.py as written,
                                   in a folder prepared for NAME, with the venv's labstats
    <!-- run: box GROUP NAME -->   shell commands run by tests/infra/test_documented.py on a
                                   box of the inventory group (Molecule's boxes and `make lab`'s)
    <!-- run: make -->             each `make TARGET` line: CI runs the target (see test_docs.py)
    <!-- run: vars -->             inventory variables: each is a role default with that value
    <!-- run: no: REASON -->       not run, and why (a diagram, a recovery that destroys data...)

A block without a marker fails the unit tests, so a new example is run, or says why not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
KINDS = ("python", "shell", "box", "make", "vars", "no")

_MARKER = re.compile(r"^<!-- run: (?P<kind>\w+)(?::)?\s*(?P<args>.*?)\s*-->$")
_FENCE = re.compile(r"^(?P<indent> {0,3})```(?P<lang>[\w-]*)\s*$")  # also inside a list item


@dataclass(frozen=True)
class Block:
    document: str
    line: int  # the fence's line, 1-based
    lang: str
    kind: str | None  # None: no marker
    args: tuple[str, ...]
    text: str

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def name(self) -> str:
        return self.args[-1] if self.args else ""


def blocks(documents: tuple[str, ...] = DOCUMENTS) -> list[Block]:
    found = []
    for document in documents:
        lines = (ROOT / document).read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            fence = _FENCE.match(lines[i])
            if not fence:
                i += 1
                continue
            indent = len(fence["indent"])
            end = next((j for j in range(i + 1, len(lines)) if lines[j][indent:].startswith("```")), None)
            if end is None:
                raise ValueError(f"{document}:{i + 1}: a fence that never closes")
            marker = _MARKER.match(lines[i - 1].strip()) if i else None
            kind, args = (marker["kind"], tuple(marker["args"].split())) if marker else (None, ())
            text = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
            found.append(Block(document, i + 1, fence["lang"], kind, args, text))
            i = end + 1
    return found


def of_kind(kind: str, *, group: str | None = None) -> list[Block]:
    return [b for b in blocks() if b.kind == kind and (group is None or b.args[0] == group)]


def commands(block: Block) -> list[str]:
    """A shell block's commands: continuation lines joined, comments and blank lines dropped
    (a here-document stays whole: the block runs as one script where it has one)."""
    joined, current = [], ""
    for raw in block.text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line and not current:
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        joined.append((current + line).strip())
        current = ""
    return [c for c in joined if c]
