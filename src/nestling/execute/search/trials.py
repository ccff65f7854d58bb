"""What the tree says about one trial (one cv of an adaptive tune): its state, its parameters, its value after each fold."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TrialState(StrEnum):
    """A trial's state, as Optuna's (`optuna.trial.TrialState`), with the strings the draw files and
    tune_infos.parquet's `state` column hold."""

    COMPLETE = "complete"  # every run has a result and the cv score is a number
    PRUNED = "pruned"  # marked pruned between folds: its later runs never start
    FAILED = "failed"  # every run has a result, no score
    PAUSED = "paused"  # --pruner asha|hyperband: waits at a rung for its promotion (read/collect.py's tables only)
    RUNNING = "running"  # drawn, not finished: a live or lost trial
    WAITING = "waiting"  # not drawn yet

    def is_finished(self) -> bool:
        """Finished trials never change (until a resume reopens them): each process reads them once."""
        return self in _FINISHED


_FINISHED = frozenset({TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED})


@dataclass
class Trial:
    """What the tree says about one trial (one cv)."""

    index: int
    params: dict[str, Any] | None  # the sampled hyperparameters; None while not drawn
    drawn_time: float | None
    state: TrialState
    values: dict[int, float] = field(default_factory=dict)  # folds done -> the cv score over those folds
    n_folds_done: int = 0
    fold_scores: dict[int, float] = field(default_factory=dict)  # step k -> fold k-1's own mean score (NaN: none usable)

    @property
    def score(self) -> float:
        return self.values.get(self.n_folds_done, math.nan) if self.n_folds_done else math.nan
