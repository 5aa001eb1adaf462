"""What the benchmarks share: `--quick` (a smoke size: CI runs every benchmark so, to prove it
runs) and `--publish`, which writes the benchmark's table into docs/benchmarks.md, and its
summary into README.md, between its markers, headed by the command, the commit, the date and
the machine it came from. A figure in the docs is then always one a benchmark printed.

    <!-- bench:NAME -->
    ...replaced on --publish...
    <!-- /bench:NAME -->

As a command, it publishes a table read from stdin (for a benchmark that runs on another
box): `... | python benchmarks/report.py NAME "make bench-replication"`.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs/benchmarks.md"
README = ROOT / "README.md"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a smoke size: seconds, figures mean little")
    parser.add_argument("--publish", action="store_true", help="write the table into docs/benchmarks.md")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table, columns padded to their widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    return [line.format(*header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *(line.format(*map(str, r)) for r in rows)]  # fmt: skip


def _commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short=10", "HEAD") or "unknown"
    # Dirty only when what is measured changed (docs being edited meanwhile do not count).
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "labstats", "benchmarks")
    return commit + (" with uncommitted changes" if dirty else "")


def _redis_version() -> str:
    binary = shutil.which("redis-server")
    if not binary:
        return "no redis-server"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"v=(\S+)", out)
    return f"Redis {found[1]}" if found else "Redis ?"


def provenance(command: str, commit: str | None = None, baseline: str | None = None) -> str:
    """Where a table came from. ``commit``: the commit measured when it is not this checkout's
    work tree; ``baseline``: the commit measured beside it (--baseline)."""
    against = f", against commit {baseline} measured in the same run" if baseline else ""
    return (f"Made by `{command}` at commit {commit or _commit()}{against} on {time.strftime('%Y-%m-%d')}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, {_redis_version()}.")  # fmt: skip


def _replace(path: Path, name: str, lines: list[str]) -> None:
    text = path.read_text(encoding="utf-8")
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    pattern = re.compile(re.escape(start) + r"\n.*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path.name} has no {start} ... {end} section to write")
    path.write_text(pattern.sub(lambda _: "\n".join([start, *lines, end]), text, count=1), encoding="utf-8")


def emit(
    args: argparse.Namespace,
    name: str,
    lines: list[str],
    summary: str | None = None,
    commit: str | None = None,
    baseline: str | None = None,
) -> None:
    """Print the benchmark's table; with --publish, write it (and the README's summary line),
    headed by the commits measured (see provenance)."""  # fmt: skip
    print("\n".join(lines))
    if summary:
        summary_lines = textwrap.wrap(summary, width=95, initial_indent="- ", subsequent_indent="  ")
        print("\n".join(summary_lines))
    if not getattr(args, "publish", False):
        return
    if args.quick:
        raise SystemExit("--publish writes figures for the docs: not from a --quick run")
    argv = [a for a in sys.argv if a != "--publish"]
    command = shlex.join(["python", os.path.relpath(argv[0], ROOT), *argv[1:]])
    _replace(DOCS, name, [provenance(command, commit, baseline), "", *lines])
    if summary:
        _replace(README, name, summary_lines)
    print(f"published to docs/benchmarks.md{' and README.md' if summary else ''} ({name})")


def main() -> None:
    parser = argparse.ArgumentParser(description="publish a table read from stdin")
    parser.add_argument("name")
    parser.add_argument("command")
    args = parser.parse_args()
    lines = sys.stdin.read().rstrip("\n").splitlines()
    _replace(DOCS, args.name, [provenance(args.command), "", *lines])


if __name__ == "__main__":
    main()
