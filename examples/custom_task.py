"""A custom nestling Task: binary classification of generated tabular data, with regions.

Run it from the repository root (the task is found through PYTHONPATH):

    PYTHONPATH=examples nestling cv --config examples/custom.toml
    PYTHONPATH=examples nestling tune --config examples/custom.toml --n_trials 4

This file imports only numpy and polars: nestling loads it in the CLI process to read the metadata and plan the
folds, so it must stay cheap. The torch half (model, datamodule) is in `custom_model.py`, imported inside
`build_model` / `build_datamodule`, which only run in the worker processes that train.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from nestling.task import Split, Task

if TYPE_CHECKING:  # for type hints only; no torch import at run time here
    import lightning


class TabularTask(Task):
    """`n_samples` points with `n_features` features in `n_regions` regions.

    The label is a noisy linear rule plus a per-region offset, so regions differ in their share of positives
    (which is what `region-stratified` folds have to balance) and in how their features are shifted.
    """

    def __init__(self, n_samples: int = 300, n_features: int = 8, n_regions: int = 6, seed: int = 0) -> None:
        self.n_samples = n_samples
        self.n_features = n_features
        self.n_regions = n_regions
        self.seed = seed

    @cached_property
    def _data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features float32 [n, f], labels int64 [n], region index [n]); same seed, same data in every process."""
        rng = np.random.default_rng(self.seed)
        region = np.arange(self.n_samples) % self.n_regions
        shift = rng.normal(0.0, 0.5, size=(self.n_regions, self.n_features))
        offset = np.linspace(-1.0, 1.0, self.n_regions)  # region a: few positives ... last region: many
        x = rng.normal(size=(self.n_samples, self.n_features)) + shift[region]
        w = rng.normal(size=self.n_features)
        logit = x @ w / np.sqrt(self.n_features) + offset[region] + rng.normal(0.0, 0.3, self.n_samples)
        y = (logit > 0).astype(np.int64)
        return x.astype(np.float32), y, region

    def _ids(self) -> list[str]:
        return [f"t{i:04d}" for i in range(self.n_samples)]

    # -- the four Task methods ---------------------------------------------------------------------------------

    def metadata(self) -> pl.DataFrame:
        """One row per sample: the id, its region (for region folds / region test split), its label (stratification)."""
        _, y, region = self._data
        return pl.DataFrame(
            {
                "sample_id": self._ids(),
                "region": [f"region-{chr(ord('a') + r)}" for r in region],
                "label": y.tolist(),
            }
        )

    def default_hparams(self) -> dict[str, Any]:
        """Every hyperparameter the task accepts; --hp, [hparams] and the tune space may only use these keys."""
        return {"lr": 0.01, "hidden": 32, "dropout": 0.1, "batch_size": 32}

    def build_model(self, hparams: dict[str, Any]) -> lightning.LightningModule:
        from custom_model import TabularMLP  # torch loads here, in the worker

        return TabularMLP(n_features=self.n_features, **{k: hparams[k] for k in ("lr", "hidden", "dropout")})

    def build_datamodule(self, hparams: dict[str, Any], split: Split) -> lightning.LightningDataModule:
        from custom_model import TabularData

        x, y, _ = self._data
        row = {sid: i for i, sid in enumerate(self._ids())}

        def rows(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
            index = np.array([row[s] for s in ids], dtype=np.int64)
            return x[index], y[index]

        return TabularData(
            train=rows(split.train),
            val=rows(split.val),
            test=rows(split.test),
            batch_size=int(hparams["batch_size"]),
        )


def small_task() -> TabularTask:
    """A zero-argument factory: `--task custom_task:small_task` (a class or an instance work too)."""
    return TabularTask(n_samples=120, n_regions=4)
