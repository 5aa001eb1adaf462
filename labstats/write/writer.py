"""The background writer: the only thread that talks to Redis on the training side.

    writer = Writer(WriteQueue(...), BatchBuilder(...), Transport(...), flush_interval=0.2)
    writer.start()
    writer.put_points(step, values)    # training thread: queued, returns at once
    writer.flush(); writer.stop()

The training thread appends to a bounded queue (:mod:`labstats.write.writequeue`) and returns;
it waits only when the queue is full. This thread wakes every ``flush_interval`` seconds,
turns everything queued into one batch of commands (:mod:`labstats.write.batches`) and hands it to
the transport (:mod:`labstats.write.transport`), which sends it as one MULTI/EXEC transaction that
also records the batch number, or spools it when Redis is away, and resends what a crashed
server forgot. Nothing is lost or applied twice. Every ``heartbeat_interval`` a batch goes
out even when nothing was logged: the heartbeat says the process lives.

A value that cannot be encoded is left out with a warning (and counted in the run's
``quarantined`` field); it never takes other values with it.

Everything put before :meth:`Writer.stop` (``Stats.close()``) is written before the writer
ends. A put from another thread after it is refused: it returns False, the first refusal is
warned about, and ``refused`` counts them. Nothing is dropped silently.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from labstats.write.batches import COMMANDS, MARKER, MEDIA, POINTS, BatchBuilder
from labstats.write.media import Capture
from labstats.write.spool import Command
from labstats.write.transport import Transport
from labstats.write.writequeue import WriteQueue

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
        self.refused = 0  # puts that came after the writer's last drain (not written)
        self._refusing = threading.Lock()  # puts come from any thread: count each, warn once

    # ---- called from the training thread -------------------------------------------------

    def put_points(self, idx: int, values: dict[str, Any], nbytes: int = 0) -> bool:
        """Queue one call's values (``nbytes``: the bytes of its large values, which count
        against the queue's bound; waits while the queue is full). False, with a warning the
        first time, when the writer has stopped: the values will not be written."""
        return self.queue.put((POINTS, idx, values, nbytes, time.time()), nbytes) or self._refuse("values")

    def put_samples(self, idx: int, values: dict[str, Any]) -> bool:
        """Queue values sampled beside the training loop (system metrics, at their own idx):
        written like points, but no call of the loop (no call time in ``_time``, no pulse)."""
        return self.queue.put((POINTS, idx, values, 0, None)) or self._refuse("samples")

    def put_media(self, item: Capture) -> bool:
        """Queue one media capture; False when the writer has stopped (see put_points)."""
        return self.queue.put((MEDIA, item, item.nbytes), item.nbytes) or self._refuse("a media item")

    def put_commands(self, commands: list[Command]) -> bool:
        """Queue ready commands, without waiting; False when the writer has stopped."""
        if not self.queue.put_now((COMMANDS, commands)):
            return self._refuse("commands")
        self._wake.set()
        return True

    def _refuse(self, what: str) -> bool:
        with self._refusing:
            self.refused += 1
            first = self.refused == 1
        if first:
            log.warning("labstats: %s logged after run %s was closed: not written, nor anything "
                        "logged later (writer.refused counts them)", what, self.transport.run_id)  # fmt: skip
        return False

    def wake(self) -> None:
        """Send what is queued now instead of at the next interval."""
        self._wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is in Redis or in the spool."""
        if not self.is_alive():
            return not len(self.queue)
        done = threading.Event()
        if not self.queue.put_now((MARKER, done)):  # stopping: its end is the flush
            self.join(timeout)
            return not self.is_alive()
        self._wake.set()
        return done.wait(timeout)

    def stop(self, timeout: float | None = None) -> bool:
        """Write everything queued, then end. A put called from now on is refused (returns
        False, warned once); one already waiting for room in a full queue goes in and is
        written. The end is bounded whatever other threads keep logging."""
        self.queue.close()
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
                # stop() closed the queue first: once it is empty nothing more can be written
                if self._stopping.is_set() and self.queue.seal():
                    break
            self.transport.finish()
        finally:
            self.queue.close()
            self.queue.seal(force=True)
            if len(self.queue):
                log.error("labstats: the writer of run %s ended with %d queued items not written",
                          self.transport.run_id, len(self.queue))  # fmt: skip
            self.builder.close()
            self.transport.close()

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
