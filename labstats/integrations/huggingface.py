"""Hugging Face transformers: ``Trainer(..., callbacks=[LabstatsCallback()])``.

What the Trainer logs (``loss``, ``learning_rate``, ``grad_norm``, ``eval_*``...) becomes
series at its global step; the TrainingArguments and the model's config become the run's
config. The run is saved in ``output_dir`` (or ``savedir``) and named after ``run_name``
when set. It ends as finished when training ends; a crash is marked as for any labstats run.
Only the main process logs.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import TrainerCallback

from labstats.integrations import flat_config, numeric
from labstats.logger import Stats


class LabstatsCallback(TrainerCallback):
    def __init__(self, savedir: str | os.PathLike | None = None, **stats_options: Any) -> None:
        self.savedir, self.options = savedir, stats_options
        self.stats: Stats | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or self.stats is not None:
            return
        config = {"args": args.to_sanitized_dict()}
        if model is not None and hasattr(model, "config"):
            config["model"] = model.config.to_dict()
        config = flat_config(config)
        config.update(self.options.pop("config", {}))
        run_name = getattr(args, "run_name", None)
        name = self.options.pop("name", None) or (
            run_name if run_name and run_name != args.output_dir else None
        )
        self.stats = Stats(self.savedir or args.output_dir, name=name, config=config, **self.options)

    def on_log(self, args, state, control, logs: dict | None = None, **kwargs: Any) -> None:
        if self.stats is not None and state.is_world_process_zero:
            self.stats.log(step=state.global_step, **numeric(logs))

    def on_train_end(self, args, state, control, **kwargs: Any) -> None:
        if self.stats is not None and state.is_world_process_zero:
            self.stats.close()
