"""Import TensorBoard event files: one labstats run per TensorBoard run.

    labstats import-tb LOGDIR          # or: labstats.import_tb("LOGDIR")

Every folder under LOGDIR that holds event files (``events.out.tfevents.*``, written by
torch's SummaryWriter, tensorboardX or TensorFlow) is a run, named after its path
(``LOGDIR/exp1/seed2`` → ``exp1/seed2``; LOGDIR itself → its own name), except the folders
a writer makes inside its own run: ``add_scalars("loss", {"train": ..})`` writes each curve in
a sub-folder (``loss_train``), ``add_hparams`` its session in another; those merge into the
run they belong to (``loss/train`` becomes a series of it, the hyperparameters its config).
Read with TensorBoard's own reader: scalars, histograms (their buckets spread onto 64 equal
bins, as labstats stores histograms), images, text, and the hyperparameters of ``add_hparams``
(a number that is whole reads as an int: add_hparams stores every number as a float). Steps
are kept; the run starts and ends at its first and last event's wall time, and each step's
wall time is the run's time series (``_time``, as the logger writes it: the viewer's time axis
then shows when the step ran, not when it was imported). A folder imported once is skipped
the next time (the run records where it came from), and an imported run has no command to
regenerate it. Needs ``labstats[tb]``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labstats.capture.snapshot import CountedHistogram
from labstats.config import LabstatsError
from labstats.format.keys import MAX_NAME_CHARS, TIME_SERIES, series_name_problem
from labstats.logger import Stats
from labstats.reader import connect
from labstats.tb import HISTOGRAM_BINS

EVENT_FILES = "events.out.tfevents.*"
FLUSH_EVERY = 50_000  # steps


@dataclass
class Imported:
    folder: Path
    run: str = ""  # the run's name ("" when skipped)
    skipped: str = ""  # why it was skipped
    counts: dict[str, int] = field(default_factory=dict)


def run_folders(logdir: Path) -> list[Path]:
    """Folders under (and including) ``logdir`` that hold event files, sorted."""
    if not logdir.is_dir():
        raise LabstatsError(f"{logdir} is not a folder")
    return sorted({p.parent for p in logdir.rglob(EVENT_FILES) if p.is_file()})


def tensorboard_runs(logdir: Path) -> dict[Path, list[Path]]:
    """Each run's folder and the folders inside it that hold more of its events (the
    sub-folders of add_scalars and add_hparams): a folder with event files inside another
    one is part of that run."""
    runs: dict[Path, list[Path]] = {}
    for folder in run_folders(logdir):  # sorted: a run's folder comes before its parts
        owner = next((run for run in runs if folder.is_relative_to(run)), None)
        if owner is None:
            runs[folder] = []
        else:
            runs[owner].append(folder)
    return runs


def import_tb(
    logdir: str | os.PathLike,
    *,
    url: str | None = None,
    prefix: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Imported]:
    """Import every run folder of ``logdir`` (see the module docstring); returns what was done."""
    root = Path(logdir).resolve()
    say = progress or (lambda text: None)
    runs = tensorboard_runs(root)
    folders = list(runs)
    if not folders:
        raise LabstatsError(f"no TensorBoard event files under {root}")
    lab = connect(url, prefix)
    if not hasattr(lab, "redis"):
        raise LabstatsError("import into one store: give --url, or run it where the config names one")
    done = _imported_folders(lab)
    results = []
    for n, folder in enumerate(folders, 1):
        name = root.name if folder == root else folder.relative_to(root).as_posix()
        if str(folder) in done:
            results.append(Imported(folder, skipped=f"imported already as {done[str(folder)]}"))
            say(f"[{n}/{len(folders)}] {name}: imported already as {done[str(folder)]}, skipped")
            continue
        result = _import_folder(folder, runs[folder], name, url, prefix, say, f"[{n}/{len(folders)}]")
        results.append(result)
    return results


def _imported_folders(lab) -> dict[str, str]:
    """Folder → run name of every run imported before."""
    found = {}
    for run in lab.runs(limit=None):
        source = run.meta.get("imported_from")
        if isinstance(source, str):
            try:
                found[json.loads(source)["folder"]] = run.name
            except (ValueError, KeyError, TypeError):
                continue
    return found


def _accumulator(folder: Path):
    try:
        from tensorboard.backend.event_processing import event_accumulator as ea
    except ImportError:
        raise LabstatsError(
            "importing TensorBoard files needs the tensorboard package: pip install 'labstats[tb]'"
        ) from None
    everything = {ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 0, ea.TENSORS: 0, ea.COMPRESSED_HISTOGRAMS: 1,
                  ea.AUDIO: 1}  # fmt: skip
    acc = ea.EventAccumulator(str(folder), size_guidance=everything)
    acc.Reload()
    return acc


@dataclass
class _Events:
    """What a run's folders hold, gathered before anything is written."""

    points: dict[int, dict[str, Any]] = field(default_factory=dict)  # step -> series values
    walltimes: dict[int, float] = field(default_factory=dict)  # step -> its first event's time
    last: float = 0.0  # the latest wall time seen: when the run ended
    counts: dict[str, int] = field(
        default_factory=lambda: {"scalars": 0, "histograms": 0, "images": 0, "texts": 0}
    )
    hparams: dict[str, Any] = field(default_factory=dict)
    images: list[tuple[str, int, float, bytes]] = field(default_factory=list)

    def seen(self, step: int, wall: float) -> None:
        self.walltimes[step] = min(wall, self.walltimes.get(step, wall))
        self.last = max(self.last, wall)

    def add(self, step: int, wall: float, name: str, value: Any) -> None:
        self.points.setdefault(step, {})[name] = value
        self.seen(step, wall)


