"""Media files: how each kind of media is written and read back, and its thumbnails.

    png_bytes(hwc_uint8)                  # a lossless PNG (Up filter, zlib run-length strategy)
    thumbnail(picture)                    # a WebP of at most 256 px and 32 kB
    read_ply(data), fits_plane(file, ...) # points and FITS data back, within bounds
    decode_array(record, data)            # a stored original as an array (Run.artifact)

Reading back treats every stored byte as hostile (a training user can write any record or
thumbnail): ``open_thumbnail`` reads a picture's header and refuses one over 256 px before
decoding it; ``ply_layout``/``read_ply_file`` check a PLY's header against its size and
read at most the points asked for, a block at a time; ``fits_layout``/``fits_plane`` read a
FITS header of bounded size and a strided section of one plane. Each refuses what it cannot
read with a MediaError (a ValueError) saying why. The capture side (labstats.write.media), the
reader and the viewer use this module; it knows nothing of runs or Redis.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

THUMB_PX = 256


THUMB_MAX_BYTES = 32_000


# WebP qualities tried in turn until a thumbnail fits; 75 is libwebp's own default (85 took
# ~40 % longer on the benchmark's 256×256 pictures, whose thumbnail is half their encoding).
THUMB_QUALITIES = (75, 60, 45, 30)


# A stored thumbnail is read back only up to this size: thumbnail() writes at most 32,000
# bytes; four times that leaves room for a thumbnail from another or an older writer, and keeps
# 300 frames of a GIF under 40 MB of fetched bytes.
THUMB_READ_MAX_BYTES = 4 * THUMB_MAX_BYTES


# The formats a stored thumbnail may be in (ours are WebP): Pillow's other decoders (and
# their bugs) are never reached from a record.
THUMB_FORMATS = ("WEBP", "PNG", "JPEG", "GIF")


# The most pixels of a picture decoded from a file (a logged file's thumbnail, a picture
# the viewer decodes): 4096 × 4096, the largest picture a run page draws, 64 MB as RGBA.
# Pillow's own limit (89 Mpx, a warning only up to twice that) lets one picture cost ~0.7 GB.
MAX_DECODE_PIXELS = 4096 * 4096


# Point clouds read back: at most this many points in a PLY file (20M points are 300 MB
# with colours; more is refused unread: reading them costs seconds whatever is kept).
MAX_PLY_POINTS = 20_000_000


PLY_HEADER_MAX_BYTES = 4096  # ours is ~230 bytes; a longer header is not one of ours


PLY_BLOCK_POINTS = 1 << 20  # points read at a time: 16 MB of records, whatever the file's size


# FITS read back: headers up to 100 blocks of 2,880 bytes (3,600 cards; astropy would read
# any length), sides up to 2^17 pixels (a row is then at most 1 MB).
FITS_BLOCK = 2880


FITS_HEADER_MAX_BYTES = 100 * FITS_BLOCK


MAX_FITS_SIDE = 1 << 17


class MediaError(ValueError):
    """A media value that cannot be stored (said at the call, with what is wrong)."""


def to_uint8(array: np.ndarray, layout: str) -> np.ndarray:
    """HW / HWC / CHW (or the batch forms) → uint8 HWC (NHWC), row 0 at the top."""
    if layout in ("CHW", "NCHW"):
        array = np.moveaxis(array, -3, -1)
    if layout == "HW":
        array = array[..., None]
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise MediaError("the image holds NaN or infinite values")
        array = np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def pil_image(array: np.ndarray):
    """A PIL image (L, RGB or RGBA) of an HWC uint8 array with 1, 3 or 4 channels."""
    from PIL import Image

    channels = array.shape[-1]
    if channels == 1:
        return Image.fromarray(array[..., 0], "L")
    return Image.fromarray(array, "RGBA" if channels == 4 else "RGB")


_PNG_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # grey, RGB, RGBA (8 bits per sample)


_PNG_FILTER_UP = 2
# Deflated pixels per IDAT chunk: the PNG spec allows at most 2**31-1 bytes in a chunk; at
# 1 MiB an image has few chunks, each far below it.
IDAT_BYTES = 2**20


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def png_bytes(array: np.ndarray, idat_bytes: int = IDAT_BYTES) -> bytes:
    """A lossless PNG of an HWC uint8 array (1, 3 or 4 channels), several times faster than
    Pillow's (256×256 RGB on the 2-core VM: ~1.5 ms against ~9 ms at Pillow's default level,
    ~7 ms at its level 1) and as small within 1 % on the benchmark's pictures: every row is
    filtered "Up" (its difference from the row above, one NumPy subtraction) and deflated with
    zlib's run-length strategy, which on filtered pixels finds about what the full search
    finds at a fraction of its cost. zlib lets other threads run meanwhile."""
    height, width, channels = array.shape
    rows = array.reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), np.uint8)
    filtered[:, 0] = _PNG_FILTER_UP
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8: wraps modulo 256, as PNG's
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    pixels = deflate.compress(filtered) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPES[channels], 0, 0, 0)
    # The deflated pixels in IDAT chunks of idat_bytes (a PNG's chunk holds at most 2**31-1).
    idats = [_png_chunk(b"IDAT", pixels[at : at + idat_bytes]) for at in range(0, len(pixels), idat_bytes)]
    return b"".join([b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header), *idats, _png_chunk(b"IEND", b"")])


def grid(images: np.ndarray, columns: int | None = None, gap: int = 2) -> np.ndarray:
    """NHWC uint8 → one HWC uint8 image, the images in rows of ``columns``."""
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    out = np.zeros((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, c), np.uint8)
    for i in range(n):
        r, k = divmod(i, columns)
        out[r * (h + gap) : r * (h + gap) + h, k * (w + gap) : k * (w + gap) + w] = images[i]
    return out


def thumbnail(image, max_px: int = THUMB_PX, max_bytes: int = THUMB_MAX_BYTES) -> bytes:
    """A WebP of at most ``max_px`` on its longer side and ``max_bytes`` (lower quality, then
    smaller, until it fits). Small images are scaled up with nearest neighbour (crisp pixels);
    one of ``max_px`` already is its own thumbnail's size (no resize, no copy)."""
    from PIL import Image

    mode = "RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    w, h = image.size
    if max(w, h) != max_px:
        scale = max_px / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
        image = image.resize(size, resample)
    for quality in THUMB_QUALITIES:
        out = io.BytesIO()
        # Method 0: two thirds of method 2's time (which took half of 4's), the same size within 5 %.
        image.save(out, "WEBP", quality=quality, method=0)
        if out.tell() <= max_bytes:
            return out.getvalue()
    smaller = image.resize((max(1, w * max_px // 2 // max(w, h)), max(1, h * max_px // 2 // max(w, h))))
    out = io.BytesIO()
    smaller.save(out, "WEBP", quality=THUMB_QUALITIES[-1])
    return out.getvalue()


def fits_preview(data: np.ndarray):
    """A PIL image of a FITS plane: ZScale interval, then an Asinh stretch (astropy's).
    Worked in place on one float32 copy: about 9 bytes a pixel at the peak (float64 copies
    took ~45), so a 2048×2048 preview costs ~40 MB."""
    from astropy.visualization import AsinhStretch, ZScaleInterval
    from PIL import Image

    plane = np.asarray(data)
    while plane.ndim > 2:
        plane = plane[plane.shape[0] // 2]
    plane = np.array(plane, dtype=np.float32)  # our own copy, changed in place below
    finite = np.isfinite(plane)
    if not finite.any():
        return Image.fromarray(np.zeros(plane.shape, np.uint8), "L")
    if not finite.all():
        plane[~finite] = np.median(plane[finite])
    del finite
    vmin, vmax = ZScaleInterval().get_limits(plane)
    plane -= np.float32(vmin)
    plane /= np.float32((vmax - vmin) or 1.0)
    np.clip(plane, 0.0, 1.0, out=plane)
    AsinhStretch()(plane, clip=True, out=plane)
    np.nan_to_num(plane, copy=False)
    np.clip(plane, 0.0, 1.0, out=plane)
    plane *= 255
    np.round(plane, out=plane)
    # FITS rows count from the bottom: flip so that the preview has row 0 at the top.
    return Image.fromarray(np.ascontiguousarray(plane[::-1].astype(np.uint8)), "L")


def ply_bytes(xyz: np.ndarray, rgb: np.ndarray | None) -> bytes:
    """Binary little-endian PLY: x, y, z float32 (and red, green, blue uchar)."""
    n = len(xyz)
    props = "property float x\nproperty float y\nproperty float z\n"
    if rgb is None:
        body = xyz.tobytes()
    else:
        props += "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        rec = np.empty(n, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
        rec["xyz"], rec["rgb"] = xyz, rgb
        body = rec.tobytes()
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\n{props}end_header\n"
    return header.encode() + body


_PLY_XYZ = np.dtype([("xyz", "<f4", 3)])


_PLY_XYZ_RGB = np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3)])


_PLY_PROPS = {
    ("float x", "float y", "float z"): _PLY_XYZ,
    ("float x", "float y", "float z", "uchar red", "uchar green", "uchar blue"): _PLY_XYZ_RGB,
}


@dataclass
class PlyLayout:
    """Where a PLY file's points are: ``count`` records of ``dtype`` from ``offset``."""

    count: int
    dtype: np.dtype
    offset: int

    @property
    def colored(self) -> bool:
        return "rgb" in (self.dtype.names or ())


def ply_layout(head: bytes, size: int, max_points: int = MAX_PLY_POINTS) -> PlyLayout:
    """The layout of a PLY file of ``size`` bytes from its first bytes (``head``, at least
    PLY_HEADER_MAX_BYTES or the whole file): only the layouts ply_bytes writes are read,
    and the records must fit in the file. MediaError says what is wrong otherwise."""
    end = head.find(b"end_header\n", 0, PLY_HEADER_MAX_BYTES)
    if not head.startswith(b"ply\n") or end < 0:
        raise MediaError(
            f"not a PLY file (no 'ply' and 'end_header' in its first {PLY_HEADER_MAX_BYTES} bytes)"
        )
    try:
        lines = head[:end].decode("ascii").splitlines()[1:]
    except UnicodeDecodeError:
        raise MediaError("the PLY header is not ASCII") from None
    lines = [line.strip() for line in lines if line.strip() and not line.startswith(("comment", "obj_info"))]
    if not lines or lines[0] != "format binary_little_endian 1.0":
        raise MediaError("only binary little-endian PLY files are read (as labstats writes them)")
    found = re.fullmatch(r"element vertex (\d{1,12})", lines[1] if len(lines) > 1 else "")
    props = tuple(line.removeprefix("property ") for line in lines[2:])
    if found is None or props not in _PLY_PROPS:
        raise MediaError("the PLY header is not one labstats writes (one vertex element: x y z float, "
                         "then red green blue uchar or nothing)")  # fmt: skip
    count, dtype = int(found.group(1)), _PLY_PROPS[props]
    if count > max_points:
        raise MediaError(f"a point cloud of {count:,} points is over the {max_points:,} read back")
    offset = end + len(b"end_header\n")
    if offset + count * dtype.itemsize > size:
        raise MediaError(f"the PLY file is truncated: {count:,} points need "
                         f"{offset + count * dtype.itemsize:,} bytes, it has {size:,}")  # fmt: skip
    return PlyLayout(count, dtype, offset)


def read_ply_file(file, size: int, keep: int | None = None) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(points N×3 float32, colours N×3 uint8 or None, total) of a PLY file open for reading
    at its start, of ``size`` bytes: at most ``keep`` points (evenly spread, first and last
    kept), read PLY_BLOCK_POINTS at a time, so memory is the kept points and one block."""
    layout = ply_layout(file.read(PLY_HEADER_MAX_BYTES), size)
    total = layout.count
    chosen = (
        None
        if keep is None or total <= keep
        else (np.arange(keep, dtype=np.int64) * (total - 1)) // max(keep - 1, 1)
    )
    parts = []
    file.seek(layout.offset)
    for start in range(0, total, PLY_BLOCK_POINTS):
        n = min(PLY_BLOCK_POINTS, total - start)
        block = np.frombuffer(file.read(n * layout.dtype.itemsize), dtype=layout.dtype)
        if len(block) != n:
            raise MediaError("the PLY file is truncated")
        if chosen is not None:
            block = block[chosen[(chosen >= start) & (chosen < start + n)] - start]
        parts.append(block.copy() if chosen is None else block)
    records = np.concatenate(parts) if parts else np.zeros(0, layout.dtype)
    xyz = np.ascontiguousarray(records["xyz"], dtype=np.float32)
    return xyz, (np.ascontiguousarray(records["rgb"]) if layout.colored else None), total


def read_ply(data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """The points (N×3 float32) and colours (N×3 uint8 or None) of a PLY made by ply_bytes."""
    xyz, rgb, _ = read_ply_file(io.BytesIO(data), len(data))
    return xyz, rgb


def obj_bytes(xyz: np.ndarray) -> bytes:
    """Wavefront OBJ with one ``v x y z`` line per point (the original save_points)."""
    return "".join(f"v {x:.6g} {y:.6g} {z:.6g}\n" for x, y, z in xyz.tolist()).encode()


OBJ_BLOCK_POINTS = 65_536  # points formatted at a time when an OBJ is streamed (~2.5 MB of text)


def obj_stream(file, size: int):
    """The OBJ text of a PLY file (open at its start), in blocks: memory is one block of
    points and its text, whatever the number of points (3M points as one string took ~1 GB)."""
    layout = ply_layout(file.read(PLY_HEADER_MAX_BYTES), size)
    file.seek(layout.offset)
    for start in range(0, layout.count, OBJ_BLOCK_POINTS):
        n = min(OBJ_BLOCK_POINTS, layout.count - start)
        block = np.frombuffer(file.read(n * layout.dtype.itemsize), dtype=layout.dtype)
        if len(block) != n:
            raise MediaError("the PLY file is truncated")
        yield obj_bytes(block["xyz"])


_FITS_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


@dataclass
class FitsLayout:
    """A FITS file's primary image: its header cards and where its pixels are."""

    header: Any  # astropy.io.fits.Header
    shape: tuple[int, ...]  # numpy order: (planes,) rows, columns
    dtype: np.dtype
    offset: int


def _fits_header_bytes(file) -> bytes:
    """The primary header's blocks, up to the one holding END (at most FITS_HEADER_MAX_BYTES)."""
    raw = b""
    while True:
        block = file.read(FITS_BLOCK)
        if len(block) < FITS_BLOCK:
            raise MediaError("not a FITS file (its header has no END card)")
        raw += block
        if any(block[k : k + 80].rstrip() == b"END" for k in range(0, FITS_BLOCK, 80)):
            break
        if len(raw) >= FITS_HEADER_MAX_BYTES:
            raise MediaError(f"the FITS header is over the {FITS_HEADER_MAX_BYTES:,} bytes read")
    if not raw.startswith(b"SIMPLE  ="):
        raise MediaError("not a FITS file (it does not start with SIMPLE)")
    return raw


def fits_header(file):
    """The primary header (astropy Header) of a FITS file open at its start, reading at
    most FITS_HEADER_MAX_BYTES of it."""
    from astropy.io import fits

    try:
        return fits.Header.fromstring(_fits_header_bytes(file).decode("ascii"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MediaError(f"the FITS header cannot be read ({str(exc)[:200]})") from None


def fits_layout(file, size: int) -> FitsLayout:
    """The primary header of a FITS file (open at its start) of ``size`` bytes, read block by
    block up to FITS_HEADER_MAX_BYTES, and its image's shape, checked against the file's size
    before any pixel is read: a 2-D image or a 3-D cube of sides up to MAX_FITS_SIDE."""
    header = fits_header(file)
    offset = file.tell()
    try:
        bitpix, naxis = int(header["BITPIX"]), int(header["NAXIS"])
        sides = [int(header[f"NAXIS{k}"]) for k in range(1, naxis + 1)] if naxis in (2, 3) else []
    except (KeyError, ValueError, TypeError) as exc:
        raise MediaError(f"the FITS header cannot be read ({str(exc)[:200]})") from None
    if bitpix not in _FITS_DTYPES or not sides:
        raise MediaError(f"not a 2-D or 3-D FITS image (BITPIX {bitpix}, NAXIS {naxis})")
    if not all(1 <= side <= MAX_FITS_SIDE for side in sides):
        raise MediaError(f"a FITS image of sides {sides} is refused (each must be 1 to {MAX_FITS_SIDE:,})")
    dtype = np.dtype(_FITS_DTYPES[bitpix])
    needed = offset + int(np.prod(sides, dtype=object)) * dtype.itemsize
    if needed > size:
        raise MediaError(f"the FITS file is truncated: its image needs {needed:,} bytes, it has {size:,}")
    return FitsLayout(header, tuple(reversed(sides)), dtype, offset)


def fits_plane(file, size: int, max_side: int) -> np.ndarray:
    """A float32 section of a FITS file's image (its middle plane for a cube, as fits_preview
    takes), every k-th row and column so that no side is over ``max_side``: only the rows
    kept are read, one at a time, whatever the file's size. BSCALE/BZERO applied, BLANK
    pixels NaN."""
    layout = fits_layout(file, size)
    rows, cols = layout.shape[-2:]
    plane = layout.shape[0] // 2 if len(layout.shape) == 3 else 0
    step = -(-max(rows, cols) // max_side)
    row_bytes = cols * layout.dtype.itemsize
    out = np.empty((-(-rows // step), -(-cols // step)), np.float32)
    for k, row in enumerate(range(0, rows, step)):
        file.seek(layout.offset + (plane * rows + row) * row_bytes)
        out[k] = np.frombuffer(file.read(row_bytes), dtype=layout.dtype)[::step]
    header = layout.header
    blank = header.get("BLANK") if layout.dtype.kind in "iu" else None
    # BLANK comes from the file: one outside the pixels' own range marks no pixel (2**70
    # raised OverflowError, a 500; 100000 on 16-bit data wrapped onto real values).
    if (
        isinstance(blank, int)
        and not isinstance(blank, bool)
        and (np.iinfo(layout.dtype).min <= blank <= np.iinfo(layout.dtype).max)
    ):
        raw_blank = np.array(blank).astype(layout.dtype).astype(np.float32)
        out[out == raw_blank] = np.nan
    scale, zero = header.get("BSCALE", 1), header.get("BZERO", 0)
    if isinstance(scale, int | float) and isinstance(zero, int | float) and (scale, zero) != (1, 0):
        out = out * np.float32(scale) + np.float32(zero)
    return out


def points_preview(xyz: np.ndarray, rgb: np.ndarray | None, px: int = THUMB_PX):
    """A PIL image: the points seen from an oblique angle (what a thumbnail can show)."""
    from PIL import Image

    a, b = np.radians(30), np.radians(20)
    rot_y = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rot_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    view = xyz.astype(np.float64) @ (rot_x @ rot_y).T
    lo, hi = view.min(axis=0), view.max(axis=0)
    span = float(max(hi[0] - lo[0], hi[1] - lo[1])) or 1.0
    col = ((view[:, 0] - lo[0]) / span * (px - 1)).astype(int)
    row = ((hi[1] - view[:, 1]) / span * (px - 1)).astype(int)
    order = np.argsort(view[:, 2])  # far points first, near ones drawn over them
    canvas = np.full((px, px, 3), 255, np.uint8)
    depth = (view[:, 2] - lo[2]) / (float(hi[2] - lo[2]) or 1.0)
    colors = rgb if rgb is not None else np.stack([40 + 150 * depth, 90 + 60 * depth, 200 - 80 * depth], 1)
    canvas[row[order], col[order]] = np.asarray(colors)[order].astype(np.uint8)
    return Image.fromarray(canvas, "RGB")


def thumbnail_format(data: bytes) -> str:
    """The stored thumbnail's format ("WEBP", "PNG"...), checked from its header only (size,
    length, format) as open_thumbnail checks it, without decoding its pixels: what serving
    the bytes as they are needs."""
    return _thumbnail_header(data).format


def _thumbnail_header(data: bytes):
    from PIL import Image

    if len(data) > THUMB_READ_MAX_BYTES:
        raise MediaError(f"a thumbnail of {len(data):,} bytes is over the {THUMB_READ_MAX_BYTES:,} read back")
    try:
        picture = Image.open(io.BytesIO(data), formats=THUMB_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # the viewer's low limit
        raise MediaError(
            f"a thumbnail of over {Image.MAX_IMAGE_PIXELS:,} px is refused "
            f"(thumbnails are at most {THUMB_PX} px)"
        ) from None
    except Exception:  # Pillow's errors for bytes that are no picture vary by format
        raise MediaError("the thumbnail is not a picture") from None
    width, height = picture.size
    if width > THUMB_PX or height > THUMB_PX:
        raise MediaError(
            f"a thumbnail of {width}×{height} px is refused (thumbnails are at most {THUMB_PX} px)"
        )
    return picture


def open_thumbnail(data: bytes):
    """A stored thumbnail's picture (RGB). Its size is read from its header and one over
    THUMB_PX on a side (an 8000×8000 PNG planted as a thumbnail compresses to ~186 KB and
    decodes to ~0.9 GB) or over THUMB_READ_MAX_BYTES is refused before decoding (MediaError),
    as is anything not in THUMB_FORMATS."""
    picture = _thumbnail_header(data)
    try:
        return picture.convert("RGB")
    except Exception:  # a header that reads and pixels that do not
        raise MediaError("the thumbnail cannot be decoded") from None


def open_picture(data: bytes | None):
    """A thumbnail's picture (RGB), or None when it is missing, not a picture, or refused
    by open_thumbnail (larger than a thumbnail can be)."""
    if not data:
        return None
    try:
        return open_thumbnail(data)
    except MediaError:
        return None


# Originals read back for a montage or an animation (open_original): files up to this size
# only (a PNG of MAX_DECODE_PIXELS is at most ~64 MB; ours are far smaller), in these formats.
ORIGINAL_READ_MAX_BYTES = 16 << 20


ORIGINAL_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")


def open_original(file, size: int, px: int, max_pixels: int = MAX_DECODE_PIXELS) -> tuple[Any, int]:
    """(RGB picture of at most ``px`` on its longer side, pixels decoded) of a stored
    original (open at its start, ``size`` bytes): its size in bytes and in pixels (from its
    header) are checked before any pixel is decoded, a JPEG is decoded at the smallest
    scale that still covers ``px`` (Pillow's draft), and only its first frame is read.
    MediaError when it is over ORIGINAL_READ_MAX_BYTES, ``max_pixels`` (what the caller's
    budget has left, at most MAX_DECODE_PIXELS) or not a picture in ORIGINAL_FORMATS."""
    from PIL import Image

    if size > ORIGINAL_READ_MAX_BYTES:
        raise MediaError(f"an original of {size:,} bytes is over the {ORIGINAL_READ_MAX_BYTES:,} read back")
    try:
        picture = Image.open(file, formats=ORIGINAL_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MediaError(f"an original of over {MAX_DECODE_PIXELS:,} px is refused") from None
    except Exception:  # Pillow's errors for bytes that are no picture vary by format
        raise MediaError("the original is not a picture") from None
    if picture.format == "JPEG":
        picture.draft("RGB", (px, px))  # decodes at 1/2, 1/4 or 1/8 scale when that covers px
    width, height = picture.size
    if width * height > min(max_pixels, MAX_DECODE_PIXELS):
        raise MediaError(f"an original of {width}×{height} px is over the "
                         f"{min(max_pixels, MAX_DECODE_PIXELS):,} px decoded here: refused")  # fmt: skip
    try:
        return fit(picture.convert("RGB"), px), width * height
    except Exception:  # a header that reads and pixels that do not
        raise MediaError("the original cannot be decoded") from None


def fit(image, px: int):
    """``image`` scaled to ``px`` on its longer side: small pictures scaled up with nearest
    neighbour (crisp pixels, as their thumbnails are), large ones down with Lanczos."""
    from PIL import Image

    w, h = image.size
    if max(w, h) == px:
        return image
    scale = px / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if scale > 1:
        return image.resize(size, Image.Resampling.NEAREST)
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


LABEL_PX = 16  # the strip under a montage tile that says its step


def labelled_montage(tiles: list[tuple[str, Any]], columns: int | None = None):
    """One PIL image of pictures in rows, each with its label (``"epoch 3 · step 1984"``)
    written in a strip under it; the pictures are centred in cells of the largest's size."""
    from PIL import Image, ImageDraw, ImageFont

    width = max(image.size[0] for _, image in tiles)
    height = max(image.size[1] for _, image in tiles)
    columns = columns or int(np.ceil(np.sqrt(len(tiles))))
    rows = -(-len(tiles) // columns)
    gap, cell_h = 2, height + LABEL_PX
    out = Image.new("RGB", (columns * width + (columns - 1) * gap, rows * cell_h + (rows - 1) * gap), "white")
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=11)
    for k, (label, image) in enumerate(tiles):
        r, c = divmod(k, columns)
        x, y = c * (width + gap), r * (cell_h + gap)
        out.paste(image, (x + (width - image.size[0]) // 2, y + (height - image.size[1]) // 2))
        draw.text((x + 3, y + height + 2), label, fill=(40, 40, 40), font=font)
    return out


def montage(images: list, columns: int | None = None):
    """One PIL image of several (resized to the largest), in rows: a batch or chosen steps."""
    size = max(i.size[0] for i in images), max(i.size[1] for i in images)
    batch = np.stack([np.asarray(i.convert("RGB").resize(size)) for i in images])
    return pil_image(grid(batch, columns))


def animation(images: list, ms: int = 200) -> bytes:
    """An animated GIF, one frame per image (resized to the first), looping."""
    frames = [i.convert("RGB").resize(images[0].size) for i in images]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0)
    return out.getvalue()


def evenly(items: list, limit: int) -> list:
    """At most ``limit`` of ``items``, evenly spread, first and last included."""
    if len(items) <= limit:
        return list(items)
    picks = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in sorted(set(picks.tolist()))]


def decode_array(record: dict[str, Any], data: bytes) -> Any:
    """An artifact's content as an array: images HWC uint8, FITS data, points N×3 float32."""
    kind = record.get("kind")
    if kind == "image":
        from PIL import Image

        try:
            picture = Image.open(io.BytesIO(data))  # the header only: its size is checked first
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # Pillow's own bound
            raise MediaError(f"the picture is too large to decode: refused ({exc})") from None
        if picture.size[0] * picture.size[1] > MAX_DECODE_PIXELS:
            raise MediaError(f"the picture has {picture.size[0]}×{picture.size[1]} pixels, over the "
                             f"{MAX_DECODE_PIXELS:,} one may decode to: refused")  # fmt: skip
        return np.asarray(picture)
    if kind == "fits":
        from astropy.io import fits

        with fits.open(io.BytesIO(data)) as hdus:
            return np.array(hdus[0].data)
    if kind == "points":
        return read_ply(data)[0]
    return data
