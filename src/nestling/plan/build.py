"""Tune / cv / run / retrain -> a Plan. Pure: the functions here return data and touch nothing; inputs (task
metadata, folds, trials) come from preflight.py."""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nestling.core.tree import naming
from nestling.plan.model import CvPlan, Plan, PlannedRun

if TYPE_CHECKING:  # config (simple-parsing) is imported where a plan is made or derived, not where one is read
    from nestling.core.options.config import Config

DEFAULT_SEEDS = (42, 21, 69)


def seeds_for(n_seeds: int, explicit: list[int]) -> list[int]:
    """Explicit seeds, else 42, 21, 69, then more drawn reproducibly."""
    if explicit:
        return list(explicit)
    seeds = list(DEFAULT_SEEDS[:n_seeds])
    rng = random.Random(0)
    while len(seeds) < n_seeds:
        s = rng.randrange(1, 100_000)
        if s not in seeds:
            seeds.append(s)
    return seeds


def plan_cv(
    config: Config,
    *,
    artifact_dir: Path,
    cv_name: str,
    hparams: dict[str, Any],
    tune_name: str | None = None,
    hp_index: int | None = None,
    n_folds: int,
    rng: random.Random | None = None,
) -> CvPlan:
    """One run per (fold, seed), folds outer, seeds inner."""
    cv_dir = naming.cv_dir(artifact_dir, cv_name, tune_name)
    runs = _runs(cv_dir, cv_name, range(n_folds), seeds_for(config.cv.n_seeds, config.cv.seeds), rng)
    return CvPlan(cv_name=cv_name, hp_index=hp_index, hparams=hparams, dir=cv_dir, runs=runs)


def _runs(
    cv_dir: Path, cv_name: str, folds: Iterable[int], seeds: list[int], rng: random.Random | None
) -> list[PlannedRun]:
    """The runs of a cv: one per (fold, seed), folds outer, seeds inner, each with a fresh run id."""
    runs = []
    for fold in folds:
        for seed in seeds:
            run_name = naming.run_name_for(cv_name, fold, seed)
            run_id = naming.new_run_id(rng)
            runs.append(PlannedRun(run_name, run_id, fold, seed, naming.run_dir_in(cv_dir, run_name, run_id)))
    return runs


def plan_tune(
    config: Config,
    *,
    name: str,
    trials: list[dict[str, Any]],
    n_folds: int,
    rng: random.Random | None = None,
    space: dict[str, str] | None = None,
) -> Plan:
    """`space` (distribution JSON) makes the tune adaptive: `trials` then hold only the fixed hparams."""
    artifact_dir = Path(config.logging.artifact_dir)
    cvs = [
        plan_cv(
            config,
            artifact_dir=artifact_dir,
            cv_name=naming.cv_name_for(name, index),
            hparams=hparams,
            n_folds=n_folds,
            tune_name=name,
            hp_index=index,
            rng=rng,
        )
        for index, hparams in enumerate(trials)
    ]
    return Plan("tune", name, naming.tune_dir(artifact_dir, name), cvs, n_folds, config.to_dict(), space)


def plan_untuned(
    kind: Literal["cv", "run"],
    config: Config,
    *,
    name: str,
    hparams: dict[str, Any],
    n_folds: int,
    rng: random.Random | None = None,
) -> Plan:
    """One hyperparameter set: a cv (every fold x seed) or a single run (fold --fold, the first seed)."""
    artifact_dir = Path(config.logging.artifact_dir)
    if kind == "cv":
        cv = plan_cv(config, artifact_dir=artifact_dir, cv_name=name, hparams=hparams, n_folds=n_folds, rng=rng)
        return Plan("cv", name, cv.dir, [cv], n_folds, config.to_dict())
    run_id = naming.new_run_id(rng)
    root = naming.run_dir(artifact_dir, name, run_id)
    run = PlannedRun(name, run_id, config.training.fold, seeds_for(1, config.cv.seeds)[0], root)
    single = CvPlan(cv_name=None, hp_index=None, hparams=hparams, dir=root, runs=[run])
    return Plan("run", name, root, [single], n_folds, config.to_dict())


def plan_retrain(
    config: Config,
    *,
    tune_root: Path,
    tune_name: str,
    hparams: dict[str, Any],
    hp_index: int | None,
    rng: random.Random | None = None,
) -> Plan:
    """A tune's retrain: one cv named `{tune}-final` inside the tune dir, one split (train + val / test), one run
    per seed of `config` (whose max_epochs is the retrain's epoch count)."""
    name = naming.final_name(tune_name)
    root = naming.final_dir(tune_root, tune_name)
    runs = _runs(root, name, [0], seeds_for(config.cv.n_seeds, config.cv.seeds), rng)
    cv = CvPlan(cv_name=name, hp_index=hp_index, hparams=hparams, dir=root, runs=runs)
    return Plan("retrain", name, root, [cv], 1, config.to_dict())