def part_series_name(part: str, tag: str) -> str:
    """A series name for ``tag`` read in a run's sub-folder ``part``: add_scalars("loss",
    {"train": ..}) writes the tag "loss" in the folder "loss_train", which is "loss/train"."""
    stem = tag.replace("/", "_") + "_"
    return f"{tag}/{part[len(stem) :] if part.startswith(stem) and len(part) > len(stem) else part}"


def _read_folder(folder: Path, events: _Events, part: str | None = None) -> None:
    """Gather a folder's events; ``part``: its path inside the run's folder, for a sub-folder
    (add_hparams' session folder keeps its tags, add_scalars' curves are named by it)."""
    acc = _accumulator(folder)
    tags = acc.Tags()
    session: dict[str, Any] = {}
    with contextlib.suppress(KeyError):  # add_hparams: plugin metadata without values
        for content in acc.PluginTagToContent("hparams").values():
            session.update(_hparams(content))
    events.hparams.update(session)

    def name_of(tag: str) -> str:
        return tag if part is None or session else part_series_name(part, tag)

    for tag in tags.get("scalars", []):
        for event in acc.Scalars(tag):
            events.add(event.step, event.wall_time, series_name(name_of(tag)), float(event.value))
            events.counts["scalars"] += 1
    for tag in tags.get("histograms", []):
        for event in acc.Histograms(tag):
            value = CountedHistogram(histogram_bins(event.histogram_value))
            events.add(event.step, event.wall_time, series_name(name_of(tag)), value)
            events.counts["histograms"] += 1
    events.images += [(name_of(tag), e.step, e.wall_time, e.encoded_image_string)
                      for tag in tags.get("images", []) for e in acc.Images(tag)]  # fmt: skip
    # TensorFlow 2 (tf.summary) writes everything as tensors, told apart by their plugin.
    for tag in tags.get("tensors", []):
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        if plugin == "hparams":
            continue
        # torch and tensorboardX write add_text("note") as the tag "note/text_summary".
        shown = name_of(tag.removesuffix("/text_summary") if plugin == "text" else tag)
        for event in acc.Tensors(tag):
            value = _tensor_value(plugin, event.tensor_proto)
            if isinstance(value, bytes):
                events.images.append((shown, event.step, event.wall_time, value))
            elif value is not None:
                events.add(event.step, event.wall_time, series_name(shown), value)
                events.counts[_kind(value)] += 1


