"""Regenerate a run from an empty directory: its code, its packages, its command.

    labstats regenerate RUN DIR          # clone, check out, apply the diff, write requirements.txt
    labstats regenerate RUN DIR --run    # ... and run the recorded command there

The code comes from the run's code bundle where its file is here (the logger keeps the
commit's history in the artifact store, and the training box pushes it to the web box with the
media: see labstats.capture.code_bundle), else from the recorded remote, else the recorded
repository path; at the recorded commit, with every uncommitted change the run started with
(new untracked files included). A diff that does not apply is refused with a clear message: nothing runs then.

The record is treated as hostile: every training user may rewrite any run's record, diff and
package list (docs/security.md). So:
  - nothing is executed without --run (and --run runs the recorded code: read it first);
  - the remote is never taken as an option (git clone -- REMOTE DIR), the commit must be a
    commit id, and the folder to run in must lie inside the checkout;
  - a diff that makes a symlink pointing out of the checkout is refused before it is
    applied; the tree is checked again after it (links that leave only once resolved, or
    that came with the commit, are removed and the checkout is refused);
  - requirements.txt is opened without following links and must be a regular file;
  - only plain pinned packages reach it (name==version, name[extra]==version, conda's
    name=version=build, comments): options (-i, --index-url, -e, -r, -c, --find-links...),
    URLs, local paths and archives are left out, each named on stderr. Left out rather
    than refused: an ordinary pip freeze has such lines (-e /path of an editable install,
    name @ file:///...), which no other machine could install anyway.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import posixpath
import re
import shlex
import stat
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labstats.config import LabstatsError
from labstats.format.run_record import GIT_MISSING

_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")  # an object id (sha1 or sha256), never an option
_DIGEST = re.compile(r"^[0-9a-f]{64}$")  # a file of the artifact store
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# One line of a package list that pip (or conda) can only read as a pinned package from its
# index: a name, extras, and versions after ==, ===, ~=, >=, <=, !=, <, > (or conda's =).
# No spaces before the version, so no option can follow on the line.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_VERSION = r"[A-Za-z0-9][A-Za-z0-9.+!*_-]*"
_PACKAGE = re.compile(
    rf"^{_NAME}(?:\[{_NAME}(?:,{_NAME})*\])?"
    rf"(?:(?:===|==|~=|>=|<=|!=|<|>){_VERSION}(?:,(?:===|==|~=|>=|<=|!=|<|>){_VERSION})*"
    rf"|={_VERSION}(?:={_VERSION})?)$"
)
# pip reads a requirement that ends like an archive as a local file when one by that name exists.
_ARCHIVE_ENDINGS = (
    ".whl", ".zip", ".tar", ".gz", ".tgz", ".bz2", ".tbz", ".xz", ".txz", ".lz", ".tlz", ".lzma",
)  # fmt: skip


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
    bundle: Path | None = None  # the run's code bundle, where its file is here (cloned first)

    def shell(self, target: str = "DIR") -> str:
        """The same steps as a shell recipe that stops at the first failure."""
        q = shlex.quote
        origin = str(self.bundle) if self.bundle else self.source
        if origin:
            lines = [f"# or: labstats regenerate {q(self.run_id)} {q(target)} --run", "set -e"]
        else:
            lines = ["# not started from a git repository: its code was not recorded"]
            lines += [f"# {note}" for note in self.notes if note.startswith(GIT_MISSING)]
            lines.append("set -e")
            if self.cwd:
                lines.append(f"cd -- {q(self.cwd)}")
        if origin:
            lines += [f"git clone -- {q(origin)} {q(target)}", f"cd -- {q(target)}"]
            if not _COMMIT.match(self.commit):
                lines.append(
                    f"# the recorded commit {self.commit!r} is not a commit id: nothing to check out"
                )
                return "\n".join(lines)
            lines.append(f"git checkout --detach {self.commit}")
            if self.dirty:
                lines.append(f"labstats show {q(self.run_id)} --diff | git apply --binary")
            # labstats regenerate also refuses links that leave DIR; the shell follows them.
            lines.append("test ! -L requirements.txt")
            lines.append(f"labstats show {q(self.run_id)} --freeze --checked > requirements.txt")
            lines.append("python -m pip install -r requirements.txt  # in a fresh venv")
        if self.workdir and self.workdir != ".":
            if _outside(self.workdir):
                lines.append(f"# the recorded folder {self.workdir!r} is outside the checkout: not used")
                return "\n".join(lines)
            lines.append(f"cd -- {q(self.workdir)}")
        if self.no_command:
            lines.append(f"# {self.no_command}")
            return "\n".join(lines)
        env = [f"{q(k)}={q(v)}" for k, v in self.env.items() if _ENV_NAME.match(k)]
        lines.append(" ".join([*(["env", *env] if env else []), *map(q, self.command)]))
        return "\n".join(lines)


def bundle_digest(meta: dict[str, Any]) -> str | None:
    """The run's code bundle's digest, if its record names one that is a digest."""
    digest = meta.get("code_bundle")
    return digest if isinstance(digest, str) and _DIGEST.match(digest) else None


def plan(run_id: str, meta: dict[str, Any], bundle: Path | None = None) -> Plan:
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
    # `env NAME=VALUE cmd`: a name that is not one could be taken as an option of env (-S...).
    notes += [
        f"environment variable {k!r} left out: not a variable name"
        for k in env
        if not _ENV_NAME.match(str(k))
    ]
    env = {k: v for k, v in env.items() if _ENV_NAME.match(str(k))}
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
        no_command=_no_command(recorded, imported=bool(meta.get("imported_from"))),
        bundle=bundle if bundle is not None and _COMMIT.match(str(meta.get("git_commit") or "")) else None,
    )


def _no_command(argv: list[str], imported: bool = False) -> str:
    """Why the recorded command line cannot start the run again, or "" when it can."""
    if imported:  # its command line is the import's: running it imports nothing new
        return "imported from TensorBoard event files: no training command was recorded to run again"
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


def _outside(relative: str) -> bool:
    """Whether a recorded relative path names a place outside the folder it is relative to."""
    norm = posixpath.normpath(relative)
    return posixpath.isabs(norm) or norm == ".." or norm.startswith("../")


def _run(args: list[str], cwd: Path | None = None, stdin: str | None = None, env: dict | None = None) -> str:
    try:
        done = subprocess.run(args, cwd=cwd, input=stdin, capture_output=True, text=True, env=env)
    except FileNotFoundError:
        raise LabstatsError(f"{args[0]} is not installed here: regenerating needs it") from None
    if done.returncode != 0:
        said = done.stderr.strip() or done.stdout.strip()
        raise LabstatsError(f"{' '.join(map(shlex.quote, args))} failed: {said}")
    return done.stdout


def checked_freeze(freeze: str) -> tuple[str, list[str]]:
    """The package list with only lines pip can read as a pinned package from its index (and
    comments), and the lines left out. Lines are split as pip splits them (any line break)."""
    kept, left_out = [], []
    for line in freeze.splitlines():
        text = line.strip()
        comment = not text or text.startswith("#")
        if comment or (_PACKAGE.match(text) and not text.lower().endswith(_ARCHIVE_ENDINGS)):
            kept.append(text)
        else:
            left_out.append(line)
    return "".join(f"{line}\n" for line in kept), left_out


def write_inside(folder: Path, name: str, text: str) -> None:
    """Write ``folder/name`` as a regular file, never through a link (O_NOFOLLOW) nor into a
    FIFO or device (O_NONBLOCK, then checked): the checkout's contents are the record's."""
    where = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, 0o644, dir_fd=where)
        except OSError as exc:
            said = f"{folder / name} is not a regular file (a link?): not written ({exc.strerror})"
            raise LabstatsError(said) from None
        with os.fdopen(fd, "w") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise LabstatsError(f"{folder / name} is not a regular file: not written")
            f.truncate(0)
            f.write(text)
    finally:
        os.close(where)


def _leaves(link: str, target: str) -> bool:
    """Whether a symlink at ``link`` (relative to the checkout) to ``target`` names a place
    outside the checkout, as written (links through links are checked on the tree)."""
    return posixpath.isabs(target) or _outside(posixpath.join(posixpath.dirname(link), target))


def _links_after_diff(target: Path, diff: str) -> list[str]:
    """Every symlink the checkout will hold once the diff is applied whose target leaves it,
    as ``path -> target``. Found by git itself (the diff applied to a scratch index), so the
    diff is read exactly as `git apply` reads it; the work tree is not touched."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        _run(["git", "read-tree", "HEAD"], cwd=target, env=env)
        _run(["git", "apply", "--cached", "--binary", "-"], cwd=target, stdin=diff, env=env)
        listing = _run(["git", "ls-files", "--stage", "-z"], cwd=target, env=env)
    bad = []
    for entry in filter(None, listing.split("\0")):
        info, _, path = entry.partition("\t")
        mode, blob, _ = info.split(" ", 2)
        if mode == "120000":
            link = _run(["git", "cat-file", "blob", blob], cwd=target)
            if _leaves(path, link):
                bad.append(f"{path} -> {link} leaves the checkout")
    return bad


