"""``Stats``: the training-side logger.

    stats = Stats("runs/exp42", config=vars(args))
    stats.watch(model.sigma, "sigma")             # any array/tensor/object, or a callable
    stats.update(epoch, set_size, batch_size, step)
    stats.log(step=idx, lr=1e-3, acc=0.91)
    stats.close()                                 # also a context manager, and at exit

Every 10 s a thread of its own samples the GPUs, the run's processes and the box as series
under ``sys/`` (:mod:`labstats.capture.system`); ``Stats(system_metrics=False)`` turns it off.
The last lines the process prints are kept with the run, a crash's traceback included
(:mod:`labstats.capture.console`); ``Stats(console=False)`` keeps none.

Calls on the training thread only snapshot values and queue them; a background writer
sends them to Redis (see :mod:`labstats.write.writer`). A run gets a unique id; its name is never
shared with another run (a clash is suffixed ``.2``, ``.3``... or refused).

Logged as a training user's own Redis user (``redis://alice:pw@...``), the run is owned by
it: its id is ``alice.<id>`` and it goes to alice's own indexes (``ls:owner:alice:...``),
the only keys besides her runs' that her Redis user may write (docs/schema.md, "Owners").
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

from labstats import config as cfg
from labstats.capture import code_bundle, console, runmeta, system
from labstats.capture.device import Pending
from labstats.capture.snapshot import Deferred, Histogram, capture, capture_histogram
from labstats.format import media_files, run_record
from labstats.format.codec import EncodeError
from labstats.format.keys import SCHEMA_VERSION, Keys, series_name_problem
from labstats.store import ArtifactStore, default_artifact_dir
from labstats.write import media, resume, tensorfiles
from labstats.write.batches import BatchBuilder
from labstats.write.chunks import ChunkEncoder, cmd
from labstats.write.spool import Spool, spool_dir
from labstats.write.transport import RESERVE, NameTaken, Transport, reserve_name
from labstats.write.writequeue import WriteQueue
from labstats.write.writer import Writer

log = logging.getLogger("labstats")

# The most a run's config may take as JSON (UTF-8 bytes). Configs are read whole by every
# list of runs (the viewer's runs page, every 5 s; `labstats ls`), so a large one slows
# them all: keep tables and datasets out of it (log them as files).
MAX_CONFIG_BYTES = 256 * 1024

_open_runs: weakref.WeakSet[Stats] = weakref.WeakSet()
_hooks_installed = False


def _config_json(config: dict[str, Any]) -> str:
    """The config as stored (JSON, keys sorted); a ValueError when it is over MAX_CONFIG_BYTES."""
    text = json.dumps(config, default=str, sort_keys=True)
    size = len(text)  # ASCII (json's ensure_ascii): one byte a character
    if size > MAX_CONFIG_BYTES:
        raise ValueError(
            f"labstats: config is {size:,} bytes as JSON; the limit is {MAX_CONFIG_BYTES:,} "
            "(MAX_CONFIG_BYTES): keep tables and data out of the config (log them as a file)"
        )
    return text


def new_run_id(owner: str | None = None) -> str:
    """Sortable by start time and unique: 20261125-163012-5f3a9c; a run owned by alice:
    alice.20261125-163012-5f3a9c (her Redis user may write only ``ls:run:alice.*``)."""
    run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
    return run_id if owner is None else f"{owner}.{run_id}"


class Stats:
    """Log a training run. See the module docstring for the whole API.

    ``config`` (and what :meth:`set_config` adds) is stored as JSON and may take at most
    ``MAX_CONFIG_BYTES`` (256 KiB) that way; a larger one is refused at the call with a
    ``ValueError``, before any run starts.

    ``resume=True`` goes on with the run of that name (after a crash, a kill or a stop): the
    same run id, each series goes on after its last point, and the record keeps when and
    after which step it resumed (the gap shows on a time axis). Only the run's owner can, and
    only when its process is gone (:mod:`labstats.write.resume`). No run of that name: a new
    one. Without resume, a name already taken gets a suffix and the run names the one before
    it (``previous``).

    A run started in a git repository keeps its commit's history as a git bundle in the
    artifact store (made once per commit, on a background thread), which the training box
    pushes to the web box, so ``labstats regenerate`` works there even without a remote.
    ``code_bundle_bytes`` caps it (64 MiB, or $LABSTATS_CODE_BUNDLE_BYTES; 0: no bundle); the
    record says why when there is none (``code_bundle_note``)."""

    def __init__(
        self,
        savedir: str | os.PathLike | None = None,
        *,
        name: str | None = None,
        config: dict[str, Any] | None = None,
        tags: Iterable[str] = (),
        seed: int | None = None,
        url: str | None = None,
        prefix: str | None = None,
        on_conflict: str = "suffix",
        flush_interval: float = 0.2,
        capture_git: bool = True,
        capture_freeze: bool | None = None,
        handle_signals: bool = True,
        resend_window: float = 5.0,
        artifact_dir: str | os.PathLike | None = None,
        tensor_file_bytes: int = tensorfiles.DEFAULT_MIN_BYTES,
        system_metrics: float | bool = system.DEFAULT_INTERVAL,
        console: bool = True,
        resume: bool = False,
        code_bundle_bytes: int | None = None,
    ) -> None:
        if on_conflict not in ("suffix", "error"):
            raise ValueError("on_conflict must be 'suffix' or 'error'")
        _config_json(dict(config or {}))  # refused here, at the call, if it is too large
        system_interval = _system_interval(system_metrics)
        self._options = {
            "name": name, "config": dict(config or {}), "tags": [str(t) for t in tags], "seed": seed,
            "url": url, "prefix": prefix, "on_conflict": on_conflict, "flush_interval": flush_interval,
            "capture_git": capture_git, "handle_signals": handle_signals, "resend_window": resend_window,
            "artifact_dir": artifact_dir, "tensor_file_bytes": int(tensor_file_bytes),
            "system_interval": system_interval, "console": bool(console), "resume": bool(resume),
            "code_bundle_bytes": int(code_bundle_bytes) if code_bundle_bytes is not None
            else _bundle_cap_from_env(),
            "capture_freeze": capture_freeze if capture_freeze is not None
            else os.environ.get("LABSTATS_CAPTURE_FREEZE", "1") != "0",
        }  # fmt: skip
        self._watched: dict[str, Any] = {}
        self._writer: Writer | None = None
        self._media_writer: media.MediaWriter | None = None
        self._spool_path: Path | None = None
        self._freeze_thread: threading.Thread | None = None
        self._code: tuple[str, str] | None = None  # (repository root, commit) to bundle, if in git
        self._system: system.SystemSampler | None = None
        self._console_version = -1  # the version of the console lines last written (-1: none)
        self._alerts_sent = 0  # numbers this run's alerts (two in one millisecond stay apart)
        self._closed = False
        self._last_step = -1
        self._last_epoch: Any = None
        self._lock = threading.Lock()
        self.run_id: str | None = None
        self._resumed: resume.Resumable | None = None
        self.owner: str | None = None  # the Redis user that owns the run (None: unowned)
        self.name: str | None = None
        self.savedir: Path | None = None
        if savedir is not None:
            self.on(savedir)

    # ---- starting ------------------------------------------------------------------------

    def on(self, savedir: str | os.PathLike) -> Stats:
        """Start the run whose files go to ``savedir`` (the original API). Returns self."""
        if self._writer is not None:
            raise RuntimeError(f"this Stats already logs run {self.name!r}; make a new Stats for another")
        opts = self._options
        self.savedir = Path(savedir).absolute()  # a later chdir (Hydra does one) moves nothing
        self.savedir.mkdir(parents=True, exist_ok=True)
        wanted = opts["name"] or self.savedir.resolve().name
        if not wanted or any(c in wanted for c in "\x00\n\r"):
            raise ValueError(f"invalid run name {wanted!r}")
        self.settings = cfg.resolve(opts["url"], opts["prefix"])
        self.keys = Keys(self.settings.prefix)
        self.owner = owner = cfg.url_owner(self.settings.url)
        self._resumed = self._find_resumable(wanted) if opts["resume"] else None
        if self._resumed is not None:
            return self._go_on(self._resumed)
        self.run_id = new_run_id(owner)
        self.name, previous = self._reserve_now(wanted, opts["on_conflict"])

        started = time.time()
        meta = runmeta.collect(opts["capture_git"], capture_freeze=False)
        diff = meta.pop("git_diff", "")
        self._code = _code_of(meta)
        fields: dict[str, Any] = {
            "id": self.run_id,
            "name": self.name,
            "status": run_record.RUNNING,
            "started": f"{started:.3f}",
            "heartbeat": f"{started:.3f}",
            "savedir": str(self.savedir.resolve()),
            "config": _config_json(opts["config"]),
            "tags": json.dumps(opts["tags"]),
            "schema": SCHEMA_VERSION,
        }
        if owner is not None:
            fields["owner"] = owner
        if opts["seed"] is not None:
            fields["seed"] = opts["seed"]
        if previous is not None:
            fields["previous"] = previous  # the run this name's last run was (started again)
        for key, value in meta.items():
            fields[key] = value if isinstance(value, str | int | float) else json.dumps(value, default=str)
        k = self.keys
        # Every command here must be one the owner's ACL allows: one refused command discards
        # the whole batch (EXECABORT), which would then wait in the spool for ever.
        commands = [
            cmd("SET", k.schema, SCHEMA_VERSION),
            cmd("HSET", k.run(self.run_id), *[x for item in fields.items() for x in item]),
            cmd(RESERVE, k.names, k.run(self.run_id), self.name, self.run_id, opts["on_conflict"]),
            cmd("ZADD", k.runs_index(owner), f"{started:.3f}", self.run_id),
            cmd("SADD", k.status_index(owner, run_record.RUNNING), self.run_id),
        ]
        if owner is not None:
            commands.append(cmd("SADD", k.owners, owner))  # readers find the owner's indexes by it
        commands += [cmd("SADD", k.tag_index(owner, tag), self.run_id) for tag in opts["tags"]]
        if diff:
            commands.append(cmd("SET", k.diff(self.run_id), diff))

        self._writer = self._make_writer()
        self._writer.put_commands(commands)
        self._start_writing()
        return self

    def _find_resumable(self, wanted: str) -> resume.Resumable | None:
        """The run to go on with (resume=True), or None: no run has that name, or Redis is away
        (a new run then, said in a warning: the training goes on either way)."""
        try:
            client = cfg.client(self.settings, timeout=5)
            found = resume.find(
                client,
                self.keys,
                wanted,
                self.owner,
                spool_of=lambda run_id: spool_dir(self.savedir) / f"{run_id}.spool",
                open_here=lambda run_id: any(s.run_id == run_id and not s.closed for s in list(_open_runs)),
            )
        except (redis.RedisError, OSError) as exc:
            log.warning("labstats: cannot reach Redis to resume run %r (%s); logging a new run", wanted, exc)
            return None
        except resume.ResumeError as exc:
            raise cfg.LabstatsError(str(exc)) from None
        if found is None:
            log.info("labstats: no run named %r to resume; starting it", wanted)
        return found

    def _go_on(self, found: resume.Resumable) -> Stats:
        """Continue ``found``: same id and name, its series, blobs and batches go on."""
        self.run_id, self.name = found.run_id, found.name
        self._last_step = found.last_idx
        meta = runmeta.collect(self._options["capture_git"], capture_freeze=False)
        meta.pop("git_diff", None)
        self._code = _code_of(meta)
        self._writer = self._make_writer(found)
        self._writer.put_commands(resume.record_commands(self.keys, found, self.owner, meta))
        self._start_writing()
        log.warning("labstats: run %r resumed after idx %d", self.name, found.last_idx)
        return self

    def _start_writing(self) -> None:
        """The writer, and beside it the freeze, system metrics and console (a new or resumed run)."""
        opts = self._options
        self._writer.start()
        if opts["capture_freeze"] or self._code is not None:
            # pip freeze takes a second, a code bundle maybe more: done beside the training,
            # sent when ready.
            self._freeze_thread = threading.Thread(
                target=self._record_freeze, name="labstats-freeze", daemon=True
            )
            self._freeze_thread.start()
        if opts["system_interval"]:
            self._system = system.SystemSampler(
                self._put_system_sample,
                opts["system_interval"],
                paths={"spool": self._spool_path.parent, "artifacts": self._artifact_root},
            )
            self._system.start()
        if opts["console"]:
            console.tail.subscribe(id(self), self._put_console)
        _open_runs.add(self)
        _install_hooks(opts["handle_signals"])

    def _make_writer(self, resumed: resume.Resumable | None = None) -> Writer:
        """The run's writer, built from its parts: queue, batch builder, transport."""
        opts, k, settings = self._options, self.keys, self.settings
        store = ArtifactStore(opts["artifact_dir"] or default_artifact_dir())
        self._artifact_root = store.root
        files = (
            tensorfiles.TensorFiles(store, opts["tensor_file_bytes"])
            if opts["tensor_file_bytes"] > 0
            else None
        )
        self._media_writer = media.MediaWriter(k, self.run_id, store)
        self._spool_path = spool_dir(self.savedir) / f"{self.run_id}.spool"
        transport = Transport(
            lambda: cfg.client(settings),
            k,
            self.run_id,
            Spool(self._spool_path),
            on_name=self._named,
            resend_window=opts["resend_window"],
            first_seq=resumed.seq if resumed else 0,
        )
        encoder = ChunkEncoder(k, self.run_id, files)
        if resumed is not None:
            encoder.continue_run(resumed.series, resumed.blobs)
        builder = BatchBuilder(encoder, self._media_writer)
        return Writer(WriteQueue(), builder, transport, flush_interval=opts["flush_interval"])

    def _reserve_now(self, wanted: str, policy: str) -> tuple[str, str | None]:
        """Reserve the run's name before on() returns, so ``stats.name`` is final at once, and
        name the run it follows: the last one started with that name (``exp`` for ``exp.2``,
        ``exp.2`` for ``exp.3``), None if none. If Redis is away the writer reserves it later
        (the name may then still get a suffix, which is logged)."""
        try:
            client = cfg.client(self.settings, timeout=2)
            name = reserve_name(client, self.keys.names, wanted, self.run_id, policy)
            return name, _previous_run(client, self.keys.names, wanted, name)
        except NameTaken:
            raise cfg.LabstatsError(f"a run named {wanted!r} exists already (on_conflict='error')") from None
        except (redis.RedisError, OSError) as exc:
            log.warning("labstats: cannot reserve run name %r now (%s); it is reserved later", wanted, exc)
            return wanted, None

    def _record_freeze(self) -> None:
        """The run's packages (pip freeze) and its code bundle, each into its record when made."""
        if self._options["capture_freeze"]:
            text = runmeta.freeze()
            writer = self._writer
            if writer is not None and text:
                writer.put_commands([cmd("SET", self.keys.freeze(self.run_id), text)])
        if self._code is not None:
            self._record_code(*self._code)

    def _record_code(self, root: str, commit: str) -> None:
        """The commit's history as a bundle in the artifact store, so that the run regenerates
        where its repository is not (labstats.capture.code_bundle); or why there is none."""
        store = ArtifactStore(self._artifact_root)
        digest, note = code_bundle.keep(store, root, commit, self._options["code_bundle_bytes"])
        writer = self._writer
        if writer is not None:
            field = ("code_bundle", digest) if digest else ("code_bundle_note", note)
            writer.put_commands([cmd("HSET", self.keys.run(self.run_id), *field)])

    def _put_console(self, final: bool = False) -> None:
        """The process's last console lines into the run's record (the console thread every
        few seconds, and close), when they changed since the last time."""
        writer = self._writer
        if writer is None or (self._closed and not final):
            return
        text, version = console.tail.text()
        if version != self._console_version and text:
            self._console_version = version
            writer.put_commands([cmd("HSET", self.keys.run(self.run_id), "console", text)])

    def _put_system_sample(self, idx: int, values: dict[str, Any]) -> None:
        """The system sampler's sink (its thread): a sample goes the way of every point,
        through the writer, its spool and resend. Its idx is its wall time in unix ms."""
        writer = self._writer
        if writer is not None and not self._closed:
            writer.put_samples(idx, values)

    def _named(self, name: str) -> None:
        if name != self.name:
            log.warning("labstats: run name %r was taken; this run is %r", self.name, name)
        self.name = name

    def _require_writer(self) -> Writer:
        if self._writer is None:
            raise RuntimeError("call Stats(savedir) or Stats().on(savedir) before logging")
        if self._closed:
            raise RuntimeError(f"run {self.name!r} is closed")
        return self._writer

    # ---- logging ---------------------------------------------------------------------------

    def watch(self, obj: Any, name: str, *, every: int = 1, kind: str = "value", bins: int = 64) -> None:
        """Record ``obj`` at every :meth:`update` (or every ``every``-th). Pass a callable for
        values that are rebound rather than changed in place (``stats.watch(lambda: loss,
        "loss")``). ``kind="histogram"`` stores a histogram of the values instead (``bins``
        equal bins between their min and max, computed on the GPU for CUDA tensors): the
        series' values are float64 arrays [min, max, count_0, ..., count_{bins-1}].
        ``kind="image"``, ``"fits"`` or ``"points"`` records the object as that medium (see
        :meth:`image`, :meth:`fits`, :meth:`points`)."""
        _check_series_name(name)
        if kind not in _WATCH_KINDS:
            raise ValueError(f"labstats: watch kind must be one of {', '.join(_WATCH_KINDS)}, not {kind!r}")
        if int(every) < 1 or int(bins) < 1:
            raise ValueError("labstats: every and bins must be at least 1")
        self._watched[name] = _Watch(obj, int(every), kind, int(bins))

    def unwatch(self, name: str) -> None:
        self._watched.pop(name, None)

    def update(self, epoch: int, set_size: int, batch_size: int, step: int) -> int:
        """Record every watched object at ``idx = epoch*set_size + step*batch_size``; returns idx."""
        idx = int(epoch) * int(set_size) + int(step) * int(batch_size)
        values = {}
        nbytes = 0  # of large values, which count against the writer queue's bound
        for name, watched in self._watched.items():
            watched.updates += 1
            if (watched.updates - 1) % watched.every:
                continue
            obj = watched.obj
            value = obj() if callable(obj) and not _is_array_like(obj) else obj
            if watched.kind in _MEDIA_KINDS:
                self._media(watched.kind, name, value, idx)
                continue
            if watched.kind == "histogram":
                value = self._capture(value, name, bins=watched.bins)
            elif type(value) not in _PLAIN_SCALARS:
                value = self._capture(value, name)
            values[name] = value
            if isinstance(value, _QUEUED_BYTES):
                nbytes += value.nbytes
        if epoch != self._last_epoch:
            values["_epoch"] = int(epoch)
            self._last_epoch = epoch
        writer = self._require_writer()
        self._last_step = _as_step(idx)
        writer.put_points(self._last_step, values, nbytes)
        return idx

    def log(self, step: int | None = None, **values: Any) -> int:
        """Record ``values`` (name=value) at ``step`` (default: the last step + 1); returns step."""
        # The training loop's hot path: the common case (plain numbers, names seen before,
        # an int step) costs a few dictionary lookups. ``values`` is this call's own dict.
        writer = self._writer
        if writer is None or self._closed:
            writer = self._require_writer()
        nbytes = 0
        for name, value in values.items():
            if name not in _good_names:
                _check_series_name(name)
            if type(value) not in _PLAIN_SCALARS:
                values[name] = value = self._capture(value, name)
                if isinstance(value, _QUEUED_BYTES):
                    nbytes += value.nbytes
        if step is None:
            step = self._last_step + 1
        elif type(step) is not int:
            step = _as_step(step)
        self._last_step = step
        writer.put_points(step, values, nbytes)
        return step

    def histogram(self, name: str, values: Any, step: int | None = None, *, bins: int = 64) -> int:
        """Record a histogram of ``values`` (``bins`` equal bins between their finite min and
        max; on the GPU for CUDA tensors) at ``step`` (default: the current step), like
        ``watch(..., kind="histogram")`` does at every update. Returns the step."""
        writer = self._require_writer()
        _check_series_name(name)
        if int(bins) < 1:
            raise ValueError("labstats: bins must be at least 1")
        step = _as_step(step) if step is not None else max(self._last_step, 0)
        captured = self._capture(values, name, bins=int(bins))
        writer.put_points(step, {name: captured}, _queued_bytes({name: captured}))
        self._last_step = step
        return step

    def add_scalar(self, tag: str, value: Any, global_step: int | None = None) -> None:
        """TensorBoard-style alias of :meth:`log` for one value."""
        _check_series_name(tag)
        self.record(
            self._last_step + 1 if global_step is None else global_step, {tag: self._capture(value, tag)}
        )

    def write_immediate(self, obj: Any, name: str, epoch: int, step: int, idx: int) -> None:
        """Record one value now (the original API) and wake the writer; does not block."""
        _check_series_name(name)
        self.record(idx, {name: self._capture(obj, name), "_epoch": int(epoch)})
        self._require_writer().wake()

    def set_config(self, **values: Any) -> None:
        """Add to the run's config (hyperparameters) after start."""
        writer = self._require_writer()
        config = _config_json({**self._options["config"], **values})  # refused whole, kept as it was
        self._options["config"].update(values)
        writer.put_commands([cmd("HSET", self.keys.run(self.run_id), "config", config)])

    def alert(self, title: str, text: str = "", level: str = "warning") -> bool:
        """Tell the lab's alert channels (mail, chat, webhook) something, as ``wandb.alert``:
        the web box's alerts service sends it within its check interval (15 s), the same
        title at most once an hour per run. ``level``: "info", "warning" or "error".

        It goes the way of the run's other records, through the writer: while Redis is away
        it waits in the spool and is sent when Redis is back (late, never lost). It never
        raises into training: before :meth:`on` or after :meth:`close` it is dropped with a
        warning and False is returned. A title is cut at 200 characters, a text at 4,000."""
        try:
            writer = self._writer
            if writer is None or self._closed:
                log.warning("labstats: alert %r dropped: the run is not open", str(title)[:100])
                return False
            if level not in ("info", "warning", "error"):
                log.warning("labstats: alert level %r is not info, warning or error; sent as warning", level)
                level = "warning"
            now = time.time()
            with self._lock:
                self._alerts_sent += 1
                field = f"{int(now * 1000)}-{self._alerts_sent}"
            value = json.dumps(
                {"title": str(title)[:200], "text": str(text)[:4000], "level": level, "at": round(now, 3)},
                ensure_ascii=False,
            )
            return writer.put_commands([cmd("HSET", self.keys.run_alerts(self.run_id), field, value)])
        except Exception as exc:  # an alert must never end the training
            log.warning("labstats: alert %r dropped (%s)", title, exc)
            return False

    # ---- media ------------------------------------------------------------------------------

    def image(self, name: str, data: Any, step: int | None = None, *, caption: str | None = None,
              dataformats: str | None = None) -> int:  # fmt: skip
        """Record an image (NumPy/PyTorch/TF/JAX array in HW, HWC or CHW, uint8 or float in
        [0, 1], or a PIL image) at ``step`` (default: the current step). Stored as PNG in the
        artifact store, with a thumbnail in Redis. Returns the step."""
        return self._media("image", name, data, step, caption=caption, dataformats=dataformats)

    def images(self, name: str, batch: Any, step: int | None = None, *, caption: str | None = None,
               dataformats: str | None = None) -> int:  # fmt: skip
        """Record a batch of images (NHWC / NCHW array or a list), stored and shown as one grid."""
        return self._media("image", name, batch, step, caption=caption, dataformats=dataformats, batch=True)

    def fits(self, name: str, data: Any, step: int | None = None, *, header: Any = None,
             caption: str | None = None) -> int:  # fmt: skip
        """Record a 2-D image (or 3-D cube) as a FITS file with ``header`` (dict or astropy Header)."""
        return self._media("fits", name, data, step, caption=caption, header=header)

    def points(self, name: str, xyz: Any, step: int | None = None, *, colors: Any = None,
               caption: str | None = None) -> int:  # fmt: skip
        """Record a point cloud (N×3, or N×3×1) with optional N×3 colours, stored as binary PLY."""
        return self._media("points", name, xyz, step, caption=caption, colors=colors)

    def file(self, name: str, path: str | os.PathLike, step: int | None = None, *,
             caption: str | None = None) -> int:  # fmt: skip
        """Record any file (checkpoint, OBJ, CSV...) as an artifact of the run. The writer reads
        it in the background: leave the file as it is until :meth:`flush` returns."""
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"labstats: file {name!r}: {source} is not a readable file")
        return self._media("file", name, str(source.resolve()), step, caption=caption, filename=source.name)

    def retain(self, name: str, *, every: int = 1, last: int = 0) -> None:
        """Keep only every ``every``-th logged step of media ``name`` plus the last ``last``
        (older records and thumbnails are removed from Redis; files stay in the store)."""
        _check_series_name(name)
        if int(every) < 1 or int(last) < 0:
            raise ValueError("labstats: retain needs every >= 1 and last >= 0")
        self._require_writer()
        self._media_writer.retention[name] = (int(every), int(last))

    def save_jpg(self, data: Any, savedir: str | os.PathLike, prefix: str, epoch: int, step: int,
                 idx: int) -> Path:  # fmt: skip
        """The original API: ``<savedir>/<prefix><epoch:03>_s<step:05>_i<idx:05>.jpg``, also
        recorded as media ``prefix`` (item ``idx``) at the current step. Written in the
        background; returns the file's path."""
        path = Path(savedir) / f"{prefix}{int(epoch):03}_s{int(step):05}_i{int(idx):05}.jpg"
        self._media("image", _seed_name(prefix, "jpg"), data, self._seed_step(step), item=int(idx),
                    files=[(str(path), "data")], format="JPEG")  # fmt: skip
        return path

    def save_fits(self, data: Any, savedir: str | os.PathLike, prefix: str, epoch: int, step: int,
                  idx: int, header: Any = None) -> Path:  # fmt: skip
        """The original API: ``<savedir>/<prefix><epoch:03>_s<step:05>_i<idx:05>.fits``."""
        path = Path(savedir) / f"{prefix}{int(epoch):03}_s{int(step):05}_i{int(idx):05}.fits"
        self._media("fits", _seed_name(prefix, "fits"), data, self._seed_step(step), item=int(idx),
                    files=[(str(path), "data")], header=header)  # fmt: skip
        return path

    def save_points(self, points: Any, savedir: str | os.PathLike, epoch: int, step: int,
                    ply: bool = False) -> Path:  # fmt: skip
        """The original API: ``<savedir>/shape_e<epoch:03>_s<step:05>.obj`` (and ``.ply`` when
        asked), also recorded as media ``shape``. Returns the OBJ file's path."""
        base = Path(savedir) / f"shape_e{int(epoch):03}_s{int(step):05}"
        files = [(f"{base}.obj", "obj")] + ([(f"{base}.ply", "data")] if ply else [])
        self._media("points", "shape", points, self._seed_step(step), files=files)
        return Path(f"{base}.obj")

    # ---- for importers and adapters (labstats.ops.tbimport, labstats.tb) -------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ended the run (a closed Stats logs nothing more)."""
        return self._closed

    @property
    def last_step(self) -> int:
        """The step of the last value recorded (-1 before any)."""
        return self._last_step

    @property
    def writer(self) -> Writer | None:
        """The run's background writer (None before :meth:`on`): its queue, batch builder and
        transport, and counters such as ``resent_batches``."""
        return self._writer

    def record(self, step: int, values: dict[str, Any]) -> None:
        """Record ``values`` at ``step`` as they are, for importers: plain numbers, strings,
        snapshots (``labstats.capture.snapshot``, such as a ``CountedHistogram``), and the step's own
        wall time (unix seconds) under ``TIME_SERIES`` instead of the call's. Names
        are not checked and values not copied: leave them unchanged."""
        writer = self._require_writer()
        step = _as_step(step)
        self._last_step = step
        writer.put_points(step, values, _queued_bytes(values))

    def backdate(self, started: float) -> None:
        """Give the run an earlier start (unix seconds; an imported run: its first event's time)."""
        k = self.keys
        self._require_writer().put_commands([
            cmd("HSET", k.run(self.run_id), "started", f"{started:.3f}"),
            cmd("ZADD", k.runs_index(self.owner), f"{started:.3f}", self.run_id),
        ])  # fmt: skip

    def mark_imported(self, origin: dict[str, Any]) -> None:
        """Note where an imported run came from (the run's ``imported_from`` field, JSON with
        sorted keys): an importer finds it there and does not import the same source twice."""
        origin_json = json.dumps(origin, sort_keys=True)
        self._require_writer().put_commands(
            [cmd("HSET", self.keys.run(self.run_id), "imported_from", origin_json)]
        )

    def _seed_step(self, step: int) -> int:
        return self._last_step if self._last_step >= 0 else _as_step(step)

    def _media(self, kind: str, name: str, value: Any, step: int | None, *, caption: str | None = None,
               item: int = 0, files: list | None = None, batch: bool = False,
               **options: Any) -> int:  # fmt: skip
        writer = self._require_writer()
        _check_series_name(name)
        step = _as_step(step) if step is not None else max(self._last_step, 0)
        try:
            if kind == "image":
                value, options["layout"] = media.capture_image(value, batch, options.pop("dataformats", None))
            elif kind == "fits":
                value, options["header"] = media.capture_fits(value, options.get("header"))
            elif kind == "points":
                value, options["colors"] = media.capture_points(value, options.get("colors"))
        except media_files.MediaError as exc:
            raise ValueError(f"labstats: {kind} {name!r}: {exc}") from None
        except EncodeError as exc:
            raise TypeError(f"labstats: {kind} {name!r}: {exc}") from None
        writer.put_media(media.Capture(kind, name, step, item, value, caption or "", options, files or []))
        return step

    def _capture(self, value: Any, name: str, bins: int | None = None) -> Any:
        try:
            return capture(value) if bins is None else capture_histogram(value, bins)
        except EncodeError as exc:
            raise TypeError(f"labstats: series {name!r}: {exc}") from None

    # ---- ending ----------------------------------------------------------------------------

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything logged so far is in Redis or safely spooled on disk."""
        return self._writer.flush(timeout) if self._writer else True

    def close(
        self,
        status: str = run_record.FINISHED,
        reason: str = "",
        timeout: float = 10.0,
        *,
        ended: float | None = None,
    ) -> None:
        """Mark the run finished (or crashed), flush and stop the writer. Idempotent.
        ``ended``: when the run ended (unix seconds), if not now (an imported run)."""
        with self._lock:
            if self._closed or self._writer is None:
                return
            self._closed = True
        if self._system is not None:
            self._system.stop(timeout)  # no sample after the run's end
        if self._freeze_thread is not None:
            self._freeze_thread.join(timeout)  # its record goes out with the rest
        if self._options["console"]:
            console.tail.unsubscribe(id(self))
            self._put_console(final=True)  # a crash's traceback is in it (the excepthook put it)
        k, run, owner = self.keys, self.run_id, self.owner
        fields = ["status", status, "ended", f"{time.time() if ended is None else ended:.3f}"]
        if reason:
            fields += ["reason", reason]
        self._writer.put_commands(
            [
                cmd("HSET", k.run(run), *fields),
                cmd("SMOVE", k.status_index(owner, run_record.RUNNING), k.status_index(owner, status), run),
            ]
        )
        if not self._writer.stop(timeout):
            log.warning(
                "labstats: run %r not fully written within %.0fs; the spool keeps the rest",
                self.name,
                timeout,
            )
        elif self._spool_path.exists():
            log.warning("labstats: Redis unreachable at close; records kept in %s", self._spool_path)
        _open_runs.discard(self)

    def __enter__(self) -> Stats:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close(run_record.CRASHED, f"{exc_type.__name__}: {exc}")

    @property
    def pending_spool(self) -> Path | None:
        """The spool file if records are waiting for Redis, else None."""
        path = self._spool_path
        return path if path is not None and path.exists() else None


_MEDIA_KINDS = ("image", "fits", "points")
_PLAIN_SCALARS = frozenset((bool, int, float))  # snapshots of themselves
_QUEUED_BYTES = (Deferred, Pending, Histogram)  # snapshots whose bytes count against the queue's bound


def _previous_run(client: redis.Redis, names_key: str, wanted: str, name: str) -> str | None:
    """The id of the run that had the name before ``name`` in ``wanted``'s line of suffixes."""
    if name == wanted:
        return None
    n = int(name.rsplit(".", 1)[1])
    before = client.hget(names_key, wanted if n == 2 else f"{wanted}.{n - 1}")
    return before.decode() if before is not None else None