def _import_folder(folder: Path, parts: list[Path], name: str, url, prefix, say, position: str) -> Imported:
    events = _Events()
    _read_folder(folder, events)
    for part in parts:
        _read_folder(part, events, part.relative_to(folder).as_posix())
    for _, step, wall, _ in events.images:
        events.seen(step, wall)
    if not events.walltimes and not events.hparams:
        say(f"{position} {name}: no scalars, histograms, images or text, skipped")
        return Imported(folder, skipped="nothing to import")

    files = {p.relative_to(folder).as_posix(): p.stat().st_size
             for f in (folder, *parts) for p in sorted(f.glob(EVENT_FILES))}  # fmt: skip
    stats = Stats(folder, name=name, url=url, prefix=prefix, config=events.hparams, tags=["tensorboard"],
                  capture_git=False, capture_freeze=False, handle_signals=False)  # fmt: skip
    counts = events.counts
    try:
        stats.mark_imported({"folder": str(folder), "files": files})
        if events.walltimes:
            stats.backdate(min(events.walltimes.values()))
        for n, step in enumerate(sorted(set(events.points) | set(events.walltimes)), 1):
            values = dict(events.points.get(step, {}))
            if step in events.walltimes:
                values[TIME_SERIES] = events.walltimes[step]
            stats.record(step, values)
            if n % FLUSH_EVERY == 0:  # an import is faster than any training loop: let the writer keep up
                stats.flush(600)
        for tag, step, _, encoded in events.images:
            from PIL import Image

            stats.image(series_name(tag), Image.open(io.BytesIO(encoded)), step)
            counts["images"] += 1
    except BaseException:
        stats.close("crashed", "import interrupted")
        raise
    stats.close(ended=events.last if events.walltimes else None)
    shown = ", ".join(f"{v:,} {k}" for k, v in counts.items() if v)
    say(f"{position} {name}: {shown or 'hyperparameters only'} → run {stats.name}")
    return Imported(folder, run=stats.name, counts=counts)


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "texts"
    return "histograms" if isinstance(value, CountedHistogram) else "scalars"


def histogram_bins(h, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """TensorBoard's HistogramProto (torch, tensorboardX, TF1) as labstats stores histograms:
    float64 [min, max, count_0, ..., count_{bins-1}] over equal bins between min and max.
    Its buckets are upper limits, the first one starting at min."""
    limits = np.asarray(h.bucket_limit, dtype=np.float64)
    lower = np.concatenate([[h.min], limits[:-1]]) if len(limits) else limits
    return spread(float(h.min), float(h.max), lower, limits, np.asarray(h.bucket, dtype=np.float64), bins)


def spread(low: float, high: float, lower, upper, amounts, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Buckets [lower, upper] with counts onto ``bins`` equal bins between low and high:
    each bucket goes to the bin of its middle."""
    counts = np.zeros(bins)
    if len(amounts) and high > low:
        lower = np.maximum(np.asarray(lower, dtype=np.float64), low)
        upper = np.minimum(np.asarray(upper, dtype=np.float64), high)
        middle = (lower + np.maximum(upper, lower)) / 2
        which = np.clip(((middle - low) / (high - low) * bins).astype(int), 0, bins - 1)
        np.add.at(counts, which, amounts)
    else:
        counts[0] = float(np.sum(amounts))
    return np.concatenate([[low, high], counts])


def _tensor_value(plugin: str, proto) -> Any:
    from tensorboard.util import tensor_util

    array = tensor_util.make_ndarray(proto)
    if plugin == "text":
        flat = array.reshape(-1)
        texts = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
        return texts[0] if len(texts) == 1 else "\n".join(texts)
    if plugin == "scalars" and array.size == 1:
        return float(array.reshape(-1)[0])
    if plugin == "histograms" and array.ndim == 2 and array.shape[1] == 3:  # rows: left, right, count
        if not len(array):
            return CountedHistogram(spread(0.0, 0.0, [], [], []))
        low, high = float(array[0, 0]), float(array[-1, 1])
        return CountedHistogram(spread(low, high, array[:, 0], array[:, 1], array[:, 2]))
    if plugin == "images" and array.ndim == 1 and len(array) > 2:  # width, height, then encoded pictures
        return bytes(array[2])
    return None


def _hparams(content: bytes) -> dict[str, Any]:
    """The hyperparameters of add_hparams (the hparams plugin's session start info)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    if not data.HasField("session_start_info"):
        return {}
    out = {}
    for key, value in data.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        found = getattr(value, kind) if kind else None
        # add_hparams stores every number as a float: a whole one was an int (a batch size).
        whole = isinstance(found, float) and found.is_integer() and abs(found) < 2**53
        out[key] = int(found) if whole else found
    return out


def series_name(tag: str) -> str:
    """A TensorBoard tag as a labstats series name (which travels in URL paths): empty,
    "." and ".." parts and control characters are dropped."""
    if series_name_problem(tag) is None:
        return tag
    clean = "".join(c for c in tag if ord(c) >= 32 and ord(c) != 127)
    clean = "/".join(part for part in clean.split("/") if part not in ("", ".", ".."))
    return clean[:MAX_NAME_CHARS] or "unnamed"
