"""The last lines a training process printed (its stdout and stderr, as Python writes them),
kept with its runs: a crash's whole traceback, the warnings before it, a progress line.

One tee per process wraps ``sys.stdout`` and ``sys.stderr`` while a run that wants it is open:
everything still goes where it went, and the last MAX_LINES lines (each at most MAX_LINE
characters) are kept in memory. Each open run writes them into its record (the ``console``
field) every INTERVAL seconds when they changed, and once more when it ends. What C code or a
child process writes straight to the file descriptors is not seen (wrapping those would mean
pipes and a thread in the way of every print).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

MAX_LINES = 200
MAX_LINE = 1000  # characters: a progress bar redrawn with \r is one long line, cut
INTERVAL = 15.0  # seconds between writes of a running run's lines (when they changed)


class _Tee:
    """A text stream that writes through to ``stream`` and keeps the lines in ``tail``."""

    def __init__(self, stream: Any, tail: ConsoleTail) -> None:
        self._stream = stream
        self._tail = tail

    def write(self, text: str) -> int:
        written = self._stream.write(text)  # the real stream's errors are the caller's, as before
        with contextlib.suppress(Exception):  # keeping lines must never break a print
            self._tail.add(text, self)
        return written

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding... of the real one
        return getattr(self._stream, name)


class ConsoleTail:
    """The process's tee and its last lines; runs subscribe while they are open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: deque[str] = deque(maxlen=MAX_LINES)
        self._partial: dict[int, str] = {}  # an unfinished line per stream
        self._version = 0  # bumped by each change: a run writes only what changed
        self._subscribers: dict[int, Callable[[], None]] = {}
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, text: str, stream: Any = None) -> None:
        key = id(stream)
        with self._lock:
            pieces = (self._partial.pop(key, "") + text).split("\n")
            for line in pieces[:-1]:
                self._lines.append(_cut(line))
            if pieces[-1]:
                self._partial[key] = pieces[-1][-MAX_LINE:]
            self._version += 1

    def text(self) -> tuple[str, int]:
        """(the last lines, unfinished ones included, as one text; the version they are)."""
        with self._lock:
            lines = list(self._lines) + [_cut(p) for p in self._partial.values()]
            return "\n".join(lines[-MAX_LINES:]), self._version

    def subscribe(self, key: int, write: Callable[[], None]) -> None:
        """Start keeping lines (the tee goes in) and call ``write`` every INTERVAL seconds."""
        with self._lock:
            self._subscribers[key] = write
            first = len(self._subscribers) == 1
        if first:
            self._install()
            if self._thread is None or not self._thread.is_alive():
                self._wake.clear()
                self._thread = threading.Thread(target=self._loop, name="labstats-console", daemon=True)
                self._thread.start()

    def unsubscribe(self, key: int) -> None:
        with self._lock:
            self._subscribers.pop(key, None)
            last = not self._subscribers
        if last:
            self._uninstall()
            self._wake.set()

    def _loop(self) -> None:
        while not self._wake.wait(INTERVAL):
            with self._lock:
                writes = list(self._subscribers.values())
            for write in writes:
                with contextlib.suppress(Exception):  # a run's write failing stops no other run's
                    write()

    def _install(self) -> None:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, _Tee):
                setattr(sys, name, _Tee(stream, self))

    def _uninstall(self) -> None:
        # Only our own tee goes: a stream someone set since (pytest, a notebook) stays theirs.
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if isinstance(stream, _Tee) and stream._tail is self:  # noqa: SLF001 - our own class
                setattr(sys, name, stream._stream)  # noqa: SLF001


def _cut(line: str) -> str:
    line = line.rsplit("\r", 1)[-1]  # a progress bar's redraws: its last state
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


tail = ConsoleTail()  # one per process: stdout and stderr are the process's
