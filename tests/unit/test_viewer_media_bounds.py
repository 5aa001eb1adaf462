"""Media answers of the viewer are bounded whatever a run holds (issue 22, findings 4, 10,
11, 12): oversized thumbnails, FITS files, point clouds, downloads and long step lists are
refused with a 4xx saying why, or read a bounded part; never decoded whole, never a 5xx.

Hostile data is planted as a training user can: records and thumbnails written straight
into a real redis-server, files put in the artifact store. Memory is measured with
tracemalloc (NumPy and Python allocations; Pillow's own buffers are covered by the
subprocess suite in test_viewer_memory.py)."""

from __future__ import annotations

import io
import os
import stat
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image
from planting import plant

import labstats
from labstats.format import keys, media_files
from labstats.viewer import create_app
from labstats.viewer.sources import Source

K = keys.Keys()


@pytest.fixture
def client(url, store):
    app = create_app({"local": Source("local", url, artifact_dir=str(store.root))})
    app.testing = False  # errors answered as in production
    return app.test_client()


@pytest.fixture
def run_id(tmp_path, url) -> str:
    with labstats.Stats(tmp_path / "run", name="bounds") as stats:
        stats.log(step=0, loss=1.0)
    return stats.run_id


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, "PNG")
    return out.getvalue()


def webp(k: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (k % 256, 0, 0)).save(out, "WEBP")
    return out.getvalue()


def api(run_id: str, what: str, name: str, query: str = "") -> str:
    from urllib.parse import quote

    return f"/api/runs/local/{run_id}/{what}/{quote(name, safe='')}{query}"


def peak_mb(call) -> tuple[float, object]:
    tracemalloc.start()
    try:
        result = call()
        return tracemalloc.get_traced_memory()[1] / 2**20, result
    finally:
        tracemalloc.stop()


# ---- 1. nothing decoded before its size is checked ------------------------------------------------


def test_an_oversized_thumbnail_is_refused_from_its_header_never_decoded(client, url, run_id):
    """8000×8000 PNGs planted as thumbnails (~60 KB each here, 186 KB in the attack): a
    montage of 4 took a worker to 3.6 GB. Now its header refuses it: 413 at once."""
    big = png(8000, 8000)
    assert len(big) < media_files.THUMB_READ_MAX_BYTES  # refused by its size in pixels, not bytes
    plant(url, run_id, "pics", "image", {(s, 0): {"digest": "0" * 64} for s in range(4)},
          {(s, 0): big for s in range(4)})  # fmt: skip
    started = time.monotonic()
    for what, query in [("montage", ""), ("animation", ""), ("montage", "?step=2"), ("thumb", "?step=1")]:
        answer = client.get(api(run_id, what, "pics", query))
        assert answer.status_code == 413, (what, answer.status_code, answer.data)
        assert "px is refused (thumbnails are at most 256 px)" in answer.get_json()["error"]
    assert time.monotonic() - started < 2  # four decodes of 8000×8000 took seconds each
    with pytest.raises(media_files.MediaError, match="refused"):
        media_files.open_thumbnail(big)
    assert media_files.open_picture(big) is None  # the reader's pictures() leaves it out


def test_a_thumbnail_too_long_to_be_one_is_refused_before_it_is_fetched(client, url, run_id):
    huge = webp(1) + b"\0" * (media_files.THUMB_READ_MAX_BYTES + 1)
    plant(url, run_id, "pics", "image", {(0, 0): {"digest": "0" * 64}}, {(0, 0): huge})
    for what in ("thumb", "montage", "animation"):
        answer = client.get(api(run_id, what, "pics"))
        assert answer.status_code == 413
        assert f"over the {media_files.THUMB_READ_MAX_BYTES:,}" in answer.get_json()["error"]


def test_pillows_pixel_limit_is_low_in_the_viewer_and_its_warning_an_error():
    import warnings

    assert Image.MAX_IMAGE_PIXELS == media_files.MAX_DECODE_PIXELS == 4096 * 4096
    picture = Image.open(io.BytesIO(png(5000, 5000)))  # 1.5× the limit: Pillow only warned
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(Image.DecompressionBombWarning):
            Image.open(io.BytesIO(png(5000, 5000))).load()
    assert picture.size == (5000, 5000)


