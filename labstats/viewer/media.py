"""Media of a run in the viewer: thumbnails (from Redis), originals (from the artifact store,
by digest only), FITS previews and headers, montages, animations and point clouds.

No path from a request reaches the file system: a request names a run, a media name and a
step; the record in Redis gives a digest; the store maps a 64-hex-digit digest to its file.

Every record, thumbnail and file is treated as hostile (a training user can write any of
them), and each answer costs bounded memory whatever they hold: a thumbnail's length and
header are checked before it is decoded (at most 256 px), files are streamed in blocks from
the store after their SHA-256 check, FITS previews read a strided section of one plane,
point clouds a bounded sample, and step lists are capped. What is refused is answered with
a 4xx and a sentence (413: too large; 422: not readable as what its record says). The
limits are the constants below and in labstats.write.media, listed in docs/security.md.
"""

from __future__ import annotations

import io
import json
import os
import stat
import threading
import warnings
from collections import OrderedDict
from typing import Any, BinaryIO

import numpy as np
from flask import Blueprint, Response, request, url_for
from PIL import Image
from werkzeug.wsgi import wrap_file

from labstats.format import keys, media_files, media_record
from labstats.format.codec import INT64_MAX, INT64_MIN
from labstats.format.media_files import THUMB_READ_MAX_BYTES
from labstats.reader import LabstatsError, Run
from labstats.viewer.data import ApiError, get_run, int_arg, json_error
from labstats.viewer.openapi import (
    STRING,
    content,
    declare,
    errors,
    integer,
    one_of,
    parameter,
    strings,
)

bp = Blueprint("media", __name__, url_prefix="/api")
bp.register_error_handler(ApiError, json_error)


@bp.errorhandler(media_files.MediaError)
def unreadable(exc: media_files.MediaError):
    """A stored file or thumbnail that is not what its record says, or over a limit."""
    status = 413 if " over " in str(exc) or "refused" in str(exc) else 422
    return json_error(ApiError(status, str(exc)))


@bp.errorhandler(Image.DecompressionBombError)
@bp.errorhandler(Image.DecompressionBombWarning)
def too_many_pixels(exc: Exception):
    return json_error(
        ApiError(413, f"the picture has more than {media_files.MAX_DECODE_PIXELS:,} pixels: refused")
    )


MAX_POINTS_SENT = 200_000  # a point cloud is decimated on the server to this many points
MAX_FRAMES = 300  # an animation shows at most this many steps (evenly chosen)
MAX_MONTAGE = 64  # images in one montage
MAX_PREVIEW_PX = 2048  # longer side of a FITS preview
# Steps a request may list (?steps=): a GIF takes 300 of them, so 1,000 is room for any page
# and a script; 2,600 listed steps, each looked up in the logged ones, burned 10 s of CPU.
MAX_STEPS_LISTED = 1000
# A point cloud sent as OBJ text costs ~1.8 s of a worker per million points (streamed, so
# memory stays one block); larger ones are downloaded as their PLY file.
MAX_OBJ_POINTS = 5_000_000
BLOCK_BYTES = 1 << 20  # a file is sent this much at a time
# Montages and GIFs are made from the originals (thumbnails are lossy WebP of 256 px), within a
# budget per request: files of at most media_files.ORIGINAL_READ_MAX_BYTES each, this many
# bytes of them and this many decoded pixels in all (each picture's size checked from its
# header first); a frame past the budget, or whose file is missing, damaged or no picture,
# comes from its thumbnail instead.
ORIGINALS_MAX_BYTES = 256 << 20
ORIGINALS_MAX_PIXELS = 128 << 20
MONTAGE_TILE_PX = 256  # a montage tile's longer side (64 tiles: ~4 Mpx)
# What a GIF may hold: as many pixels as 300 frames of 256 px (what it held when made from
# thumbnails), frames of up to 512 px when there are fewer of them.
GIF_MAX_PIXELS = MAX_FRAMES * 256 * 256
GIF_FRAME_PX = (64, 512)
# A run's _epoch series is read to label media steps by epoch up to this many epochs (a run
# writes one point per epoch; a longer series, planted, leaves the labels at steps).
MAX_EPOCHS_READ = 100_000
MAX_COMPARED_RUNS = 20  # runs on one compare page (pages.MAX_COMPARED)
MAX_COMPARED_NAMES = 64  # media names of one run on a compare page
_CACHE_ITEMS = 32

