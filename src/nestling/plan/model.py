"""The one plan model: a tune, cv or single run fixed up front (every run's name, id, directory, fold, seed and
hyperparameters), and the work units launchers execute. `store.write_plan` and `store.load_plan` put it on disk and
give the same value back."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.provenance.record import Provenance
from nestling.plan.settings import PlanSettings

if TYPE_CHECKING:  # config (simple-parsing) is imported where a plan is made or derived, not where one is read
    from nestling.core.options.config import Config


@dataclass(frozen=True)
class PlannedRun:
    """One run's identity and place in the tree; its full RunSpec is derived by `plan.run_specs`."""

    run_name: str
    run_id: str
    fold: int
    seed: int
    dir: Path


@dataclass(frozen=True)
class CvPlan:
    cv_name: str | None  # None for a single run
    hp_index: int | None
    hparams: dict[str, Any]
    dir: Path
    runs: list[PlannedRun]


@dataclass(frozen=True)
class Plan:
    """A tune, cv or single run, fixed up front: the one plan model. `artifacts.write_plan` and
    `artifacts.load_plan` put it on disk and give the same value back; the launchers run it, resume, status and the
    collector read it back from plan.json. Its runs' full RunSpecs come from `run_specs`.
    """

    kind: str  # "tune" | "cv" | "run" | "retrain" (a tune's selected configuration on train + val, tested)
    name: str
    root: Path  # tune dir, cv dir, or the run dir of a single run
    cvs: list[CvPlan]
    n_folds: int
    options: dict[str, Any]  # the configuration that made this plan (Config.to_dict), for resume and provenance
    # adaptive search (--sampler tpe): the space as optuna distribution JSON; each cv's sampled hparams are drawn
    # when a worker starts it (study.py), so its CvPlan holds only the fixed ones. None: drawn up front.
    space: dict[str, str] | None = None
    # what the plan was made from: its code snapshot, the environment, the data digest (None: an older plan)
    provenance: Provenance | None = None

    @cached_property
    def settings(self) -> PlanSettings:
        """The options its readers use, typed, with the defaults for keys an older plan.json lacks (built once)."""
        return PlanSettings.from_options(self.options)

    @property
    def adaptive(self) -> bool:
        return self.space is not None

    @property
    def runs(self) -> list[PlannedRun]:
        return [run for cv in self.cvs for run in cv.runs]


@dataclass(frozen=True)
class WorkUnit:
    """Runs executed in series by one worker (one array task on SLURM)."""

    index: int
    run_dirs: list[str]


@dataclass(frozen=True)
class LaunchRequest:
    """A plan on disk and what to launch of it: its work units (every run, or a resume's reruns), the options they
    run with, how many runs they hold, and the fields a resume adds to launch.json. The same request is launched
    here or, detached, handed to the supervisor (commands/detach.py)."""

    kind: str
    name: str
    root: Path
    units: list[WorkUnit]
    config: Config
    total: int
    record: dict[str, Any] = field(default_factory=dict)
