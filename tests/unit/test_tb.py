"""TensorBoard: the SummaryWriter shim logs a labstats run, and `labstats import-tb` reads
event files written by the real writers (tensorboardX's and torch's) into runs whose every
value equals what TensorBoard's own EventAccumulator reads from the same files."""

import io
import logging

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator as ea

import labstats
from labstats import cli, tb
from labstats.ops import tbimport

matplotlib.use("Agg")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("LABSTATS_ARTIFACT_DIR", str(tmp_path / "artifacts"))


def test_switching_is_one_import_line(tmp_path, store, lab, caplog):
    import matplotlib.pyplot as plt

    with (
        caplog.at_level(logging.WARNING, "labstats"),
        tb.SummaryWriter(tmp_path / "exp42", comment="_sweep") as w,
    ):
        for step in range(100):
            w.add_scalar("loss/train", 1.0 / (step + 1), step)
            w.add_scalars("acc", {"train": step / 100, "val": step / 200}, step)
        w.add_scalar("lr", torch.tensor(0.5), global_step=torch.tensor(100))
        w.add_histogram("weights", np.arange(1000.0), 10)
        w.add_image("sample", torch.zeros(3, 8, 8), 10)  # CHW, TensorBoard's default
        w.add_image("grey", np.ones((8, 8)), 10)  # 2-D with the default CHW, as TensorBoard allows
        w.add_images("batch", torch.zeros(4, 3, 8, 8), 10)
        figure = plt.figure(figsize=(2, 1), dpi=50)
        plt.plot([0, 1], [0, 1])
        w.add_figure("plot", figure, 10)
        w.add_text("note", "<b>hello</b>", 10)
        w.add_video("video", np.random.default_rng(0).random((1, 5, 3, 8, 8)), 10, fps=5)
        w.add_mesh("mesh", torch.rand(1, 50, 3), colors=torch.randint(0, 255, (1, 50, 3)), global_step=10)
        w.add_hparams({"lr": 0.01, "layers": 3, "act": "relu"}, {"hparam/score": 0.9})
        w.add_graph(object())  # no equivalent: a warning, never an exception
        w.add_graph(object())
        w.add_scalar("late", 1.0, 11, walltime=123.0)
        w.add_scalar("late", 2.0, 12, walltime=124.0)
        w.flush()
    run = lab.run("exp42")
    assert run.tags == ["sweep"]
    assert run.config == {"act": "relu", "layers": 3, "lr": 0.01}
    loss = run.series("loss/train")
    assert loss.idx.tolist() == list(range(100))
    assert loss.values[3] == 0.25
    assert run.series("acc/val").values[50] == 0.25
    assert run.series("lr").values.tolist() == [0.5]
    assert run.series("hparam/score").values.tolist() == [0.9]
    hist = run.series("weights").values[0]
    assert hist[:2].tolist() == [0.0, 999.0]
    assert hist[2:].sum() == 1000
    assert run.series("note").values == ["<b>hello</b>"]
    assert run.media_names() == {"batch": "image", "grey": "image", "mesh": "points", "plot": "image",
                                 "sample": "image", "video": "file"}  # fmt: skip
    assert run.artifact("sample", 10, as_="array").shape == (8, 8, 3)
    assert run.artifact("plot", 10, as_="array").shape == (50, 100, 3)
    gif = Image.open(io.BytesIO(run.artifact("video", 10)))
    assert gif.n_frames == 5
    assert run.artifact("mesh", 10, as_="array").shape == (50, 3)
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("add_graph" in m for m in warnings) == 1
    assert sum("walltime" in m for m in warnings) == 1


def test_default_log_dir_is_tensorboards(tmp_path, store, lab, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with tb.SummaryWriter(comment="-quick") as w:
        w.add_scalar("x", 1.0, 0)
    assert w.log_dir.startswith("runs/")
    assert w.log_dir.endswith("-quick")
    assert lab.runs()[0].name == w.log_dir.split("/")[-1]


# ---- import ------------------------------------------------------------------------------------


def write_event_files(logdir):
    """Event files of two real writers, as a user's logdir would have them."""
    from tensorboardX import SummaryWriter as TbxWriter
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    rng = np.random.default_rng(0)
    with TbxWriter(str(logdir / "tbx")) as w:
        for step in range(300):
            w.add_scalar("loss", float(np.exp(-step / 50) + rng.normal(0, 0.01)), step)
            w.add_scalar("lr/group0", 0.1 * 0.99**step, step)
        for step in (0, 100, 200):
            w.add_histogram("weights", rng.normal(step / 100, 1, 5000), step)
            w.add_image("sample", rng.integers(0, 255, (3, 16, 16), dtype=np.uint8), step)
        w.add_text("note", "first <i>note</i>", 5)
    with TorchWriter(str(logdir / "torch" / "seed1")) as w:
        for step in range(0, 1000, 10):
            w.add_scalar("train/acc", step / 1000, step)
        w.add_histogram("grad", torch.randn(2000), 500)
        w.add_text("summary", "done", 990)
        w.add_hparams({"lr": 0.001, "batch": 64, "opt": "adam"}, {"hparam/acc": 0.99}, run_name=".")


def accumulated(folder):
    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 0,
                                                           ea.TENSORS: 0})  # fmt: skip
    acc.Reload()
    return acc


