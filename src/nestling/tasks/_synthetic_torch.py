"""The torch half of the synthetic task, imported only when a model or datamodule is built."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import lightning
import torch
import torchmetrics
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

if TYPE_CHECKING:
    from nestling.core.ml.task import Split
    from nestling.tasks.synthetic import SyntheticSegmentation

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


_TENSORS: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}


def task_tensors(task: SyntheticSegmentation, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample's (images, masks) as tensors on `device`, made once per process and device: a worker's runs
    share them, and on a GPU no batch crosses the bus."""
    key = (task.seed, task.n_samples, task.image_size, task.n_regions, str(device))
    if key not in _TENSORS:
        images, masks = task.images_and_masks
        _TENSORS[key] = (torch.from_numpy(images).to(device), torch.from_numpy(masks).to(device))
    return _TENSORS[key]


class TensorBatches:
    """Batches sliced out of tensors where they live: one indexing operation per batch, instead of a Python call
    and a collate per sample (which kept a GPU idle, issue 15 #3). The shuffle order comes from torch's global seed
    (set per run by seed_everything), as a seeded DataLoader's would."""

    def __init__(
        self, images: torch.Tensor, masks: torch.Tensor, rows: torch.Tensor, batch_size: int, shuffle: bool
    ) -> None:
        self.images, self.masks, self.rows = images, masks, rows.to(images.device)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(torch.initial_seed()) if shuffle else None

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rows = self.rows
        if self.generator is not None:
            rows = rows[torch.randperm(len(rows), generator=self.generator).to(rows.device)]
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            yield self.images[batch], self.masks[batch]


class ArrayDataModule(lightning.LightningDataModule):
    """One split of the task's tensors; an empty test list gives a loader with no batches.

    On one device the batches are sliced from tensors kept on that device (TensorBatches); a run spread over
    several devices gets plain DataLoaders, so that Lightning can shard them with its distributed sampler."""

    def __init__(self, task: SyntheticSegmentation, split: Split, batch_size: int) -> None:
        super().__init__()
        self.task = task
        self.split = split
        self.batch_size = batch_size
        self.rows: dict[str, torch.Tensor] = {}
        self.device = torch.device("cpu")
        self.sharded = False

    def setup(self, stage: str | None = None) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self.device = trainer.strategy.root_device
            self.sharded = trainer.world_size > 1
        for part in ("train", "val", "test"):
            if part not in self.rows:
                self.rows[part] = torch.from_numpy(self.task.indices(getattr(self.split, part)))

    def _loader(self, part: str, shuffle: bool = False) -> TensorBatches | DataLoader:
        if part not in self.rows:
            self.setup()
        if self.sharded:
            images, masks = task_tensors(self.task, torch.device("cpu"))
            rows = self.rows[part]
            generator = torch.Generator().manual_seed(torch.initial_seed()) if shuffle else None
            return DataLoader(TensorDataset(images[rows], masks[rows]), batch_size=self.batch_size,
                              shuffle=shuffle, generator=generator, num_workers=0)  # fmt: skip
        images, masks = task_tensors(self.task, self.device)
        return TensorBatches(images, masks, self.rows[part], self.batch_size, shuffle)

    def train_dataloader(self) -> TensorBatches | DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches | DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> TensorBatches | DataLoader:
        return self._loader("test")
