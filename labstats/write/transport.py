"""The transport: numbered batches of commands into Redis, exactly once, or into the spool.

    transport = Transport(connect, keys, run_id, Spool(path), resend_window=5.0)
    transport.send(commands)     # one MULTI/EXEC transaction that also records the batch number
    transport.finish()           # at the end: replay what waits, if Redis answers

If Redis cannot be reached (or refuses the batch), the batch goes to the spool file instead,
and so does every later batch, until Redis answers again; then the spool is replayed in
order, skipping batches the server already has, and removed. Nothing is lost or applied twice.
If the spool's disk refuses too (full), batches are held in memory, in order, until the disk
or Redis takes them (``held_bytes``: the writer's queue counts them against its bound).

Batches Redis acknowledged are kept for ``resend_window`` seconds. Redis writes its
append-only file to disk once a second, so a crash of the server can forget the last
acknowledged batches: before each send the transport reads the stored batch number, and if it
went back, resends the forgotten batches in order (the batch number keeps them exactly once).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import redis

from labstats.format.keys import Keys
from labstats.write.chunks import cmd
from labstats.write.spool import Command, Spool

log = logging.getLogger("labstats")

# Errors after which the batch is known not to be applied, or may not be: spool and retry.
RETRYABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ReadOnlyError, OSError)

# A batch may hold this pseudo-command (never sent as is): reserve the run's name, then
# record it in the run's hash. Arguments: names key, run key, wanted name, run id, policy.
RESERVE = b"LABSTATS.RESERVE"
MAX_SUFFIX = 10_000


class NameTaken(Exception):
    """The wanted run name belongs to another run and the policy is 'error'."""


def reserve_name(client: redis.Redis, names_key: str, wanted: str, run_id: str, policy: str) -> str:
    """Take ``wanted`` (or ``wanted.2``, ``.3``... with policy 'suffix') for ``run_id``.

    HSETNX makes the claim atomic without server-side scripting (a training user's Redis
    user may not run scripts), and a replayed batch finds its own claim again instead of
    taking a second name. Only HSETNX and HGET touch the shared names: a training user's
    ACL allows no other write there (a name is first come, never taken over)."""
    name = wanted
    for n in range(2, MAX_SUFFIX):
        if client.hsetnx(names_key, name, run_id):
            return name
        owner = client.hget(names_key, name)
        if owner is not None and owner.decode() == run_id:
            return name
        if policy == "error":
            raise NameTaken(f"run name already taken: {wanted}")
        name = f"{wanted}.{n}"
    raise NameTaken(f"run name {wanted!r} and its first {MAX_SUFFIX} suffixes are taken")


class Transport:
    """Sends one run's batches (only the writer thread calls it)."""

    def __init__(
        self,
        connect: Callable[[], redis.Redis],
        keys: Keys,
        run_id: str,
        spool: Spool,
        *,
        on_name: Callable[[str], None] | None = None,
        resend_window: float = 5.0,
        resend_max_bytes: int = 64 * 2**20,
        first_seq: int = 0,
    ) -> None:
        self._connect = connect
        self._redis: redis.Redis | None = None
        self.keys = keys
        self.run_id = run_id
        self.spool = spool
        self.on_name = on_name
        self._seq = first_seq  # a resumed run's batches go on after its last one
        # A spool left by this run's earlier batches waits for Redis first.
        self._spooling = spool.path.exists() and spool.path.stat().st_size > 0
        self._next_retry = 0.0
        self._backoff = 0.5
        self.last_error: str | None = None
        # Acknowledged batches that a server crash could still forget: (time, seq, commands, size).
        self.resend_window = resend_window
        self.resend_max_bytes = resend_max_bytes
        self._acked: deque[tuple[float, int, list[Command], int]] = deque()
        self._acked_bytes = 0
        self.resent_batches = 0
        # Batches neither Redis nor the spool's disk would take yet: (seq, commands, size).
        self._held: deque[tuple[int, list[Command], int]] = deque()
        self.held_bytes = 0
        self._warned_disk = False

    @property
    def spooling(self) -> bool:
        """Whether batches go to the spool (Redis was away) until a replay succeeds."""
        return self._spooling

    def acknowledged(self) -> list[tuple[int, list[Command]]]:
        """The acknowledged batches still kept for resending: (batch number, commands)."""
        return [(seq, commands) for _, seq, commands, _ in self._acked]

    def send(self, commands: list[Command]) -> None:
        """Into Redis as the next numbered batch, or into the spool."""
        self._seq += 1
        if self._spooling:
            self.recover()
        if not self._spooling:
            try:
                self._catch_up(self._client())
                self._execute(self._seq, commands)
                self._remember(self._seq, commands)
                return
            except (*RETRYABLE, redis.ResponseError) as exc:
                self._start_spooling(exc)
            except Exception as exc:  # anything else: this batch is kept, never dropped
                log.exception("labstats: unexpected error sending a batch; it is spooled")
                self._start_spooling(exc)
        self._store(self._seq, commands)

    def _store(self, seq: int, commands: list[Command]) -> None:
        """Into the spool file; if the disk refuses (full), held in memory, in order, until the
        disk or Redis takes them (the training thread waits when too much is held)."""
        self._save_held()
        if not self._held:
            try:
                self.spool.append(seq, commands)
                return
            except OSError as exc:
                if not self._warned_disk:
                    log.warning("labstats: cannot write the spool %s (%s); holding records in memory "
                                "until the disk or Redis takes them", self.spool.path, exc)  # fmt: skip
                    self._warned_disk = True
        size = batch_bytes(commands)
        self._held.append((seq, commands, size))
        self.held_bytes += size

    def _save_held(self) -> None:
        while self._held:
            seq, commands, size = self._held[0]
            try:
                self.spool.append(seq, commands)
            except OSError:
                return
            self._held.popleft()
            self.held_bytes -= size
        self._warned_disk = False

    def _remember(self, seq: int, commands: list[Command]) -> None:
        """Keep an acknowledged batch for a while: a server crash may still forget it."""
        now = time.monotonic()
        size = batch_bytes(commands)
        self._acked.append((now, seq, commands, size))
        self._acked_bytes += size
        while self._acked and (
            self._acked[0][0] < now - self.resend_window
            or (self._acked_bytes > self.resend_max_bytes and len(self._acked) > 1)
        ):
            self._acked_bytes -= self._acked.popleft()[3]

    def _catch_up(self, client: redis.Redis) -> None:
        """Resend the acknowledged batches the server forgot (its batch number went back)."""
        if not self._acked:
            return
        stored = int(client.get(self.keys.seq(self.run_id)) or 0)
        last = self._acked[-1][1]
        if stored >= last:
            return
        lost = [(seq, commands) for _, seq, commands, _ in self._acked if seq > stored]
        if lost[0][0] != stored + 1:
            log.error(
                "labstats: Redis lost batches %d..%d of run %s in a crash, more than the last %.0f s "
                "that can be resent; batches %d..%d are resent",
                stored + 1, last, self.run_id, self.resend_window, lost[0][0], last,
            )  # fmt: skip
        else:
            log.warning("labstats: Redis forgot %d acknowledged batches (a crash?); resending", len(lost))
        for seq, commands in lost:
            self._execute(seq, commands)
        self.resent_batches += len(lost)

    def _start_spooling(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("labstats: Redis unavailable (%s); spooling to %s", self.last_error, self.spool.path)
        self._spooling = True
        self._redis = None
        self._next_retry = time.monotonic() + self._backoff

    def recover(self, force: bool = False) -> None:
        """Replay the spool if Redis answers again (at most every few seconds)."""
        if not force and time.monotonic() < self._next_retry:
            return
        try:
            client = self._client()
            self._catch_up(client)  # first what the server acknowledged and then forgot
            held = [(seq, commands) for seq, commands, _ in self._held]  # newer than the spool's
            batches = [*self.spool.batches(), *held]
            apply_new(client, self.keys.seq(self.run_id), batches, self._remember, self.on_name)
            self._seq = max([self._seq, *(seq for seq, _ in batches)])
            self._held.clear()
            self.held_bytes = 0
        except (*RETRYABLE, redis.ResponseError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._redis = None
            self._backoff = min(self._backoff * 2, 5.0)
            self._next_retry = time.monotonic() + self._backoff
            return
        self.spool.clear()
        self._spooling = False
        self._backoff = 0.5
        log.warning("labstats: Redis is back; spool replayed")

    def _client(self) -> redis.Redis:
        if self._redis is None:
            self._redis = self._connect()
        return self._redis

    def _execute(self, seq: int, commands: list[Command]) -> None:
        execute_batch(self._client(), self.keys.seq(self.run_id), seq, commands, self.on_name)

    def finish(self) -> None:
        """At the end: replay the spool if Redis answers now, and spool what is held."""
        if self._spooling:
            self.recover(force=True)
        self._save_held()
        if self._held:
            log.error("labstats: %d batches of run %s could not be stored (Redis away, spool disk "
                      "full) and are lost with this process", len(self._held), self.run_id)  # fmt: skip

    def close(self) -> None:
        self.spool.close()


def batch_bytes(commands: list[Command]) -> int:
    return sum(len(arg) for command in commands for arg in command)


def apply_new(
    client: redis.Redis,
    seq_key: str,
    batches: list[tuple[int, list[Command]]],
    on_applied: Callable[[int, list[Command]], None] | None = None,
    on_name: Callable[[str], None] | None = None,
) -> int:
    """Apply, in order, the batches the server does not have yet (numbered above the batch
    number it stores); returns how many. The writer's recovery and `labstats replay`."""
    applied = int(client.get(seq_key) or 0)
    sent = 0
    for seq, commands in batches:
        if seq > applied:
            execute_batch(client, seq_key, seq, commands, on_name)
            sent += 1
            if on_applied is not None:
                on_applied(seq, commands)
    return sent


def execute_batch(
    client: redis.Redis,
    seq_key: str,
    seq: int,
    commands: list[Command],
    on_name: Callable[[str], None] | None = None,
) -> None:
    """Apply one batch as a MULTI/EXEC transaction that also stores its number in ``seq_key``
    (the writer, and ``labstats replay`` for spools whose process is gone)."""
    pipe = client.pipeline(transaction=True)
    for command in commands:
        if command[0] == RESERVE:
            command = _reserve(client, command, on_name)
        pipe.execute_command(*command)
    pipe.set(seq_key, seq)
    # A transaction the server discards whole (EXECABORT: a refused command, OOM, ACL)
    # raises here and the batch is spooled; errors of single commands are only logged.
    results = pipe.execute(raise_on_error=False)
    for command, result in zip(commands, results, strict=False):
        if isinstance(result, redis.ResponseError):
            log.error("labstats: Redis refused %s: %s", command[0].decode(), result)


def _reserve(client: redis.Redis, command: Command, on_name: Callable[[str], None] | None) -> Command:
    """Run a RESERVE pseudo-command now; returns the command that records the name."""
    names_key, run_key, wanted, run_id, policy = (arg.decode() for arg in command[1:])
    try:
        name = reserve_name(client, names_key, wanted, run_id, policy)
    except NameTaken as exc:
        log.error("labstats: %s; run %s keeps no name of its own", exc, run_id)
        return cmd("HSET", run_key, "name_refused", wanted)
    if on_name is not None:
        on_name(name)
    return cmd("HSET", run_key, "name", name)
