"""Keras 3: ``model.fit(..., callbacks=[LabstatsCallback("runs/exp42")])``.

Batch logs become series ``batch/<name>`` at the batch count (every ``every`` batches), epoch
logs (validation too) ``epoch/<name>`` at the same count, with ``epoch`` itself; the fit's
parameters and the optimizer's config become the run's config. Works with every Keras
backend (tested with PyTorch's).
"""

from __future__ import annotations

import os
from typing import Any

import keras

from labstats.integrations import flat_config, numeric
from labstats.logger import Stats


class LabstatsCallback(keras.callbacks.Callback):
    def __init__(
        self, savedir: str | os.PathLike = "runs/keras", every: int = 1, **stats_options: Any
    ) -> None:
        super().__init__()
        if int(every) < 1:
            raise ValueError("labstats: every must be at least 1")
        self.savedir, self.every, self.options = savedir, int(every), stats_options
        self.stats: Stats | None = None
        self.batches = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        config = {"fit": flat_config(self.params or {})}
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            config["optimizer"] = flat_config(optimizer.get_config())
        config = flat_config(config)
        config.update(self.options.pop("config", {}))
        self.stats = Stats(self.savedir, config=config, **self.options)
        self.batches = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.batches += 1
        if self.stats is not None and self.batches % self.every == 0:
            self.stats.log(step=self.batches, **{f"batch/{k}": v for k, v in numeric(logs).items()})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.stats is not None:
            values = {f"epoch/{k}": v for k, v in numeric(logs).items()}
            self.stats.log(step=self.batches, epoch=epoch, **values)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.stats is not None:
            self.stats.close()