def test_a_logged_big_picture_file_gets_no_thumbnail_and_an_svg_is_never_a_picture(client, tmp_path):
    (tmp_path / "big.png").write_bytes(png(5000, 5000))
    (tmp_path / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>')
    (tmp_path / "small.png").write_bytes(png(40, 30))
    with labstats.Stats(tmp_path / "files") as stats:
        for name in ("big.png", "logo.svg", "small.png"):
            stats.file(name, tmp_path / name, step=1)
    for name, picture in (("big.png", False), ("logo.svg", False), ("small.png", True)):
        (record,) = client.get(api(stats.run_id, "media", name)).get_json()["records"]
        assert record["picture"] is picture, name
        assert client.get(api(stats.run_id, "thumb", name)).status_code == (200 if picture else 404)
    svg = client.get(api(stats.run_id, "file", "logo.svg"))
    assert svg.mimetype == "application/octet-stream"
    assert svg.headers["Content-Disposition"].startswith("attachment")


# ---- 2. FITS previews from a bounded section ---------------------------------------------------


def fits_bytes(data: np.ndarray, **cards) -> bytes:
    from astropy.io import fits

    out = io.BytesIO()
    fits.PrimaryHDU(data, header=fits.Header(list(cards.items()))).writeto(out)
    return out.getvalue()


def test_a_fits_preview_reads_a_strided_section_not_the_file(client, url, run_id, store):
    """A 4000×4000 float64 FITS (128 MB): the preview reads every 2nd row, one at a time,
    and decodes no more than the 2000×2000 it shows (the old preview: the file, its copy,
    its float64 copy...: ~50× the file's size)."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(4000, 4000))
    data[:, :2000] += 100  # left half bright: the preview must show it, in FITS orientation
    digest = store.put(fits_bytes(data))
    plant(url, run_id, "sky", "fits", {(0, 0): {"digest": digest, "type": "application/fits"}})
    mb, answer = peak_mb(lambda: client.get(api(run_id, "fits", "sky")))
    assert answer.status_code == 200
    preview = np.asarray(Image.open(io.BytesIO(answer.data)))
    assert preview.shape == (2000, 2000)
    assert preview[:, :1000].mean() > preview[:, 1000:].mean() + 50
    assert mb < 120, f"{mb:.0f} MB for a 128 MB file"


def test_fits_files_with_absurd_or_hostile_headers_get_4xx(client, url, run_id, store):
    good = fits_bytes(np.ones((8, 8), np.float32))
    absurd = good.replace(b"NAXIS1  =                    8", b"NAXIS1  =           1000000000")
    truncated = good.replace(b"NAXIS1  =                    8", b"NAXIS1  =                 4000")
    no_end = good[:2880].replace(b"END     ", b"COMMENT ") * 200  # 576 KB of header without END
    planted = {"absurd": absurd, "truncated": truncated, "no-end": no_end, "not-fits": b"hello" * 1000}
    for name, data in planted.items():
        plant(url, run_id, name, "fits", {(0, 0): {"digest": store.put(data)}})
        for what in ("fits", "fitsheader"):
            answer = client.get(api(run_id, what, name))
            if what == "fitsheader" and name in ("absurd", "truncated"):
                assert answer.status_code == 200  # the header alone still reads
                continue
            assert answer.status_code in (413, 422), (name, what, answer.status_code)
            assert answer.get_json()["error"]


def test_a_fits_blank_outside_the_pixels_range_marks_nothing(client, url, run_id, store):
    """BLANK comes from the file: 2**70 on 16-bit pixels was an OverflowError (a 500), and
    100000 wrapped onto a real pixel value (-31072), which then showed as missing."""
    data = np.full((8, 8), -31072, np.int16)
    data[0, 0] = 7
    for blank in (2**70, 100_000):
        digest = store.put(fits_bytes(data, BLANK=blank))
        plant(url, run_id, f"blank{blank}", "fits", {(0, 0): {"digest": digest, "type": "application/fits"}})
        answer = client.get(api(run_id, "fits", f"blank{blank}"))
        assert answer.status_code == 200, (blank, answer.status_code)
        preview = np.asarray(Image.open(io.BytesIO(answer.data)).convert("RGBA"))
        assert (preview[..., 3] == 255).all()  # every pixel drawn: none taken for blank


# ---- 3. downloads streamed, files read-only -----------------------------------------------------


def test_a_download_is_streamed_after_a_bounded_check_range_requests_too(client, url, run_id, store):
    """A 64 MB file: read whole and hashed, a download cost its size in memory and more
    (1.5 GB for 600 MiB); streamed, a few MB, Range requests included."""
    data = np.random.default_rng(1).integers(0, 255, 64 << 20, dtype=np.uint8).tobytes()
    digest = store.put(data)
    plant(url, run_id, "ckpt", "file", {(0, 0): {"digest": digest, "type": "application/octet-stream",
                                                  "file": "model.ckpt"}})  # fmt: skip

    def download(headers=None):
        answer = client.get(api(run_id, "file", "ckpt"), headers=headers or {}, buffered=False)
        hasher, size = __import__("hashlib").sha256(), 0
        for block in answer.response:
            hasher.update(block)
            size += len(block)
        answer.close()
        return answer, hasher.hexdigest(), size

    mb, (answer, got, size) = peak_mb(download)
    assert answer.status_code == 200
    assert (got, size) == (digest, len(data))
    assert answer.headers["Content-Length"] == str(len(data))
    assert mb < 8, f"{mb:.1f} MB to send a 64 MB file"
    mb, (part, _, size) = peak_mb(lambda: download({"Range": "bytes=1000-1999"}))
    assert part.status_code == 206
    assert size == 1000
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    assert mb < 8


def test_the_store_checks_a_file_once_while_unchanged_and_never_serves_a_damaged_one(store, monkeypatch):
    import hashlib

    digest = store.put(b"x" * 3_000_000)
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    for _ in range(3):
        with store.open_checked(digest) as file:
            assert file.read() == b"x" * 3_000_000
    assert len(calls) == 1  # hashed once, remembered by (device, inode, size, mtime)
    path = store.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"y" * 3_000_000)  # same size, new content and mtime
    with pytest.raises(ValueError, match="damaged"):
        store.open_checked(digest)


def test_stored_files_are_read_only_and_special_files_are_never_opened(store):
    digest = store.put(b"content")
    assert stat.S_IMODE(store.path(digest).stat().st_mode) == 0o444
    fifo = "f" * 64
    store.path(fifo).parent.mkdir(parents=True)
    os.mkfifo(store.path(fifo))
    with pytest.raises(OSError, match="not a regular file"):
        store.open_checked(fifo)  # returns at once: it never blocks on a FIFO
    link = "e" * 64
    store.path(link).parent.mkdir(parents=True)
    store.path(link).symlink_to(store.path(digest))
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        store.open_checked(link)  # O_NOFOLLOW: a link planted under a digest's name


# ---- 4. point clouds with bounded memory; malformed ones are 422 --------------------------------


def test_a_big_cloud_is_sampled_a_block_at_a_time_and_its_obj_streamed(client, url, run_id, store):
    rng = np.random.default_rng(2)
    xyz = rng.normal(size=(3_000_000, 3)).astype(np.float32)
    digest = store.put(media_files.ply_bytes(xyz, None))
    del xyz
    plant(url, run_id, "cloud", "points", {(0, 0): {"digest": digest, "type": "application/x-ply"}})
    mb, answer = peak_mb(lambda: client.get(api(run_id, "points", "cloud")))
    assert answer.status_code == 200
    assert answer.headers["X-Points"] == "200000"
    assert answer.headers["X-Points-Total"] == "3000000"
    assert mb < 40, f"{mb:.0f} MB for a 36 MB cloud"  # the file read whole and copied: 72 MB and more

    small = store.put(media_files.ply_bytes(rng.normal(size=(300_000, 3)).astype(np.float32), None))
    plant(url, run_id, "small", "points", {(0, 0): {"digest": small, "type": "application/x-ply"}})

    def obj():
        answer = client.get(api(run_id, "file", "small", "?format=obj"), buffered=False)
        lines = sum(block.count(b"\n") for block in answer.response)
        answer.close()
        return lines

    mb, lines = peak_mb(obj)
    assert lines == 300_000
    assert mb < 25, f"{mb:.0f} MB for an OBJ of 300,000 points"  # one string of it all: ~60 MB


@pytest.mark.parametrize(
    "data",
    [
        b"ply\nformat binary_little_endian 1.0\nelement vertex 5\nproperty float x\nend_header\n",
        b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
        b"property float z\nend_header\n1 2 3\n",
        media_files.ply_bytes(np.ones((100, 3), np.float32), None)[:-7],  # truncated
        b"ply\nformat binary_little_endian 1.0\nelement vertex 99999999999\nproperty float x\n"
        b"property float y\nproperty float z\nend_header\n",
        b"ply\n" + b"comment x\n" * 5000 + b"end_header\n",
        b"\xff\xfe not a ply",
    ],
    ids=["one-property", "ascii", "truncated", "huge-count", "long-header", "garbage"],
)
def test_malformed_point_clouds_get_a_clear_4xx(client, url, run_id, store, data):
    plant(url, run_id, "bad", "points", {(0, 0): {"digest": store.put(data), "type": "application/x-ply"}})
    for query in ("points", "file"):
        answer = client.get(api(run_id, query, "bad", "?format=obj" if query == "file" else ""))
        assert answer.status_code in (413, 422), (query, answer.status_code)
        assert "PLY" in answer.get_json()["error"] or "point" in answer.get_json()["error"]


# ---- 5. per-request caps -----------------------------------------------------------------------


def test_a_long_step_list_is_refused_and_a_long_logged_list_is_quick(client, url, run_id):
    steps = range(2600)
    plant(url, run_id, "pics", "image", {(s, 0): {"digest": "0" * 64} for s in steps},
          {(s, 0): webp(s) for s in steps})  # fmt: skip
    listed = ",".join(map(str, steps))
    started = time.monotonic()
    answer = client.get(api(run_id, "montage", "pics", f"?steps={listed}"))
    assert answer.status_code == 413
    assert "more than 1,000 steps" in answer.get_json()["error"]
    listed = ",".join(map(str, range(0, 2600, 3)))  # 867 steps: allowed, answered at once
    assert client.get(api(run_id, "montage", "pics", f"?steps={listed}")).status_code == 200
    gif = client.get(api(run_id, "animation", "pics", f"?steps={listed}"))
    assert gif.status_code == 200
    assert gif.headers["X-Frames"] == "300"
    assert time.monotonic() - started < 5  # 2,600 listed steps alone burned 10 s of CPU


# ---- 6. montages and GIFs from the originals, within a budget ------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says ``width``×``height`` (a 1×1 picture's, its IHDR rewritten):
    a decompression bomb as far as a reader that trusts the header can tell."""
    import struct
    import zlib

    data = bytearray(png(1, 1))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def checker(k: int) -> np.ndarray:
    picture = np.zeros((64, 64, 3), np.uint8)
    picture[..., 0] = 30 * k
    picture[..., 1] = (np.indices((64, 64)).sum(axis=0) % 2) * 200  # detail a WebP thumbnail blurs
    return picture


def plant_pictures(url, run_id, store, name: str, originals: dict[int, bytes | str]) -> None:
    """A picture per step: its original (bytes put in the store, or a digest as it is) and
    the thumbnail the logger would make of checker(step)."""
    records, thumbs = {}, {}
    for step, original in originals.items():
        digest = store.put(original) if isinstance(original, bytes) else original
        records[(step, 0)] = {"digest": digest, "type": "image/png"}
        thumbs[(step, 0)] = media_files.thumbnail(Image.fromarray(checker(step)))
    plant(url, run_id, name, "image", records, thumbs)


def frames_of(data: bytes) -> list[np.ndarray]:
    gif = Image.open(io.BytesIO(data))
    frames = []
    for k in range(gif.n_frames):
        gif.seek(k)
        frames.append(np.asarray(gif.convert("RGB")))
    return frames


def from_original(frame: np.ndarray, step: int) -> bool:
    scale = frame.shape[0] // 64
    return np.array_equal(frame, np.kron(checker(step), np.ones((scale, scale, 1), np.uint8)))


def test_a_gif_reads_no_huge_original_whole_and_draws_it_from_its_thumbnail(client, url, run_id, store):
    """Step 0's original is a real 64 px PNG: its frame is that picture, exactly. Step 1's
    is an 8 GiB file (sparse, planted under a digest's name): its size, taken before it is
    opened, keeps it unread (hashing it alone took seconds). Step 2's header claims
    30000×30000 px: refused before a pixel is decoded. Both are drawn from their thumbnails."""
    huge = "ab" * 32
    store.path(huge).parent.mkdir(parents=True, exist_ok=True)
    with open(store.path(huge), "wb") as file:
        file.truncate(8 << 30)
    originals = {0: media_files.png_bytes(checker(0)), 1: huge, 2: png_claiming(30000, 30000)}
    plant_pictures(url, run_id, store, "pics", originals)
    started = time.monotonic()
    mb, answer = peak_mb(lambda: client.get(api(run_id, "animation", "pics")))
    assert answer.status_code == 200
    assert time.monotonic() - started < 2
    assert mb < 40, f"{mb:.0f} MB"
    frames = frames_of(answer.data)
    assert [frame.shape for frame in frames] == [(512, 512, 3)] * 3
    assert [from_original(frame, step) for step, frame in enumerate(frames)] == [True, False, False]
    # The thumbnails' frames show their steps (red 30 × step), not a blank or an error.
    assert [round(frame[..., 0].mean() / 30) for frame in frames] == [0, 1, 2]
    for k in (1, 2):
        assert client.get(api(run_id, "montage", "pics", f"?steps={k}")).status_code == 200


def test_what_one_request_reads_of_originals_is_bounded(client, url, run_id, store, monkeypatch):
    """Past the request's budget of decoded pixels (or of bytes), the frames come from the
    thumbnails: a montage or a GIF of 300 large originals costs at most the budget."""
    from labstats.viewer import media as viewer_media

    plant_pictures(url, run_id, store, "pics", {s: media_files.png_bytes(checker(s)) for s in range(4)})
    monkeypatch.setattr(viewer_media, "ORIGINALS_MAX_PIXELS", 2 * 64 * 64)
    answer = client.get(api(run_id, "montage", "pics"))
    montage = np.asarray(Image.open(io.BytesIO(answer.data)).convert("RGB"))
    cell, width = 256 + media_files.LABEL_PX + 2, 258
    tiles = [
        montage[(k // 2) * cell : (k // 2) * cell + 256, (k % 2) * width : (k % 2) * width + 256]
        for k in range(4)
    ]
    assert [from_original(tile, k) for k, tile in enumerate(tiles)] == [True, True, False, False]
    monkeypatch.setattr(viewer_media, "ORIGINALS_MAX_PIXELS", 1 << 30)
    records = [
        client.get(api(run_id, "media", "pics", f"?step={k}")).get_json()["records"][0] for k in range(3)
    ]
    monkeypatch.setattr(
        viewer_media, "ORIGINALS_MAX_BYTES", sum(store.path(r["digest"]).stat().st_size for r in records)
    )
    frames = frames_of(client.get(api(run_id, "animation", "pics")).data)
    assert [from_original(frame, k) for k, frame in enumerate(frames)] == [True, True, True, False]


def test_a_gif_of_many_steps_has_smaller_frames_its_pixels_bounded(client, url, run_id):
    from labstats.viewer.media import GIF_MAX_PIXELS, gif_frame_px

    assert [gif_frame_px(n) for n in (1, 75, 300)] == [512, 512, 256]
    assert all(n * gif_frame_px(n) ** 2 <= GIF_MAX_PIXELS for n in range(1, 301))
    steps = range(300)
    plant(url, run_id, "pics", "image", {(s, 0): {"digest": "0" * 64} for s in steps},
          {(s, 0): webp(s) for s in steps})  # fmt: skip
    answer = client.get(api(run_id, "animation", "pics"))
    assert answer.headers["X-Frames"] == "300"
    assert Image.open(io.BytesIO(answer.data)).size == (256, 256)  # 512 px: 4 times the pixels


def test_hostile_originals_are_never_read_outside_the_store(client, url, run_id, store):
    """Records whose digest is a path, a link planted under a digest's name, a file of
    another type: montage and GIF answer from the thumbnails, never from those files."""
    secret = store.root.parent / "secret.png"
    secret.write_bytes(media_files.png_bytes(checker(0)))
    link = "cd" * 32
    store.path(link).parent.mkdir(parents=True, exist_ok=True)
    store.path(link).symlink_to(secret)
    plant_pictures(url, run_id, store, "pics", {0: "../../secret.png", 1: link})
    plant(url, run_id, "pics", "image", {(2, 0): {"digest": store.put(media_files.png_bytes(checker(2))),
                                                  "type": "text/html"}},
          {(2, 0): media_files.thumbnail(Image.fromarray(checker(2)))})  # fmt: skip
    frames = frames_of(client.get(api(run_id, "animation", "pics")).data)
    assert [from_original(frame, k) for k, frame in enumerate(frames)] == [False, False, False]
    assert client.get(api(run_id, "montage", "pics")).status_code == 200


def test_a_gif_made_before_its_originals_arrived_is_made_again_from_them(client, url, run_id, store):
    """The training box pushes files within a minute: a GIF made from thumbnails meanwhile
    is not kept, so the next one has the originals."""
    original = media_files.png_bytes(checker(0))
    digest = store.put(original)
    plant_pictures(url, run_id, store, "pics", {0: digest, 1: media_files.png_bytes(checker(1))})
    store.path(digest).unlink()  # not here yet
    before = frames_of(client.get(api(run_id, "animation", "pics")).data)
    assert [from_original(frame, k) for k, frame in enumerate(before)] == [False, True]
    assert store.put(original) == digest  # arrived
    after = frames_of(client.get(api(run_id, "animation", "pics")).data)
    assert [from_original(frame, k) for k, frame in enumerate(after)] == [True, True]
