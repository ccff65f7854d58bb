"""What the tree says about one trial (one cv of an adaptive tune): its state, its parameters, its value after each fold."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

COMPLETE = "complete"
PRUNED = "pruned"
FAILED = "failed"
RUNNING = "running"
WAITING = "waiting"
FINAL = (COMPLETE, PRUNED, FAILED)


@dataclass
class TrialState:
    """What the tree says about one trial (one cv)."""

    index: int
    params: dict[str, Any] | None  # the sampled hyperparameters; None while not drawn
    drawn_time: float | None
    state: str
    values: dict[int, float] = field(default_factory=dict)  # folds done -> the cv score over those folds
    n_folds_done: int = 0

    @property
    def score(self) -> float:
        return self.values.get(self.n_folds_done, math.nan) if self.n_folds_done else math.nan
