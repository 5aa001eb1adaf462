"""Media in the viewer (Flask's test client, real redis-server, real Pillow and astropy):
panels, thumbnails, originals by digest only, FITS previews and headers, montages, GIFs and
point clouds; hostile names and missing files answered safely."""

import io
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import labstats
from labstats.format import media_files, media_record
from labstats.viewer import create_app
from labstats.viewer.sources import Source
from labstats.write import media

HOSTILE = "<img src=x onerror=alert(1)>/pics"


@pytest.fixture
def client(url, store):
    app = create_app({"local": Source("local", url, artifact_dir=str(store.root))})
    app.testing = False
    return app.test_client()


def frame(k: int) -> np.ndarray:
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, :, 0] = 15 * k  # red grows with the step
    return image


@pytest.fixture
def run_id(tmp_path, store):
    with labstats.Stats(tmp_path / "run") as stats:
        for k in range(6):
            stats.image(HOSTILE, frame(k), step=k * 10, caption=f"<b>step {k}</b>")
        stats.images("batch", np.stack([frame(1), frame(5)]), step=3)
        stats.fits("sky", np.random.default_rng(0).normal(size=(40, 30)), step=5, header={"OBJECT": "<M31>"})
        xyz = np.random.default_rng(1).normal(size=(300_000, 3)).astype(np.float32)
        stats.points("cloud", xyz, step=5)
        stats.log(step=1, loss=0.5)
    return stats.run_id


def path(run_id: str, what: str, name: str) -> str:
    from urllib.parse import quote

    return f"/api/runs/local/{run_id}/{what}/{quote(name)}"


def test_run_page_has_a_panel_per_name_and_escapes_them(client, run_id):
    html = client.get(f"/runs/local/{run_id}").get_data(as_text=True)
    assert html.count('class="media-panel"') == 4
    assert "<img src=x" not in html
    assert "three.min.js" in html  # a point cloud is shown with three.js
    assert re.search(r'data-steps="\[0, 10, 20, 30, 40, 50\]"', html)


def test_records_and_steps(client, run_id):
    body = client.get(path(run_id, "media", HOSTILE) + "?step=20").get_json()
    assert body["steps"] == [0, 10, 20, 30, 40, 50]
    (record,) = body["records"]
    assert record["step"] == 20
    assert record["caption"] == "<b>step 2</b>"
    listed = client.get(f"/api/runs/local/{run_id}/media").get_json()["media"]
    assert {m["name"]: m["kind"] for m in listed} == {
        HOSTILE: "image",
        "batch": "image",
        "sky": "fits",
        "cloud": "points",
    }


def test_thumbnail_and_original_show_the_chosen_step(client, run_id):
    thumb = client.get(path(run_id, "thumb", HOSTILE) + "?step=30")
    assert thumb.status_code == 200
    assert thumb.mimetype == "image/webp"
    red = np.asarray(Image.open(io.BytesIO(thumb.data)).convert("RGB"))[..., 0].mean()
    assert abs(red - 45) < 4
    original = client.get(path(run_id, "file", HOSTILE) + "?step=30&download=1")
    assert original.status_code == 200
    assert "attachment" in original.headers["Content-Disposition"]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(original.data))), frame(3))


def test_fits_preview_and_header(client, run_id):
    preview = client.get(path(run_id, "fits", "sky"))
    assert preview.status_code == 200
    assert preview.mimetype == "image/png"
    assert Image.open(io.BytesIO(preview.data)).size == (30, 40)
    header = client.get(path(run_id, "fitsheader", "sky")).get_json()["header"]
    assert ["OBJECT", "<M31>", ""] in header


def test_animation_has_one_frame_per_step(client, run_id):
    gif = client.get(path(run_id, "animation", HOSTILE))
    assert gif.status_code == 200
    assert gif.mimetype == "image/gif"
    image = Image.open(io.BytesIO(gif.data))
    assert image.n_frames == 6
    reds = []
    for k in range(image.n_frames):
        image.seek(k)
        reds.append(np.asarray(image.convert("RGB"))[..., 0].mean())
    assert reds == sorted(reds)
    assert reds[-1] > reds[0] + 50


def test_montage_of_chosen_steps(client, run_id):
    montage = client.get(path(run_id, "montage", HOSTILE) + "?steps=0,50,999")
    assert montage.status_code == 200
    image = np.asarray(Image.open(io.BytesIO(montage.data)))
    # Two logged steps of the three asked, tiles of 256 px, each with a strip saying its step.
    assert image.shape == (256 + media_files.LABEL_PX, 2 * 256 + 2, 3)
    assert montage.headers["X-Tiles"] == "2"


