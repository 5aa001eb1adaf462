"""Media of a run in the viewer: thumbnails (from Redis), originals (from the artifact store,
by digest only), FITS previews and headers, montages, animations and point clouds.

No path from a request reaches the file system: a request names a run, a media name and a
step; the record in Redis gives a digest; the store maps a 64-hex-digit digest to its file.
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from flask import Blueprint, Response, request, send_file

from labstats import media
from labstats.reader import Run
from labstats.viewer.api import (
    _ERROR,
    _JSON,
    _RUN_PARAMS,
    OPENAPI,
    ApiError,
    _ref,
    api_error,
    get_run,
    int_arg,
)

bp = Blueprint("media", __name__, url_prefix="/api")
bp.register_error_handler(ApiError, api_error)

MAX_POINTS_SENT = 200_000  # a point cloud is decimated on the server to this many points
MAX_FRAMES = 300  # an animation shows at most this many steps (evenly chosen)
MAX_MONTAGE = 64  # images in one montage
MAX_PREVIEW_PX = 2048  # longer side of a FITS preview
_CACHE_ITEMS = 32
INLINE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")  # the only types shown inline

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
    """Every media name of the run with its kind and logged steps (the run page's panels)."""
    return [
        {"name": name, "kind": kind, "steps": run.media_steps(name)}
        for name, kind in run.media_names().items()
    ]


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


def _original(run: Run, record: dict[str, Any]) -> bytes:
    try:
        path = run.lab.artifacts.path(str(record.get("digest", "")))
    except ValueError:
        raise ApiError(404, "this record names no stored file") from None
    if not path.is_file():
        raise ApiError(
            404, "the file has not reached this box yet (the artifact sync brings it within a minute)"
        )
    try:
        return run.lab.artifacts.read(record["digest"])  # checked against its SHA-256
    except ValueError:
        raise ApiError(
            502, "the stored copy of this file is damaged (its SHA-256 differs); it is not served"
        ) from None


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
def media_list(source: str, run_id: str):
    return {"media": media_overview(get_run(source, run_id))}


@bp.get("/runs/<source>/<run_id>/media/<path:name>")
def media_records(source: str, run_id: str, name: str):
    """The records at one step (default: the last): one per item."""
    run = get_run(source, run_id)
    step, _ = _step_item()
    if name not in run.media_names():
        raise ApiError(404, f"run {run.name!r} has no media {name!r}")
    steps = run.media_steps(name)
    if step is None and steps:
        step = steps[-1]
    return {"name": name, "step": step, "steps": steps, "records": run.media_at(name, step) if steps else []}


@bp.get("/runs/<source>/<run_id>/thumb/<path:name>")
def thumb(source: str, run_id: str, name: str):
    run, record = _asked(source, run_id, name)
    data = run.thumbnail(name, record["step"], record.get("item", 0))
    if not data:
        raise ApiError(404, f"media {name!r} has no thumbnail at step {record['step']}")
    return Response(data, mimetype="image/webp", headers={"Cache-Control": "private, max-age=3600"})


@bp.get("/runs/<source>/<run_id>/file/<path:name>")
def original(source: str, run_id: str, name: str):
    """The original file, from the artifact store by the record's digest; a point cloud also
    as OBJ text (``format=obj``). Only pictures are shown in the page; anything else (HTML
    a user logged as a file, say) is always a download, never rendered on this origin."""
    run, record = _asked(source, run_id, name)
    data = _original(run, record)
    filename = _download_name(run, name, record)
    if request.args.get("format") == "obj":
        if record.get("kind") != "points":
            raise ApiError(400, "format=obj is for point clouds")
        data = media.obj_bytes(media.read_ply(data)[0])
        filename = filename.rsplit(".", 1)[0] + ".obj"
    mimetype = str(record.get("type", ""))
    inline = mimetype in INLINE_TYPES and request.args.get("format") is None
    return send_file(
        io.BytesIO(data), mimetype=mimetype if inline else "application/octet-stream",
        as_attachment=not inline or request.args.get("download") is not None,
        download_name=filename, max_age=3600, etag=str(record["digest"]),
    )  # fmt: skip


def _download_name(run: Run, name: str, record: dict[str, Any]) -> str:
    extension = {"image/png": ".png", "image/jpeg": ".jpg", "application/fits": ".fits",
                 "application/x-ply": ".ply"}.get(record.get("type", ""), "")  # fmt: skip
    if record.get("file"):
        base = str(record["file"])
        extension = ""
    else:
        base = f"{run.name}-{name}-s{record['step']}-i{record.get('item', 0)}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in base)[:150] + extension


@bp.get("/runs/<source>/<run_id>/fits/<path:name>")
def fits_preview(source: str, run_id: str, name: str):
    """A PNG preview (ZScale interval, Asinh stretch) of a FITS record, at most 2048 px."""
    run, record = _asked(source, run_id, name, "fits")

    def make():
        from astropy.io import fits

        with fits.open(io.BytesIO(_original(run, record))) as hdus:
            data = np.array(hdus[0].data)
        image = media.fits_preview(data)
        image.thumbnail((MAX_PREVIEW_PX, MAX_PREVIEW_PX))
        out = io.BytesIO()
        image.save(out, "PNG")
        return out.getvalue(), "image/png"

    data, mimetype = _cached(("fits", source, run.id, record["digest"]), make)
    return Response(data, mimetype=mimetype, headers={"Cache-Control": "private, max-age=3600"})


@bp.get("/runs/<source>/<run_id>/fitsheader/<path:name>")
def fits_header(source: str, run_id: str, name: str):
    run, record = _asked(source, run_id, name, "fits")
    from astropy.io import fits

    with fits.open(io.BytesIO(_original(run, record))) as hdus:
        cards = [[card.keyword, str(card.value), card.comment] for card in hdus[0].header.cards]
    return {"name": name, "step": record["step"], "header": cards}


def _steps_arg(all_steps: list[int], limit: int) -> list[int]:
    raw = request.args.get("steps")
    if raw:
        try:
            wanted = [int(s) for s in raw.split(",") if s.strip()]
        except ValueError:
            raise ApiError(400, "steps must be integers separated by commas") from None
        chosen = [s for s in wanted if s in set(all_steps)]
    else:
        chosen = all_steps
    chosen = media.evenly(chosen, limit)
    if not chosen:
        raise ApiError(404, "none of the asked steps was logged")
    return chosen


@bp.get("/runs/<source>/<run_id>/montage/<path:name>")
def montage(source: str, run_id: str, name: str):
    """One PNG of the thumbnails of the chosen steps (``steps=1,5,9``; default: all, at most
    64 evenly chosen), in rows; or of one step's items (``step=``)."""
    run = get_run(source, run_id)
    _record(run, name, None, 0)
    step = int_arg("step")
    if step is not None:
        thumbs = [run.thumbnail(name, step, r["item"]) for r in run.media_at(name, step)[:MAX_MONTAGE]]
        images = [p for p in map(media.open_picture, thumbs) if p is not None]
    else:
        images = [image for _, image in run.pictures(name, _steps_arg(run.media_steps(name), MAX_MONTAGE))]
    if not images:
        raise ApiError(404, f"media {name!r} has no thumbnails to show")
    out = io.BytesIO()
    media.montage(images).save(out, "PNG")
    return Response(out.getvalue(), mimetype="image/png")


@bp.get("/runs/<source>/<run_id>/animation/<path:name>")
def animation(source: str, run_id: str, name: str):
    """An animated GIF of the name's thumbnails over its steps (one frame per step, at most
    300 evenly chosen), made on demand and kept while the steps stay the same."""
    run = get_run(source, run_id)
    _record(run, name, None, 0)
    steps = _steps_arg(run.media_steps(name), MAX_FRAMES)
    try:
        duration = min(max(int(request.args.get("ms", 200)), 20), 5000)
    except ValueError:
        raise ApiError(400, "ms must be an integer (milliseconds per frame)") from None

    def make():
        frames = [image for _, image in run.pictures(name, steps)]
        if not frames:
            raise ApiError(404, f"media {name!r} has no thumbnails to animate")
        return media.animation(frames, duration), "image/gif"

    key = ("gif", source, run.id, name, json.dumps(steps), duration)
    data, mimetype = _cached(key, make)
    return Response(data, mimetype=mimetype, headers={"X-Frames": str(len(steps))})


@bp.get("/runs/<source>/<run_id>/points/<path:name>")
def points(source: str, run_id: str, name: str):
    """A point cloud for the 3-D view, binary: N×3 float32 positions then N×3 uint8 colours
    (little-endian), decimated on the server to at most 200,000 points. Headers say N, the
    total and whether colours came with the points."""
    run, record = _asked(source, run_id, name, "points")

    def make():
        xyz, rgb = media.read_ply(_original(run, record))
        total = len(xyz)
        if total > MAX_POINTS_SENT:
            keep = np.random.default_rng(0).choice(total, MAX_POINTS_SENT, replace=False)
            keep.sort()
            xyz = xyz[keep]
            rgb = rgb[keep] if rgb is not None else None
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


# ---- the API description of these endpoints (merged into /api/openapi.json) ------------------

_STEP = {"name": "step", "in": "query", "schema": {"type": "integer"}, "description": "default: the last"}
_ITEM = {"name": "item", "in": "query", "schema": {"type": "integer", "minimum": 0}}
_STEPS = {"name": "steps", "in": "query", "schema": {"type": "string"}, "description": "e.g. 0,10,20"}


def _binary(media_type: str) -> dict[str, Any]:
    return {
        "description": media_type,
        "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
    }


def _get(summary: str, params: list, ok: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": [*_RUN_PARAMS, *params],
                    "responses": {"200": ok, "400": _ERROR, "404": _ERROR}}}  # fmt: skip


