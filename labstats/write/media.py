"""Media of a run: images, FITS images, point clouds and any file.

The training thread only checks and copies (as for tensors); two media threads encode
(images: a lossless PNG and a WebP thumbnail) and the writer thread stores: the original goes
into a content-addressed artifact store (files named by SHA-256, written under a temporary
name and renamed, so a half-written file is never seen), and Redis gets, per (run, name,
step, item), a small record and a thumbnail of at most 256 px, so the web box has the
thumbnails as soon as replication brings them (docs/schema.md, "Media").

Layouts of images: HW (grey), HWC or CHW (detected from where the 1, 3 or 4 channels are,
or forced with ``dataformats``); uint8, bool, or float in [0, 1] (clipped). Row 0 is the top.

How each kind is encoded and read back (PNG, WebP thumbnails, FITS, PLY) is in
:mod:`labstats.format.media_files`.
"""

from __future__ import annotations

import io
import logging
import math
import mimetypes
import os
import queue
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labstats.capture.device import Pending
from labstats.capture.snapshot import Deferred, capture
from labstats.format import media_record
from labstats.format.keys import Keys
from labstats.format.media_files import (
    MAX_DECODE_PIXELS,
    MediaError,
    fits_preview,
    grid,
    obj_bytes,
    pil_image,
    ply_bytes,
    png_bytes,
    points_preview,
    thumbnail,
    to_uint8,
)
from labstats.format.media_record import field_name, media_id
from labstats.store import ArtifactStore
from labstats.write.chunks import cmd

log = logging.getLogger("labstats")


# ---- checks and copies on the calling thread ------------------------------------------------


@dataclass
class Capture:
    """A media value taken on the training thread, encoded later by a media thread."""

    kind: str
    name: str
    step: int
    item: int
    value: Any  # a snapshot (array copy / Deferred / Pending), PIL image, or bytes for files
    caption: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # layout, header, colors, file name
    # Files the encoded value is also written to (the original save_* methods): (path, what),
    # what being "data" (the stored file) or "obj" (the points as OBJ text).
    files: list[tuple[str, str]] = field(default_factory=list)
    # Memory the value takes (what the writer's queue bound counts), counted once.
    nbytes: int = field(default=0, init=False, repr=False, compare=False)
    # The media threads the capture is queued for when it is made (None: the writer encodes
    # it), and what they made of it (see encoding()).
    threads: MediaThreads | None = field(default=None, init=False, repr=False, compare=False)
    encoded: EncodedMedia | None = field(default=None, init=False, repr=False, compare=False)
    error: BaseException | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        value = self.value
        if isinstance(value, Deferred | Pending | np.ndarray):
            self.nbytes = value.nbytes
        elif isinstance(value, bytes):
            self.nbytes = len(value)
        # The training thread has only copied the value; the media threads encode it beside
        # the training and the writer, and the writer takes the results in order.
        if _media_threads.put(self):
            self.threads = _media_threads