def test_point_cloud_is_decimated_and_binary(client, run_id):
    answer = client.get(path(run_id, "points", "cloud"))
    assert answer.status_code == 200
    assert answer.mimetype == "application/octet-stream"
    n = int(answer.headers["X-Points"])
    assert n == 200_000
    assert answer.headers["X-Points-Total"] == "300000"
    assert len(answer.data) == n * 12 + n * 3


def test_points_download_as_ply_or_obj_and_files_never_render(client, run_id, tmp_path, url, store):
    ply = client.get(path(run_id, "file", "cloud"))
    assert ply.data.startswith(b"ply\n")
    assert "attachment" in ply.headers["Content-Disposition"]
    obj = client.get(path(run_id, "file", "cloud") + "?format=obj")
    assert (
        obj.headers["Content-Disposition"].endswith('.obj"') or ".obj" in obj.headers["Content-Disposition"]
    )
    assert len(obj.data.decode().splitlines()) == 300_000
    assert client.get(path(run_id, "file", "sky") + "?format=obj").status_code == 400
    page = tmp_path / "evil.html"
    page.write_text("<script>alert(1)</script>")
    with labstats.Stats(tmp_path / "run2") as stats:
        stats.file("page", page, step=1)
    answer = client.get(path(stats.run_id, "file", "page"))
    assert answer.mimetype == "application/octet-stream"
    assert "attachment" in answer.headers["Content-Disposition"]


@pytest.mark.parametrize(
    "target",
    [
        "/api/runs/local/{run}/file/nope",
        "/api/runs/local/{run}/file/sky?step=999",
        "/api/runs/local/{run}/file/..%2F..%2Fetc%2Fpasswd",
        "/api/runs/local/{run}/thumb/sky?step=abc",
        "/api/runs/local/{run}/points/sky",
        "/api/runs/local/{run}/fits/cloud",
        "/api/runs/local/{run}/montage/batch?steps=x",
        "/api/runs/local/{run}/animation/batch?ms=fast",
        "/api/runs/local/nosuchrun/file/sky",
        "/api/runs/other/{run}/file/sky",
    ],
)
def test_bad_requests_get_clear_errors_never_files(client, run_id, target):
    answer = client.get(target.format(run=run_id))
    assert 400 <= answer.status_code < 500
    assert "error" in answer.get_json()


def test_a_file_not_synced_yet_is_said(client, run_id, store):
    for file in store.root.rglob("*"):
        if file.is_file():
            file.unlink()
    answer = client.get(path(run_id, "file", "sky"))
    assert answer.status_code == 404
    assert "not reached this box yet" in answer.get_json()["error"]
    # The thumbnail comes from Redis: it shows at once, before the file arrives.
    assert client.get(path(run_id, "thumb", "sky")).status_code == 200


def test_a_damaged_copy_is_never_served(client, run_id, store):
    record = client.get(path(run_id, "media", "sky")).get_json()["records"][0]
    store.path(record["digest"]).chmod(0o644)  # stored read-only: damaged by its owner, say
    store.path(record["digest"]).write_bytes(b"SIMPLE  = T truncated")
    answer = client.get(path(run_id, "file", "sky"))
    assert answer.status_code == 502
    assert "damaged" in answer.get_json()["error"]


def test_three_js_is_served_from_the_box_or_said_missing(client, tmp_path, url, store):
    three = tmp_path / "three.min.js"
    three.write_text("var THREE = {};")
    app = create_app({"local": Source("local", url)}, config={"THREE_JS": str(three)})
    assert app.test_client().get("/vendor/three.min.js").data == b"var THREE = {};"
    missing = create_app({"local": Source("local", url)}, config={"THREE_JS": str(tmp_path / "none.js")})
    assert missing.test_client().get("/vendor/three.min.js").status_code == 404


