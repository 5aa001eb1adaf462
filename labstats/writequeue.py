"""The bounded queue between the training thread and the writer thread.

    queue = WriteQueue(max_items=200_000, max_bytes=512 * 2**20)
    queue.put(item, nbytes)        # training thread: returns at once, or waits while full
    queue.wakeup.wait(0.2)         # writer thread: sleeps until the interval or a call for it
    item = queue.take()            # writer thread: the oldest item, or None
    queue.release(freed, backlog)  # writer thread: a batch was taken; waiting producers go on

Back-pressure, when the writer cannot keep up: the producer waits on a condition that the
writer notifies when it takes a batch (no sleeping in a loop). Nothing is ever dropped. The
bound counts items, the bytes of large values queued, and the bytes the writer still holds
further on (batches neither Redis nor the spool's disk took yet: ``backlog``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

log = logging.getLogger("labstats")


class WriteQueue:
    """A FIFO of the writer's items, bounded by count and bytes; one consumer."""

    def __init__(self, max_items: int = 200_000, max_bytes: int = 512 * 2**20) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.queued_bytes = 0  # large values' bytes waiting in the queue
        self.backlog_bytes = 0  # bytes the writer holds further on (see module docstring)
        self.waiting = 0  # producers waiting for space now
        self._over_bytes = False  # either byte count over max_bytes (changed under the lock)
        self._items: deque = deque()
        self._space = threading.Condition(threading.Lock())  # guards the byte counts
        # Set when the writer should come before its interval ends: a full queue, commands,
        # a flush. The writer waits on it and clears it.
        self.wakeup = threading.Event()
        self._closed = False
        self._warned = False

    def __len__(self) -> int:
        return len(self._items)

    # ---- producers (any thread) -----------------------------------------------------------

    def put(self, item: Any, nbytes: int = 0) -> None:
        """Append ``item`` (holding ``nbytes`` of large values); waits while the queue is full.
        Its own bytes count once it is in: one value larger than the bound still passes."""
        if self._over_bytes or len(self._items) >= self.max_items:
            self._wait_for_space()
        if nbytes:
            with self._space:
                self.queued_bytes += nbytes
                self._over_bytes = self._bytes_over()
        self._items.append(item)

    def put_now(self, item: Any) -> None:
        """Append ``item`` without waiting (commands and flush markers: small, and a flush
        must be able to pass a full queue)."""
        self._items.append(item)

    def full(self) -> bool:
        return len(self._items) >= self.max_items or self._bytes_over()

    def _bytes_over(self) -> bool:
        return self.queued_bytes > self.max_bytes or self.backlog_bytes > self.max_bytes

    def _wait_for_space(self) -> None:
        # The policy when the bound is hit: the training thread waits (data is never dropped).
        # The writer drains to Redis or to the spool file, so this only happens when even the
        # disk cannot keep up.
        if not self._warned:
            log.warning("labstats: writer queue full (%d items); logging waits for it", len(self._items))
            self._warned = True
        with self._space:
            self.waiting += 1
            try:
                while self.full() and not self._closed:
                    self.wakeup.set()
                    self._space.wait()
            finally:
                self.waiting -= 1

    # ---- the consumer (the writer thread) -------------------------------------------------

    def take(self) -> Any:
        """The oldest item, or None when the queue is empty."""
        return self._items.popleft() if self._items else None

    def release(self, freed_bytes: int, backlog_bytes: int | None = None) -> None:
        """The writer took items holding ``freed_bytes`` (and now holds ``backlog_bytes``
        further on): wake the producers waiting for space."""
        with self._space:
            self.queued_bytes -= freed_bytes
            if backlog_bytes is not None:
                self.backlog_bytes = backlog_bytes
            self._over_bytes = self._bytes_over()
            # Only when there is space: a waiting producer woken to find none wakes the writer,
            # which releases again (a busy loop for as long as Redis and the disk are away).
            if self.waiting and not self.full():
                self._space.notify_all()

    def close(self) -> None:
        """The writer is gone: no producer waits any more."""
        with self._space:
            self._closed = True
            self._space.notify_all()