_NAMED = [_ref("name")]
_FORMAT = {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["obj"]}}
_MS = {"name": "ms", "in": "query", "schema": {"type": "integer"}, "description": "per frame"}
_PNG, _GIF, _BYTES = _binary("image/png"), _binary("image/gif"), _binary("application/octet-stream")
_ENDPOINTS = [
    ("media", "Media names of a run, with kind and logged steps", [], _JSON),
    ("media/{name}", "Records of a media name at one step", [*_NAMED, _STEP], _JSON),
    (
        "thumb/{name}",
        "A record's thumbnail (WebP, at most 256 px)",
        [*_NAMED, _STEP, _ITEM],
        _binary("image/webp"),
    ),
    ("file/{name}", "A record's original file, by its digest", [*_NAMED, _STEP, _ITEM, _FORMAT], _BYTES),
    ("fits/{name}", "A FITS record's preview (ZScale, Asinh)", [*_NAMED, _STEP, _ITEM], _PNG),
    ("fitsheader/{name}", "A FITS record's header", [*_NAMED, _STEP, _ITEM], _JSON),
    (
        "montage/{name}",
        "Thumbnails of chosen steps, or one step's items, as one PNG",
        [*_NAMED, _STEP, _STEPS],
        _PNG,
    ),
    ("animation/{name}", "An animated GIF over the steps", [*_NAMED, _STEPS, _MS], _GIF),
    ("points/{name}", "A point cloud: N×3 float32, then N×3 uint8 colours", [*_NAMED, _STEP, _ITEM], _BYTES),
]
OPENAPI["paths"].update(
    {
        f"/api/runs/{{source}}/{{run_id}}/{path}": _get(summary, params, ok)
        for path, summary, params, ok in _ENDPOINTS
    }
)