def _shape(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    return tuple(int(n) for n in shape) if shape is not None else None


def image_layout(shape: tuple[int, ...], dataformats: str | None = None) -> str:
    """HW, HWC or CHW for an image of this shape (NHWC / NCHW for batches)."""
    if dataformats is not None:
        form = dataformats.upper()
        if form not in ("HW", "HWC", "CHW", "NHWC", "NCHW") or len(form) != len(shape):
            raise MediaError(f"dataformats {dataformats!r} does not fit an array of shape {shape}")
        return form
    if len(shape) == 2:
        return "HW"
    if len(shape) == 3:
        if shape[-1] in (1, 3, 4):
            return "HWC"
        if shape[0] in (1, 3, 4):
            return "CHW"
    if len(shape) == 4:
        if shape[-1] in (1, 3, 4):
            return "NHWC"
        if shape[1] in (1, 3, 4):
            return "NCHW"
    raise MediaError(
        f"an image must be HW, HWC or CHW with 1, 3 or 4 channels, not shape {shape} "
        "(pass dataformats= to say which)"
    )


def capture_image(value: Any, batch: bool = False, dataformats: str | None = None) -> tuple[Any, str]:
    """(copy, layout) of an image or a batch of them; refuses what cannot be one."""
    if type(value) is np.ndarray:  # the usual case first: it is none of the others
        shape = value.shape
    elif _is_pil(value):
        if batch:
            raise MediaError("images() takes a batch array (NHWC / NCHW) or a list of images")
        return value.copy(), "PIL"
    elif isinstance(value, list | tuple):
        return _capture_list(value, batch, dataformats)
    else:
        shape = _shape(value)
        if shape is None:
            raise MediaError(f"an image must be an array, tensor or PIL image, not {type(value).__name__}")
    layout = _checked_layout(shape, batch, dataformats)
    snap = _spare_buffers.copy(value) if _copies_whole(value) else capture(value)
    if isinstance(snap, Deferred) and isinstance(snap.obj, np.ndarray):
        _check_pixels(snap.obj)
    return snap, layout


def _checked_layout(shape: tuple[int, ...], batch: bool, dataformats: str | None) -> str:
    layout = image_layout(shape, dataformats)
    if batch != (layout[0] == "N"):
        raise MediaError(
            f"{'images() takes a batch (N first)' if batch else 'image() takes one image'}, "
            f"got shape {shape} read as {layout}"
        )
    if 0 in shape:
        raise MediaError(f"an image of shape {shape} is empty")
    return layout


def _capture_list(images: list | tuple, batch: bool, dataformats: str | None) -> tuple[Any, str]:
    """A list of images stacked straight into their one copy (a spare array when one is kept)."""
    if not images:
        raise MediaError("an empty list of images")
    # NumPy arrays are read as they are (the stack is their copy); tensors come to the host.
    arrays = [
        v if type(v) is np.ndarray else np.asarray(v) if _is_pil(v) else _to_host_now(v) for v in images
    ]
    first = arrays[0]
    if any(a.shape != first.shape for a in arrays):
        shapes = sorted({a.shape for a in arrays})
        raise MediaError(f"the images of a batch must have one shape, not {shapes}")
    shape = (len(arrays), *first.shape)
    layout = _checked_layout(shape, batch, dataformats)
    if first.dtype.kind in "uifb" and all(a.dtype == first.dtype for a in arrays):
        snap: Any = _spare_buffers.take(first.dtype, shape)
        np.stack(arrays, out=snap.obj)
    else:  # images of mixed or unusual types: NumPy's own stack, refused as an array would be
        snap = capture(np.stack(arrays))
    if isinstance(snap, Deferred) and isinstance(snap.obj, np.ndarray):
        _check_pixels(snap.obj)
    return snap, layout


def _copies_whole(value: Any) -> bool:
    return type(value) is np.ndarray and value.flags.c_contiguous and value.dtype.kind in "uifb"


class _Pixels(Deferred):
    """An image's copy in an array of _spare_buffers, given back once it is encoded."""

    __slots__ = ()


class _SpareBuffers:
    """Arrays of encoded images kept for the next copies: memory the process has touched
    already, the one given back last first (the warmest in the caches). A new array costs
    the training thread a page fault per 4 KiB: copying a 256×256 RGB image took 100 to 170
    µs into new memory on the busy 2-core VM, ~20 µs into the one given back last. At most MAX_BYTES
    are kept.

    The training thread only pops (list.pop is atomic under the GIL): it never waits for a
    media thread giving an array back. The media threads give back under a lock, and count
    what is kept then (a pop meanwhile only makes the count high, never over the bound)."""

    MAX_BYTES = 16 * 2**20

    def __init__(self) -> None:
        self._free: dict[tuple[np.dtype, tuple[int, ...]], list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def take(self, dtype: np.dtype, shape: tuple[int, ...]) -> _Pixels:
        """An array to copy into: a spare one when one of this type and shape is kept."""
        try:
            return _Pixels(self._free[dtype, shape].pop())
        except (KeyError, IndexError):
            return _Pixels(np.empty(shape, dtype))

    def copy(self, array: np.ndarray) -> _Pixels:
        """A copy of a C-contiguous array, in a spare array when one is kept."""
        pixels = self.take(array.dtype, array.shape)
        # A memoryview copy keeps the GIL (NumPy's lets it go): a thread that took it meanwhile
        # (the writer building a batch) would keep the training thread waiting up to 5 ms.
        memoryview(pixels.obj).cast("B")[:] = memoryview(array).cast("B")
        return pixels

    def give_back(self, pixels: _Pixels) -> None:
        array, pixels.obj = pixels.obj, None
        if array is None:
            return
        with self._lock:
            kept = sum(
                len(arrays) * math.prod(shape) * dtype.itemsize
                for (dtype, shape), arrays in self._free.items()
            )
            if kept + array.nbytes <= self.MAX_BYTES:
                self._free.setdefault((array.dtype, array.shape), []).append(array)

    def after_fork_in_child(self) -> None:
        # A media thread of the parent may have held the lock at the fork: it stays held.
        self._lock = threading.Lock()


_spare_buffers = _SpareBuffers()


def _check_pixels(array: np.ndarray) -> None:
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise MediaError("the image holds NaN or infinite values")
    elif array.dtype.kind not in "uib":
        raise MediaError(f"an image must hold numbers (uint8, float in [0, 1] or bool), not {array.dtype}")


def capture_points(xyz: Any, colors: Any = None) -> tuple[Any, Any]:
    shape = _shape(xyz)
    if shape is None:
        raise MediaError(f"points must be an N×3 array or tensor, not {type(xyz).__name__}")
    if len(shape) == 3 and shape[1:] == (3, 1):  # the original N×3×1 layout
        shape = shape[:2]
    if len(shape) != 2 or shape[1] != 3:
        raise MediaError(f"points must be N×3 (or N×3×1), not shape {_shape(xyz)}")
    if shape[0] == 0:
        raise MediaError("an empty point set (N = 0)")
    snap = capture(xyz)
    host = snap.obj if isinstance(snap, Deferred) and isinstance(snap.obj, np.ndarray) else None
    if host is not None and host.dtype.kind == "f" and not np.isfinite(host).all():
        raise MediaError("the points hold NaN or infinite coordinates")
    snap_colors = None
    if colors is not None:
        cshape = _shape(colors)
        if cshape != (shape[0], 3):
            raise MediaError(f"colors must be N×3 like the {shape[0]} points, not shape {cshape}")
        snap_colors = capture(colors)
    return snap, snap_colors


def capture_fits(data: Any, header: Any = None) -> tuple[Any, dict[str, Any]]:
    shape = _shape(data)
    if shape is None or len(shape) not in (2, 3):
        raise MediaError(f"a FITS image must be a 2-D array (or a 3-D cube), not shape {shape}")
    if 0 in shape:
        raise MediaError(f"a FITS image of shape {shape} is empty")
    cards: dict[str, Any] = {}
    if header is not None:
        try:
            cards = {str(k): v for k, v in dict(header).items()}
        except (TypeError, ValueError):
            raise MediaError("header must be a mapping (dict or astropy Header)") from None
    return capture(data), cards


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "getbands")


def _to_host_now(value: Any) -> np.ndarray:
    snap = capture(value)
    return _numpy(snap)


def _numpy(snap: Any) -> np.ndarray:
    if isinstance(snap, Pending):
        snap = snap.result()
    if isinstance(snap, Deferred):
        snap = snap.to_numpy()
    return np.asarray(snap)


# ---- encoding (on the media threads) -------------------------------------------------------------


@dataclass
class EncodedMedia:
    """A media item as stored: the file, its media type and shape, and its thumbnail."""

    data: bytes
    media_type: str
    shape: list[int]
    thumb: bytes
    extra: dict[str, Any] = field(default_factory=dict)


def encode_image(value: Any, layout: str, fmt: str = "PNG") -> EncodedMedia:
    array = None  # the pixels as HWC uint8, when they can go to png_bytes as they are
    if layout == "PIL":
        image = value
        shape = [image.size[1], image.size[0], len(image.getbands())]
        if image.mode in ("L", "RGB", "RGBA"):
            array = np.asarray(image).reshape(shape)
    else:
        array = to_uint8(_numpy(value), layout)
        shape = list(array.shape)
        if array.ndim == 4:
            array = grid(array)
        image = pil_image(array)
    if fmt == "JPEG":
        out = io.BytesIO()
        image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(out, "JPEG", quality=92)
        data = out.getvalue()
    elif array is not None:
        data = png_bytes(array)
    else:  # a PIL image of another mode (palette, 16-bit...): Pillow's PNG keeps it as it is
        out = io.BytesIO()
        image.save(out, "PNG")
        data = out.getvalue()
    return EncodedMedia(data, f"image/{fmt.lower()}", shape, thumbnail(image))


def encode_fits(value: Any, cards: dict[str, Any]) -> EncodedMedia:
    from astropy.io import fits

    data = _numpy(value)
    if data.dtype.kind not in "uif" or data.dtype == np.float16:
        data = data.astype(np.float32)
    header = fits.Header()
    for key, card in cards.items():
        header[key] = card
    out = io.BytesIO()
    fits.PrimaryHDU(data=data, header=header).writeto(out)
    return EncodedMedia(out.getvalue(), "application/fits", list(data.shape), thumbnail(fits_preview(data)))


def _points_array(value: Any) -> np.ndarray:
    xyz = _numpy(value)
    if xyz.ndim == 3:
        xyz = xyz[..., 0]
    return np.ascontiguousarray(xyz, dtype=np.float32)


def _colors_array(colors: Any, n: int) -> np.ndarray | None:
    if colors is None:
        return None
    rgb = _numpy(colors)
    if rgb.dtype.kind == "f":
        rgb = np.round(np.clip(rgb, 0, 1) * 255)
    return np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8).reshape(n, 3))


