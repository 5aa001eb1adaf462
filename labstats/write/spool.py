"""Append-only spool of command batches, for when Redis cannot be reached.

A batch is the exact list of Redis commands the writer would have sent, numbered. Frames are
length-prefixed and checksummed, so a frame torn by a killed process is detected and dropped
(everything before it replays). Replaying is idempotent: each batch also sets the run's
``seq`` key inside its transaction, and batches at or below the stored number are skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

Command = tuple[bytes, ...]

log = logging.getLogger("labstats")
SUFFIX = ".spool"  # <run id>.spool

_MAGIC = b"LSB1"
_HEADER = struct.Struct("<4sQII")  # magic, batch number, payload length, crc32 of payload
_U32 = struct.Struct("<I")


def pack_batch(commands: list[Command]) -> bytes:
    out = bytearray(_U32.pack(len(commands)))
    for command in commands:
        out += _U32.pack(len(command))
        for arg in command:
            out += _U32.pack(len(arg))
            out += arg
    return bytes(out)


def unpack_batch(payload: bytes) -> list[Command]:
    view = memoryview(payload)
    (n,) = _U32.unpack_from(view, 0)
    pos = 4
    commands = []
    for _ in range(n):
        (nargs,) = _U32.unpack_from(view, pos)
        pos += 4
        args = []
        for _ in range(nargs):
            (size,) = _U32.unpack_from(view, pos)
            pos += 4
            args.append(bytes(view[pos : pos + size]))
            pos += size
        commands.append(tuple(args))
    return commands


class Spool:
    """One run's spool file. Only the writer thread touches it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = None

    def append(self, seq: int, commands: list[Command]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open while spooling
            # Held while this process may still write it: `labstats replay` leaves it alone.
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                log.warning("labstats: spool %s is locked by another process", self.path)
            register(self.path)
        payload = pack_batch(commands)
        good = self._file.tell()
        try:
            self._file.write(_HEADER.pack(_MAGIC, seq, len(payload), zlib.crc32(payload)) + payload)
            # Into the OS now: a killed process loses nothing already spooled.
            self._file.flush()
        except OSError:
            # A full disk: cut back to the last whole frame, or a later frame would sit behind
            # a torn one and never be read. Closing flushes what is still buffered, which the
            # full disk refuses again: the file is closed all the same, and forgotten first.
            broken, self._file = self._file, None
            with contextlib.suppress(OSError):
                broken.close()
            with open(self.path, "r+b") as f:
                f.truncate(good)
            raise

    def batches(self) -> Iterator[tuple[int, list[Command]]]:
        yield from read_spool(self.path)

    def clear(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def scan(path: Path) -> tuple[list[tuple[int, list[Command]]], int, int]:
    """The batches of a spool file up to its first torn or corrupt frame, where those whole
    frames end, and the file's size (a torn tail is size - end bytes)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0, 0
    batches, pos = [], 0
    while pos + _HEADER.size <= len(data):
        magic, seq, size, crc = _HEADER.unpack_from(data, pos)
        payload = data[pos + _HEADER.size : pos + _HEADER.size + size]
        if magic != _MAGIC or len(payload) != size or zlib.crc32(payload) != crc:
            break
        batches.append((seq, unpack_batch(payload)))
        pos += _HEADER.size + size
    return batches, pos, len(data)


def read_spool(path: Path) -> Iterator[tuple[int, list[Command]]]:
    """Yield (batch number, commands) in order, stopping at the first torn or corrupt frame."""
    yield from scan(path)[0]


def spool_dir(savedir: str | os.PathLike) -> Path:
    return Path(savedir) / ".labstats-spool"


# ---- the index of spools this user's runs wrote, for `labstats replay` and `labstats ls` --


def state_dir() -> Path:
    if os.environ.get("LABSTATS_STATE_DIR"):
        return Path(os.environ["LABSTATS_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "labstats"


def index_path() -> Path:
    return state_dir() / "spools.txt"


def register(path: Path) -> None:
    """Note a spool file in this user's index (one line, appended). Never raises: the index
    only helps find spools later; the spool itself is what keeps the data."""
    try:
        index = index_path()
        index.parent.mkdir(parents=True, exist_ok=True)
        with open(index, "a") as f:
            f.write(f"{path.resolve()}\n")
    except Exception as exc:  # (an index problem must never cost the spooled batch)
        log.warning("labstats: cannot note spool %s in %s (%s)", path, index_path(), exc)


def indexed() -> list[Path]:
    """Spool files of the index that still exist (each once, in the order noted)."""
    try:
        lines = index_path().read_text().splitlines()
    except OSError:
        return []
    return [Path(p) for p in dict.fromkeys(lines) if p and Path(p).exists()]


def prune_index() -> None:
    """Drop index lines whose spool file is gone."""
    index = index_path()
    try:
        with open(index, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            keep = [p for p in dict.fromkeys(f.read().splitlines()) if p and Path(p).exists()]
            f.seek(0)
            f.truncate()
            f.write("".join(f"{p}\n" for p in keep))
    except OSError:
        return
