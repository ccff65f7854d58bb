"""The torch half of the custom task example: a tiny MLP and an in-memory datamodule.

Imported only by `TabularTask.build_model` / `build_datamodule`, i.e. in the worker processes that train.
"""

from __future__ import annotations

import lightning
import numpy as np
import torch
import torchmetrics
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TabularMLP(lightning.LightningModule):
    """Linear -> ReLU -> Dropout -> Linear, binary cross-entropy on one logit.

    Logs `train/loss`, `val/loss`, `val/F1Score`, `val/Recall`, `val/Precision` (and `test/*` when the cv has a test
    split): nestling reads them from `trainer.callback_metrics` and scores with `--scoring_metric` names.
    """

    def __init__(self, n_features: int, lr: float, hidden: int, dropout: float) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(n_features, int(hidden)),
            nn.ReLU(),
            nn.Dropout(float(dropout)),
            nn.Linear(int(hidden), 1),
        )
        self.loss = nn.BCEWithLogitsLoss()
        metrics = {
            "F1Score": torchmetrics.classification.BinaryF1Score,
            "Recall": torchmetrics.classification.BinaryRecall,
            "Precision": torchmetrics.classification.BinaryPrecision,
        }
        self.val_metrics = nn.ModuleDict({k: m() for k, m in metrics.items()})
        self.test_metrics = nn.ModuleDict({k: m() for k, m in metrics.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self(x), y.float())
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def _evaluate(
        self, batch: tuple[torch.Tensor, torch.Tensor], prefix: str, metrics: nn.ModuleDict
    ) -> None:
        x, y = batch
        logits = self(x)
        self.log(
            f"{prefix}/loss", self.loss(logits, y.float()), on_step=False, on_epoch=True, batch_size=len(x)
        )
        for name, metric in metrics.items():
            metric.update(torch.sigmoid(logits), y)
            self.log(f"{prefix}/{name}", metric, on_step=False, on_epoch=True, batch_size=len(x))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=float(self.hparams.lr))


class TabularData(lightning.LightningDataModule):
    """(features, labels) arrays per part of the split, served as tensors."""

    def __init__(
        self,
        train: tuple[np.ndarray, np.ndarray],
        val: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
        batch_size: int,
    ) -> None:
        super().__init__()
        self.parts = {"train": train, "val": val, "test": test}
        self.batch_size = batch_size

    def _loader(self, part: str, shuffle: bool = False) -> DataLoader:
        x, y = self.parts[part]
        dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        # shuffling follows the run's seed: nestling calls seed_everything(seed) before building anything
        generator = torch.Generator().manual_seed(torch.initial_seed()) if shuffle else None
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, generator=generator)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
