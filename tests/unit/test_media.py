"""Media against a real redis-server and real Pillow / astropy: images, FITS, points, files,
the original save_* methods, retention, bad input and a full artifact store."""

import hashlib
import io
import logging
import os
import struct
import threading
import time
import tracemalloc

import numpy as np
import pytest
import torch
from astropy.io import fits
from PIL import Image

import labstats
from labstats.format import media_files, media_record
from labstats.write import media


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = tmp_path / "artifacts"
    monkeypatch.setenv("LABSTATS_ARTIFACT_DIR", str(root))
    return media.ArtifactStore(root)


def rgb_8x8():
    image = np.zeros((8, 8, 3), np.uint8)
    image[0, :, 0] = 255  # top row red
    image[:, 0, 2] = 200  # left column blue
    image[7, 7] = (10, 220, 30)
    return image


def test_image_layouts_round_trip_in_colour_row_0_on_top(tmp_path, store, lab):
    hwc = rgb_8x8()
    with labstats.Stats(tmp_path / "run") as stats:
        stats.image("hwc", hwc, step=1, caption="red top")
        stats.image("chw", torch.from_numpy(hwc).permute(2, 0, 1).contiguous(), step=2)
        stats.image("float", hwc.astype(np.float32) / 255, step=3)
        stats.image("grey", hwc[..., 1], step=4)
        stats.image("pil", Image.fromarray(hwc), step=5)
        stats.image("forced", np.ascontiguousarray(hwc.transpose(2, 0, 1)), step=6, dataformats="CHW")
    run = lab.run("run")
    assert run.media_names() == dict.fromkeys(["chw", "float", "forced", "grey", "hwc", "pil"], "image")
    for name in ("hwc", "chw", "float", "pil", "forced"):
        got = run.artifact(name, as_="array")
        assert got.shape == (8, 8, 3), name
        assert np.array_equal(got, hwc), name
    assert np.array_equal(run.artifact("grey", as_="array"), hwc[..., 1])
    (record,) = run.media("hwc")
    assert record["caption"] == "red top"
    assert record["type"] == "image/png"
    assert record["shape"] == [8, 8, 3]
    assert record["digest"] == hashlib.sha256(run.artifact("hwc")).hexdigest()
    thumb = Image.open(io.BytesIO(run.thumbnail("hwc", 1)))
    assert thumb.format == "WEBP"
    assert max(thumb.size) == 256
    assert np.asarray(thumb.convert("RGB"))[2, 128, 0] > 200  # still red at the top


def test_images_batch_is_one_grid(tmp_path, store, lab):
    batch = np.stack([rgb_8x8()] * 5)
    with labstats.Stats(tmp_path / "run") as stats:
        stats.images("batch", batch, step=3)
        stats.images("nchw", torch.from_numpy(batch).permute(0, 3, 1, 2), step=3)
    run = lab.run("run")
    for name in ("batch", "nchw"):
        (record,) = run.media(name)
        assert record["shape"] == [5, 8, 8, 3]
        grid = run.artifact(name, as_="array")
        assert grid.shape == (2 * 8 + 2, 3 * 8 + 2 * 2, 3)  # 3 columns, 2 rows, 2 px gaps
        assert np.array_equal(grid[8 + 2 : 16 + 2, 0:8], rgb_8x8())  # fourth image


def test_fits_keeps_data_and_header_and_previews(tmp_path, store, lab):
    data = np.random.default_rng(1).normal(100, 5, (32, 48)).astype(np.float32)
    cube = np.random.default_rng(2).normal(0, 1, (3, 16, 16))
    with labstats.Stats(tmp_path / "run") as stats:
        stats.fits("sky", data, step=7, header={"OBJECT": "M31", "EXPTIME": 30.0})
        stats.fits("cube", cube, step=7)
    run = lab.run("run")
    with fits.open(run.artifact("sky", as_="path")) as hdus:
        assert hdus[0].header["OBJECT"] == "M31"
        assert hdus[0].header["EXPTIME"] == 30.0
        assert np.array_equal(hdus[0].data, data)
    assert run.artifact("cube", as_="array").shape == (3, 16, 16)
    assert run.media("sky")[0]["type"] == "application/fits"
    preview = np.asarray(Image.open(io.BytesIO(run.thumbnail("sky", 7))).convert("L"))
    assert preview.std() > 10  # a stretched picture, not one flat grey


