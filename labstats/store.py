"""The artifact store: files named by their content, shared by media and large tensors.

    store = ArtifactStore("/var/lib/labstats/artifacts")
    digest = store.put(b"bytes")            # written once, read-only (0444)
    store.read(digest)                      # small files: the bytes, SHA-256 checked
    with store.open_checked(digest) as f:   # any size: an open file whose SHA-256 was checked
        for block in iter(lambda: f.read(1 << 20), b""): ...

``<root>/<first two hex digits of the SHA-256>/<SHA-256>``: the same content is stored once,
and a file is complete or absent (written under a temporary name, then renamed), so the
training box's push to the web box and its check of each copy never see half a file. A
stored file never changes, so it is written read-only: a user of a shared store cannot
rewrite another's file in place (the store's folders, made by the role, keep others from
deleting or replacing it).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat as statmod
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

SYSTEM_ARTIFACT_DIR = Path("/var/lib/labstats/artifacts")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
# Hashing reads this much at a time: memory stays at one block whatever the file's size
# (a 600 MiB checkpoint read whole took a viewer worker to 1.5 GB), and 1 MiB blocks hash at
# the full SHA-256 rate.
HASH_BLOCK = 1 << 20
# Files whose SHA-256 was checked, by (device, inode, size, mtime): a download, or a Range
# request of a big file, hashes it once, not on every request. 4,096 entries of ~150 bytes.
CHECKED_FILES = 4096


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

    def open_checked(self, digest: str) -> BinaryIO:
        """The file, open for reading at its start, its content checked against its name
        by reading it in blocks of HASH_BLOCK (bounded memory, any size). A file checked
        before and unchanged since (same device, inode, size and mtime: stored files are
        read-only and replaced only by a rename) is not hashed again. A damaged copy raises
        ValueError (the file is closed); a missing one FileNotFoundError, a symlink or
        anything not a regular file another OSError."""
        # Never blocks on a FIFO nor follows a symlink planted under a digest's name (a
        # push that kept links or special files); anything but a regular file is refused.
        fd = os.open(self.path(digest), os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        file = os.fdopen(fd, "rb")
        try:
            stat = os.fstat(fd)
            if not statmod.S_ISREG(stat.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(self.path(digest)))
            key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if _checked.get(key) != digest:
                hasher = hashlib.sha256()
                while block := file.read(HASH_BLOCK):
                    hasher.update(block)
                if hasher.hexdigest() != digest:
                    raise ValueError(f"the stored copy of {digest} is damaged (its SHA-256 differs)")
                _checked.put(key, digest)
                file.seek(0)
        except BaseException:
            file.close()
            raise
        return file

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
            # Read-only for everyone (readers on this box and the sync read it): content
            # named by its SHA-256 never changes, and no user may rewrite another's file.
            os.chmod(temp, 0o444)
            try:
                os.replace(temp, target)
            except PermissionError:
                # The training box's store is sticky: another user stored the same content
                # since the check above, and their file may not be replaced. It is the same.
                if not target.is_file():
                    raise
                Path(temp).unlink(missing_ok=True)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return digest


class _CheckedFiles:
    """A small LRU map, shared by the threads of a process: file identity → digest."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> str | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            return self._items.get(key)

    def put(self, key: tuple, digest: str) -> None:
        with self._lock:
            self._items[key] = digest
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_checked = _CheckedFiles(CHECKED_FILES)
