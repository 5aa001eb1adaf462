"""The background writer: the only thread that talks to Redis on the training side.

    writer = Writer(WriteQueue(...), BatchBuilder(...), Transport(...), flush_interval=0.2)
    writer.start()
    writer.put_points(step, values)    # training thread: queued, returns at once
    writer.flush(); writer.stop()

The training thread appends to a bounded queue (:mod:`labstats.writequeue`) and returns;
it waits only when the queue is full. This thread wakes every ``flush_interval`` seconds,
turns everything queued into one batch of commands (:mod:`labstats.batches`) and hands it to
the transport (:mod:`labstats.transport`), which sends it as one MULTI/EXEC transaction that
also records the batch number, or spools it when Redis is away, and resends what a crashed
server forgot. Nothing is lost or applied twice. Every ``heartbeat_interval`` a batch goes
out even when nothing was logged: the heartbeat says the process lives.

A value that cannot be encoded is left out with a warning (and counted in the run's
``quarantined`` field); it never takes other values with it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from labstats.batches import COMMANDS, MARKER, MEDIA, POINTS, BatchBuilder
from labstats.media import Capture
from labstats.spool import Command
from labstats.transport import Transport
from labstats.writequeue import WriteQueue

log = logging.getLogger("labstats")


class Writer(threading.Thread):
    """Moves one run's queued values to Redis (or the spool), from its own thread."""

    def __init__(
        self,
        queue: WriteQueue,
        builder: BatchBuilder,
        transport: Transport,
        *,
        flush_interval: float = 0.2,
        heartbeat_interval: float = 10.0,
    ) -> None:
        super().__init__(name=f"labstats-writer-{transport.run_id}", daemon=True)
        self.queue = queue
        self.builder = builder
        self.transport = transport
        self.flush_interval = flush_interval
        self.heartbeat_interval = heartbeat_interval
        self._wake = queue.wakeup
        self._stopping = threading.Event()
        self._last_heartbeat = 0.0

    # ---- called from the training thread -------------------------------------------------

    def put_points(self, idx: int, values: dict[str, Any], nbytes: int = 0) -> None:
        """Queue one call's values (``nbytes``: the bytes of its large values, which count
        against the queue's bound; waits while the queue is full)."""
        self.queue.put((POINTS, idx, values, nbytes, time.time()), nbytes)

    def put_media(self, item: Capture) -> None:
        self.queue.put((MEDIA, item, item.nbytes), item.nbytes)

    def put_commands(self, commands: list[Command]) -> None:
        self.queue.put_now((COMMANDS, commands))
        self._wake.set()

    def wake(self) -> None:
        """Send what is queued now instead of at the next interval."""
        self._wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is in Redis or in the spool."""
        if not self.is_alive():
            return not len(self.queue)
        done = threading.Event()
        self.queue.put_now((MARKER, done))
        self._wake.set()
        return done.wait(timeout)

    def stop(self, timeout: float | None = None) -> bool:
        self._stopping.set()
        self._wake.set()
        self.join(timeout)
        return not self.is_alive()

    @property
    def resent_batches(self) -> int:
        """Acknowledged batches sent again because a crashed Redis forgot them."""
        return self.transport.resent_batches

    # ---- the writer thread ----------------------------------------------------------------

    def run(self) -> None:
        try:
            while True:
                self._wake.wait(self.flush_interval)
                self._wake.clear()
                try:
                    self._drain()
                except Exception:  # a bug here must not end the training run (nor lose the
                    # batch: the transport spools whatever it could not send)
                    log.exception("labstats: writer error (will retry)")
                if self._stopping.is_set() and not len(self.queue):
                    break
            self.transport.finish()
        finally:
            self.builder.close()
            self.transport.close()
            self.queue.close()

    def _drain(self) -> None:
        while True:
            batch = self.builder.build(self.queue)
            self.queue.release(batch.freed)
            now = time.time()
            try:
                if batch.commands or now - self._last_heartbeat >= self.heartbeat_interval:
                    batch.commands.append(self.builder.pulse(now))
                    self._last_heartbeat = now
                    self.transport.send(batch.commands)
                elif self.transport.spooling:
                    self.transport.recover()
            finally:
                for marker in batch.markers:  # a flush() waiting on this batch is answered, always
                    marker.set()
                self.queue.release(0, self.transport.held_bytes)
            if not len(self.queue):
                return