# Pillow decodes no picture over MAX_DECODE_PIXELS in the viewer, and its warning between
# that and twice it is an error (answered 413) instead of a 0.7 GB decode: a second line of
# defence behind the explicit checks of the header (open_thumbnail) before decoding.
Image.MAX_IMAGE_PIXELS = media_files.MAX_DECODE_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)
INLINE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")  # the only types shown inline

# A request names a record by its step and item (labstats.viewer.openapi declares them).
STEP = integer("step", INT64_MIN, INT64_MAX, "default: the last logged")
ITEM = integer("item", 0, INT64_MAX, "default 0")
STEPS = parameter("steps", STRING, f"e.g. 0,10,20 (at most {MAX_STEPS_LISTED:,} listed)")
# 413: over a limit (docs/security.md); 422: a stored file not readable as its record says;
# 502: the stored copy of a file is damaged; 503: the source cannot be read right now.
ERRORS = (400, 404, 413, 422, 503)
FILE_ERRORS = (*ERRORS, 502)

_cache: OrderedDict[tuple, tuple[bytes, str]] = OrderedDict()
_cache_lock = threading.Lock()


def _cached(key: tuple, make) -> tuple[bytes, str]:
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = make()
    with _cache_lock:
        _cache[key] = value
        while len(_cache) > _CACHE_ITEMS:
            _cache.popitem(last=False)
    return value


def media_overview(run: Run) -> list[dict[str, Any]]:
    """Every media name of the run with its kind, logged steps and the epoch of each step
    (the run page's panels; None where the run knows no epoch)."""
    epoch_of = EpochOf(run)
    return [
        {"name": name, "kind": kind, "steps": steps, "epochs": epoch_of(steps)}
        for name, kind in run.media_names().items()
        for steps in [run.media_steps(name)]
    ]


class EpochOf:
    """The epoch each media step (the logger's idx) falls in, from the run's _epoch series
    (update() writes the epoch at the idx where it began): the last epoch begun at or before
    the step; None before the first, or when the run has no (readable) epochs."""

    def __init__(self, run: Run) -> None:
        self.idx = self.epochs = np.zeros(0)
        try:
            if run.series_meta(keys.EPOCH_SERIES).get("count", 0) > MAX_EPOCHS_READ:
                return
            series = run.series(keys.EPOCH_SERIES)
            order = np.argsort(series.idx, kind="stable")
            idx, epochs = np.asarray(series.idx)[order], np.asarray(series.values, dtype=np.float64)[order]
        except (LabstatsError, ValueError, TypeError):
            return
        finite = np.isfinite(epochs)
        self.idx, self.epochs = idx[finite], epochs[finite]

    def __call__(self, steps: list[int]) -> list[int | float | None]:
        if not len(self.idx) or not steps:
            return [None] * len(steps)
        at = np.searchsorted(self.idx, np.asarray(steps, dtype=np.float64), side="right") - 1
        return [None if k < 0 else _number(self.epochs[k]) for k in at.tolist()]


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def step_label(step: int, epoch: int | float | None) -> str:
    """How a media step reads on the page and on montage tiles: "epoch 3 · step 1984"."""
    return f"step {step}" if epoch is None else f"epoch {epoch} · step {step}"


def _record(run: Run, name: str, step: int | None, item: int) -> dict[str, Any]:
    if name not in run.media_names():
        raise ApiError(404, f"run {run.name!r} has no media {name!r}")
    if step is None:
        steps = run.media_steps(name)
        if not steps:
            raise ApiError(404, f"media {name!r} has no records")
        step = steps[-1]
    for record in run.media_at(name, step):
        if record.get("item", 0) == item:
            return record
    raise ApiError(404, f"media {name!r} has nothing at step {step}, item {item}")


def _original(run: Run, record: dict[str, Any]) -> BinaryIO:
    """The record's file, open at its start, its SHA-256 checked (in blocks, once per file:
    see ArtifactStore.open_checked). The caller closes it (``with``)."""
    try:
        path = run.lab.artifacts.path(str(record.get("digest", "")))
    except ValueError:
        raise ApiError(404, "this record names no stored file") from None
    try:
        return run.lab.artifacts.open_checked(record["digest"])
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ApiError(
            404, "the file has not reached this box yet (the training box pushes it within a minute)"
        ) from None
    except ValueError:
        raise ApiError(
            502, "the stored copy of this file is damaged (its SHA-256 differs); it is not served"
        ) from None
    except OSError as exc:  # unreadable (permissions, a FIFO planted where a file should be)
        raise ApiError(
            404, f"the file of this record cannot be read on this box ({path.name}: {exc.strerror})"
        ) from None


