"""The batch builder: what the training thread queued, as one batch of Redis commands.

    builder = BatchBuilder(ChunkEncoder(keys, run_id), media=MediaWriter(keys, run_id, store))
    batch = builder.build(queue)          # items taken from a WriteQueue, in order
    batch.commands.append(builder.pulse(time.time()))

The queue holds four kinds of items (made by :class:`labstats.write.writer.Writer`): points of
one log()/update() call, ready commands, a media capture, a flush marker. Points become chunk
records (:mod:`labstats.write.chunks`), with the call's wall time in ``TIME_SERIES``; the
builder also keeps the training loop's pulse (when it last called, and how often) for the
heartbeat.
"""

from __future__ import annotations

import logging
import statistics
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from labstats.format.keys import TIME_SERIES
from labstats.write.chunks import ChunkEncoder, cmd
from labstats.write.media import Capture, MediaWriter
from labstats.write.spool import Command
from labstats.write.writequeue import WriteQueue

log = logging.getLogger("labstats")

# Queue item tags: (POINTS, idx, values, nbytes, time or None for samples), (COMMANDS, commands),
# (MARKER, threading.Event), (MEDIA, capture, nbytes).
POINTS, COMMANDS, MARKER, MEDIA = 0, 1, 2, 3

# The wall-clock time of a log()/update() call goes into TIME_SERIES at the call's
# idx, when at least TIME_RESOLUTION after the last one kept: every point's time is then
# known to 10 ms (the viewer's time axes), for 16 bytes per kept time (docs/schema.md).
TIME_RESOLUTION = 0.01

# Points per batch at most (commands and media among them do not reset the count): a batch is
# one transaction, which Redis applies whole before it answers anyone else.
MAX_POINTS = 50_000


@dataclass
class Batch:
    """One batch: its commands, the flush markers it answers, and the bytes it freed."""

    commands: list[Command] = field(default_factory=list)
    markers: list[threading.Event] = field(default_factory=list)
    freed: int = 0


class BatchBuilder:
    """Turns queued items into commands; owns the encoder's and the pulse's state. The run's
    keys and id are the encoder's (one source: a copy here could go stale)."""

    def __init__(self, encoder: ChunkEncoder, media: MediaWriter | None = None) -> None:
        self.encoder = encoder
        self.media = media  # images, FITS, points, files: encoded and stored here
        self._last_time = 0.0  # the last call time written to TIME_SERIES
        # The training loop's pulse, for readers to tell a stuck loop from a slow one: the time
        # of its last log()/update() call, and its usual interval between calls (the median of
        # one estimate per batch).
        self.last_call = 0.0
        self._call_intervals: deque[float] = deque(maxlen=50)

    def build(self, queue: WriteQueue) -> Batch:
        """The next batch: items taken from ``queue`` until it is empty or MAX_POINTS.

        An item or a value that makes the builder or the encoder fail (a bug met by one odd
        value) is left out alone, with a warning (and counted in the run's ``quarantined``
        field); every other item taken goes on in the batch, in its place."""
        batch = Batch()
        commands = batch.commands
        points: list[tuple[int, str, Any]] = []
        encoded = 0  # points already encoded into commands (before a command or media item)
        calls, last_call = 0, 0.0
        take, time_series = queue.take, TIME_SERIES
        while encoded + len(points) < MAX_POINTS:
            item = take()
            if item is None:
                break
            mark = len(points)
            try:
                tag = item[0]
                if tag == POINTS:
                    _, idx, values, nbytes, when = item
                    batch.freed += nbytes
                    for name, value in values.items():
                        points.append((idx, name, value))
                    if when is None:  # samples taken beside the loop (system metrics): no call
                        continue
                    # An importer gives each step its own time; the logger's is the call's.
                    if time_series not in values and when - self._last_time >= TIME_RESOLUTION:
                        points.append((idx, time_series, when))
                        self._last_time = when
                    calls, last_call = calls + 1, when
                elif tag == MARKER:
                    batch.markers.append(item[1])
                else:  # commands and media go out in their place among the points
                    if points:
                        encoded += len(points)
                        self._encode(points, commands)
                        points = []
                    if tag == COMMANDS:
                        commands += item[1]
                    else:
                        batch.freed += item[2]
                        commands += self._media_commands(item[1])
            except Exception as exc:
                del points[mark:]  # a call that failed half way: none of its points
                self._quarantine_item(item, exc, commands)
        if points:
            self._encode(points, commands)
        if calls:
            if self.last_call:
                self._call_intervals.append(max(0.0, last_call - self.last_call) / calls)
            self.last_call = last_call
        return batch

    def pulse(self, now: float) -> Command:
        """The heartbeat: the process lives (heartbeat), and where its loop is."""
        fields = ["heartbeat", f"{now:.3f}"]
        if self.last_call:
            fields += ["last_call", f"{self.last_call:.3f}"]
        if self._call_intervals:
            fields += ["call_interval", f"{statistics.median(self._call_intervals):.6f}"]
        return cmd("HSET", self._run_key(), *fields)

    def close(self) -> None:
        """Wait for the tensor files still being written."""
        if self.encoder.files is not None:
            self.encoder.files.close()

    def _media_commands(self, item: Capture) -> list[Command]:
        if self.media is None:
            return []
        failed = self.media.failed
        commands = self.media.commands(item)
        if self.media.failed != failed:
            commands.append(cmd("HSET", self._run_key(), "media_failed", self.media.failed))
        return commands

    def _encode(self, points: list[tuple[int, str, Any]], commands: list[Command]) -> None:
        """Append the commands for ``points``. If the encoder fails on them (it is then as it
        was before the call), the points are encoded in halves, down to the one that fails:
        that point alone is left out."""
        try:
            commands += self.encoder.encode(points)
            return
        except Exception as exc:
            if len(points) == 1:
                idx, name, _ = points[0]
                self._quarantine(f"series {name!r} at idx {idx}: value", exc, commands)
                return
        half = len(points) // 2
        self._encode(points[:half], commands)
        self._encode(points[half:], commands)

    def _quarantine_item(self, item: Any, exc: Exception, commands: list[Command]) -> None:
        if item[0] == MEDIA:
            what = f"media {getattr(item[1], 'name', '?')!r} at step {getattr(item[1], 'step', '?')}"
        elif item[0] == POINTS:
            what = f"the values logged at idx {item[1]}"
        else:
            what = f"a queued item of kind {item[0]!r}"
        self._quarantine(what, exc, commands)

    def _quarantine(self, what: str, exc: Exception, commands: list[Command]) -> None:
        """Leave out what failed, with one warning, and count it with the encoder's own."""
        self.encoder.quarantined += 1
        log.warning("labstats: %s left out, it cannot be stored (writer error: %r)", what, exc, exc_info=exc)
        commands.append(cmd("HSET", self._run_key(), "quarantined", self.encoder.quarantined))

    def _run_key(self) -> str:
        return self.encoder.keys.run(self.encoder.run_id)
