"""Media journeys in a real browser (Debian's Chromium, with WebGL in software) on the real
viewer over the test's redis-server, with runs logged through the real logger: the slider
says epoch and step, the montage and the GIF open in the panel (tiles labelled, made from
the originals), the point cloud is drawn with axes and fills the screen on demand, the
compare page shows its runs' media side by side at a chosen step, and a live run's new media
(the labstats:media event of the live poll) get a panel or extend a slider."""

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from browser import CHROMIUM_ARGS, open_page, serving
from PIL import Image
from playwright.sync_api import sync_playwright

import labstats
from labstats.format import media_files
from labstats.viewer import THREE_JS, create_app
from labstats.viewer.sources import Source

SET_SIZE, BATCH = 128, 32  # update(): idx = epoch × 128 + step × 32


@pytest.fixture(scope="module")
def webgl():
    """Chromium drawing WebGL with SwiftShader (the harness' Chromium has no GPU at all)."""
    path = shutil.which("chromium")
    assert path, "Debian's chromium is missing (scripts/host-setup.sh installs it)"
    args = [a for a in CHROMIUM_ARGS if a != "--disable-gpu"] + ["--use-angle=swiftshader",
                                                                  "--enable-unsafe-swiftshader"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=args)
        yield browser
        browser.close()


@pytest.fixture
def app(url, store):
    assert Path(THREE_JS).is_file(), "Debian's libjs-three is missing (apt-get install libjs-three)"
    return create_app({"local": Source("local", url, artifact_dir=str(store.root))})


def frame(k: int) -> np.ndarray:
    """A 64 px picture with detail a lossy thumbnail blurs: a checkerboard, its red by step."""
    board = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.uint8)
    picture = np.zeros((64, 64, 3), np.uint8)
    picture[..., 0] = 20 * k
    picture[..., 1] = board * 200
    return picture


