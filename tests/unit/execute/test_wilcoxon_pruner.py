"""--pruner wilcoxon (issue 25 #3): Optuna's WilcoxonPruner rule over folds, as a pure function, checked decision
by decision against Optuna's own pruner; then through the real study of a serial tune (bowl workers simulated)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import optuna

from nestling.execute.search import pruners, study
from nestling.execute.search.trials import Trial, TrialState
from nestling.plan.store import load_plan
from nestling.plan.units import run_dirs_per_cv, work_units
from nestling.testing.bowl_workers import plan_bowl_tune, simulate_unit


def _trial(index: int, fold_scores: list[float], state: TrialState = TrialState.RUNNING) -> Trial:
    scores = {k: v for k, v in enumerate(fold_scores, 1)}
    values = {k: sum(fold_scores[:k]) / k for k in scores}
    return Trial(index, {}, 0.0, state, values, len(fold_scores), scores)


def _optuna_prunes(current: list[float], best: list[float], others: list[list[float]]) -> bool:
    """Optuna's WilcoxonPruner (its defaults) on a study whose trials have these fold scores as intermediate values."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    s = optuna.create_study(direction="maximize")
    for values in [best, *others]:
        s.add_trial(optuna.trial.create_trial(value=sum(values) / len(values), state=optuna.trial.TrialState.COMPLETE,
                                              intermediate_values=dict(enumerate(values, 1))))  # fmt: skip
    frozen = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                       intermediate_values=dict(enumerate(current, 1)))  # fmt: skip
    with _quiet():
        return bool(optuna.pruners.WilcoxonPruner().prune(s, frozen))


class _quiet:
    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: object) -> None:
        self._w.__exit__(*exc)


def test_the_rule_decides_as_optunas_wilcoxon_pruner() -> None:
    rng = random.Random(0)
    decided = {True: 0, False: 0}
    for case in range(300):
        n_folds = rng.choice([3, 5, 6, 8, 10])
        best = [0.7 + rng.gauss(0, 0.05) for _ in range(n_folds)]
        worse = [
            0.75 + rng.gauss(0, 0.05) for _ in range(n_folds)
        ]  # not the best: lower mean than `best`? maybe
        if sum(worse) > sum(best):
            best, worse = worse, best
        shift = rng.choice([0.0, 0.02, 0.05, 0.15])
        step = rng.randint(1, n_folds - 1)
        current = [v - shift + rng.gauss(0, 0.03) for v in best[:step]]
        expected = _optuna_prunes(current, best, [worse])
        mine = pruners.prunes("wilcoxon", _trial(9, current), step,
                              [_trial(0, best, TrialState.COMPLETE), _trial(1, worse, TrialState.COMPLETE)])  # fmt: skip
        assert mine == expected, (case, current, best)
        decided[mine] += 1
    assert decided[True] > 20 and decided[False] > 20  # both outcomes were exercised


def test_no_test_before_two_paired_folds_nor_with_a_nan_fold() -> None:
    best = _trial(0, [0.9, 0.9, 0.9, 0.9, 0.9], TrialState.COMPLETE)
    assert not pruners.wilcoxon_prunes(_trial(1, [0.1]), 1, best)
    assert not pruners.wilcoxon_prunes(_trial(1, [0.1, math.nan, 0.1, 0.1]), 4, best)
    assert pruners.wilcoxon_prunes(_trial(1, [0.1, 0.1, 0.1, 0.1]), 4, best)  # p = 1/16 < 0.1
    assert not pruners.wilcoxon_prunes(
        _trial(1, [0.1, 0.1, 0.1]), 3, best
    )  # p = 1/8: three folds never prune
    assert not pruners.wilcoxon_prunes(_trial(1, [0.1, 0.1, 0.1, 0.1]), 4, None)  # no complete trial yet


def test_a_serial_tune_with_the_wilcoxon_pruner_stops_trials_worse_than_the_best_on_paired_folds(
    tmp_path: Path,
) -> None:
    root = plan_bowl_tune(tmp_path, "w", "--sampler", "random", "--pruner", "wilcoxon", "--tune_seed", "3",
                          n_trials=16, n_folds=6)  # fmt: skip
    plan = load_plan(root)
    for unit in work_units(run_dirs_per_cv(plan), "serial"):
        simulate_unit(unit.run_dirs)
    study._STUDIES.clear()
    tune = study.Study(plan)
    trials = tune.trials()
    pruned = [t for t in trials if t.state is TrialState.PRUNED]
    assert pruned and all(t.n_folds_done in (4, 5) for t in pruned)  # p < 0.1 needs four paired folds
    for t in pruned:  # each was worse than the best complete trial among those before it, on the same folds
        before = [o for o in trials if o.index < t.index]
        best = pruners.best_complete(before)
        assert best is not None
        assert pruners.wilcoxon_prunes(t, t.n_folds_done, best)
        assert t.values[t.n_folds_done] < best.score
    assert any(t.state is TrialState.COMPLETE for t in trials)