def _size(file: BinaryIO) -> int:
    return os.fstat(file.fileno()).st_size


_KIND_NAMES = {"fits": "a FITS image", "points": "a point cloud"}


def _asked(source: str, run_id: str, name: str, kind: str | None = None) -> tuple[Run, dict[str, Any]]:
    """The run and the record a request names (?step=, ?item=), of ``kind`` if given."""
    run = get_run(source, run_id)
    step, item = _step_item()
    record = _record(run, name, step, item)
    if kind is not None and record.get("kind") != kind:
        raise ApiError(400, f"media {name!r} is not {_KIND_NAMES[kind]}")
    return run, record


def _step_item() -> tuple[int | None, int]:
    return int_arg("step"), int_arg("item", 0) or 0


@bp.get("/runs/<source>/<run_id>/media")
@declare("Media names of a run, with kind and logged steps", responses=errors(404, 503))
def media_list(source: str, run_id: str):
    return {"media": media_overview(get_run(source, run_id))}


@bp.get("/runs/<source>/<run_id>/media/<path:name>")
@declare("Records of a media name at one step", query=[STEP], responses=errors(*ERRORS))
def media_records(source: str, run_id: str, name: str):
    """The records at one step (default: the last): one per item. ``picture``: whether the
    page draws it (images, FITS previews, and files with a stored picture thumbnail; never
    an SVG, a document that would be a broken picture)."""
    run = get_run(source, run_id)
    step, _ = _step_item()
    if name not in run.media_names():
        raise ApiError(404, f"run {run.name!r} has no media {name!r}")
    steps = run.media_steps(name)
    if step is None and steps:
        step = steps[-1]
    records = run.media_at(name, step) if steps else []
    lengths = _thumb_lengths(run, name, [(r["step"], r.get("item", 0)) for r in records])
    for record, length in zip(records, lengths, strict=True):
        record["picture"] = record.get("kind") in ("image", "fits") or (
            record.get("kind") == "file" and str(record.get("type", "")) in PICTURE_TYPES and length > 0
        )
    epochs = EpochOf(run)(steps)
    epoch = epochs[steps.index(step)] if step in steps else None
    return {"name": name, "step": step, "epoch": epoch, "label": step_label(step, epoch) if steps else "",
            "steps": steps, "epochs": epochs, "records": records}  # fmt: skip


# Logged files whose thumbnail the page shows: pictures Pillow reads (labstats.write.media makes
# their thumbnails); not SVG, a document that may hold scripts and has no thumbnail.
PICTURE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/tiff")


def _thumb_key(run: Run, name: str) -> str:
    return run.lab.keys.media_thumbs(run.id, media_record.media_id(name))


def _thumb_lengths(run: Run, name: str, wanted: list[tuple[int, int]]) -> list[int]:
    """The stored length of each (step, item)'s thumbnail (0: none), in one round trip,
    without fetching any: a planted thumbnail may be hundreds of MB."""
    if not wanted:
        return []
    pipe = run.lab.redis.pipeline(transaction=False)
    for step, item in wanted:
        pipe.hstrlen(_thumb_key(run, name), media_record.field_name(step, item))
    return [int(n) for n in pipe.execute()]


def _pictures(run: Run, name: str, wanted: list[tuple[int, int]]) -> list[tuple[tuple[int, int], Any]]:
    """((step, item), RGB picture) of the thumbnails of ``wanted`` that exist: each
    checked for its length before it is fetched and for its size before it is decoded
    (media_files.open_thumbnail), so memory is at most 256×256 px per picture. A thumbnail
    over a limit refuses the request (413); one that is not a picture is left out."""
    lengths = _thumb_lengths(run, name, wanted)
    for (step, _), length in zip(wanted, lengths, strict=True):
        if length > media_files.THUMB_READ_MAX_BYTES:
            raise ApiError(413, f"the thumbnail at step {step} is {length:,} bytes, over the "
                                f"{THUMB_READ_MAX_BYTES:,} a thumbnail may be: refused")  # fmt: skip
    present = [pair for pair, length in zip(wanted, lengths, strict=True) if length]
    out = []
    for start in range(0, len(present), 32):  # 32 thumbnails (≤ 4 MB) fetched at a time
        batch = present[start : start + 32]
        fields = [media_record.field_name(step, item) for step, item in batch]
        for (step, item), data in zip(batch, run.lab.redis.hmget(_thumb_key(run, name), fields), strict=True):
            try:
                out.append(((step, item), media_files.open_thumbnail(data or b"")))
            except media_files.MediaError as exc:
                if "refused" in str(exc) or " over " in str(exc):
                    raise ApiError(413, f"step {step}: {exc}") from None
    return out


