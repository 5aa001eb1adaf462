"""The batch builder: what the training thread queued, as one batch of Redis commands.

    builder = BatchBuilder(ChunkEncoder(keys, run_id), media=MediaWriter(keys, run_id, store))
    batch = builder.build(queue)          # items taken from a WriteQueue, in order
    batch.commands.append(builder.pulse(time.time()))

The queue holds four kinds of items (made by :class:`labstats.writer.Writer`): points of
one log()/update() call, ready commands, a media capture, a flush marker. Points become chunk
records (:mod:`labstats.chunks`), with the call's wall time in ``TIME_SERIES``; the
builder also keeps the training loop's pulse (when it last called, and how often) for the
heartbeat.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from labstats.chunks import ChunkEncoder, cmd
from labstats.format.keys import TIME_SERIES
from labstats.media import Capture, MediaWriter
from labstats.spool import Command
from labstats.writequeue import WriteQueue

# Queue item tags: (POINTS, idx, values, nbytes, time), (COMMANDS, commands),
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
        """The next batch: items taken from ``queue`` until it is empty or MAX_POINTS."""
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
            tag = item[0]
            if tag == POINTS:
                _, idx, values, nbytes, when = item
                calls, last_call = calls + 1, when
                for name, value in values.items():
                    points.append((idx, name, value))
                # An importer gives each step its own time; the logger's is the call's.
                if time_series not in values and when - self._last_time >= TIME_RESOLUTION:
                    points.append((idx, time_series, when))
                    self._last_time = when
                batch.freed += nbytes
            elif tag == MARKER:
                batch.markers.append(item[1])
            else:  # commands and media go out in their place among the points
                if points:
                    commands += self.encoder.encode(points)
                    encoded += len(points)
                    points = []
                if tag == COMMANDS:
                    commands += item[1]
                else:
                    commands += self._media_commands(item[1])
                    batch.freed += item[2]
        if points:
            commands += self.encoder.encode(points)
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

    def _run_key(self) -> str:
        return self.encoder.keys.run(self.encoder.run_id)
