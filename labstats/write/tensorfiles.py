"""Large tensors as files of the artifact store, with a small reference in the run's chunk.

A 1M-float tensor logged every step is 4 MB a step. In Redis that is memory on the master and
on every replica, and one single-threaded server behind one socket bounds the rate. As a
file it costs disk, which a training box has, and a pool of threads hashes and writes
several tensors at once (SHA-256 and file writes let other threads run). The store is
content-addressed, so a tensor that did not change (a frozen layer) is stored once. The
training box pushes the store to the web box every few seconds, as it does media.

The file holds the value's codec bytes (``labstats.format.codec``: dtype, shape, raw data);
the chunk record holds a reference instead (``labstats.format.tensor_file``). If the file
cannot be written (disk full, store not writable), the tensor goes to Redis as a blob as
before: nothing is lost.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from labstats.format import codec, tensor_file
from labstats.store import ArtifactStore

log = logging.getLogger("labstats")

# Arrays of at least this many bytes go to files (Stats(tensor_file_bytes=...)); smaller ones
# are cheaper in Redis, inline in their chunk or as a blob.
DEFAULT_MIN_BYTES = 2**20
WORKERS = max(1, min(4, os.cpu_count() or 1))


class FileJob:
    """One tensor on its way to a file. :meth:`ref` waits for it: the reference, or None when
    the file could not be written (then ``header`` + ``body`` are the bytes for Redis)."""

    __slots__ = ("body", "future", "header")

    def __init__(self, header: bytes, body: memoryview) -> None:
        self.header = header
        self.body = body
        self.future: Future[str | None]  # set by TensorFiles.submit

    def ref(self) -> bytes | None:
        digest = self.future.result()
        return None if digest is None else tensor_file.make_ref(digest, len(self.header) + len(self.body))


class TensorFiles:
    """The writer's pool of file writers for arrays of at least ``min_bytes``."""

    def __init__(
        self, store: ArtifactStore, min_bytes: int = DEFAULT_MIN_BYTES, workers: int = WORKERS
    ) -> None:
        self.store = store
        self.min_bytes = int(min_bytes)
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._warned = False  # warned once until a file is written again

    def wants(self, nbytes: int) -> bool:
        return 0 < self.min_bytes <= nbytes

    def submit(self, array: np.ndarray, release: Callable[[], None] | None = None) -> FileJob:
        """Start writing ``array``'s codec bytes to a file; returns at once. ``release``:
        called once the array's memory is no longer read (a pinned buffer going back to its
        pool; a copy is kept first if the bytes must go to Redis instead)."""
        try:
            header, body = codec.array_parts(array)
        except BaseException:
            if release is not None:
                release()
            raise
        job = FileJob(header, body)
        if self._pool is None:  # threads only for runs that log large tensors
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="labstats-files")
        job.future = self._pool.submit(self._write, job, release)
        return job

    def _write(self, job: FileJob, release: Callable[[], None] | None) -> str | None:
        try:
            digest = self.store.put(job.header, job.body)
        except OSError as exc:
            with self._lock:
                if not self._warned:
                    self._warned = True
                    log.warning("labstats: cannot write tensor files to %s (%s); large tensors go to "
                                "Redis until it can", self.store.root, exc)  # fmt: skip
            if release is not None:
                job.body = memoryview(bytes(job.body))  # the memory goes back: keep a copy
            return None
        finally:
            if release is not None:
                release()
        self._warned = False
        return digest

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
