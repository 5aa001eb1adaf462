"""The framework adapters, each in a short real training run on the CPU with the real
framework (PyTorch Lightning, Keras 3 on its PyTorch backend, Hugging Face's Trainer with a
tiny model built from a config: nothing is downloaded), against the real redis-server."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere

import numpy as np
import pytest
import torch

from labstats.integrations import flat_config


def test_flat_config_reads_what_frameworks_pass():
    from argparse import Namespace

    nested = {"opt": {"name": "adam", "betas": (0.9, 0.99)}, "layers": 3, "act": torch.nn.ReLU()}
    assert flat_config(nested) == {"opt.name": "adam", "opt.betas": [0.9, 0.99], "layers": 3, "act": "ReLU()"}
    assert flat_config(Namespace(lr=0.1)) == {"lr": 0.1}


def test_lightning_logger(tmp_path, lab):
    import lightning.pytorch as pl

    from labstats.integrations.lightning import LabstatsLogger

    class Model(pl.LightningModule):
        def __init__(self, lr: float = 0.05, hidden: int = 8):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
            )

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    x = torch.randn(64, 4)
    data = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    logger = LabstatsLogger(tmp_path / "lightning-run")
    quiet = {"enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
    trainer = pl.Trainer(max_epochs=3, logger=logger, log_every_n_steps=2, default_root_dir=tmp_path, **quiet)
    trainer.fit(Model(), loader, loader)
    run = lab.run("lightning-run")
    assert run.status == "finished"
    assert run.config == {"hidden": 8, "lr": 0.05}
    loss = run.series("train_loss")
    assert len(loss) == 12  # 24 steps, logged every 2nd
    assert loss.idx.tolist() == list(range(1, 24, 2))
    assert len(run.series("val_loss")) == 3
    assert logger.version == run.id


def test_lightning_logs_on_rank_zero_only(tmp_path, lab, monkeypatch):
    from lightning.pytorch.utilities import rank_zero_only

    from labstats.integrations.lightning import LabstatsLogger

    monkeypatch.setattr(rank_zero_only, "rank", 1)  # as on the second process of a DDP run
    logger = LabstatsLogger(tmp_path / "rank1")
    logger.log_hyperparams({"lr": 1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    assert lab.runs() == []


def test_lightning_marks_a_failed_fit_crashed(tmp_path, lab):
    from labstats.integrations.lightning import LabstatsLogger

    logger = LabstatsLogger(tmp_path / "failing")
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("failed")
    run = lab.run("failing")
    assert run.status == "crashed"
    assert run.meta["reason"] == "lightning: failed"


def test_keras_callback(tmp_path, lab):
    import keras

    from labstats.integrations.keras import LabstatsCallback

    assert keras.backend.backend() == "torch"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
    model.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0,
              callbacks=[LabstatsCallback(tmp_path / "keras-run", every=2)])  # fmt: skip
    run = lab.run("keras-run")
    assert run.status == "finished"
    assert run.config["fit.epochs"] == 3
    assert run.config["optimizer.learning_rate"] == pytest.approx(0.01)
    # 72 training samples in batches of 16: 5 batches an epoch, 15 in all; every 2nd logged.
    assert run.series("batch/loss").idx.tolist() == list(range(2, 16, 2))
    assert run.series("epoch/val_loss").idx.tolist() == [5, 10, 15]
    assert run.series("epoch").values.tolist() == [0, 1, 2]
    assert set(run.series_names()) >= {"epoch/loss", "epoch/mae", "epoch/val_mae"}


def test_huggingface_callback(tmp_path, lab):
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    from labstats.integrations.huggingface import LabstatsCallback

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2)  # fmt: skip
    model = BertForSequenceClassification(config)
    rng = np.random.default_rng(0)
    examples = [{"input_ids": torch.tensor(rng.integers(1, 64, 8)), "labels": torch.tensor(int(i % 2))}
                for i in range(64)]  # fmt: skip
    args = TrainingArguments(output_dir=str(tmp_path / "hf-run"), max_steps=12, logging_steps=3,
                             per_device_train_batch_size=8, report_to=[], use_cpu=True, save_strategy="no",
                             learning_rate=1e-3, disable_tqdm=True)  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=examples, callbacks=[LabstatsCallback()])
    trainer.train()
    run = lab.run("hf-run")
    assert run.status == "finished"
    assert run.config["args.learning_rate"] == 1e-3
    assert run.config["model.hidden_size"] == 16
    assert run.series("loss").idx.tolist() == [3, 6, 9, 12]
    assert "learning_rate" in run.series_names()
