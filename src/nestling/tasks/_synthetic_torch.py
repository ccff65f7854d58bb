"""The torch half of the synthetic task, imported only when a model or datamodule is built."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import lightning
import torch
import torchmetrics
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

if TYPE_CHECKING:
    from nestling.task import Split
    from nestling.tasks.synthetic import SyntheticSegmentation

METRIC_NAMES = ("JaccardIndex", "Recall", "Precision", "F1Score")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyUNet(nn.Module):
    """`depth` resolution levels; each level down doubles the channels, each level up concatenates its skip."""

    def __init__(self, base_channels: int, depth: int) -> None:
        super().__init__()
        chans = [base_channels * 2**i for i in range(depth)]
        self.down = nn.ModuleList(
            _block(c_in, c_out) for c_in, c_out in zip([1, *chans[:-1]], chans, strict=True)
        )
        self.up = nn.ModuleList(nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in reversed(chans[1:]))
        self.dec = nn.ModuleList(_block(c, c // 2) for c in reversed(chans[1:]))
        self.head = nn.Conv2d(chans[0], 1, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def _metrics() -> nn.ModuleDict:
    return nn.ModuleDict(
        {
            "JaccardIndex": torchmetrics.classification.BinaryJaccardIndex(),
            "Recall": torchmetrics.classification.BinaryRecall(),
            "Precision": torchmetrics.classification.BinaryPrecision(),
            "F1Score": torchmetrics.classification.BinaryF1Score(),
        }
    )


class SegmentationModule(lightning.LightningModule):
    """TinyUNet + BCE; logs epoch-level `train/loss`, `val/*` and `test/*` under the names the scorer expects."""

    def __init__(self, hparams: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters(dict(hparams))
        self.net = TinyUNet(int(hparams["base_channels"]), int(hparams["depth"]))
        self.loss = nn.BCEWithLogitsLoss()
        self.val_metrics = _metrics()
        self.test_metrics = _metrics()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def _eval_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], prefix: str, metrics: nn.ModuleDict
    ) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{prefix}/loss", self.loss(logits, y), on_step=False, on_epoch=True, batch_size=len(x))
        probs, target = torch.sigmoid(logits), y.int()
        for name, module in metrics.items():
            metric = cast(torchmetrics.Metric, module)  # ModuleDict items are typed as plain Modules
            metric.update(probs, target)
            self.log(f"{prefix}/{name}", metric, on_step=False, on_epoch=True, batch_size=len(x))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_metrics)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=float(self.hparams["lr"]))


class ArrayDataModule(lightning.LightningDataModule):
    """In-memory tensors for one split; an empty test list gives a loader with no batches."""

    def __init__(self, task: SyntheticSegmentation, split: Split, batch_size: int) -> None:
        super().__init__()
        self.task = task
        self.split = split
        self.batch_size = batch_size
        self.datasets: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        for part in ("train", "val", "test"):
            if part not in self.datasets:
                images, masks = self.task.arrays(getattr(self.split, part))
                self.datasets[part] = TensorDataset(torch.from_numpy(images), torch.from_numpy(masks))

    def _loader(self, part: str, shuffle: bool = False) -> DataLoader:
        if part not in self.datasets:
            self.setup()
        # Seeded from torch's global seed (set per run by seed_everything), so a run's seed controls the order.
        generator = torch.Generator().manual_seed(torch.initial_seed()) if shuffle else None
        return DataLoader(
            self.datasets[part],
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