def test_points_round_trip_as_binary_ply(tmp_path, store, lab):
    xyz = np.random.default_rng(3).normal(size=(500, 3)).astype(np.float32)
    colors = np.random.default_rng(4).integers(0, 255, (500, 3), dtype=np.uint8)
    with labstats.Stats(tmp_path / "run") as stats:
        stats.points("cloud", xyz, step=1, colors=colors)
        stats.points("seed_layout", xyz[..., None], step=1)
    run = lab.run("run")
    data = run.artifact("cloud")
    assert data.startswith(b"ply\nformat binary_little_endian 1.0\nelement vertex 500\n")
    got, got_colors = media_files.read_ply(data)
    assert np.array_equal(got, xyz)
    assert np.array_equal(got_colors, colors)
    assert np.array_equal(run.artifact("seed_layout", as_="array"), xyz)
    assert run.media("cloud")[0]["shape"] == [500, 3]


def test_any_file_with_its_name_and_type(tmp_path, store, lab):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(os.urandom(10_000))
    table = tmp_path / "scores.csv"
    table.write_text("a,b\n1,2\n")
    with labstats.Stats(tmp_path / "run") as stats:
        stats.file("checkpoint", checkpoint, step=10)
        stats.file("scores", table, step=10)
    run = lab.run("run")
    assert run.artifact("checkpoint") == checkpoint.read_bytes()
    assert run.media("checkpoint")[0]["file"] == "model.ckpt"
    assert run.media("scores")[0]["type"] == "text/csv"
    assert run.media_names()["scores"] == "file"


def test_same_content_is_stored_once(tmp_path, store, lab):
    with labstats.Stats(tmp_path / "run") as stats:
        for step in range(5):
            stats.image("same", rgb_8x8(), step=step)
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert len(files) == 1
    assert not list(store.root.rglob(".part-*"))
    assert lab.run("run").media_steps("same") == [0, 1, 2, 3, 4]


def test_seed_methods_write_their_files_and_register_them(tmp_path, store, lab):
    out = tmp_path / "out"
    with labstats.Stats(tmp_path / "run") as stats:
        stats.update(epoch=2, set_size=100, batch_size=10, step=3)  # idx 230
        jpg = stats.save_jpg(rgb_8x8(), out, "val_", epoch=2, step=3, idx=4)
        fit = stats.save_fits(np.ones((4, 4)), out, "sky_", epoch=2, step=3, idx=0)
        obj = stats.save_points(np.ones((10, 3, 1)), out, epoch=2, step=3, ply=True)
    assert jpg == out / "val_002_s00003_i00004.jpg"
    assert fit == out / "sky_002_s00003_i00000.fits"
    assert obj == out / "shape_e002_s00003.obj"
    assert Image.open(jpg).format == "JPEG"
    assert (out / "shape_e002_s00003.ply").read_bytes().startswith(b"ply\n")
    assert obj.read_text().splitlines()[0] == "v 1 1 1"
    run = lab.run("run")
    assert run.media_names() == {"shape": "points", "sky": "fits", "val": "image"}
    (record,) = run.media("val")
    assert (record["step"], record["item"], record["type"]) == (230, 4, "image/jpeg")
    assert run.artifact("val", 230, 4) == jpg.read_bytes()