def log_media_run(directory: Path, name: str) -> str:
    """Images at every update of three epochs of four steps (idx 0, 32, ..., 352), a FITS
    file through save_fits, and a point cloud."""
    with labstats.Stats(directory, name=name) as stats:
        for epoch in range(3):
            for step in range(SET_SIZE // BATCH):
                idx = stats.update(epoch, SET_SIZE, BATCH, step)
                stats.log(step=idx, loss=1.0 / (idx + 1))
                stats.image("samples", frame(idx // BATCH), caption=f"batch {step}")
        sky = np.random.default_rng(0).normal(100, 10, (48, 64))
        stats.save_fits(sky, directory / "fits", "sky", 2, 3, 0, header={"OBJECT": "M31"})
        xyz = np.random.default_rng(1).uniform(-1, 1, size=(5000, 3)).astype(np.float32)
        xyz[:, 2] *= 3  # z from -3 to 3
        stats.points("cloud", xyz, colors=np.full((5000, 3), 0.3))
    return stats.run_id


def expected_strip(label: str) -> np.ndarray:
    """The strip a montage tile of 256 px has under it, saying ``label``."""
    alone = media_files.labelled_montage([(label, Image.new("RGB", (256, 256), "white"))])
    return np.asarray(alone)[256:]


def test_a_run_s_media_read_by_epoch_and_step_with_montage_gif_and_3d_view_in_place(webgl, app, tmp_path):
    run_id = log_media_run(tmp_path / "run", "media-journey")
    with serving(app) as base:
        page, errors = open_page(webgl, f"{base}/runs/local/{run_id}")
        images = 'section.media-panel[data-kind="image"]'
        page.wait_for_selector(f'{images} .media-items[data-step="352"] img.thumb', timeout=20_000)
        assert page.text_content(f"{images} .media-step-value") == "epoch 2 · step 352"
        page.fill(f"{images} input.media-slider", "5")  # the sixth logged step: idx 160
        page.dispatch_event(f"{images} input.media-slider", "input")
        page.wait_for_selector(f'{images} .media-items[data-step="160"] img.thumb', timeout=10_000)
        assert page.text_content(f"{images} .media-step-value") == "epoch 1 · step 160"
        assert page.text_content(f"{images} figcaption").startswith("batch 1")

        # The montage opens in the panel; its tiles are the originals, each labelled.
        page.click(f"{images} a.montage")
        page.wait_for_function(
            "(() => { const i = document.querySelector('.media-extra img.montage-view');"
            " return i && i.complete && i.naturalWidth > 0; })()",
            timeout=20_000,
        )
        assert page.url == f"{base}/runs/local/{run_id}"
        montage = np.asarray(Image.open(io.BytesIO(page.request.get(base + page.get_attribute(
            f"{images} img.montage-view", "src")).body())).convert("RGB"))  # fmt: skip
        cell = 256 + media_files.LABEL_PX + 2  # 12 tiles in rows of 4
        assert montage.shape == (3 * cell - 2, 4 * 258 - 2, 3)
        for k, idx in [(0, 0), (5, 160), (11, 352)]:
            row, column = divmod(k, 4)
            tile = montage[row * cell : row * cell + 256, column * 258 : column * 258 + 256]
            assert np.array_equal(tile, np.kron(frame(idx // BATCH), np.ones((4, 4, 1), np.uint8)))
            strip = montage[row * cell + 256 : row * cell + 256 + media_files.LABEL_PX,
                            column * 258 : column * 258 + 256]  # fmt: skip
            assert np.array_equal(strip, expected_strip(f"epoch {idx // SET_SIZE} · step {idx}")), idx

        # The GIF opens in place too, frames of 512 px from the 64 px originals.
        page.click(f"{images} a.animation")
        page.wait_for_function(
            "(() => { const i = document.querySelector('.media-extra img.animation-view');"
            " return i && i.complete && i.naturalWidth === 512; })()",
            timeout=20_000,
        )
        assert page.url == f"{base}/runs/local/{run_id}"

        # The FITS file logged with save_fits, with its header.
        fits = 'section.media-panel[data-kind="fits"]'
        page.wait_for_function(
            f"(() => {{ const i = document.querySelector('{fits} img.fits-preview');"
            " return i && i.complete && i.naturalWidth === 64; })()",
            timeout=20_000,
        )
        assert page.text_content(f"{fits} .media-step-value") == "epoch 2 · step 352"
        page.click(f"{fits} details.fits-header summary")
        assert "M31" in page.text_content(f"{fits} details.fits-header table")

        # The point cloud: a view the grid's width, axes drawn and named, then full screen.
        view = 'section.media-panel[data-kind="points"] .points-view'
        page.wait_for_selector(f'{view}[data-rendered="three"][data-axes="xyz"] canvas', timeout=30_000)
        width = page.evaluate(f"document.querySelector('{view} canvas').clientWidth")
        assert width > 900  # 310 px before
        assert page.text_content(f"{view} .points-ranges") == "x -1.00 … 1.00y -1.00 … 1.00z -3.00 … 3.00"
        assert [page.is_visible(f"{view} .axis-label.axis-{a}") for a in "xyz"] == [True] * 3
        drawn = count_pixels(page, view)
        assert drawn["grey"] > 500  # the points
        assert min(drawn["red"], drawn["green"], drawn["blue"]) > 20  # the three axes
        page.click(f"{view} button.points-full")
        page.wait_for_function(
            f"document.querySelector('{view} canvas').clientWidth === window.innerWidth", timeout=10_000
        )
        assert page.get_attribute(f"{view}", "class").split() == ["points-view", "is-full"]
        assert page.evaluate(f"document.querySelector('{view} canvas').clientHeight") > 1000
        page.click(f"{view} button.points-full")
        page.wait_for_function(f"document.querySelector('{view} canvas').clientWidth < window.innerWidth")
        assert errors == []


def count_pixels(page, view: str) -> dict[str, int]:
    """Pixels of the 3-D view by colour: the points' grey and each axis' colour."""
    return page.evaluate(
        """(selector) => {
            const canvas = document.querySelector(selector + " canvas");
            const copy = document.createElement("canvas");
            copy.width = canvas.width; copy.height = canvas.height;
            copy.getContext("2d").drawImage(canvas, 0, 0);
            const data = copy.getContext("2d").getImageData(0, 0, copy.width, copy.height).data;
            const found = { grey: 0, red: 0, green: 0, blue: 0 };
            for (let i = 0; i < data.length; i += 4) {
                const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
                if (Math.abs(r - g) < 12 && Math.abs(g - b) < 12 && r < 200) found.grey++;
                else if (r > 150 && g < 90 && b < 90) found.red++;
                else if (g > 100 && r < 90 && b < 90) found.green++;
                else if (b > 150 && r < 90 && g < 110) found.blue++;
            }
            return found;
        }""",
        view,
    )


def test_the_compare_page_shows_the_runs_media_side_by_side_at_a_chosen_step(webgl, app, tmp_path):
    runs = []
    for name, steps, with_sky in (("left", (0, 1, 2), False), ("right", (0, 2, 4), True)):
        with labstats.Stats(tmp_path / name, name=name) as stats:
            for k in steps:
                stats.update(0, SET_SIZE * 8, BATCH, k)  # one long epoch: idx 32 × k
                stats.image("samples", frame(k))
            if with_sky:
                stats.fits("sky", np.ones((16, 16)), step=64)
        runs.append(stats.run_id)
    with serving(app) as base:
        page, errors = open_page(webgl, f"{base}/compare?run=local/{runs[0]}&run=local/{runs[1]}")
        table = "#compare-media table.media-compare"
        page.wait_for_selector(f'{table}[data-step="128"] tbody tr', timeout=20_000)
        assert page.locator(f"{table} thead th").all_text_contents() == ["", "left", "right"]
        assert page.locator(f"{table} tbody th").all_text_contents() == ["samples", "sky"]
        assert page.text_content("#compare-media .compare-step-value") == "epoch 0 · step 128"
        # Each run at its latest step at or before the chosen one.
        assert cells(page, "samples") == ["epoch 0 · step 64", "epoch 0 · step 128"]
        assert cells(page, "sky") == ["—", "epoch 0 · step 64"]
        page.fill("#compare-media input.compare-step", "1")  # steps 0, 32, 64, 128: the second
        page.dispatch_event("#compare-media input.compare-step", "input")
        page.wait_for_selector(f'{table}[data-step="32"]')
        assert cells(page, "samples") == ["epoch 0 · step 32", "epoch 0 · step 0"]
        assert page.locator(f'{table} tr[data-name="sky"] td').all_text_contents() == ["—", "not logged yet"]
        page.wait_for_function(
            f"[...document.querySelectorAll('{table} img.compare-thumb')]"
            ".every((i) => i.complete && i.naturalWidth === 256)"
        )
        assert page.locator(f"{table} img.compare-thumb").count() == 2
        assert errors == []


def cells(page, name: str) -> list[str]:
    return [
        text.replace(" original", "")
        for text in page.locator(f'table.media-compare tr[data-name="{name}"] td').all_text_contents()
    ]


def test_a_live_run_s_new_media_get_a_panel_and_extend_a_slider(webgl, app, tmp_path):
    """The run page opens before the run logs any media; the live poll's labstats:media
    event (dispatched here as viewer.js does, with the run's whole media list from the API)
    adds the panels, extends the sliders, and keeps a step the user chose."""
    stats = labstats.Stats(tmp_path / "live", name="live-media")
    try:
        stats.update(0, SET_SIZE, BATCH, 0)
        stats.log(step=0, loss=1.0)
        stats.flush()
        with serving(app) as base:
            page, errors = open_page(webgl, f"{base}/runs/local/{stats.run_id}")
            page.wait_for_selector(".media-grid", state="attached")
            assert page.locator(".media-panel").count() == 0
            assert not page.is_visible("h2.media-heading")

            def log_and_announce(steps, names, cloud=False):
                for k in steps:
                    idx = stats.update(k * BATCH // SET_SIZE, SET_SIZE, BATCH, k % (SET_SIZE // BATCH))
                    for name in names:
                        stats.image(name, frame(k), step=idx)
                if cloud:  # the page loaded without three.js: the new panel loads it
                    stats.points("cloud", np.random.default_rng(0).normal(size=(500, 3)))
                stats.flush()
                listed = page.request.get(f"{base}/api/runs/local/{stats.run_id}/media").json()["media"]
                page.evaluate(
                    """([source, run_id, media]) => document.dispatchEvent(
                        new CustomEvent("labstats:media", {detail: {source, run_id, media}}))""",
                    ["local", stats.run_id, [{k: m[k] for k in ("name", "kind", "steps")} for m in listed]],
                )

            log_and_announce(range(3), ["samples", "other"])
            samples, other = (
                'section.media-panel[data-name="samples"]',
                'section.media-panel[data-name="other"]',
            )
            page.wait_for_selector(f'{samples} .media-items[data-step="64"] img.thumb', timeout=10_000)
            assert page.is_visible("h2.media-heading")
            assert page.text_content(f"{samples} .media-step-value") == "epoch 0 · step 64"
            assert page.text_content(f"{samples} .media-count") == "3 steps"
            page.fill(f"{samples} input.media-slider", "0")  # the user goes back to the first step
            page.dispatch_event(f"{samples} input.media-slider", "input")
            page.wait_for_selector(f'{samples} .media-items[data-step="0"] img.thumb')

            assert page.evaluate("window.THREE === undefined")
            log_and_announce(range(3, 6), ["samples", "other", "late"], cloud=True)
            late = 'section.media-panel[data-name="late"]'
            page.wait_for_selector(f'{late} .media-items[data-step="160"] img.thumb', timeout=10_000)
            cloud = 'section.media-panel[data-name="cloud"] .points-view'
            page.wait_for_selector(f'{cloud}[data-rendered="three"][data-axes="xyz"] canvas', timeout=20_000)
            page.wait_for_selector(
                f'{other} .media-items[data-step="160"] img.thumb'
            )  # it followed the newest
            assert page.text_content(f"{other} .media-step-value") == "epoch 1 · step 160"
            assert page.get_attribute(f"{samples} input.media-slider", "max") == "5"
            assert page.input_value(f"{samples} input.media-slider") == "0"  # the user's step stays
            assert page.text_content(f"{samples} .media-step-value") == "epoch 0 · step 0"
            assert page.text_content(f"{samples} .media-count") == "6 steps"
            assert page.is_visible(f"{samples} a.animation")
            page.fill(f"{samples} input.media-slider", "4")  # the new steps are on the slider
            page.dispatch_event(f"{samples} input.media-slider", "input")
            page.wait_for_selector(f'{samples} .media-items[data-step="128"] img.thumb')
            assert page.text_content(f"{samples} .media-step-value") == "epoch 1 · step 128"
            assert page.locator(".media-panel").count() == 4
            # The poll announces only a name's last steps (live.MAX_MEDIA_STEPS): the earlier stay.
            page.evaluate(
                """([source, run_id]) => document.dispatchEvent(new CustomEvent("labstats:media", {detail:
                    {source, run_id, media: [{name: "samples", kind: "image", steps: [128, 160]}]}}))""",
                ["local", stats.run_id],
            )
            assert page.get_attribute(f"{samples} input.media-slider", "max") == "5"
            assert page.input_value(f"{samples} input.media-slider") == "4"
            assert page.text_content(f"{samples} .media-count") == "6 steps"
            assert errors == []
    finally:
        stats.close()