def test_hostile_records_never_reach_the_file_system(client, run_id, url):
    """Records not written by labstats (a digest that is a path, steps that are not numbers,
    JSON that is not a record) give 4xx answers; nothing outside the store is read."""
    import redis

    r = redis.Redis.from_url(url)
    mid = media_record.media_id("evil")
    r.hset(f"ls:run:{run_id}:media", "evil", json.dumps({"mid": mid, "kind": "fits"}))
    r.hset(f"ls:run:{run_id}:m:{mid}", mapping={
        "1:0": '{"step": 1, "item": 0, "kind": "fits", "digest": "../../../../etc/passwd"}',
        "x:0": "not json", "2:0": '["a list"]', "3:0": '{"step": "3"}',
    })  # fmt: skip
    r.hset(f"ls:run:{run_id}:m:{mid}:t", mapping={"1:0": b"not a picture", "3:0": b"RIFF...."})
    r.hset(f"ls:run:{run_id}:m:{mid}", "4:0", json.dumps({"step": 4, "kind": "image", "digest": "ab" * 32}))
    r.hset(f"ls:run:{run_id}:m:{mid}:t", "4:0", b"\x89PNG broken")
    for what in ("file", "fits", "fitsheader", "points", "thumb", "montage", "animation", "media"):
        for query in ("", "?step=1", "?step=2", "?step=3", "?step=4", "?steps=1,4"):
            answer = client.get(path(run_id, what, "evil") + query)
            assert answer.status_code < 500, (what, query, answer.status_code)
            assert b"root:" not in answer.data
    assert client.get(f"/runs/local/{run_id}").status_code == 200


def test_a_picture_logged_as_a_tensor_is_shown_as_a_picture_row_0_on_top():
    """An 8×8 RGB uint8 array logged with log() is drawn in colour (not an 8×24 heat-map),
    and every array view has row 0 at the top."""
    from labstats.viewer import charts

    picture = np.zeros((8, 8, 3), np.uint8)
    picture[0] = (255, 0, 0)
    spec = json.dumps(charts.tensor_chart("img", picture, 3, "t"))
    assert '"ImageRGBA"' in spec
    assert '"Image"' not in spec.replace('"ImageRGBA"', "")
    heat = json.dumps(charts.tensor_chart("w", np.eye(4), 3, "t"))
    assert '"start":4' in heat.replace(" ", "")  # the y range runs from the last row down to 0


def test_a_long_1d_tensor_is_drawn_as_min_and_max_per_bucket_keeping_every_spike():
    from labstats.viewer import charts

    flat = np.zeros(1_000_000, np.float32)
    flat[654_321], flat[17], flat[99] = 7, -3, np.nan
    starts, low, high = charts.bucket_extremes(flat, 2000)
    assert len(starts) == 2000
    assert starts[0] == 0
    assert starts[-1] == 999_500
    assert high.max() == 7
    assert high[654_321 // 500] == 7
    assert low.min() == -3
    assert low[0] == -3
    assert not np.isnan(low).any()
    assert not np.isnan(high).any()
    spec = json.dumps(charts.tensor_chart("w", flat, 3, "t"))
    assert len(spec) < 200_000  # sent whole, it was 7.7 MB
    assert "1,000,000 elements, min and max of 2,000 buckets" in spec
    short = json.dumps(charts.tensor_chart("b", np.arange(4000.0), 3, "t"))
    assert "buckets" not in short
    assert '"Line"' in short
    assert '"VArea"' not in short


def test_a_large_heat_map_is_drawn_as_block_means_over_the_tensors_own_rows_and_columns():
    from labstats.viewer import charts

    image = np.arange(2500 * 10, dtype=np.float64).reshape(2500, 10)
    image[0, 0] = np.nan
    means, note = charts.block_means(image, 1024)
    assert means.shape == (834, 10)
    assert note == ", shown as means of 3×1 blocks"
    assert means[0, 0] == (10 + 20) / 2  # the NaN left out
    assert means[1, 3] == image[3:6, 3].mean()
    assert means[-1, 9] == image[2499, 9]  # the last block holds one row: padding left out
    spec = json.dumps(charts.tensor_chart("w", image, 3, "t"), ensure_ascii=False)
    assert "means of 3×1 blocks" in spec
    assert '"start":2500' in spec.replace(" ", "")  # the y range: the tensor's 2,500 rows
    small = np.eye(4)
    shrunk, note = charts.block_means(small, 1024)
    assert shrunk is small
    assert note == ""


def test_a_tensor_over_the_apis_limit_is_still_drawn_on_its_run_page(client, tmp_path):
    """The API sends a tensor whole (as JSON) up to 1M values; the run page draws a reduced
    one up to 4096×4096, and says so clearly beyond."""
    with labstats.Stats(tmp_path / "big") as stats:
        stats.log(0, w=np.ones((2000, 1000), np.float32))
        stats.log(0, huge=np.zeros(4096 * 4096 + 1, np.uint8))
    answer = client.get(f"/api/runs/local/{stats.run_id}/tensor/w")
    assert answer.status_code == 413
    assert "2,000,000 values is over the 1,000,000" in answer.json["error"]
    page = client.get(f"/runs/local/{stats.run_id}").data.decode()
    assert "shown as means of 2\\u00d71 blocks" in page  # the chart's title, in its JSON
    assert "16,777,217 values is over the 16,777,216 this view sends" in page
    assert "run.series(&#39;huge&#39;)" in page  # where to read it whole


def test_empty_tensors_show_their_shape_without_a_chart(client, tmp_path):
    with labstats.Stats(tmp_path / "empty") as stats:
        stats.log(0, rows=np.zeros((0, 5), np.float32), columns=np.zeros((5, 0)), flat=np.zeros(0))
    answer = client.get(f"/runs/local/{stats.run_id}")
    assert answer.status_code == 200
    page = answer.data.decode()
    for head in ("float32 [0, 5]", "float64 [5, 0]", "float64 [0]"):
        assert f'<span class="muted">{head}</span>' in page
    assert 'class="chart-spec"' not in page


@given(
    value=hnp.arrays(
        dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_]),
        shape=st.one_of(
            hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12),
            st.tuples(st.integers(4001, 9000)),  # reduced to buckets
            st.tuples(st.integers(1025, 2100), st.integers(1, 3)),  # reduced to block means
        ),
    )
)
@settings(max_examples=60, deadline=None, database=None)
def test_any_non_empty_numeric_tensor_is_drawn(value):
    """Whatever its dtype, shape and values (NaN and ±inf included), a tensor gives a chart
    whose title says how it was reduced, if it was."""
    from labstats.viewer import charts

    spec = json.dumps(charts.tensor_chart("w", value, 1, "t"), ensure_ascii=False, allow_nan=False)
    assert ("buckets" in spec) == (value.ndim == 1 and value.size > 2 * charts.MAX_LINE_BUCKETS)
    picture = value.dtype == np.uint8 and value.ndim == 3 and value.shape[-1] in (3, 4)
    heat_map = value.ndim >= 2 and not picture
    assert ("blocks" in spec) == (heat_map and value.shape[0] > charts.MAX_IMAGE_SIDE)


