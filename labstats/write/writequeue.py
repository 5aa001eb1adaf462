"""The bounded queue between the training thread and the writer thread.

    queue = WriteQueue(max_items=200_000, max_bytes=512 * 2**20)
    queue.put(item, nbytes)        # training thread: returns at once, or waits while full
    queue.wakeup.wait(0.2)         # writer thread: sleeps until the interval or a call for it
    item = queue.take()            # writer thread: the oldest item, or None
    queue.release(freed, backlog)  # writer thread: a batch was taken; waiting producers go on
    queue.close()                  # at the writer's stop: puts from now on are refused
    queue.seal()                   # writer thread, the queue seen empty: its last look

Back-pressure, when the writer cannot keep up: the producer waits on a condition that the
writer notifies when it takes a batch (no sleeping in a loop). Nothing is ever dropped. The
bound counts items, the bytes of large values queued, and the bytes the writer still holds
further on (batches neither Redis nor the spool's disk took yet: ``backlog``).

At the writer's stop the queue is closed: a put returns False and its item is not written.
What was in stays: the writer empties the queue and seals it when it finds it empty, so every
item a put returned True for is written. A put that raced the close (it found the queue open,
then closed after its append) learns which it was from the seal.
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
        self._closed = False  # no put from now on is written (see module docstring)
        # The writer's last look, when it found the queue empty: taken to seal and to settle a
        # put that raced the close (never on the common path, which takes no lock).
        self._seal_lock = threading.Lock()
        self._sealed = False
        self._warned = False

    def __len__(self) -> int:
        return len(self._items)

    # ---- producers (any thread) -----------------------------------------------------------

    def put(self, item: Any, nbytes: int = 0) -> bool:
        """Append ``item`` (holding ``nbytes`` of large values); waits while the queue is full.
        Its own bytes count once it is in: one value larger than the bound still passes.
        True: it will be written; False: the queue is closed and it will not be."""
        if self._closed:
            return False
        if self._over_bytes or len(self._items) >= self.max_items:
            self._wait_for_space()
        if nbytes:
            with self._space:
                self.queued_bytes += nbytes
                self._over_bytes = self._bytes_over()
        self._items.append(item)
        return not self._closed or self._settle(item)

    def put_now(self, item: Any) -> bool:
        """Append ``item`` without waiting (commands and flush markers: small, and a flush
        must be able to pass a full queue). True or False as :meth:`put`."""
        if self._closed:
            return False
        self._items.append(item)
        return not self._closed or self._settle(item)

    def _settle(self, item: Any) -> bool:
        """Whether ``item``, appended while the queue was being closed, will be written. Before
        the seal the writer will take it (it seals only an empty queue); after the seal it
        was written if the writer took it, and not if it is still here (nobody takes it)."""
        with self._seal_lock:
            if not self._sealed:
                return True
            return not any(queued is item for queued in list(self._items))

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
        """Take nothing more in (puts return False from now on); no producer waits any more.
        What is queued stays for the writer, which empties the queue and then seals it."""
        with self._space:
            self._closed = True
            self._space.notify_all()

    def seal(self, force: bool = False) -> bool:
        """The writer's last look at a closed queue: True when it is empty (then sealed: an
        item appended later is not written, and its put returns False). ``force``: seal it
        anyway (the writer ends on an error; what is left is not written)."""
        with self._seal_lock:
            if len(self._items) and not force:
                return False
            self._sealed = True
            return True
