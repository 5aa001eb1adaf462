"""What regenerates a run, gathered once at start: the code (repository, remote, commit and
every uncommitted change, new untracked source files included), the environment (pip freeze,
Python and its path, allowlisted variables) and the command (argv, working directory
relative to the repository root)."""

from __future__ import annotations

import fnmatch
import getpass
import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from labstats.format.run_record import GIT_MISSING

# Packages whose versions are shown with a run (the full freeze is kept too).
KEY_PACKAGES = (
    "labstats", "numpy", "torch", "torchvision", "tensorflow", "jax", "jaxlib",
    "scipy", "pandas", "scikit-learn", "transformers", "lightning", "redis",
)  # fmt: skip
MAX_DIFF_BYTES = 1 << 20  # the whole recorded diff, untracked files included; past it: cut, and said
MAX_UNTRACKED_FILE = 256 << 10  # an untracked file larger than this is not recorded (said)
# Environment variables recorded when set (a run's behaviour may depend on them), besides
# those named in $LABSTATS_ENV_ALLOWLIST (comma-separated, * wildcards allowed).
ENV_ALLOWLIST = (
    "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "CUBLAS_WORKSPACE_CONFIG", "TF_DETERMINISTIC_OPS", "TORCH_*", "XLA_FLAGS", "PYTHONPATH",
)  # fmt: skip
# Never recorded, whatever the allowlist says.
ENV_SECRET_PATTERNS = ("*KEY*", "*TOKEN*", "*PASSWORD*", "*SECRET*", "*CREDENTIAL*", "*AUTH*")


def _git(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, timeout=10, text=True, errors="replace",
            env={**os.environ, **env} if env else None,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _is_text(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError:
        return False
    return b"\0" not in head


def working_tree_diff(root: Path) -> tuple[str, list[str]]:
    """The diff from HEAD to the work tree, the untracked, not ignored text files (a module
    the script imports may be one) included as new files, and what was left out.

    Three git calls whatever the number of files: the untracked files are marked
    intent-to-add in a copy of the index (the real index is never touched), so one
    `git diff` shows them as new files."""
    listing = _git(["ls-files", "--others", "--exclude-standard", "-z"], root) or ""
    chosen, skipped = [], []
    for rel in sorted(p for p in listing.split("\0") if p):
        path = root / rel
        if path.is_symlink() or not path.is_file():
            continue
        if path.stat().st_size > MAX_UNTRACKED_FILE or not _is_text(path):
            skipped.append(rel)
        else:
            chosen.append(rel)
    if not chosen:
        return _git(["diff", "--binary", "HEAD"], root) or "", skipped
    index = Path(root, (_git(["rev-parse", "--git-path", "index"], root) or "").strip())
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "index"
        if index.is_file():
            shutil.copyfile(index, copy)
        env = {"GIT_INDEX_FILE": str(copy)}
        _git(["add", "--intent-to-add", "--", *chosen], root, env)
        return _git(["diff", "--binary", "HEAD"], root, env) or "", skipped


def git_state(where: Path) -> dict[str, Any]:
    """Repository root and remote, commit, branch, dirty flag and the full diff from the
    commit to the working tree (untracked text files as new files), if ``where`` is in git."""
    if shutil.which("git") is None:
        # Said, not silently taken for "not in a repository": the recipe then tells why.
        start = where.resolve()
        if any((folder / ".git").exists() for folder in (start, *start.parents)):
            note = f"{GIT_MISSING}{socket.gethostname()}: the code was not recorded"
            return {"git_notes": [note]}
        return {}
    root_out = _git(["rev-parse", "--show-toplevel"], where)
    commit = _git(["rev-parse", "HEAD"], where)
    if not root_out or not commit:
        return {}
    root = Path(root_out.strip())
    remote = ""
    for name in (_git(["remote"], root) or "").split():
        remote = (_git(["remote", "get-url", name], root) or "").strip()
        if name == "origin" or remote:
            break
    diff, skipped = working_tree_diff(root)
    notes = [f"untracked file not recorded (binary or over {MAX_UNTRACKED_FILE} bytes): {p}" for p in skipped]
    if len(diff.encode()) > MAX_DIFF_BYTES:
        diff = diff.encode()[:MAX_DIFF_BYTES].decode("utf-8", "ignore")
        notes.append(f"diff cut at {MAX_DIFF_BYTES} bytes: the run cannot be regenerated exactly")
    return {
        "git_root": str(root),
        "git_remote": remote,
        "git_commit": commit.strip(),
        "git_branch": (_git(["rev-parse", "--abbrev-ref", "HEAD"], root) or "").strip(),
        "git_dirty": bool(diff),
        "git_diff": diff,
        "git_notes": notes,
    }


def package_versions() -> dict[str, str]:
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def freeze() -> str:
    """What is installed, as the tool in use writes it: conda's list in a conda env (it
    covers non-Python packages), else pip freeze (uv's venvs have no pip: uv pip freeze)."""
    commands = []
    if os.environ.get("CONDA_PREFIX") and os.environ.get("CONDA_EXE"):
        commands.append([os.environ["CONDA_EXE"], "list", "--export"])
    commands.append([sys.executable, "-m", "pip", "freeze", "--all"])
    commands.append(["uv", "pip", "freeze", "--python", sys.executable])
    # At the lowest CPU priority: it runs beside the first steps of the training, which
    # must not wait for it (docs/benchmarks.md: a short loop ran 1.46-1.74x slower otherwise).
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    for command in commands:
        try:
            out = subprocess.run([*nice, *command], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout
    # No tool answered: what importlib sees.
    dists = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}
    return "".join(f"{n}=={v}\n" for n, v in sorted(dists.items(), key=lambda kv: str(kv[0]).lower()))


def environment(allow: tuple[str, ...] = ENV_ALLOWLIST) -> dict[str, str]:
    extra = tuple(p.strip() for p in os.environ.get("LABSTATS_ENV_ALLOWLIST", "").split(",") if p.strip())
    chosen = {}
    for name, value in os.environ.items():
        upper = name.upper()
        if any(fnmatch.fnmatchcase(upper, p) for p in ENV_SECRET_PATTERNS):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in (*allow, *extra)):
            chosen[name] = value
    return dict(sorted(chosen.items()))


def collect(capture_git: bool = True, capture_freeze: bool = True) -> dict[str, Any]:
    main = sys.modules.get("__main__")
    script = Path(getattr(main, "__file__", "") or ".").resolve()
    where = script.parent if script.is_file() else Path.cwd()
    meta: dict[str, Any] = {
        "argv": [sys.executable, *sys.argv],
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "pid": os.getpid(),
        "python": platform.python_version(),
        "python_path": sys.executable,
        "platform": platform.platform(),
        "packages": package_versions(),
        "env": environment(),
    }
    if script.is_file():
        meta["script"] = str(script)
    if capture_git:
        meta.update(git_state(where))
        root = meta.get("git_root")
        if root:
            meta["cwd_in_repo"] = _relative(Path.cwd(), Path(root))
            if script.is_file():
                meta["script_in_repo"] = _relative(script, Path(root))
    if capture_freeze:
        meta["freeze"] = freeze()
    return meta


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, or "" when it is outside it."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return ""