@bp.get("/runs/<source>/<run_id>/thumb/<path:name>")
@declare(
    "A record's thumbnail (at most 256 px)",
    query=[STEP, ITEM],
    responses=errors(*ERRORS, ok=content("image/webp")),
)
def thumb(source: str, run_id: str, name: str):
    """A record's thumbnail as stored, after the checks of _pictures (length, then size from
    its header): the browser never gets a picture larger than a thumbnail from here."""
    run, record = _asked(source, run_id, name)
    wanted = (record["step"], record.get("item", 0))
    (length,) = _thumb_lengths(run, name, [wanted])
    if not length:
        raise ApiError(404, f"media {name!r} has no thumbnail at step {record['step']}")
    if length > media_files.THUMB_READ_MAX_BYTES:
        raise ApiError(413, f"this thumbnail is {length:,} bytes, over the {THUMB_READ_MAX_BYTES:,} "
                            "a thumbnail may be: refused")  # fmt: skip
    data = run.lab.redis.hget(_thumb_key(run, name), media_record.field_name(*wanted)) or b""
    kind = media_files.thumbnail_format(
        data
    )  # from its header; a MediaError (413/422) when it is no thumbnail
    return Response(
        data, mimetype=f"image/{kind.lower()}", headers={"Cache-Control": "private, max-age=3600"}
    )


@bp.get("/runs/<source>/<run_id>/file/<path:name>")
@declare(
    "A record's original file, by its digest",
    query=[
        STEP,
        ITEM,
        one_of("format", ["obj"], "obj: a point cloud as OBJ text"),
        parameter("download", STRING, "any value: as an attachment"),
    ],
    responses=errors(*FILE_ERRORS, ok=content("application/octet-stream")),
)
def original(source: str, run_id: str, name: str):
    """The original file, from the artifact store by the record's digest; a point cloud also
    as OBJ text (``format=obj``). Only pictures are shown in the page; anything else (HTML
    a user logged as a file, say) is always a download, never rendered on this origin.
    Streamed in blocks after its SHA-256 check, Range requests included: memory stays one
    block whatever the file's size."""
    run, record = _asked(source, run_id, name)
    filename = _download_name(run, name, record)
    wants_obj = request.args.get("format") == "obj"
    if wants_obj and record.get("kind") != "points":
        raise ApiError(400, "format=obj is for point clouds")
    file = _original(run, record)
    try:
        size = _size(file)
        if wants_obj:
            layout = media_files.ply_layout(file.read(media_files.PLY_HEADER_MAX_BYTES), size)
            if layout.count > MAX_OBJ_POINTS:
                raise ApiError(413, f"a cloud of {layout.count:,} points is over the {MAX_OBJ_POINTS:,} sent "
                                    "as OBJ text: download its PLY file")  # fmt: skip
            file.seek(0)
            response = Response(
                _closing(media_files.obj_stream(file, size), file), mimetype="application/octet-stream"
            )
            filename = filename.rsplit(".", 1)[0] + ".obj"
            response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
            return response
        mimetype = str(record.get("type", ""))
        inline = mimetype in INLINE_TYPES and request.args.get("format") is None
        attach = not inline or request.args.get("download") is not None
        response = Response(
            wrap_file(request.environ, file, BLOCK_BYTES),
            mimetype=mimetype if inline else "application/octet-stream",
            direct_passthrough=True,
        )
    except BaseException:
        file.close()
        raise
    response.content_length = size
    response.headers["Content-Disposition"] = f'{"attachment" if attach else "inline"}; filename="{filename}"'
    response.set_etag(str(record["digest"]))
    response.cache_control.private = True
    response.cache_control.max_age = 3600
    return response.make_conditional(request.environ, accept_ranges=True, complete_length=size)


def _closing(blocks, file: BinaryIO):
    """``blocks``, then the file closed (also when the client goes away: the WSGI server
    closes the generator)."""
    try:
        yield from blocks
    finally:
        file.close()


