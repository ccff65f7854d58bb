"""What the readers of a plan need from its options, as a frozen typed view: `Plan.settings`.

plan.json keeps the whole configuration (`Plan.options`, Config.to_dict: resume and provenance read it back with
simple-parsing). The collector, the cv tables, status, the report and the study need a dozen of its values; they read
them here instead of walking the dict by string path. A key an older plan.json lacks reads as the option's default,
and these defaults are Config's (a unit test keeps them equal): the one place a reader's fallback is written.
Light on purpose: `nestling status` and `nestling collect` import it, so it imports no simple-parsing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from nestling.core.errors import UsageError
from nestling.core.ml.scoring import ScoringMetric, parse_scoring_metrics
from nestling.core.options.choices import FoldMethod, MultiScoreStrategy, Pruner, Sampler, Select


def _first(choices: Any) -> Any:
    """An option's default: the first of its choices (core/options/choices.py)."""
    return get_args(choices)[0]


@dataclass(frozen=True)
class PlanSettings:
    """The options a plan's readers use. scoring_metric is the effective list (preflight plans the task's default)."""

    task: str = "synthetic-segmentation"
    n_folds: int = 5
    fold_method: FoldMethod = _first(FoldMethod)
    max_epochs: int = 10
    scoring_metric: tuple[str, ...] = ()
    multi_score_strategy: MultiScoreStrategy = _first(MultiScoreStrategy)
    sampler: Sampler = _first(Sampler)
    pruner: Pruner = _first(Pruner)
    select: Select = _first(Select)
    tune_seed: int = 0
    reduction_factor: int = 3  # --pruner asha|hyperband: eta (execute/search/rungs.py)
    min_epochs: int = 1  # --pruner asha|hyperband: the first rung
    hpconfig: str | None = None  # the tune's space file (else the --config file's table)
    config_file: str | None = None
    wandb_project: str | None = None
    keep_checkpoints: str = "all"  # a tune's --keep_checkpoints (execute/checkpoint_keeping.py)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PlanSettings:
        """From plan.json's `options` (Config.to_dict's groups); missing groups and keys take the defaults."""
        data, training, cv = options.get("data") or {}, options.get("training") or {}, options.get("cv") or {}
        tune, logging = options.get("tune") or {}, options.get("logging") or {}
        metrics = cv.get("scoring_metric") or ()
        given: dict[str, Any] = {
            "task": data.get("task"), "n_folds": data.get("n_folds"), "fold_method": data.get("fold_method"),
            "max_epochs": training.get("max_epochs"),
            "scoring_metric": (metrics,) if isinstance(metrics, str) else tuple(metrics),
            "multi_score_strategy": cv.get("multi_score_strategy"), "sampler": tune.get("sampler"),
            "pruner": tune.get("pruner"), "select": tune.get("select"), "tune_seed": tune.get("tune_seed"),
            "reduction_factor": tune.get("reduction_factor"), "min_epochs": tune.get("min_epochs"),
            "hpconfig": tune.get("hpconfig"), "config_file": options.get("config_file"),
            "wandb_project": logging.get("wandb_project"), "keep_checkpoints": logging.get("keep_checkpoints"),
        }  # fmt: skip
        return cls(**{key: value for key, value in given.items() if value is not None})

    def scoring(self) -> list[ScoringMetric]:
        """The scoring metrics, parsed (a UsageError for a list that cannot score, as when the plan was made)."""
        return parse_scoring_metrics(self.scoring_metric)


def checkpoints_to_keep(value: str) -> int | None:
    """--keep_checkpoints: all -> None (keep every checkpoint), none -> 0, K -> K trials; else a UsageError."""
    text = str(value).strip().lower()
    if text == "all":
        return None
    if text == "none":
        return 0
    try:
        k = int(text)
    except ValueError:
        k = -1
    if k < 0:
        raise UsageError(
            f"--keep_checkpoints {value!r} is not all, none or a number of trials; e.g. --keep_checkpoints 3"
        )
    return k