def test_import_equals_what_tensorboard_reads(tmp_path, store, lab, url):
    logdir = tmp_path / "logs"
    write_event_files(logdir)
    lines = []
    results = labstats.import_tb(logdir, url=url, progress=lines.append)
    assert [r.run for r in results] == ["tbx", "torch/seed1"]
    assert len(lines) == 2
    for result in results:
        acc = accumulated(result.folder)
        run = lab.run(result.run)
        assert run.tags == ["tensorboard"]
        for tag in acc.Tags()["scalars"]:
            events = acc.Scalars(tag)
            series = run.series(tag)
            assert series.idx.tolist() == [e.step for e in events], tag
            assert series.values.tolist() == [e.value for e in events], tag  # every value, exactly
        for tag in acc.Tags()["histograms"]:
            events = acc.Histograms(tag)
            series = run.series(tag)
            assert series.idx.tolist() == [e.step for e in events]
            for stored, event in zip(series.values, events, strict=True):
                h = event.histogram_value
                assert stored[:2].tolist() == [h.min, h.max]
                assert stored[2:].sum() == pytest.approx(h.num)  # every value counted once
        for tag in acc.Tags()["images"]:
            for event in acc.Images(tag):
                expected = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))
                assert np.array_equal(run.artifact(tag, event.step, as_="array"), expected)
        # Each step's time is the event's wall time, in the series the viewer's time axis
        # reads (it once held the import's own time, beside a separate _walltime series).
        walls = run.series("_time")
        events = {e.step: e.wall_time for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
        assert dict(zip(walls.idx.tolist(), walls.values.tolist(), strict=True)) == pytest.approx(events)
        assert "_walltime" not in run.series_info()
        assert float(run.meta["started"]) == pytest.approx(min(walls.values), abs=1e-3)
    tbx, torch_run = lab.run("tbx"), lab.run("torch/seed1")
    assert tbx.series("note").values == ["first <i>note</i>"]
    assert tbx.series("weights").kind == "o"
    assert torch_run.series("summary").values == ["done"]
    assert torch_run.config == {"batch": 64, "lr": 0.001, "opt": "adam"}  # a whole number: an int again
    assert isinstance(torch_run.config["batch"], int)
    assert torch_run.series("hparam/acc").values.tolist() == [pytest.approx(0.99)]


def test_add_scalars_and_add_hparams_folders_merge_into_their_run(tmp_path, store, lab, url, capsys):
    """torch writes each add_scalars curve and each add_hparams session in a folder of its own
    inside the run's: TensorBoard shows one run of a sweep, so does the import."""
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    logdir = tmp_path / "logs"
    for seed in (1, 2):
        with TorchWriter(str(logdir / f"sweep-with-a-long-name/seed{seed}")) as w:
            for step in range(0, 100, 10):
                w.add_scalar("train/loss", 1 / (step + seed), step)
                w.add_scalars("loss", {"train": step * 0.1, "val": step * 0.2}, step)
                w.add_scalars("acc/top", {"1": step * 0.01}, step)
            hparams = {"lr": 0.01 * seed, "bs": 64, "opt": "adam", "bn": True}
            w.add_hparams(hparams, {"hparam/acc": 0.5 + seed})
    parts = [p for p in runs_in(logdir) if "seed1" in p]
    assert len(parts) > 1  # the writer made sub-folders: the case being tested
    results = labstats.import_tb(logdir, url=url)
    assert [r.run for r in results] == ["sweep-with-a-long-name/seed1", "sweep-with-a-long-name/seed2"]
    for seed in (1, 2):
        run = lab.run(f"sweep-with-a-long-name/seed{seed}")
        assert run.config == {"lr": 0.01 * seed, "bs": 64, "opt": "adam", "bn": True}
        assert type(run.config["bs"]) is int
        names = set(run.series_info())
        assert {"train/loss", "loss/train", "loss/val", "acc/top/1", "hparam/acc"} <= names
        assert run.series("loss/val").values.tolist() == pytest.approx([s * 0.2 for s in range(0, 100, 10)])
        assert run.series("hparam/acc").values.tolist() == [pytest.approx(0.5 + seed)]
        assert run.regenerate_plan().no_command.startswith("imported from TensorBoard")
    assert len(lab.runs()) == 2
    assert cli.main(["--url", url, "ls"]) == 0
    listed = capsys.readouterr().out
    assert "sweep-with-a-long-name/seed1 " in listed  # whole, not cut at 30 characters


def runs_in(logdir):
    return sorted(str(p.parent) for p in logdir.rglob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("part", "tag", "name"),
    [("loss_train", "loss", "loss/train"), ("acc_top_1", "acc/top", "acc/top/1"), ("other", "x", "x/other"),
     ("loss_", "loss", "loss/loss_")],
)  # fmt: skip
def test_an_add_scalars_folder_names_its_curve(part, tag, name):
    assert tbimport.part_series_name(part, tag) == name


def test_a_second_import_skips_what_was_imported(tmp_path, store, lab, url, capsys):
    logdir = tmp_path / "logs"
    write_event_files(logdir)
    assert cli.main(["--url", url, "import-tb", str(logdir)]) == 0
    assert "2 runs imported, 0 skipped" in capsys.readouterr().out
    assert cli.main(["--url", url, "import-tb", str(logdir)]) == 0
    out = capsys.readouterr().out
    assert "0 runs imported, 2 skipped" in out
    assert "imported already as tbx" in out
    assert len(lab.runs()) == 2


def test_import_of_a_folder_without_event_files_is_refused(tmp_path, url, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["--url", url, "import-tb", str(tmp_path / "empty")]) == 1
    assert "no TensorBoard event files" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("tag", "name"),
    [("loss/train", "loss/train"), ("/loss//x/", "loss/x"), ("a/../b", "a/b"), ("\n", "unnamed")],
)
def test_tags_become_valid_series_names(tag, name):
    assert tbimport.series_name(tag) == name


