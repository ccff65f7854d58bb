"""Adaptive search whose study is the artifact tree: draw a trial's configuration when a worker starts it, and
stop (prune) a trial between folds.

There is no study database. What a sampler or a pruner needs is rebuilt from the tree of the tune:
  {tune}/_trials/{i}.json     trial i's drawn configuration; creating it (O_EXCL, empty) is the claim on the draw,
                              the content is written atomically right after (a reader sees empty or complete)
  {tune}/_trials/{i}.pruned   trial i was stopped after `step` folds, with its score so far
  run_result.json of each run the scores, fold by fold
A trial is COMPLETE (every run has a result and the cv score is a number), FAIL (every run has a result, no score),
PRUNED (marked), else RUNNING (drawn, not finished: a live or lost trial; the sampler treats it as running, so
concurrent workers are steered away from it, as Optuna's constant liar does). Finished and pruned trials never
change, so each process reads them once (`Study` caches them); a draw reads only the trials still running.

Intermediate score after k folds (the value a pruner sees at step k): the cv score computed exactly as the final
one (scoring.cv_score) over the runs of folds 0..k-1; the final cv score is the value at step n_folds.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling import naming
from nestling.artifacts import load_plan
from nestling.plan import Plan
from nestling.records import read_result, write_json
from nestling.scoring import cv_score, parse_scoring_metrics, run_score

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial

COMPLETE, PRUNED, FAILED, RUNNING, WAITING = "complete", "pruned", "failed", "running", "waiting"
FINAL = (COMPLETE, PRUNED, FAILED)
CLAIM_STALE_S = 60.0  # an empty draw file older than this: its drawer died between claim and write
MEDIAN_STARTUP_TRIALS = 5  # median pruning starts once this many trials are complete (Optuna's default)
HALVING_RATE = 3  # successive halving keeps the best 1/3 at folds 1, 3, 9, ... (rungs at step rate**r)


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


class Study:
    """The study of one tune, rebuilt from its tree; one per process and tune (`for_run_dir` caches them)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.paths = naming.TrialPaths(plan.root)
        tune = plan.options.get("tune", {})
        self.sampler: str = tune.get("sampler", "random")
        self.pruner: str = tune.get("pruner", "none")
        self.seed: int = int(tune.get("tune_seed", 0))
        self.scoring = parse_scoring_metrics(plan.options["cv"]["scoring_metric"])
        self.strategy: str = plan.options["cv"]["multi_score_strategy"]
        self.space: dict[str, BaseDistribution] | None = None
        if plan.space is not None:
            from nestling.space import from_json

            self.space = from_json(plan.space)
        # run dir name -> (trial, fold, first run of its fold in the trial)
        self.where: dict[str, tuple[int, int, bool]] = {}
        self.folds: list[list[list[Path]]] = []  # trial -> fold -> run dirs
        for i, cv in enumerate(plan.cvs):
            per_fold: list[list[Path]] = [[] for _ in range(plan.n_folds)]
            for run in cv.runs:
                self.where[run.dir.name] = (i, run.fold, not per_fold[run.fold])
                per_fold[run.fold].append(run.dir)
            self.folds.append(per_fold)
        self._final: dict[int, TrialState] = {}
        self._frozen: dict[int, FrozenTrial] = {}

    # -- reading the tree --------------------------------------------------------------------------------------

    def _draw_record(self, index: int) -> dict[str, Any] | None:
        if self.space is None:  # drawn up front: the plan holds the configuration, drawn in index order
            return {"params": self.plan.cvs[index].hparams, "drawn_time": float(index)}
        try:
            with open(self.paths.draw(index), "rb") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        return json.loads(text) if text.strip() else None

    def trial(self, index: int) -> TrialState:
        """Trial `index` as the tree says now (finished ones from the cache)."""
        if index in self._final:
            return self._final[index]
        record = self._draw_record(index)
        pruned = self.paths.pruned(index).exists()
        values: dict[int, float] = {}
        runs: list[tuple[float, bool, str]] = []
        done = 0
        for fold_dirs in self.folds[index]:
            fold_runs = []
            for d in fold_dirs:
                result = read_result(d)
                if result is None:
                    break
                score, unstable = run_score(result.get("metrics") or {}, self.scoring, self.strategy)
                fold_runs.append((score, unstable, str(result.get("status"))))
            if len(fold_runs) < len(fold_dirs) or not fold_dirs:
                break
            runs += fold_runs
            done += 1
            values[done] = cv_score(runs)[0]
        if pruned:
            state = PRUNED
        elif done == self.plan.n_folds:
            state = COMPLETE if math.isfinite(values[done]) else FAILED
        else:
            state = RUNNING if record is not None else WAITING
        trial = TrialState(
            index,
            None if record is None else dict(record["params"]),
            None if record is None else float(record.get("drawn_time", 0.0)),
            state,
            values,
            done,
        )
        if state in FINAL:
            self._final[index] = trial
        return trial

    def drawn_indices(self) -> list[int]:
        """Trials with a draw file (one listdir, not one stat per trial)."""
        if self.space is None:
            return list(range(len(self.plan.cvs)))
        try:
            names = os.listdir(self.paths.dir)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            stem, _, ext = name.partition(".")
            if ext == "json" and stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    def trials(self) -> list[TrialState]:
        return [self.trial(i) for i in self.drawn_indices()]

    # -- drawing -----------------------------------------------------------------------------------------------

    def ensure_drawn(self, index: int) -> dict[str, Any]:
        """Trial `index`'s configuration: drawn now unless a draw file exists (claim = its O_EXCL creation)."""
        assert self.space is not None
        path = self.paths.draw(index)
        while True:
            record = self._draw_record(index)
            if record is not None:
                return dict(record["params"])
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                continue
            except FileExistsError:  # another worker draws it: wait, or take over a claim its drawer left
                try:
                    if time.time() - path.stat().st_mtime > CLAIM_STALE_S and path.stat().st_size == 0:
                        path.unlink(missing_ok=True)
                except FileNotFoundError:
                    pass
                time.sleep(0.02)
                continue
            os.close(fd)
            try:
                params = self.ask(index)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            write_json(path, {"index": index, "params": params, "drawn_time": time.time(), "sampler": self.sampler})
            return params

    def ask(self, index: int) -> dict[str, Any]:
        """A configuration for trial `index` from every trial the tree holds now (the others' draws excluded
        from nothing: running ones are told to the sampler as running)."""
        import optuna

        from nestling.space import _plain

        assert self.space is not None
        frozen = [t for i in self.drawn_indices() if i != index and (t := self._frozen_trial(i)) is not None]
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate/constant_liar are "experimental" in optuna
            sampler = optuna.samplers.TPESampler(
                seed=(self.seed * 1_000_003 + index) % 2**32, multivariate=True, constant_liar=True
            )
            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.add_trials(frozen)
            asked = study.ask(dict(self.space))
        return {key: _plain(asked.params[key]) for key in self.space}

    def _frozen_trial(self, index: int) -> FrozenTrial | None:
        if index in self._frozen:
            return self._frozen[index]
        import optuna
        from optuna.trial import TrialState as OptunaState

        trial = self.trial(index)
        if trial.params is None:
            return None
        assert self.space is not None
        params = {k: trial.params[k] for k in self.space if k in trial.params}
        if len(params) != len(self.space):
            return None  # a draw from another space (should not happen): leave it out rather than fail the draw
        values = {k: v for k, v in trial.values.items() if math.isfinite(v)}
        state = {COMPLETE: OptunaState.COMPLETE, PRUNED: OptunaState.PRUNED, FAILED: OptunaState.FAIL}.get(
            trial.state, OptunaState.RUNNING
        )
        frozen = optuna.trial.create_trial(
            params=params,
            distributions=dict(self.space),
            value=trial.score if state == OptunaState.COMPLETE else None,
            intermediate_values=values,
            state=state,
        )
        if trial.state in FINAL:
            self._frozen[index] = frozen
        return frozen

    # -- pruning -----------------------------------------------------------------------------------------------

    def should_prune(self, index: int, step: int) -> bool:
        """Whether trial `index`, `step` folds done, stops here (the pruner's rule over the tree's trials)."""
        trial = self.trial(index)
        if self.pruner == "none" or step < 1 or trial.n_folds_done < step:
            return False
        value = trial.values[step]
        others = [t for t in self.trials() if t.index != index]
        if self.pruner == "median":
            return median_prunes(trial, step, [t for t in others if t.state == COMPLETE])
        return halving_prunes(value, step, [t.values[step] for t in others if step in t.values])

    def prune(self, index: int, step: int) -> None:
        trial = self.trial(index)
        write_json(self.paths.pruned(index), {"index": index, "step": step, "score": trial.values.get(step)})
        self._final.pop(index, None)

    def is_pruned(self, index: int) -> bool:
        return self.paths.pruned(index).exists()