def encode_points(value: Any, colors: Any) -> EncodedMedia:
    xyz = _points_array(value)
    if not np.isfinite(xyz).all():
        raise MediaError("the points hold NaN or infinite coordinates")
    rgb = _colors_array(colors, len(xyz))
    preview = thumbnail(points_preview(xyz, rgb))
    return EncodedMedia(ply_bytes(xyz, rgb), "application/x-ply", [len(xyz), 3], preview)


def encode_file(data: bytes, filename: str) -> EncodedMedia:
    media_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    thumb = b""
    if media_type.startswith("image/") and media_type != "image/svg+xml":  # SVG is a document
        try:
            from PIL import Image

            picture = Image.open(io.BytesIO(data))
            if picture.size[0] * picture.size[1] <= MAX_DECODE_PIXELS:  # checked before decoding
                thumb = thumbnail(picture)
        except Exception:  # any file may be logged; a picture Pillow cannot read has no thumbnail
            thumb = b""
    return EncodedMedia(data, media_type, [len(data)], thumb)


def encode(capture_: Capture) -> EncodedMedia:
    opts = capture_.options
    if capture_.kind == "image":
        return encode_image(capture_.value, opts["layout"], opts.get("format", "PNG"))
    if capture_.kind == "fits":
        return encode_fits(capture_.value, opts.get("header", {}))
    if capture_.kind == "points":
        encoded = encode_points(capture_.value, opts.get("colors"))
        if any(what == "obj" for _, what in capture_.files):
            encoded.extra["obj"] = obj_bytes(_points_array(capture_.value))
        return encoded
    return encode_file(Path(capture_.value).read_bytes(), opts.get("filename", capture_.name))


