"""A benchmark task for hyperparameter search: its validation score is a known smooth function of the
hyperparameters plus noise per fold and per seed, so a search's regret can be measured exactly.

    true(lr, width, depth) = 0.05 + 0.9 * exp(-(a^2 + b^2 + c^2) / 2),
        a = (log10(lr) + 2.5) / 0.75,  b = (width - 0.3) / 0.2,  c = (depth - 5) / 2.5
    observed(fold, seed) = true + fold_effect(fold) + noise(hparams, fold, seed)

The fold effect (sd FOLD_SD) is shared by every configuration, as a hard fold is hard for all of them; the rest
(sd RUN_SD) is drawn per run. The optimum is lr = 10^-2.5, width = 0.3, depth = 5 (true value 0.95). Training
only sleeps `sleep_s` per epoch, so a bench measures the search, not a model. `observed` is pure and importable
without torch: nestling.testing.bowl_workers simulates workers with it in-process.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import TYPE_CHECKING, Any

from nestling.core.ml.task import Split
from nestling.tasks.sleep import N_SAMPLES, SleepTask, _datamodule, _module
from nestling.tasks.synthetic import resolve_hparams

if TYPE_CHECKING:
    import lightning

FOLD_SD = 0.03
RUN_SD = 0.03
OPTIMUM = {"lr": 10**-2.5, "width": 0.3, "depth": 5}
SPACE = {  # the [hyperparameters] table the bench searches
    "lr": {"distribution": "loguniform", "low": 1e-5, "high": 1.0},
    "width": {"low": 0.0, "high": 1.0},
    "depth": {"low": 1, "high": 10},
}


def true_value(hparams: dict[str, Any]) -> float:
    a = (math.log10(float(hparams["lr"])) + 2.5) / 0.75
    b = (float(hparams["width"]) - 0.3) / 0.2
    c = (float(hparams["depth"]) - 5) / 2.5
    return 0.05 + 0.9 * math.exp(-(a * a + b * b + c * c) / 2)


def _normal(*key: Any) -> float:
    digest = hashlib.sha256(repr(key).encode()).digest()
    return random.Random(digest).gauss(0.0, 1.0)


def observed(hparams: dict[str, Any], fold: int, seed: int) -> float:
    """The validation score of one run: true value + the fold's effect + the run's noise; kept above 0 (a zero
    score marks a run unstable)."""
    params = tuple(sorted((k, round(float(hparams[k]), 12)) for k in ("lr", "width", "depth")))
    noise = FOLD_SD * _normal("fold", fold) + RUN_SD * _normal("run", params, fold, seed)
    return min(1.0, max(1e-3, true_value(hparams) + noise))


class BowlTask(SleepTask):
    """The sleep task's samples and loop; its validation metric is `observed` for this run."""

    def default_hparams(self) -> dict[str, Any]:
        return {"sleep_s": 0.0, "lr": 0.01, "width": 0.5, "depth": 3}

    def scoring_metrics(self) -> list[str]:
        return ["val/score"]

    def build_model(self, hparams: dict[str, Any]) -> lightning.LightningModule:
        return _module(resolve_hparams(self.default_hparams(), hparams, "bowl"), _log_score)

    def build_datamodule(self, hparams: dict[str, Any], split: Split) -> lightning.LightningDataModule:
        return _datamodule(split, "")


def _log_score(module: Any, batch: tuple[Any, Any], prefix: str) -> None:
    """`observed` for this run's fold (named by its first validation sample) and seed, as `{prefix}/score`."""
    x, _ = batch
    fold = int(round(float(x.min()) * N_SAMPLES))
    value = observed(dict(module.hparams), fold, module.seed)
    module.log(f"{prefix}/score", value, on_step=False, on_epoch=True, batch_size=len(x))