def median_prunes(trial: TrialState, step: int, complete: list[TrialState]) -> bool:
    """Optuna's MedianPruner rule: after MEDIAN_STARTUP_TRIALS complete trials, stop a trial whose best score so
    far is below the median of the complete trials' scores at the same step."""
    if len(complete) < MEDIAN_STARTUP_TRIALS:
        return False
    best = max((v for s, v in trial.values.items() if s <= step), default=math.nan)
    if math.isnan(best):
        return True
    others = [t.values[step] for t in complete if step in t.values and math.isfinite(t.values[step])]
    return bool(others) and best < statistics.median(others)


def halving_prunes(value: float, step: int, competing: list[float], rate: int = HALVING_RATE) -> bool:
    """Asynchronous successive halving (Optuna's SuccessiveHalvingPruner with min_resource 1): at a rung
    (step = rate**r) a trial goes on only if its score is among the best 1/rate of every trial that reached the
    rung, itself included (the best one while fewer than `rate` did); between rungs it goes on."""
    rung = 1
    while rung < step:
        rung *= rate
    if rung != step:
        return False
    if math.isnan(value):
        return True
    ranked = sorted([v for v in competing if math.isfinite(v)] + [value], reverse=True)
    keep = max(1, len(ranked) // rate)
    return value < ranked[keep - 1]


_STUDIES: dict[str, Study | None] = {}


def for_run_dir(run_dir: Path, root: Path | None) -> Study | None:
    """The study of the tune a run dir belongs to, when it has one (adaptive sampler or a pruner); cached."""
    if root is None:
        return None
    key = str(root)
    if key not in _STUDIES:
        if not (root / naming.PLAN).is_file():
            return None
        plan = load_plan(root)
        tune = plan.options.get("tune", {})
        active = plan.kind == "tune" and (plan.adaptive or tune.get("pruner", "none") != "none")
        _STUDIES[key] = Study(plan) if active else None
    return _STUDIES[key]


def before_run(run_dir: Path, root: Path | None) -> bool:
    """Called by the worker before a run starts: draws the trial's configuration if it has none yet (adaptive
    search), and says whether the run may start (False: its trial was pruned, now or earlier)."""
    study = for_run_dir(Path(run_dir), root)
    if study is None:
        return True
    located = study.where.get(Path(run_dir).name)
    if located is None:
        return True
    index, fold, first = located
    if study.pruner != "none":
        if study.is_pruned(index):
            return False
        if fold >= 1 and first and study.should_prune(index, fold):
            study.prune(index, fold)
            return False
    if study.space is not None:
        study.ensure_drawn(index)
    return True


def pruned_trials(root: Path) -> set[int]:
    """The trials of a tune marked pruned (one listdir)."""
    try:
        names = os.listdir(naming.TrialPaths(root).dir)
    except FileNotFoundError:
        return set()
    return {int(n.split(".")[0]) for n in names if n.endswith(".pruned") and n.split(".")[0].isdigit()}


def forget_unwritten_draws(root: Path) -> None:
    """Remove draw claims whose drawer died before writing the configuration (resume: nothing runs now)."""
    trials = naming.TrialPaths(root).dir
    try:
        names = os.listdir(trials)
    except FileNotFoundError:
        return
    for name in names:
        path = trials / name
        if name.endswith(".json") and path.stat().st_size == 0:
            path.unlink(missing_ok=True)