def _bundle_cap_from_env() -> int:
    """$LABSTATS_CODE_BUNDLE_BYTES, else the default cap; a value that is not a number is
    warned about and the default used (never an error at the start of a training run)."""
    text = os.environ.get("LABSTATS_CODE_BUNDLE_BYTES", "")
    try:
        return int(text) if text else code_bundle.DEFAULT_MAX_BYTES
    except ValueError:
        log.warning("labstats: LABSTATS_CODE_BUNDLE_BYTES=%r is not a number of bytes; using 64 MiB", text)
        return code_bundle.DEFAULT_MAX_BYTES


def _code_of(meta: dict[str, Any]) -> tuple[str, str] | None:
    """The repository root and commit a run's record names, if it was started in git."""
    root, commit = meta.get("git_root"), meta.get("git_commit")
    return (root, commit) if isinstance(root, str) and isinstance(commit, str) and root and commit else None


def _system_interval(system_metrics: float | bool) -> float:
    """Seconds between system samples; 0.0: none (False, None or 0; True: the default)."""
    if system_metrics is True:
        return system.DEFAULT_INTERVAL
    if system_metrics is None or system_metrics is False:
        return 0.0
    try:
        interval = float(system_metrics)
    except (TypeError, ValueError):
        problem = f"system_metrics must be seconds or False, not {system_metrics!r}"
        raise TypeError(f"labstats: {problem}") from None
    if not interval >= 0 or interval == float("inf"):
        raise ValueError(f"labstats: system_metrics must be 0 or more seconds, not {system_metrics!r}")
    return interval