def _links_leaving(target: Path) -> list[tuple[Path, str]]:
    """Symlinks in the checkout that resolve to a place outside it (through other links too)."""
    root = target.resolve()
    found = []
    for folder, dirs, files in os.walk(target):
        dirs[:] = [d for d in dirs if d != ".git" or Path(folder) != target]
        for name in dirs + files:
            path = Path(folder, name)
            if path.is_symlink():
                resolved = Path(os.path.realpath(path))
                if resolved != root and root not in resolved.parents:
                    found.append((path, os.readlink(path)))
    return found


def checkout(p: Plan, diff: str, freeze: str, target: Path, warn=None) -> Path:
    """Make the checkout in ``target`` (absent or empty); returns where the command runs.
    ``warn`` is told each package line left out of requirements.txt (see the module doc)."""
    origin = str(p.bundle) if p.bundle else p.source
    if not origin or not p.commit:
        why = "".join(f" ({note})" for note in p.notes if note.startswith(GIT_MISSING))
        raise LabstatsError(
            f"run {p.run_id} was not started from a git repository{why}: nothing to check out"
        )
    if not _COMMIT.match(p.commit):
        raise LabstatsError(f"run {p.run_id}: the recorded commit {p.commit!r} is not a commit id")
    if p.workdir and _outside(p.workdir):
        raise LabstatsError(f"run {p.run_id}: the recorded folder {p.workdir!r} is outside the checkout")
    if target.exists() and any(target.iterdir()):
        raise LabstatsError(f"{target} is not empty: give an empty or new directory")
    # `--`: a remote starting with "-" is a (failing) repository name, never an option.
    # ext:: runs commands: refused whatever the user's git config allows.
    _run(["git", "-c", "protocol.ext.allow=never", "clone", "--quiet", "--", origin, str(target)])
    _run(["git", "checkout", "--quiet", "--detach", p.commit], cwd=target)
    if p.dirty:
        if not diff:
            raise LabstatsError(f"run {p.run_id} started with uncommitted changes, but no diff was recorded")
        try:
            _run(["git", "apply", "--check", "--binary", "-"], cwd=target, stdin=diff)
            leaving = _links_after_diff(target, diff)
        except LabstatsError as exc:
            raise LabstatsError(f"the recorded diff does not apply to {p.commit[:12]}: {exc}") from None
        if leaving:
            raise LabstatsError(
                f"run {p.run_id}: the recorded diff is not applied, it makes links out of the checkout: "
                + ", ".join(leaving)
            )
        _run(["git", "apply", "--binary", "-"], cwd=target, stdin=diff)
    # Again on the tree as it is: the commit's own links, and links through links.
    leaving_tree = _links_leaving(target)
    if leaving_tree:
        for path, _ in leaving_tree:
            path.unlink()  # nothing may write through them later
        raise LabstatsError(
            f"run {p.run_id}: the checkout held symlinks that leave it (removed): "
            + ", ".join(
                f"{path.relative_to(target)} -> {link} leaves the checkout" for path, link in leaving_tree
            )
        )
    if freeze:
        text, left_out = checked_freeze(freeze)
        for line in left_out:
            if warn is not None:
                warn(f"left out of requirements.txt: {line!r} (only name==version lines are kept)")
        write_inside(target, "requirements.txt", text)
    return target / p.workdir if p.workdir else target