def test_watch_records_media_at_each_update(tmp_path, store, lab):
    image = np.zeros((4, 4), np.uint8)
    with labstats.Stats(tmp_path / "run") as stats:
        stats.watch(image, "canvas", kind="image")
        for step in range(3):
            image[step, step] = 255
            stats.update(0, 0, 1, step)
    run = lab.run("run")
    assert run.media_steps("canvas") == [0, 1, 2]
    assert run.artifact("canvas", 1, as_="array").sum() == 2 * 255


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.image("x", np.zeros((5, 5, 7))), "1, 3 or 4 channels"),
        (lambda s: s.image("x", np.full((4, 4), np.nan)), "NaN"),
        (lambda s: s.image("x", np.zeros((0, 4)), step=1), "empty"),
        (lambda s: s.image("x", np.zeros((2, 4, 4, 3))), "one image"),
        (lambda s: s.images("x", np.zeros((4, 4, 3))), "batch"),
        (lambda s: s.image("x", "not an image"), "array, tensor or PIL"),
        (lambda s: s.image("x", np.zeros((4, 4)), dataformats="CHW"), "dataformats"),
        (lambda s: s.points("x", np.zeros((0, 3))), "empty point set"),
        (lambda s: s.points("x", np.zeros((5, 2))), "N×3"),
        (lambda s: s.points("x", np.zeros((5, 3)), colors=np.zeros((4, 3))), "colors"),
        (lambda s: s.points("x", np.full((5, 3), np.inf)), "infinite"),
        (lambda s: s.fits("x", np.zeros(5)), "2-D"),
        (lambda s: s.fits("x", np.zeros((2, 2)), header=5), "mapping"),
    ],
)
def test_bad_media_is_refused_at_the_call_and_the_run_goes_on(tmp_path, store, lab, call, message):
    with labstats.Stats(tmp_path / "run") as stats:
        stats.log(step=1, loss=0.5)
        with pytest.raises(ValueError, match=message):
            call(stats)
        stats.log(step=2, loss=0.25)
    run = lab.run("run")
    assert list(run.series("loss").values) == [0.5, 0.25]
    assert run.media_names() == {}


def test_missing_file_is_said_at_the_call(tmp_path, store, lab):
    with labstats.Stats(tmp_path / "run") as stats, pytest.raises(FileNotFoundError, match=r"nope\.bin"):
        stats.file("ckpt", tmp_path / "nope.bin")


def test_retention_keeps_every_nth_step_and_the_last_k(tmp_path, store, lab):
    with labstats.Stats(tmp_path / "run") as stats:
        stats.retain("sample", every=5, last=3)
        for step in range(0, 200, 10):  # 20 logged steps
            stats.image("sample", np.full((2, 2), step, np.uint8), step=step)
    run = lab.run("run")
    kept = [s for i, s in enumerate(range(0, 200, 10)) if i % 5 == 0 or i >= 17]
    assert run.media_steps("sample") == kept == [0, 50, 100, 150, 170, 180, 190]
    thumbs = lab.redis.hkeys(lab.keys.media_thumbs(run.id, media_record.media_id("sample")))
    assert sorted(int(f.split(b":")[0]) for f in thumbs) == kept