def _queued_bytes(values: dict[str, Any]) -> int:
    return sum(v.nbytes for v in values.values() if isinstance(v, _QUEUED_BYTES))


_WATCH_KINDS = ("value", "histogram", *_MEDIA_KINDS)


def _seed_name(prefix: str, default: str) -> str:
    """The media name of the original save_* methods: the file prefix without its trailing
    separators ("val_" -> "val")."""
    return str(prefix).rstrip("_-. /") or default


class _Watch:
    """A watched object and how to record it."""

    __slots__ = ("bins", "every", "kind", "obj", "updates")

    def __init__(self, obj: Any, every: int, kind: str, bins: int) -> None:
        self.obj, self.every, self.kind, self.bins = obj, every, kind, bins
        self.updates = 0


def _as_step(step: Any) -> int:
    try:
        as_int = int(step)
    except (TypeError, ValueError):
        raise TypeError(f"labstats: step must be an integer, not {step!r}") from None
    if as_int != step:
        raise TypeError(f"labstats: step must be an integer, not {step!r}")
    return as_int


_good_names: set[str] = set()  # names checked already: log() is called every step


def _check_series_name(name: str) -> None:
    if isinstance(name, str) and name in _good_names:
        return
    problem = series_name_problem(name)
    if problem is not None:
        raise ValueError(f"labstats: invalid series name {name!r}: it {problem}")
    if len(_good_names) < 100_000:
        _good_names.add(name)


def _is_array_like(obj: Any) -> bool:
    return hasattr(obj, "__array__") or hasattr(obj, "detach")


# ---- process hooks: a crash or SIGTERM marks open runs; normal exit finishes them --------


def _close_all(status: str, reason: str = "") -> None:
    for stats in list(_open_runs):
        stats.close(status, reason)


def _install_hooks(handle_signals: bool) -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_close_all, run_record.FINISHED)

    previous_hook = sys.excepthook

    def excepthook(exc_type, exc, tb):
        # The traceback is printed after the runs are closed (by the hook before this one):
        # it goes into their console lines now, whole.
        console.tail.add("".join(traceback.format_exception(exc_type, exc, tb)))
        _close_all(run_record.CRASHED, f"{exc_type.__name__}: {exc}")
        previous_hook(exc_type, exc, tb)

    sys.excepthook = excepthook

    # Only where nobody else handles SIGTERM (a framework's own handler stays in charge).
    on_main_thread = threading.current_thread() is threading.main_thread()
    if handle_signals and on_main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

        def on_sigterm(signum, frame):
            _close_all(run_record.CRASHED, "SIGTERM")
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_sigterm)
