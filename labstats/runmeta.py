"""What regenerates a run: command, code version, environment. Gathered once at start."""

from __future__ import annotations

import getpass
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

# Packages whose versions matter for reproducing a training run, recorded when installed.
KEY_PACKAGES = (
    "labstats", "numpy", "torch", "torchvision", "tensorflow", "jax", "jaxlib",
    "scipy", "pandas", "scikit-learn", "transformers", "lightning", "redis",
)  # fmt: skip
MAX_DIFF_BYTES = 1 << 20  # a bigger dirty diff is cut (and the cut is said)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, timeout=5, check=True, text=True, errors="replace"
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_state(cwd: Path) -> dict[str, Any]:
    """Commit, branch, dirty flag and diff against HEAD, if ``cwd`` is inside a git work tree."""
    commit = _git(["rev-parse", "HEAD"], cwd)
    if not commit:
        return {}
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd) or ""
    diff = (_git(["diff", "HEAD"], cwd) or "") if status.strip() else ""
    if len(diff) > MAX_DIFF_BYTES:
        diff = diff[:MAX_DIFF_BYTES] + f"\n[labstats: diff cut at {MAX_DIFF_BYTES} bytes]\n"
    return {
        "git_commit": commit.strip(),
        "git_branch": (_git(["rev-parse", "--abbrev-ref", "HEAD"], cwd) or "").strip(),
        "git_dirty": bool(status.strip()),
        "git_diff": diff,
    }


def package_versions() -> dict[str, str]:
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def collect(capture_git: bool = True) -> dict[str, Any]:
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
        "platform": platform.platform(),
        "packages": package_versions(),
    }
    if capture_git:
        meta.update(git_state(where))
    return meta