# ---- the media threads: encoding beside the training and the writer ----------------------------

# Threads that encode captures (PNG, WebP, FITS, PLY): zlib and libwebp let other threads
# run, so two encode two images at once, and the writer thread only stores files (SHA-256,
# which lets other threads run too) and sends records. At most two: the training process's
# own threads come first.
MEDIA_THREADS = max(1, min(2, os.cpu_count() or 1))


class MediaThreads:
    """MEDIA_THREADS daemon threads encoding the captures of one queue, started at the first
    capture of a process (a forked child starts its own: it has none of its parent's).

    A capture wakes a thread only when one waits for work (SimpleQueue.put releases a waiting
    get, and only appends when both are busy): the image is encoded while the training step
    goes on, so its array is back, warm, before the next image is copied, and no encoding
    competes with the next call for the cores and the GIL. The writer waits for an encoding
    on one condition the threads notify (nothing made per call: no lock, no future)."""

    def __init__(self) -> None:
        self._started = False
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Capture] = queue.SimpleQueue()
        self._encoded = threading.Condition(threading.Lock())

    def put(self, capture_: Capture) -> bool:
        """Whether the capture is queued for the threads; False when no thread could be
        started (at interpreter shutdown, at a thread limit): the writer then encodes it."""
        if not self._started and not self._start_threads():
            return False
        self._jobs.put(capture_)
        return True

    def wait(self, capture_: Capture) -> EncodedMedia:
        """The encoding of a capture queued here, once done (raises what the encoding raised)."""
        with self._encoded:
            while capture_.encoded is None and capture_.error is None:
                self._encoded.wait()
        if capture_.error is not None:
            raise capture_.error
        return capture_.encoded

    def after_fork_in_child(self) -> None:
        # The parent's threads are not in the child, nor its queued captures; a lock one of
        # its threads held at the fork would stay held.
        self._started = False
        self._lock = threading.Lock()
        self._jobs = queue.SimpleQueue()
        self._encoded = threading.Condition(threading.Lock())

    def _start_threads(self) -> bool:
        """Whether this process has media threads now (started here when it had none)."""
        with self._lock:
            if self._started:
                return True
            started = 0
            for k in range(MEDIA_THREADS):
                try:
                    threading.Thread(target=self._run, name=f"labstats-media-{k}", daemon=True).start()
                except RuntimeError as exc:  # no thread may start now: never the user's error
                    log.warning("labstats: no media thread could be started (%s); the writer encodes", exc)
                    break
                started += 1
            self._started = started > 0
            return self._started

    def _run(self) -> None:
        jobs = self._jobs
        while True:
            capture_ = jobs.get()
            try:
                result, error = encode(capture_), None
            except BaseException as exc:  # the writer says what failed; this thread goes on
                result, error = None, exc
            finally:
                # Nothing reads an image's pixels once it is encoded: its array serves the next copy.
                if isinstance(capture_.value, _Pixels):
                    _spare_buffers.give_back(capture_.value)
            with self._encoded:
                capture_.encoded, capture_.error = result, error
                self._encoded.notify_all()


