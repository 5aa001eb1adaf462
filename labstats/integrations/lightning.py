"""PyTorch Lightning: log a run with ``Trainer(logger=LabstatsLogger("runs/exp42"))``.

Metrics (``self.log(...)``) become series at the trainer's global step; hyperparameters
(``self.save_hyperparameters()``) become the run's config; ``finalize`` ends the run as
finished, or as crashed when training failed. Only rank zero logs in distributed runs.
"""

from __future__ import annotations

import logging
import os
from argparse import Namespace
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from labstats.format import run_record
from labstats.integrations import flat_config
from labstats.logger import Stats

log = logging.getLogger("labstats")


class LabstatsLogger(Logger):
    def __init__(self, savedir: str | os.PathLike = "runs/lightning", name: str | None = None,
                 **stats_options: Any) -> None:  # fmt: skip
        super().__init__()
        self._savedir = Path(savedir)
        self._name = name
        self._options = stats_options
        self._stats: Stats | None = None
        self._config: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._stats.name if self._stats else (self._name or self._savedir.name)

    @property
    def version(self) -> str:
        return self._stats.run_id if self._stats else ""

    @property
    def save_dir(self) -> str:
        return str(self._savedir)

    @property
    @rank_zero_experiment
    def experiment(self) -> Stats:
        """The labstats run (started at the first use; a new one after ``finalize``)."""
        if self._stats is None or self._stats.closed:
            if self._stats is not None:
                log.warning("labstats: logging after the run %r ended starts a new run", self._stats.name)
            self._stats = Stats(self._savedir, name=self._name, config=self._config, **self._options)
        return self._stats

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        self._config.update(flat_config(params))
        self.experiment.set_config(**flat_config(params))

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.experiment.log(step=step, **metrics)

    @rank_zero_only
    def save(self) -> None:
        if self._stats is not None:
            self._stats.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._stats is None or self._stats.closed:
            return
        if status == "success":
            self._stats.close()
        else:
            self._stats.close(run_record.CRASHED, f"lightning: {status}")