def _download_name(run: Run, name: str, record: dict[str, Any]) -> str:
    extension = {"image/png": ".png", "image/jpeg": ".jpg", "application/fits": ".fits",
                 "application/x-ply": ".ply"}.get(record.get("type", ""), "")  # fmt: skip
    if record.get("file"):
        base = str(record["file"])
        extension = ""
    else:
        base = f"{run.name}-{name}-s{record['step']}-i{record.get('item', 0)}"
    return "".join(c if (c.isalnum() and c.isascii()) or c in "-_." else "_" for c in base)[:150] + extension


@bp.get("/runs/<source>/<run_id>/fits/<path:name>")
@declare(
    "A FITS record's preview (ZScale, Asinh)",
    query=[STEP, ITEM],
    responses=errors(*FILE_ERRORS, ok=content("image/png")),
)
def fits_preview(source: str, run_id: str, name: str):
    """A PNG preview (ZScale interval, Asinh stretch) of a FITS record, at most 2048 px,
    made from a strided section of one plane (media_files.fits_plane): memory is bounded by the
    preview's size, not the file's."""
    run, record = _asked(source, run_id, name, "fits")

    def make():
        with _original(run, record) as file:
            plane = media_files.fits_plane(file, _size(file), MAX_PREVIEW_PX)
        image = media_files.fits_preview(plane)
        out = io.BytesIO()
        image.save(out, "PNG")
        return out.getvalue(), "image/png"

    data, mimetype = _cached(("fits", source, run.id, record["digest"]), make)
    return Response(data, mimetype=mimetype, headers={"Cache-Control": "private, max-age=3600"})


@bp.get("/runs/<source>/<run_id>/fitsheader/<path:name>")
@declare("A FITS record's header", query=[STEP, ITEM], responses=errors(*FILE_ERRORS))
def fits_header(source: str, run_id: str, name: str):
    """A FITS record's primary header (at most media_files.FITS_HEADER_MAX_BYTES of it is read)."""
    run, record = _asked(source, run_id, name, "fits")
    with _original(run, record) as file:
        header = media_files.fits_header(file)
    cards = [[card.keyword, str(card.value), card.comment] for card in header.cards]
    return {"name": name, "step": record["step"], "header": cards}


def _steps_arg(all_steps: list[int], limit: int) -> list[int]:
    raw = request.args.get("steps")
    if raw:
        if raw.count(",") >= MAX_STEPS_LISTED:
            raise ApiError(413, f"steps lists more than {MAX_STEPS_LISTED:,} steps; "
                                f"at most {limit} are shown, evenly chosen")  # fmt: skip
        try:
            wanted = [int(s) for s in raw.split(",") if s.strip()]
        except ValueError:
            raise ApiError(400, "steps must be integers separated by commas") from None
        logged = set(all_steps)
        chosen = sorted({s for s in wanted if s in logged})
    else:
        chosen = all_steps
    chosen = media_files.evenly(chosen, limit)
    if not chosen:
        raise ApiError(404, "none of the asked steps was logged")
    return chosen


class _Budget:
    """What one request may still read of originals: bytes of files and decoded pixels."""

    def __init__(self) -> None:
        self.bytes, self.pixels = ORIGINALS_MAX_BYTES, ORIGINALS_MAX_PIXELS
        self.missing = 0  # originals not on this box yet (the training box pushes them)


def _records_of(run: Run, name: str, wanted: list[tuple[int, int]]) -> list[dict[str, Any] | None]:
    """The records of ``wanted`` (step, item), fetched by field in batches (one HMGET each)."""
    key = run.lab.keys.media_records(run.id, media_record.media_id(name))
    out: list[dict[str, Any] | None] = []
    for start in range(0, len(wanted), 100):
        fields = [media_record.field_name(step, item) for step, item in wanted[start : start + 100]]
        out += [media_record.decode(raw) if raw else None for raw in run.lab.redis.hmget(key, fields)]
    return out