_media_threads = MediaThreads()


def _after_fork_in_child() -> None:
    """A child forked while a media thread held a lock (a DataLoader worker forked as an
    image was given back) would wait for it forever: the child gets its own locks."""
    _spare_buffers.after_fork_in_child()
    _media_threads.after_fork_in_child()


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def encoding(capture_: Capture) -> EncodedMedia:
    """The capture's encoding, from the media threads (queued when the capture was made)."""
    if capture_.threads is None:
        return encode(capture_)
    return capture_.threads.wait(capture_)


# ---- the writer side: store, then record --------------------------------------------------------


class MediaWriter:
    """Turns captures into files in the store and Redis commands (on the writer thread)."""

    def __init__(self, keys: Keys, run_id: str, store: ArtifactStore) -> None:
        self.keys, self.run_id, self.store = keys, run_id, store
        self.known: set[str] = set()
        self.retention: dict[str, tuple[int, int]] = {}  # name -> (every, last)
        self.retained: dict[str, _Retained] = {}
        self.failed = 0
        self._warned_disk = False

    def commands(self, item: Capture) -> list:
        try:
            encoded = encoding(item)
        except Exception as exc:  # a value the checks let through but cannot be encoded
            self.failed += 1
            log.warning("labstats: media %r at step %d left out: %s", item.name, item.step, exc)
            return []
        try:
            digest = self.store.put(encoded.data)
            for path, what in item.files:
                _write_atomic(Path(path), encoded.data if what == "data" else encoded.extra[what])
        except OSError as exc:
            self.failed += 1
            if not self._warned_disk:
                log.warning("labstats: cannot write media to %s (%s); media are left out until it "
                            "can, everything else is logged", self.store.root, exc)  # fmt: skip
                self._warned_disk = True
            return []
        self._warned_disk = False
        mid = media_id(item.name)
        key = self.keys.media_records(self.run_id, mid)
        record = {
            "step": item.step, "item": item.item, "kind": item.kind, "digest": digest,
            "type": encoded.media_type, "shape": encoded.shape, "bytes": len(encoded.data),
            "caption": item.caption, "time": round(time.time(), 3),
        }  # fmt: skip
        if item.options.get("filename"):
            record["file"] = os.path.basename(item.options["filename"])
        field_ = field_name(item.step, item.item)
        out = []
        if item.name not in self.known:
            info = media_record.encode_name(mid, item.kind)
            out.append(cmd("HSET", self.keys.media(self.run_id), item.name, info))
            self.known.add(item.name)
        out.append(cmd("HSET", key, field_, media_record.encode(record)))
        if encoded.thumb:
            out.append(cmd("HSET", self.keys.media_thumbs(self.run_id, mid), field_, encoded.thumb))
        out += self._retain(item.name, mid, item.step, item.item)
        return out

    def _retain(self, name: str, mid: str, step: int, item: int) -> list:
        """Keep every ``every``-th logged step and the last ``last``; HDEL the rest."""
        rule = self.retention.get(name)
        if rule is None:
            return []
        every, last = rule
        state = self.retained.setdefault(name, _Retained())
        if step != state.step:
            state.step, state.ordinal = step, state.ordinal + 1
            if state.ordinal % every:
                state.pending.append((state.ordinal, step, set()))
        if state.pending and state.pending[-1][1] == step:
            state.pending[-1][2].add(item)
        fields = []
        while state.pending and state.pending[0][0] <= state.ordinal - last:
            _, old_step, items = state.pending.popleft()
            fields += [field_name(old_step, i) for i in sorted(items)]
        if not fields:
            return []
        return [cmd("HDEL", self.keys.media_records(self.run_id, mid), *fields),
                cmd("HDEL", self.keys.media_thumbs(self.run_id, mid), *fields)]  # fmt: skip


class _Retained:
    __slots__ = ("ordinal", "pending", "step")

    def __init__(self) -> None:
        self.step: int | None = None
        self.ordinal = -1
        self.pending: deque[tuple[int, int, set[int]]] = deque()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".part-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
