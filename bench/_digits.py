"""The peer bench's task (issue 21): scikit-learn's bundled 8x8 digits (1,797 images, no download) and a small MLP.

Both sides of `bench/peer.py` train exactly this: nestling through `TASK` (a Task), the peer script
(`bench/_peer_script.py`) through `build_module` and `loaders` directly, as a user who wrote the model once would.
Everything lives in memory as tensors; an epoch is a few milliseconds of compute, so what is measured is what
each side does around the fits.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import polars as pl

from nestling.core.ml.task import Split, Task

if TYPE_CHECKING:
    import lightning
    import torch
    from torch.utils.data import DataLoader

N_SAMPLES = 1797
DEFAULTS: dict[str, Any] = {"lr": 0.01, "width": 64, "dropout": 0.1, "batch_size": 64}
SPACE: dict[str, dict[str, Any]] = {  # the tune's space: nestling's [hyperparameters] table and the peer's suggest_* calls
    "lr": {"distribution": "loguniform", "low": 1e-3, "high": 1e-1},
    "width": {"low": 16, "high": 128},
    "dropout": {"low": 0.0, "high": 0.5},
}


@lru_cache(maxsize=1)
def labels() -> list[int]:
    from sklearn.datasets import load_digits

    return [int(v) for v in load_digits().target]


@lru_cache(maxsize=1)
def tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """Images scaled to [0, 1] (64 features) and their labels, built once per process."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target, dtype=torch.long)


def loaders(
    train: list[int], val: list[int], test: list[int], batch_size: int
) -> tuple[DataLoader | None, DataLoader | None, DataLoader | None]:
    """DataLoaders over sample indices (train, val, test; None where empty)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = tensors()

    def subset(idx: list[int], shuffle: bool) -> DataLoader | None:
        if not idx:
            return None
        rows = torch.tensor(idx, dtype=torch.long)
        return DataLoader(TensorDataset(x[rows], y[rows]), batch_size=batch_size, shuffle=shuffle)

    return subset(train, True), subset(val, False), subset(test, False)


def build_module(hparams: dict[str, Any]) -> lightning.LightningModule:
    import lightning as L
    import torch
    from torch import nn

    hp = {**DEFAULTS, **hparams}

    class DigitsMLP(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters(hp)
            width = int(hp["width"])
            self.net = nn.Sequential(
                nn.Linear(64, width), nn.ReLU(), nn.Dropout(float(hp["dropout"])), nn.Linear(width, 10)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.cross_entropy(self(x), y)
            self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
            return loss

        def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], prefix: str) -> None:
            x, y = batch
            logits = self(x)
            self.log(f"{prefix}/loss", nn.functional.cross_entropy(logits, y), batch_size=len(x))
            self.log(f"{prefix}/acc", (logits.argmax(1) == y).float().mean(), batch_size=len(x))

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
            self._evaluate(batch, "val")

        def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
            self._evaluate(batch, "test")

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=float(hp["lr"]))

    return DigitsMLP()


class DigitsTask(Task):
    """8x8 digits, stratified by label; scored on val/acc."""

    def metadata(self) -> pl.DataFrame:
        return pl.DataFrame({"sample_id": [f"d{i:04d}" for i in range(N_SAMPLES)], "label": labels()})

    def default_hparams(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def scoring_metrics(self) -> list[str]:
        return ["val/acc"]

    def build_model(self, hparams: dict[str, Any]) -> lightning.LightningModule:
        return build_module(hparams)

    def build_datamodule(self, hparams: dict[str, Any], split: Split) -> lightning.LightningDataModule:
        import lightning as L

        def index(ids: list[str]) -> list[int]:
            return [int(sid[1:]) for sid in ids]

        train, val, test = loaders(
            index(split.train), index(split.val), index(split.test), int({**DEFAULTS, **hparams}["batch_size"])
        )

        class Digits(L.LightningDataModule):
            def train_dataloader(self) -> Any:
                return train if train is not None else []

            def val_dataloader(self) -> Any:
                return val if val is not None else []

            def test_dataloader(self) -> Any:
                return test if test is not None else []

        return Digits()


TASK = DigitsTask()
