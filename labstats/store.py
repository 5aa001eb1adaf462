"""The artifact store: files named by their content, shared by media and large tensors.

``<root>/<first two hex digits of the SHA-256>/<SHA-256>``: the same content is stored once,
and a file is complete or absent (written under a temporary name, then renamed), so the
training box's push to the web box and its check of each copy never see half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path

SYSTEM_ARTIFACT_DIR = Path("/var/lib/labstats/artifacts")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def default_artifact_dir() -> Path:
    """``$LABSTATS_ARTIFACT_DIR``, else the training box's shared store when this user may
    write there, else ~/.local/share/labstats/artifacts (a pip install on a laptop)."""
    if os.environ.get("LABSTATS_ARTIFACT_DIR"):
        return Path(os.environ["LABSTATS_ARTIFACT_DIR"])
    if SYSTEM_ARTIFACT_DIR.is_dir() and os.access(SYSTEM_ARTIFACT_DIR, os.W_OK | os.X_OK):
        return SYSTEM_ARTIFACT_DIR
    return Path.home() / ".local" / "share" / "labstats" / "artifacts"


class ArtifactStore:
    """Files by content (see the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        """Where a digest's file is. Only a 64-hex-digit digest names a file: no path from
        a user ever reaches the file system."""
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise ValueError(f"not an artifact digest: {digest!r}")
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        """The file's bytes, checked against its name: a damaged copy is never returned
        (ValueError); a missing one raises FileNotFoundError."""
        data = self.path(digest).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"the stored copy of {digest} is damaged (its SHA-256 differs)")
        return data

    def put(self, *parts: bytes | memoryview) -> str:
        """Store the concatenation of ``parts`` (written without joining them: a tensor's
        memory goes to the file as it is); returns its digest. SHA-256 and the writes let
        other threads run (a pool of writers hashes and writes several files at once)."""
        hasher = hashlib.sha256()
        for part in parts:
            hasher.update(part)
        digest = hasher.hexdigest()
        target = self.path(digest)
        if target.is_file():
            return digest
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            # A shared store (the training box's, group-writable) stays writable for the
            # other users of the group: the new folder gets the store's own mode.
            with contextlib.suppress(OSError):
                os.chmod(target.parent, self.root.stat().st_mode & 0o7777)
        fd, temp = tempfile.mkstemp(prefix=".part-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    out.write(part)
            os.chmod(temp, 0o644)  # readers on this box and the sync read it
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return digest
