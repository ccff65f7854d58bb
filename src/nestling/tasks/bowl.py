"""A benchmark task for hyperparameter search: its validation score is a known smooth function of the
hyperparameters plus noise per fold and per seed, so a search's regret can be measured exactly.

    true(lr, width, depth) = 0.05 + 0.9 * exp(-(a^2 + b^2 + c^2) / 2),
        a = (log10(lr) + 2.5) / 0.75,  b = (width - 0.3) / 0.2,  c = (depth - 5) / 2.5
    observed(fold, seed) = true + fold_effect(fold) + noise(hparams, fold, seed)

The fold effect (sd FOLD_SD) is shared by every configuration, as a hard fold is hard for all of them; the rest
(sd RUN_SD) is drawn per run. The optimum is lr = 10^-2.5, width = 0.3, depth = 5 (true value 0.95). Training
only sleeps `sleep_s` per epoch, so a bench measures the search, not a model. `observed` is pure and importable
without torch: nestling.testing.bowl_workers simulates workers with it in-process.

Learning curves (for pruning between epochs): after e of E epochs a configuration has reached the fraction
(1 - exp(-e / tau)) / (1 - exp(-E / tau)) of its true value, tau = TAU_AT_OPTIMUM * 10^(-TAU_SLOPE (log10(lr) + 2.5))
epochs (8 at the optimum): a large learning rate starts fast and ends worse, the optimum and smaller rates start
slowly, so a pruner that trusts the first epochs alone loses the best configurations. The last epoch's value is
`observed` exactly, so a run of any length ends where a one-epoch run does.
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


TAU_AT_OPTIMUM = 8.0  # epochs to reach 63 % of the final value at the optimum's learning rate
TAU_SLOPE = 0.8  # tau falls tenfold per 1.25 decades of learning rate: large rates start fast, small ones slowly


def progress(hparams: dict[str, Any], epoch: float, max_epochs: int) -> float:
    """The fraction of its final value a configuration has reached after `epoch` of `max_epochs` epochs."""
    if epoch >= max_epochs:
        return 1.0
    if epoch <= 0:
        return 0.0
    tau = TAU_AT_OPTIMUM * 10 ** (-TAU_SLOPE * (math.log10(float(hparams["lr"])) + 2.5))
    return (1 - math.exp(-epoch / tau)) / (1 - math.exp(-max_epochs / tau))


def true_value_at(hparams: dict[str, Any], epoch: float, max_epochs: int) -> float:
    return true_value(hparams) * progress(hparams, epoch, max_epochs)


def _normal(*key: Any) -> float:
    digest = hashlib.sha256(repr(key).encode()).digest()
    return random.Random(digest).gauss(0.0, 1.0)


def observed(hparams: dict[str, Any], fold: int, seed: int) -> float:
    """The validation score of one run: true value + the fold's effect + the run's noise; kept above 0 (a zero
    score marks a run unstable)."""
    return observed_at(hparams, fold, seed, 1, 1)


def observed_at(hparams: dict[str, Any], fold: int, seed: int, epoch: float, max_epochs: int) -> float:
    """The validation score after `epoch` of `max_epochs` epochs: the learning curve plus the run's noise, which
    grows with the curve (a run that learnt nothing yet is not noisy)."""
    params = tuple(sorted((k, round(float(hparams[k]), 12)) for k in ("lr", "width", "depth")))
    noise = FOLD_SD * _normal("fold", fold) + RUN_SD * _normal("run", params, fold, seed)
    reached = progress(hparams, epoch, max_epochs)
    return min(1.0, max(1e-3, (true_value(hparams) + noise) * reached))


class BowlTask(SleepTask):
    """The sleep task's samples and loop; its validation metric is `observed` for this run."""

    def default_hparams(self) -> dict[str, Any]:
        return {"sleep_s": 0.0, "lr": 0.01, "width": 0.5, "depth": 3}

    def scoring_metrics(self) -> list[str]:
        return ["val/score"]

    def build_model(self, hparams: dict[str, Any]) -> lightning.LightningModule:
        return _module(resolve_hparams(self.default_hparams(), hparams, "bowl"), _log_score, count_epochs=True)

    def build_datamodule(self, hparams: dict[str, Any], split: Split) -> lightning.LightningDataModule:
        return _datamodule(split, "")


def _log_score(module: Any, batch: tuple[Any, Any], prefix: str) -> None:
    """`observed_at` for this run's fold (named by its first validation sample), seed and the epochs its weights
    trained (the module's `epochs_done`: a test of a checkpoint scores that checkpoint's epoch), as `{prefix}/score`."""
    x, _ = batch
    fold = int(round(float(x.min()) * N_SAMPLES))
    max_epochs = int(module.trainer.max_epochs or 1)
    value = observed_at(dict(module.hparams), fold, module.seed, int(module.epochs_done.item()), max_epochs)
    module.log(f"{prefix}/score", value, on_step=False, on_epoch=True, batch_size=len(x))
