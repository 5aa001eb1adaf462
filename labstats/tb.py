"""Switch from TensorBoard with one import line.

    from labstats.tb import SummaryWriter        # was: from torch.utils.tensorboard import ...
    writer = SummaryWriter("runs/exp42")         # the run is named after log_dir ("exp42")
    writer.add_scalar("loss", loss, step)
    writer.add_image("sample", img, step)        # CHW by default, as in TensorBoard
    writer.close()

The calls of torch's and tensorboardX's ``SummaryWriter`` log to labstats instead:
``add_scalar(s)``, ``add_histogram``, ``add_image(s)``, ``add_figure`` (matplotlib, drawn to a
picture), ``add_text``, ``add_hparams`` (the config, and the metrics as series), ``add_video``
(an animated GIF file), ``add_mesh`` (a point cloud), ``flush``, ``close``. ``comment`` becomes a
tag. What has no equivalent (``add_graph``, ``add_audio``, ``add_embedding``, ``add_pr_curve``,
``walltime=``...) is said once in a warning and skipped: logging never stops training.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from labstats.format import media_files
from labstats.logger import Stats

log = logging.getLogger("labstats")

# Bins of a TensorBoard histogram stored by labstats (equal bins between min and max).
HISTOGRAM_BINS = 64


class SummaryWriter:
    """A drop-in for ``torch.utils.tensorboard.SummaryWriter`` and tensorboardX's that logs a
    labstats run. Extra keyword arguments go to :class:`labstats.Stats` (``config=``,
    ``tags=``, ``url=``...)."""

    def __init__(
        self,
        log_dir: str | os.PathLike | None = None,
        comment: str = "",
        purge_step: int | None = None,
        max_queue: int = 10,
        flush_secs: int = 120,
        filename_suffix: str = "",
        **stats_options: Any,
    ) -> None:
        if log_dir is None:  # TensorBoard's default: runs/<date>_<host><comment>
            log_dir = Path("runs") / (time.strftime("%b%d_%H-%M-%S") + "_" + socket.gethostname() + comment)
        self.log_dir = str(log_dir)
        tags = list(stats_options.pop("tags", ()))
        if comment:
            tags.append(comment.strip("_- ") or comment)
        self._warned: set[str] = set()
        if purge_step is not None:
            self._once("purge_step", "purge_step is ignored: a labstats run never rewrites what it logged")
        self.stats = Stats(self.log_dir, tags=tags, **stats_options)

    # ---- what maps -----------------------------------------------------------------------

    def add_scalar(
        self,
        tag: str,
        scalar_value: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        new_style: bool = False,
        double_precision: bool = False,
    ) -> None:
        # The call made every step: kept to the one call into the logger.
        if walltime is not None:
            self._walltime(walltime)
        self.stats.log(
            max(self.stats.last_step, 0) if global_step is None else global_step, **{tag: scalar_value}
        )

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: dict[str, Any],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        self._walltime(walltime)
        values = {f"{main_tag}/{tag}": value for tag, value in tag_scalar_dict.items()}
        self.stats.log(step=self._step(global_step), **values)

    def add_histogram(
        self,
        tag: str,
        values: Any,
        global_step: int | None = None,
        bins: Any = "tensorflow",
        walltime: float | None = None,
        max_bins: int | None = None,
    ) -> None:
        self._walltime(walltime)
        count = bins if isinstance(bins, int) else (max_bins or HISTOGRAM_BINS)
        self.stats.histogram(tag, values, self._step(global_step), bins=count)

    def add_image(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "CHW",
    ) -> None:
        self._walltime(walltime)
        self.stats.image(
            tag, img_tensor, self._step(global_step), dataformats=_layout(img_tensor, dataformats)
        )

    def add_images(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "NCHW",
    ) -> None:
        self._walltime(walltime)
        self.stats.images(tag, img_tensor, self._step(global_step), dataformats=dataformats)

    def add_figure(
        self,
        tag: str,
        figure: Any,
        global_step: int | None = None,
        close: bool = True,
        walltime: float | None = None,
    ) -> None:
        """A matplotlib figure (or a list of them, shown as a grid) as a picture."""
        self._walltime(walltime)
        figures = figure if isinstance(figure, list | tuple) else [figure]
        pictures = [_figure_rgb(f, close) for f in figures]
        step = self._step(global_step)
        if len(pictures) == 1:
            self.stats.image(tag, pictures[0], step)
        else:
            self.stats.images(tag, pictures, step)

    def add_text(
        self, tag: str, text_string: str, global_step: int | None = None, walltime: float | None = None
    ) -> None:
        self._walltime(walltime)
        self.stats.log(step=self._step(global_step), **{tag: str(text_string)})

    def add_hparams(
        self,
        hparam_dict: dict[str, Any],
        metric_dict: dict[str, Any],
        hparam_domain_discrete: Any = None,
        run_name: str | None = None,
        global_step: int | None = None,
    ) -> None:
        """The hyperparameters become the run's config; the metrics, series of the run."""
        self.stats.set_config(**{k: _plain(v) for k, v in hparam_dict.items()})
        if metric_dict:
            self.stats.log(step=self._step(global_step), **dict(metric_dict))

    def add_video(
        self,
        tag: str,
        vid_tensor: Any,
        global_step: int | None = None,
        fps: int = 4,
        walltime: float | None = None,
    ) -> None:
        """A video (N, T, C, H, W; the N videos side by side) as an animated GIF file of the run."""
        self._walltime(walltime)
        video = np.asarray(_host(vid_tensor))
        if video.ndim != 5:
            raise ValueError(f"labstats: add_video takes N×T×C×H×W, not shape {video.shape}")
        frames = [media_files.to_uint8(video[:, t], "NCHW") for t in range(video.shape[1])]
        pictures = [media_files.pil_image(media_files.grid(f) if len(f) > 1 else f[0]) for f in frames]
        step = self._step(global_step)
        folder = Path(self.log_dir) / "videos"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{_file_safe(tag)}-{step}.gif"
        path.write_bytes(media_files.animation(pictures, max(1, round(1000 / max(fps, 1)))))
        self.stats.file(tag, path, step)

    def add_mesh(
        self,
        tag: str,
        vertices: Any,
        colors: Any = None,
        faces: Any = None,
        config_dict: Any = None,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """The vertices (B×N×3; the first of the batch) as a point cloud; faces are not kept."""
        self._walltime(walltime)
        if faces is not None:
            self._once("faces", "add_mesh: faces are not stored; the vertices are, as a point cloud")
        xyz = np.asarray(_host(vertices))
        rgb = None if colors is None else np.asarray(_host(colors))
        if xyz.ndim == 3:
            xyz, rgb = xyz[0], (rgb[0] if rgb is not None and rgb.ndim == 3 else rgb)
        if rgb is not None and rgb.dtype != np.uint8:
            rgb = np.clip(rgb, 0, 255).astype(np.uint8)
        self.stats.points(tag, xyz, self._step(global_step), colors=rgb)

    def flush(self) -> None:
        self.stats.flush()

    def close(self) -> None:
        self.stats.close()

    def get_logdir(self) -> str:
        return self.log_dir

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stats.__exit__(exc_type, exc, tb)

    # ---- what does not ---------------------------------------------------------------------

    def __getattr__(self, name: str):
        if name.startswith("add_"):

            def unsupported(*args: Any, **kwargs: Any) -> None:
                self._once(name, f"SummaryWriter.{name} has no labstats equivalent; it is skipped")

            return unsupported
        raise AttributeError(name)

    def _once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("labstats: %s", message)

    def _walltime(self, walltime: float | None) -> None:
        if walltime is not None:
            self._once("walltime", "walltime= is not stored; labstats records the time of the call")

    def _step(self, global_step: Any) -> int:
        """TensorBoard's global_step; None is the current step (0 before any)."""
        if global_step is None:
            return max(self.stats.last_step, 0)
        return int(global_step)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value


def _host(value: Any) -> Any:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    return value


def _layout(image: Any, dataformats: str) -> str:
    """TensorBoard accepts a 2-D image with the default CHW; so does this."""
    shape = getattr(image, "shape", None)
    if shape is not None and len(shape) == 2 and dataformats.upper() == "CHW":
        return "HW"
    return dataformats


def _figure_rgb(figure: Any, close: bool) -> np.ndarray:
    figure.canvas.draw()
    rgba = np.asarray(figure.canvas.buffer_rgba())
    if close:
        import matplotlib.pyplot as plt

        plt.close(figure)
    return np.ascontiguousarray(rgba[..., :3])


def _file_safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80] or "video"