def test_full_artifact_store_warns_once_and_logging_goes_on(tmp_path, lab, monkeypatch, caplog):
    root = tmp_path / "full"
    root.mkdir()
    monkeypatch.setenv("LABSTATS_ARTIFACT_DIR", str(root))

    def no_space(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(media.ArtifactStore, "put", no_space)
    with caplog.at_level(logging.WARNING, "labstats"), labstats.Stats(tmp_path / "run") as stats:
        for step in range(5):
            stats.image("img", rgb_8x8(), step=step)
            stats.log(step=step, loss=float(step))
    warnings = [r for r in caplog.records if "cannot write media" in r.getMessage()]
    assert len(warnings) == 1
    run = lab.run("run")
    assert list(run.series("loss").values) == [0, 1, 2, 3, 4]
    assert run.media_names() == {}  # nothing recorded whose file is not there
    assert run.meta["media_failed"] == "5"
    assert not list(root.rglob("*"))


def test_store_refuses_anything_but_a_digest(tmp_path):
    store = media.ArtifactStore(tmp_path)
    for bad in ("../etc/passwd", "a" * 63, "A" * 64, "/" + "a" * 63, "a" * 64 + "/x"):
        with pytest.raises(ValueError, match="digest"):
            store.path(bad)


def test_calling_thread_only_copies(tmp_path, store, lab):
    """The image call returns before any encoding: the writer does PNG and thumbnail later."""
    image = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    with labstats.Stats(tmp_path / "run", flush_interval=5.0) as stats:
        started = time.perf_counter()
        stats.image("img", image, step=1)
        image[:] = 0  # changed after the call: the copy was taken
        elapsed = time.perf_counter() - started
    got = lab.run("run").artifact("img", as_="array")
    assert got.any()
    print(f"calling-thread cost of a 256x256 RGB image: {elapsed * 1e6:.0f} µs")


@pytest.mark.parametrize("shape", [(256, 256, 3), (1, 1, 3), (5, 7, 1), (33, 17, 4), (2, 300, 3), (9, 1, 1)])
def test_png_bytes_decode_to_the_same_pixels(shape):
    """The PNG written without Pillow: every pixel back as it was, in the mode Pillow gives."""
    pixels = np.random.default_rng(len(shape) * sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    picture = Image.open(io.BytesIO(media_files.png_bytes(pixels)))
    assert picture.format == "PNG"
    assert picture.mode == media_files.pil_image(pixels).mode
    back = np.asarray(picture)
    assert np.array_equal(back.reshape(shape), pixels)


def test_images_logged_faster_than_encoded_are_each_stored_as_logged(tmp_path, store, lab):
    """Copies are made into buffers of images already encoded: each stored image is still
    the one logged at its step (a buffer given back too early would show another's pixels)."""
    rng = np.random.default_rng(3)
    pictures = [rng.integers(0, 256, (64, 48, 3), dtype=np.uint8) for _ in range(40)]
    with labstats.Stats(tmp_path / "run") as stats:
        for step, picture in enumerate(pictures):
            stats.image("burst", picture, step=step)
            if step % 10 == 9:
                stats.flush(30)  # let buffers come back, so that later copies reuse them
    run = lab.run("run")
    for step, picture in enumerate(pictures):
        assert np.array_equal(run.artifact("burst", step, as_="array"), picture), step


def test_a_thumbnail_of_thumbnail_size_leaves_the_picture_as_it_was():
    picture = Image.fromarray(np.full((256, 200, 3), 90, np.uint8))
    thumb = Image.open(io.BytesIO(media_files.thumbnail(picture, max_bytes=10)))  # too small: the fallback
    assert thumb.format == "WEBP"
    assert max(thumb.size) == 128
    assert picture.size == (200, 256)  # not shrunk in place


def test_images_are_kept_when_no_media_thread_can_start(tmp_path, store, lab, monkeypatch, caplog):
    """At interpreter shutdown or a thread limit Thread.start raises: the image is encoded by
    the writer thread instead, and the training call never sees the error."""
    threads = media.MediaThreads()  # a process that has started none yet
    monkeypatch.setattr(media, "_media_threads", threads)

    start = media.threading.Thread.start

    def refuse(self):
        if self.name.startswith("labstats-media"):
            raise RuntimeError("can't create new thread at interpreter shutdown")
        start(self)

    monkeypatch.setattr(media.threading.Thread, "start", refuse)
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[0] = 255
    with caplog.at_level(logging.WARNING, logger="labstats"), labstats.Stats(tmp_path / "s") as stats:
        stats.image("late", pixels, step=1)
    assert "no media thread could be started" in caplog.text
    assert np.array_equal(lab.run(stats.run_id).artifact("late", as_="array"), pixels)


def test_an_original_planted_as_a_huge_picture_is_refused_before_it_is_decoded():
    """A training user can store any file as an image's original: a few kB of PNG that
    says 8000×8000 px is 64 MB as an array in the reader (Pillow only warns from 89 Mpx)."""
    picture = io.BytesIO()
    Image.new("L", (8000, 8000)).save(picture, "PNG")
    assert len(picture.getvalue()) < 1_000_000
    # (Pillow's own bound refuses it first where the viewer lowered it to the same limit)
    with pytest.raises(media_files.MediaError, match=r"8000×8000 pixels|too large to decode"):
        media_files.decode_array({"kind": "image"}, picture.getvalue())


def test_png_pixels_are_split_into_idat_chunks_that_pillow_reads():
    """A PNG chunk holds at most 2**31-1 bytes: the deflated pixels go in chunks of a bound."""
    pixels = np.random.default_rng(5).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    data = media_files.png_bytes(pixels, idat_bytes=500)
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append((data[at + 4 : at + 8], length))
        at += 12 + length
    idats = [length for kind, length in chunks if kind == b"IDAT"]
    assert len(idats) > 2
    assert max(idats) == 500
    assert [kind for kind, _ in chunks] == [b"IHDR"] + [b"IDAT"] * len(idats) + [b"IEND"]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)


def test_a_list_of_images_is_copied_once_into_a_spare_array(tmp_path, store, lab):
    """The images of a list are stacked straight into the copy the media threads encode: no
    stacked array copied again (nor a copy of each image first)."""
    images = [np.random.default_rng(k).integers(0, 256, (64, 48, 3), dtype=np.uint8) for k in range(4)]
    expected = np.stack(images)
    with labstats.Stats(tmp_path / "run") as stats:
        stats.images("batch", images, step=1)
        stats.flush(30)  # encoded: its array is kept for the next batch of this size
        tracemalloc.start()
        try:
            snap, layout = media.capture_image(images, batch=True)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert layout == "NHWC"
    assert peak < expected.nbytes // 4  # a stack in between takes a whole batch more
    for image in images:
        image[:] = 0  # the caller's arrays are its own again after the call
    assert np.array_equal(snap.to_numpy(), expected)
    assert np.array_equal(lab.run("run").artifact("batch", as_="array"), media_files.grid(expected))


def test_spare_arrays_stay_within_their_bound_the_last_given_back_first():
    """Arrays given back serve the next copies (the warmest first), MAX_BYTES of them at most."""
    spare = media._SpareBuffers()  # noqa: SLF001 (a pool of its own, not the process's)
    uint8, shape = np.dtype(np.uint8), (1024, 1024)
    given = [spare.take(uint8, shape) for _ in range(20)]
    arrays = [pixels.obj for pixels in given]
    for pixels in given:
        spare.give_back(pixels)
    taken = [spare.take(uint8, shape).obj for _ in range(20)]
    assert sum(any(t is a for a in arrays) for t in taken) == spare.MAX_BYTES // 2**20 == 16
    assert taken[0] is arrays[15]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
@pytest.mark.parametrize("held", ["spare arrays", "media threads"])
def test_a_child_forked_while_a_media_lock_is_held_logs_images(tmp_path, store, lab, held):
    """A DataLoader worker forked at the instant a media thread gives an array back (or one
    starts the threads) inherits that lock held, and would wait for it forever: the child
    gets locks of its own."""
    pool = media._spare_buffers if held == "spare arrays" else media._media_threads  # noqa: SLF001
    with labstats.Stats(tmp_path / "run") as stats:
        stats.image("parent", rgb_8x8(), step=0)
        stats.flush(30)
        lock = pool._lock  # noqa: SLF001
        lock.acquire()  # held at the fork, as by a media thread
        try:
            pid = os.fork()
            if pid == 0:  # the child: log an image, and wait for one's encoding (10 s at most)
                code = 1
                try:
                    done = threading.Event()

                    def log_images():
                        stats.image("child", rgb_8x8(), step=1)
                        snap, layout = media.capture_image(rgb_8x8())
                        media.encoding(media.Capture("image", "child", 2, 0, snap, "", {"layout": layout}))
                        done.set()

                    threading.Thread(target=log_images, daemon=True).start()
                    code = 0 if done.wait(10) else 1
                finally:
                    os._exit(code)
        finally:
            lock.release()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
