"""A run's code as a git bundle, so that it can be regenerated where its repository is not.

A run records its repository's remote (if any), its path and commit, and the uncommitted
diff. A repository without a remote exists only on the training box, so a web box (or a
colleague) could not check it out. The logger therefore keeps a bundle of the commit's
history (``git bundle create``: one file that ``git clone`` reads like a remote) in the
artifact store, named by its SHA-256, which the training box's push ships to the web box
with the media. ``labstats regenerate`` clones from it where the file is.

    digest, note = keep(store, root, commit)   # stored (or found stored): its digest, else a note
    made = make(root, commit, max_bytes)       # Bundle(data, note): data None and a note if not made

One bundle per commit and user: a marker in the user's cache names the stored file, so the
next run of the same commit adds nothing. The bundle is made on the logger's background
thread (a large history takes seconds), never on the training thread.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from labstats.store import ArtifactStore

# Over this, the history is not kept (the run says so): a repository holding data or
# checkpoints would fill the store and the push. Stats(code_bundle_bytes=...) sets it.
DEFAULT_MAX_BYTES = 64 << 20
TIMEOUT_S = 60
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Bundle:
    data: bytes | None  # the bundle's bytes; None when none was made
    note: str = ""  # why none was made ("" when one was)


def make(root: str | os.PathLike, commit: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Bundle:
    """A bundle of ``root``'s HEAD, which must still be ``commit`` (the run's recorded one: a
    checkout between the two is seen and no bundle is made). Never raises."""
    if max_bytes <= 0:
        return Bundle(None, "code bundle turned off (code_bundle_bytes=0)")
    if not _COMMIT.match(commit):
        return Bundle(None, f"no code bundle: {commit!r} is not a commit id")
    with tempfile.TemporaryDirectory(prefix="labstats-bundle-") as scratch:
        path = Path(scratch, "code.bundle")
        try:
            # HEAD: git bundles name refs, never a bare commit id; checked against the commit below.
            subprocess.run(
                ["git", "bundle", "create", "--quiet", str(path), "HEAD"],
                cwd=root, capture_output=True, check=True, timeout=TIMEOUT_S,
            )  # fmt: skip
            heads = subprocess.run(
                ["git", "bundle", "list-heads", str(path)],
                cwd=root, capture_output=True, check=True, timeout=TIMEOUT_S, text=True,
            ).stdout.split()  # fmt: skip
        except FileNotFoundError:
            return Bundle(None, "no code bundle: git is not installed")
        except subprocess.TimeoutExpired:
            return Bundle(None, f"no code bundle: git bundle took over {TIMEOUT_S} s")
        except subprocess.CalledProcessError as exc:
            said = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
            return Bundle(None, f"no code bundle: git bundle failed ({said[-1] if said else exc.returncode})")
        if commit not in heads:
            return Bundle(None, "no code bundle: HEAD moved away from the run's commit before it was made")
        size = path.stat().st_size
        if size > max_bytes:
            return Bundle(
                None,
                f"no code bundle: the repository's history is {size / 2**20:.1f} MiB, over the "
                f"{max_bytes / 2**20:.1f} MiB cap (Stats(code_bundle_bytes=...))",
            )
        return Bundle(path.read_bytes())


def _marker(commit: str, cache: Path | None) -> Path:
    base = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labstats"
    return base / "code-bundles" / commit


def known(commit: str, cache: Path | None = None) -> str | None:
    """The digest of this commit's bundle stored earlier by this user, if the marker says so."""
    try:
        text = _marker(commit, cache).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _DIGEST.match(text) else None


def remember(commit: str, digest: str, cache: Path | None = None) -> None:
    """Note that this commit's bundle is stored as ``digest`` (best effort)."""
    marker = _marker(commit, cache)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(digest + "\n")
    except OSError:
        pass  # a read-only home: the next run makes the bundle again, which costs only time


def keep(
    store: ArtifactStore,
    root: str | os.PathLike,
    commit: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    cache: Path | None = None,
) -> tuple[str | None, str]:
    """The digest of ``commit``'s bundle in ``store`` (made and stored now, or found there from
    an earlier run of this user), or None and why not. Never raises."""
    digest = known(commit, cache)
    if digest is not None and max_bytes > 0 and store.has(digest):
        return digest, ""
    made = make(root, commit, max_bytes)
    if made.data is None:
        return None, made.note
    try:
        digest = store.put(made.data)
    except OSError as exc:
        return None, f"no code bundle: the artifact store refused it ({exc.strerror or exc})"
    remember(commit, digest, cache)
    return digest, ""
