"""A task whose training holds its device for a fixed time: for benchmarks of launchers and for failure tests.

Its metrics are constants from the hyperparameters, so a test can predict a cv's score exactly; a run fails on
purpose when a chosen sample lands in its validation set, which picks out one fold without nestling telling the
task which fold it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import polars as pl

from nestling.core.ml.task import Split, Task
from nestling.tasks.synthetic import resolve_hparams

if TYPE_CHECKING:
    import lightning

N_SAMPLES = 40
N_REGIONS = 4


class SleepTask(Task):
    """40 samples in regions r0..r3, alternating labels; one training epoch sleeps `sleep_s` seconds."""

    def metadata(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "sample_id": [f"s{i:04d}" for i in range(N_SAMPLES)],
                "region": [f"r{i % N_REGIONS}" for i in range(N_SAMPLES)],
                "label": [i % 2 for i in range(N_SAMPLES)],
            },
            schema={"sample_id": pl.String, "region": pl.String, "label": pl.Int64},
        )

    def default_hparams(self) -> dict[str, Any]:
        return {"sleep_s": 1.0, "value": 0.5, "lr": 0.01, "fail_if_val_contains": ""}

    def scoring_metrics(self) -> list[str]:
        return ["val/JaccardIndex", "val/Recall"]  # the constants it logs

    def build_model(self, hparams: dict[str, Any]) -> lightning.LightningModule:
        return _module(resolve_hparams(self.default_hparams(), hparams, "sleep"))

    def build_datamodule(self, hparams: dict[str, Any], split: Split) -> lightning.LightningDataModule:
        hp = resolve_hparams(self.default_hparams(), hparams, "sleep")
        fail_id = str(hp["fail_if_val_contains"])
        return _datamodule(split, fail_id if fail_id and fail_id in split.val else "")


# logs a module's validation or test metrics for one batch: (module, (x, y), "val" | "test")
LogMetrics = Callable[[Any, tuple[Any, Any], str], None]


def _module(
    hp: dict[str, Any], log_metrics: LogMetrics | None = None, *, count_epochs: bool = False
) -> lightning.LightningModule:
    """Built inside a function so that importing this module stays free of torch. `log_metrics` logs the
    validation and test metrics (default: the constants of `hp`); the rest is the loop every sleep-like task shares.
    `count_epochs`: the module keeps the epochs its weights trained in an `epochs_done` buffer, saved with them (a
    task whose metrics follow a learning curve scores a checkpoint at its own epoch)."""
    import time

    import lightning
    import torch
    from torch import nn

    class SleepModule(lightning.LightningModule):
        epochs_done: torch.Tensor  # with count_epochs

        def __init__(self, hparams: dict[str, Any]) -> None:
            super().__init__()
            self.save_hyperparameters(dict(hparams))
            self.linear = nn.Linear(1, 1)
            self.seed = torch.initial_seed()  # the run's seed: nestling seeds everything before building
            if count_epochs:
                self.register_buffer("epochs_done", torch.tensor(0))

        def on_train_epoch_start(self) -> None:
            if count_epochs:
                self.epochs_done.fill_(self.current_epoch + 1)
            # One sleep per epoch, not per step, so an epoch takes sleep_s whatever the batch count.
            time.sleep(float(self.hparams["sleep_s"]))

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.mse_loss(self.linear(x), y)
            self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
            return loss

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
            (log_metrics or _constants)(self, batch, "val")

        def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
            (log_metrics or _constants)(self, batch, "test")

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=float(self.hparams["lr"]))

    return SleepModule(hp)


def _constants(module: Any, batch: tuple[Any, Any], prefix: str) -> None:
    """The sleep task's metrics: its loss, and JaccardIndex and Recall both equal to `value`."""
    from torch import nn

    x, y = batch
    value = float(module.hparams["value"])
    n = len(x)
    module.log(f"{prefix}/loss", nn.functional.mse_loss(module.linear(x), y), on_epoch=True, batch_size=n)
    module.log(f"{prefix}/JaccardIndex", value, on_step=False, on_epoch=True, batch_size=n)
    module.log(f"{prefix}/Recall", value, on_step=False, on_epoch=True, batch_size=n)


def _datamodule(split: Split, fail_id: str) -> lightning.LightningDataModule:
    """One feature per sample (its index scaled), target its label; `setup` raises when `fail_id` is set."""
    import lightning
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    def dataset(ids: list[str]) -> TensorDataset:
        index = torch.tensor([float(sid[1:]) for sid in ids]).reshape(-1, 1)
        return TensorDataset(index / N_SAMPLES, (index % 2).float())

    class SleepDataModule(lightning.LightningDataModule):
        def setup(self, stage: str | None = None) -> None:
            if fail_id:
                raise RuntimeError(f"injected failure: sample {fail_id} in val")

        def train_dataloader(self) -> DataLoader:
            return DataLoader(dataset(split.train), batch_size=64, shuffle=False)

        def val_dataloader(self) -> DataLoader:
            return DataLoader(dataset(split.val), batch_size=64)

        def test_dataloader(self) -> DataLoader:
            return DataLoader(dataset(split.test), batch_size=64)

    return SleepDataModule()
