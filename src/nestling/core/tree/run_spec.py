"""run_spec.json: everything a worker needs to train one run, fixed before anything executes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to train one run, fixed before anything executes."""

    run_name: str
    run_id: str
    run_dir: str
    cv_name: str | None
    tune_name: str | None
    fold: int
    seed: int
    hparams: dict[str, Any]
    task: str
    splits_file: str
    max_epochs: int
    early_stopping_patience: int
    scoring_metric: list[str]
    multi_score_strategy: str
    accelerator: str
    strategy: str
    devices: Any
    num_nodes: int
    wandb_project: str | None = None
    wandb_entity: str | None = None
    wandb_mode: str = "auto"  # --wandb_mode; specs written before it existed load as "auto"
    score_epoch: str = "last"  # "best": the run's val metrics are those of its best checkpoint (--score_epoch)
    retrain: bool = False  # train on the split's train samples without validating; test the final weights
    trial: int | None = None  # adaptive search: hparams are completed from this trial's draw file at start
    # A tune's runs only select a configuration (on val): no test pass after fit and no best.ckpt, unless
    # --score_epoch best needs it; a cv, a single run and a retrain are evaluations and keep both (issue 21).
    test: bool = True  # test on the split's test samples after fit (when it has some and the module tests)
    keep_best: bool = True  # keep best.ckpt of the first scoring metric besides last.ckpt
    code: str | None = None  # the plan's code snapshot dir (_code/{key}) the task is imported from; None: as installed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Unknown keys are dropped: specs written by older versions (with `attempt` or `extra`) still load."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