def _from_original(run: Run, record: dict[str, Any] | None, px: int, budget: _Budget):
    """The record's original picture fitted to ``px``, or None (use the thumbnail) when it
    is not a picture, not here, damaged, or over what the request may still read: its size is
    taken from the file system before it is opened (and hashed), its pixels from its header."""
    if not record or record.get("kind") not in ("image", "file") or record.get("type") not in PICTURE_TYPES:
        return None
    try:
        path = run.lab.artifacts.path(str(record.get("digest", "")))
        info = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        budget.missing += 1
        return None
    except (ValueError, OSError):
        return None
    size = info.st_size
    if not stat.S_ISREG(info.st_mode) or size > min(media_files.ORIGINAL_READ_MAX_BYTES, budget.bytes):
        return None
    budget.bytes -= size
    try:
        with run.lab.artifacts.open_checked(record["digest"]) as file:
            picture, pixels = media_files.open_original(file, _size(file), px, budget.pixels)
    except (OSError, ValueError):  # missing, damaged, no picture, over the pixels left (MediaError)
        return None
    budget.pixels -= pixels
    return picture


def _frames(
    run: Run, name: str, wanted: list[tuple[int, int]], px: int, budget: _Budget | None = None
) -> list[tuple[tuple[int, int], Any]]:
    """((step, item), RGB picture of ``px`` on its longer side) of ``wanted``, in order: from
    the originals within the request's budget (_from_original), the others from their
    thumbnails (checked as _pictures does; one missing is left out)."""
    budget = budget or _Budget()
    found = {}
    for pair, record in zip(wanted, _records_of(run, name, wanted), strict=True):
        picture = _from_original(run, record, px, budget)
        if picture is not None:
            found[pair] = picture
    fallback = [pair for pair in wanted if pair not in found]
    for pair, picture in _pictures(run, name, fallback):
        found[pair] = media_files.fit(picture, px)
    return [(pair, found[pair]) for pair in wanted if pair in found]


@bp.get("/runs/<source>/<run_id>/montage/<path:name>")
@declare(
    "Pictures of chosen steps, or one step's items, as one PNG, each labelled with its step",
    query=[integer("step", INT64_MIN, INT64_MAX, "one step's items"), STEPS],
    responses=errors(*ERRORS, ok=content("image/png")),
)
def montage(source: str, run_id: str, name: str):
    """One PNG of the chosen steps (``steps=1,5,9``; default: all, at most 64 evenly chosen)
    in rows, or of one step's items (``step=``): tiles of 256 px made from the originals
    (within the request's read budget; thumbnails otherwise), each with its epoch and step
    written under it."""
    run = get_run(source, run_id)
    _record(run, name, None, 0)
    step = int_arg("step")
    if step is not None:
        wanted = [(step, int(r.get("item", 0))) for r in run.media_at(name, step)[:MAX_MONTAGE]]
    else:
        wanted = [(s, 0) for s in _steps_arg(run.media_steps(name), MAX_MONTAGE)]
    frames = _frames(run, name, wanted, MONTAGE_TILE_PX)
    if not frames:
        raise ApiError(404, f"media {name!r} has no pictures to show")
    epochs = EpochOf(run)([s for (s, _), _ in frames])
    tiles = [
        (step_label(s, epoch) + (f" · item {item}" if step is not None else ""), picture)
        for ((s, item), picture), epoch in zip(frames, epochs, strict=True)
    ]
    out = io.BytesIO()
    media_files.labelled_montage(tiles).save(out, "PNG")
    return Response(out.getvalue(), mimetype="image/png", headers={"X-Tiles": str(len(tiles))})


def gif_frame_px(frames: int) -> int:
    """A GIF's frame size (longer side) for ``frames`` frames: at most GIF_MAX_PIXELS in all."""
    low, high = GIF_FRAME_PX
    return int(min(high, max(low, (GIF_MAX_PIXELS / max(frames, 1)) ** 0.5)))


@bp.get("/runs/<source>/<run_id>/animation/<path:name>")
@declare(
    "An animated GIF over the steps",
    query=[STEPS, parameter("ms", {"type": "integer"}, "per frame (20 to 5000, default 200)")],
    responses=errors(*ERRORS, ok=content("image/gif")),
)
def animation(source: str, run_id: str, name: str):
    """An animated GIF of the name's pictures over its steps (one frame per step, at most
    300 evenly chosen), made from the originals within the request's read budget (their
    thumbnails otherwise), frames of up to 512 px (fewer pixels per frame when there are
    many), made on demand and kept while the steps stay the same."""
    run = get_run(source, run_id)
    _record(run, name, None, 0)
    steps = _steps_arg(run.media_steps(name), MAX_FRAMES)
    try:
        duration = min(max(int(request.args.get("ms", 200)), 20), 5000)
    except ValueError:
        raise ApiError(400, "ms must be an integer (milliseconds per frame)") from None

    key = ("gif", source, run.id, name, json.dumps(steps), duration)
    with _cache_lock:
        made = _cache.get(key)
    if made is None:
        budget = _Budget()
        wanted = [(s, 0) for s in steps]
        frames = [picture for _, picture in _frames(run, name, wanted, gif_frame_px(len(steps)), budget)]
        if not frames:
            raise ApiError(404, f"media {name!r} has no pictures to animate")
        made = media_files.animation(frames, duration), "image/gif"
        if not budget.missing:  # one made while files are on their way is made again next time
            _cached(key, lambda: made)
    data, mimetype = made
    return Response(data, mimetype=mimetype, headers={"X-Frames": str(len(steps))})