def test_a_run_page_reads_a_tensor_file_once(client, tmp_path, store, monkeypatch):
    """The latest tensor, read to see what the series holds, is the one drawn: its file
    (64 MB for a 4096×4096 weight) is read and checked once, not twice."""
    with labstats.Stats(tmp_path / "once") as stats:
        for step in range(2):
            stats.log(step, w=np.full((300, 1000), step, np.float32))  # 1.2 MB: a file
    reads = []
    read = media.ArtifactStore.read

    def counted(self, digest):
        reads.append(digest)
        return read(self, digest)

    monkeypatch.setattr(media.ArtifactStore, "read", counted)
    page = client.get(f"/runs/local/{stats.run_id}").data.decode()
    assert "w at idx 1" in page
    assert len(reads) == 1
    reads.clear()
    assert "w at idx 0" in client.get(f"/runs/local/{stats.run_id}?step=0").data.decode()
    assert len(set(reads)) == 2  # an earlier step: the latest and the chosen one


# ---- epochs and steps, montage labels, the compare page's media --------------------------------


@pytest.fixture
def epoch_run(tmp_path, store) -> str:
    """Images logged at update() (idx = epoch × 128 + step × 32) and through save_jpg."""
    with labstats.Stats(tmp_path / "epochs", name="epochs") as stats:
        for epoch in range(3):
            for step in range(4):
                idx = stats.update(epoch, 128, 32, step)
                stats.image("samples", frame(idx // 32))
                stats.save_jpg(frame(step), tmp_path / "jpg", "seed", epoch, step, 0)
    return stats.run_id


def test_media_steps_are_labelled_by_epoch_and_step(client, epoch_run):
    listed = {m["name"]: m for m in client.get(f"/api/runs/local/{epoch_run}/media").get_json()["media"]}
    assert set(listed) == {"samples", "seed"}  # seed: save_jpg's name
    for entry in listed.values():
        assert entry["steps"] == [32 * k for k in range(12)]
        assert entry["epochs"] == [k // 4 for k in range(12)]
    body = client.get(path(epoch_run, "media", "samples") + "?step=160").get_json()
    assert (body["epoch"], body["label"]) == (1, "epoch 1 · step 160")
    assert body["epochs"] == listed["samples"]["epochs"]
    html = client.get(f"/runs/local/{epoch_run}").get_data(as_text=True)
    assert '<output class="media-step-value">epoch 2 · step 352</output>' in html
    assert 'data-epochs="[0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]"' in html


def test_a_run_without_epochs_labels_by_step_only(client, run_id):
    body = client.get(path(run_id, "media", HOSTILE) + "?step=20").get_json()
    assert (body["epoch"], body["label"]) == (None, "step 20")
    assert body["epochs"] == [None] * 6


def test_montage_tiles_are_the_originals_labelled_with_their_step(client, epoch_run):
    from labstats.viewer.media import MONTAGE_TILE_PX

    answer = client.get(path(epoch_run, "montage", "samples") + "?steps=0,160")
    montage = np.asarray(Image.open(io.BytesIO(answer.data)).convert("RGB"))
    px, strip = MONTAGE_TILE_PX, media_files.LABEL_PX
    for k, idx in enumerate((0, 160)):
        tile = montage[:px, k * (px + 2) : k * (px + 2) + px]
        scale = px // 16
        assert np.array_equal(tile, np.kron(frame(idx // 32), np.ones((scale, scale, 1), np.uint8)))
        label = f"epoch {idx // 128} · step {idx}"
        alone = np.asarray(media_files.labelled_montage([(label, Image.new("RGB", (px, px), "white"))]))
        assert np.array_equal(montage[px : px + strip, k * (px + 2) : k * (px + 2) + px], alone[px:]), label


def test_the_gif_is_made_from_the_originals_at_up_to_512_px(client, run_id):
    gif = Image.open(io.BytesIO(client.get(path(run_id, "animation", HOSTILE)).data))
    assert gif.size == (512, 512)  # 6 frames: 512 px each (from the thumbnails: 256)
    gif.seek(3)
    assert np.array_equal(np.asarray(gif.convert("RGB")), np.kron(frame(3), np.ones((32, 32, 1), np.uint8)))


def test_the_run_page_has_its_media_grid_and_url_templates_before_any_media(client, tmp_path):
    with labstats.Stats(tmp_path / "plain") as stats:
        stats.log(step=0, loss=1.0)
    html = client.get(f"/runs/local/{stats.run_id}").get_data(as_text=True)
    assert '<h2 class="media-heading" hidden>Media</h2>' in html
    assert f'data-records="/api/runs/local/{stats.run_id}/media/__NAME__"' in html
    assert f'data-animation="/api/runs/local/{stats.run_id}/animation/__NAME__"' in html
    assert 'data-three="/vendor/three.min.js"' in html
    assert "media.css" in html
    assert 'class="media-panel"' not in html


def test_the_compare_endpoint_lists_each_runs_media_with_working_urls(client, run_id, epoch_run):
    answer = client.get(f"/api/compare/media?run=local/{epoch_run}&run=local/{run_id}")
    assert answer.status_code == 200
    body = answer.get_json()
    assert [r["name"] for r in body["runs"]] == [
        "epochs",
        client.get(f"/api/runs/local/{run_id}").json["name"],
    ]
    assert body["names"] == [
        {"name": HOSTILE, "kind": "image"},
        {"name": "batch", "kind": "image"},
        {"name": "cloud", "kind": "points"},
        {"name": "samples", "kind": "image"},
        {"name": "seed", "kind": "image"},
        {"name": "sky", "kind": "fits"},
    ]
    hostile = next(m for m in body["runs"][1]["media"] if m["name"] == HOSTILE)
    assert hostile["steps"] == [0, 10, 20, 30, 40, 50]
    assert "<" not in hostile["urls"]["thumb"]  # the name is quoted in its URLs
    thumb = client.get(hostile["urls"]["thumb"] + "?step=30")
    assert thumb.status_code == 200
    samples = next(m for m in body["runs"][0]["media"] if m["name"] == "samples")
    assert samples["epochs"][4] == 1
    assert client.get(samples["urls"]["records"] + "?step=128").get_json()["label"] == "epoch 1 · step 128"


@pytest.mark.parametrize(
    ("query", "status", "said"),
    [
        ("", 400, "choose between 1 and 20 runs"),
        ("?" + "&".join(["run=local/x"] * 21), 400, "choose between 1 and 20 runs"),
        ("?run=local/nosuchrun", 404, "nosuchrun"),
        ("?run=elsewhere/{run}", 404, "unknown source 'elsewhere'"),
        ("?run={run}", 404, "unknown source"),  # no source/: the whole ref taken as a source
        ("?run=local/..%2F..%2Fetc%2Fpasswd", 404, "../../etc/passwd"),
        ("?run=local/%3Cscript%3E", 404, "<script>"),
    ],
)
def test_the_compare_endpoint_refuses_bad_refs_clearly(client, run_id, query, status, said):
    answer = client.get("/api/compare/media" + query.format(run=run_id))
    assert answer.status_code == status
    assert said in answer.get_json()["error"]
    assert answer.mimetype == "application/json"  # a name said in JSON, never in a page
