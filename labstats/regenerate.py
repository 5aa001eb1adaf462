"""Regenerate a run from an empty directory: its code, its packages, its command.

    labstats regenerate RUN DIR          # clone, check out, apply the diff, write requirements.txt
    labstats regenerate RUN DIR --run    # ... and run the recorded command there

The code comes from the recorded remote (or, without one, the recorded repository path), at
the recorded commit, with every uncommitted change the run started with (new untracked files
included). A diff that does not apply is refused with a clear message: nothing runs then.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labstats.config import LabstatsError


@dataclass
class Plan:
    """What regenerates one run, as recorded."""

    run_id: str
    source: str  # remote URL or repository path ("" when the run was not in git)
    commit: str
    dirty: bool
    workdir: str  # where to run, relative to the checkout ("" = its root)
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cwd: str = ""  # where the run started (used when it was not in git)
    no_command: str = ""  # why there is no command to run again ("" when there is one)

    def shell(self, target: str = "DIR") -> str:
        """The same steps as a shell recipe that stops at the first failure."""
        q = shlex.quote
        if self.source:
            lines = [f"# or: labstats regenerate {q(self.run_id)} {q(target)} --run", "set -e"]
        else:
            lines = ["# not started from a git repository: its code was not recorded", "set -e"]
            if self.cwd:
                lines.append(f"cd {q(self.cwd)}")
        if self.source:
            lines += [f"git clone {q(self.source)} {q(target)}", f"cd {q(target)}",
                      f"git checkout --detach {q(self.commit)}"]  # fmt: skip
            if self.dirty:
                lines.append(f"labstats show {q(self.run_id)} --diff | git apply --binary")
            lines.append(f"labstats show {q(self.run_id)} --freeze > requirements.txt")
            lines.append("python -m pip install -r requirements.txt  # in a fresh venv")
        if self.workdir and self.workdir != ".":
            lines.append(f"cd {q(self.workdir)}")
        if self.no_command:
            lines.append(f"# {self.no_command}")
            return "\n".join(lines)
        env = [f"{q(k)}={q(v)}" for k, v in self.env.items()]
        lines.append(" ".join([*(["env", *env] if env else []), *map(q, self.command)]))
        return "\n".join(lines)


def plan(run_id: str, meta: dict[str, Any]) -> Plan:
    recorded = [str(a) for a in meta.get("argv")] if isinstance(meta.get("argv"), list) else []
    argv = recorded or ["python"]
    root = str(meta.get("git_root") or "")
    cwd_in_repo = str(meta.get("cwd_in_repo") or "")
    script_in_repo = str(meta.get("script_in_repo") or "")
    command = ["python", *argv[1:]]
    if root and script_in_repo and len(argv) > 1:
        # The script's own path, as seen from where the command runs in the checkout.
        base = cwd_in_repo or "."
        command[1] = posixpath.relpath(script_in_repo, base)
    env = meta.get("env") if isinstance(meta.get("env"), dict) else {}
    notes = list(meta.get("git_notes") or []) if isinstance(meta.get("git_notes"), list) else []
    if root and not cwd_in_repo:
        notes.append("the run started outside its repository: the command runs from the checkout's root")
    return Plan(
        run_id=run_id,
        source=str(meta.get("git_remote") or root),
        commit=str(meta.get("git_commit") or ""),
        dirty=bool(meta.get("git_dirty")),
        workdir=cwd_in_repo,
        command=command,
        env={str(k): str(v) for k, v in env.items()},
        notes=[str(n) for n in notes],
        cwd=str(meta.get("cwd") or ""),
        no_command=_no_command(recorded),
    )


def _no_command(argv: list[str]) -> str:
    """Why the recorded command line cannot start the run again, or "" when it can."""
    if not argv:
        return "its command line was not recorded: no command to run"
    first = argv[1] if len(argv) > 1 else ""
    if first in ("-c", "-"):
        return f"started with python {first}, whose code is not recorded: no command to run again"
    if "ipykernel" in first:
        return "started from a notebook: run its cells again (no command to run)"
    if not first:
        return "started from an interactive session: no command to run again"
    return ""


def _run(args: list[str], cwd: Path | None = None, stdin: str | None = None) -> None:
    done = subprocess.run(args, cwd=cwd, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        said = done.stderr.strip() or done.stdout.strip()
        raise LabstatsError(f"{' '.join(map(shlex.quote, args))} failed: {said}")


def checkout(p: Plan, diff: str, freeze: str, target: Path) -> Path:
    """Make the checkout in ``target`` (absent or empty); returns where the command runs."""
    if not p.source or not p.commit:
        raise LabstatsError(f"run {p.run_id} was not started from a git repository: nothing to check out")
    if target.exists() and any(target.iterdir()):
        raise LabstatsError(f"{target} is not empty: give an empty or new directory")
    _run(["git", "clone", "--quiet", p.source, str(target)])
    _run(["git", "checkout", "--quiet", "--detach", p.commit], cwd=target)
    if p.dirty:
        if not diff:
            raise LabstatsError(f"run {p.run_id} started with uncommitted changes, but no diff was recorded")
        try:
            _run(["git", "apply", "--check", "--binary", "-"], cwd=target, stdin=diff)
        except LabstatsError as exc:
            raise LabstatsError(f"the recorded diff does not apply to {p.commit[:12]}: {exc}") from None
        _run(["git", "apply", "--binary", "-"], cwd=target, stdin=diff)
    if freeze:
        (target / "requirements.txt").write_text(freeze)
    return target / p.workdir if p.workdir else target


def run_command(p: Plan, where: Path, python: str) -> int:
    env = {**os.environ, **p.env}
    return subprocess.run([python, *p.command[1:]], cwd=where, env=env).returncode