@bp.get("/runs/<source>/<run_id>/points/<path:name>")
@declare(
    "A point cloud: N×3 float32, then N×3 uint8 colours",
    query=[STEP, ITEM],
    responses=errors(*FILE_ERRORS, ok=content("application/octet-stream")),
)
def points(source: str, run_id: str, name: str):
    """A point cloud for the 3-D view, binary: N×3 float32 positions then N×3 uint8 colours
    (little-endian), at most 200,000 points evenly chosen, read a block at a time from the
    PLY file (media_files.read_ply_file). Headers say N, the total and whether colours came with
    the points."""
    run, record = _asked(source, run_id, name, "points")

    def make():
        with _original(run, record) as file:
            xyz, rgb, total = media_files.read_ply_file(file, _size(file), MAX_POINTS_SENT)
        colored = rgb is not None
        if rgb is None:
            rgb = np.full((len(xyz), 3), (70, 110, 200), np.uint8)
        body = np.ascontiguousarray(xyz, "<f4").tobytes() + np.ascontiguousarray(rgb, np.uint8).tobytes()
        return body, json.dumps([len(xyz), total, colored])

    body, counts = _cached(("points", source, run.id, record["digest"]), make)
    sent, total, colored = json.loads(counts)
    return Response(body, mimetype="application/octet-stream", headers={
        "X-Points": str(sent), "X-Points-Total": str(total), "X-Points-Colored": "1" if colored else "0",
        "Cache-Control": "private, max-age=3600"})  # fmt: skip


def _panel_urls(source: str, run_id: str, name: str) -> dict[str, str]:
    """The URLs a media panel of ``name`` asks (media.js adds ?step=&item=)."""
    endpoints = {"records": "media_records", "thumb": "thumb", "file": "original", "fits": "fits_preview",
                 "header": "fits_header", "points": "points", "animation": "animation",
                 "montage": "montage"}  # fmt: skip
    return {
        key: url_for(f"media.{endpoint}", source=source, run_id=run_id, name=name)
        for key, endpoint in endpoints.items()
    }


@bp.get("/compare/media")
@declare(
    "The media of runs compared: per run, each name's kind, steps, epochs and URLs",
    query=[
        {**strings("run", "source/run_id", minItems=1, maxItems=MAX_COMPARED_RUNS), "required": True},
    ],
    responses=errors(400, 404, 503),
)
def compare_media():
    """What the compare page shows side by side: for each run (in the order asked) its media
    names (at most 64), each with its kind, logged steps, the epoch of each step and the
    URLs of its thumbnails, files and records; ``names``: every name of any run, with its
    kind, in order (the page's rows)."""
    refs = request.args.getlist("run")
    if not refs or len(refs) > MAX_COMPARED_RUNS:
        raise ApiError(400, f"choose between 1 and {MAX_COMPARED_RUNS} runs (?run=source/id&run=...)")
    runs, names = [], {}
    for ref in refs:
        source, _, run_id = ref.partition("/")
        run = get_run(source, run_id)
        epoch_of = EpochOf(run)
        media = []
        for name, kind in list(run.media_names().items())[:MAX_COMPARED_NAMES]:
            steps = run.media_steps(name)
            media.append({"name": name, "kind": kind, "steps": steps, "epochs": epoch_of(steps),
                          "urls": _panel_urls(source, run.id, name)})  # fmt: skip
            names.setdefault(name, kind)
        runs.append({"ref": f"{source}/{run.id}", "source": source, "id": run.id, "name": run.name,
                     "media": media})  # fmt: skip
    return {"runs": runs, "names": [{"name": n, "kind": k} for n, k in sorted(names.items())]}