def write_tf2_style(folder):
    """Event files as TensorFlow 2's tf.summary writes them: every value a tensor told apart
    by its plugin (built with TensorBoard's own summary protos and event writer, so no
    TensorFlow install is needed)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.histogram import summary_v2 as histogram
    from tensorboard.plugins.image import metadata as image_metadata
    from tensorboard.plugins.scalar import summary_v2 as scalar
    from tensorboard.plugins.text import summary_v2 as text
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    png = io.BytesIO()
    Image.fromarray(np.full((6, 4, 3), 200, np.uint8)).save(png, "PNG")
    encoded = tensor_util.make_tensor_proto(np.array([b"4", b"6", png.getvalue()], dtype=object))
    metadata = image_metadata.create_summary_metadata("picture", "")
    picture = summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="picture", metadata=metadata, tensor=encoded)]
    )
    writer = EventFileWriter(str(folder))
    rng = np.random.default_rng(1)
    for step in range(5):
        weights = histogram.histogram_pb("tf/weights", rng.normal(step, 1, 500), buckets=20)
        for summary in (scalar.scalar_pb("tf/loss", 1.0 / (step + 1)), weights):
            writer.add_event(event_pb2.Event(wall_time=1_700_000_000 + step, step=step, summary=summary))
    writer.add_event(event_pb2.Event(wall_time=1_700_000_010, step=4, summary=picture))
    writer.add_event(
        event_pb2.Event(wall_time=1_700_000_011, step=4, summary=text.text_pb("tf/note", "fine"))
    )
    writer.close()


def test_import_of_tensorflow_2_style_summaries(tmp_path, store, lab, url):
    write_tf2_style(tmp_path / "tf2" / "run1")
    (result,) = labstats.import_tb(tmp_path / "tf2", url=url)
    run = lab.run(result.run)
    acc = accumulated(result.folder)
    losses = [float(tensor_util_value(e)) for e in acc.Tensors("tf/loss")]
    assert run.series("tf/loss").values.tolist() == losses  # float32 in the file, exactly
    assert losses == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])
    weights = run.series("tf/weights")
    for stored, event in zip(weights.values, acc.Tensors("tf/weights"), strict=True):
        buckets = tensor_util_value(event)
        assert stored[2:].sum() == buckets[:, 2].sum() == 500
        assert stored[:2].tolist() == [buckets[0, 0], buckets[-1, 1]]
    assert run.artifact("picture", 4, as_="array").shape == (6, 4, 3)
    assert run.series("tf/note").values == ["fine"]
    assert float(run.meta["started"]) == 1_700_000_000
    assert float(run.meta["ended"]) == 1_700_000_011


def tensor_util_value(event):
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(event.tensor_proto)