def run_command(p: Plan, where: Path, python: str) -> int:
    env = {**os.environ, **p.env}
    return subprocess.run([python, *p.command[1:]], cwd=where, env=env).returncode


def make_env(checkout_dir: Path, python: str = "python3") -> str:
    """A fresh venv in ``checkout_dir/.venv`` with the run's recorded packages (its
    requirements.txt, as checkout wrote it) installed by pip from this box's package index
    (pip's own configuration: a lab's mirror or PyPI). Returns the venv's python. A package
    that cannot be installed stops it with pip's own words: nothing runs then."""
    venv = checkout_dir / ".venv"
    if venv.exists():
        raise LabstatsError(f"{venv} exists already: give an empty or new directory")
    _run([python, "-m", "venv", str(venv)])
    env_python = str(venv / "bin" / "python")
    requirements = checkout_dir / "requirements.txt"
    pip = [env_python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if requirements.is_file() and requirements.read_text().strip():
        try:
            _run([*pip, "-r", str(requirements)])
        except LabstatsError as exc:
            raise LabstatsError(f"the run's packages did not install in {venv}: {exc}") from None
    # labstats itself: a box installs it from the lab's own wheel, which a package list names
    # as a file (left out of requirements.txt), so the venv gets the one installed here (with
    # what it needs that the list did not pin; what the list pinned stays as it is).
    here = _labstats_here()
    if here is not None:
        try:
            _run([*pip, here])
        except LabstatsError as exc:
            raise LabstatsError(f"labstats did not install in {venv}: {exc}") from None
    return env_python


def _labstats_here() -> str | None:
    """Where the labstats running now comes from: its source folder (a development install),
    or the wheel pip recorded installing it from; None if neither is known (then the venv has
    no labstats)."""
    source = Path(__file__).resolve().parents[2]  # labstats/read/regenerate.py: a source checkout?
    if (source / "pyproject.toml").is_file() and (source / "labstats" / "__init__.py").is_file():
        return str(source)
    try:
        text = importlib.metadata.distribution("labstats").read_text("direct_url.json")
        url = json.loads(text or "{}").get("url", "")
    except (importlib.metadata.PackageNotFoundError, ValueError, AttributeError):
        return None
    path = urllib.parse.unquote(urllib.parse.urlparse(url).path) if url.startswith("file://") else ""
    return path if path and Path(path).exists() else None
