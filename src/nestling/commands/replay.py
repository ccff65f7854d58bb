"""`nestling replay TUNE_DIR --pruner P`: re-decide a finished tune offline under another pruner, with no training.

The tune's recorded results are replayed in their recorded order (draw order; within a trial, fold by fold): before
fold k of each trial, P is asked exactly what the study asks it during a tune (`pruners.prunes`, the one dispatch),
with the trials before it as P would have left them. The answer says which runs P would have saved, which trial
would have won and whether that differs from the recorded winner, and `replay-{P}.parquet` in the tune dir holds
every trial's state and folds done under P.

For a serial tune whose configurations were drawn up front (random or grid sampler) this is exactly what a real tune
with the same seed and pruner decides. Under an adaptive sampler (tpe) the draws after the first difference would
have been others, and in a tune-parallel tune trials overlapped: the replay then says what P would have decided on
these results in draw order, an estimate. A trial the recording pruned earlier than P would have stopped it has no
scores for the folds P would have run: it is `undecided`. Pruning over epochs (ASHA) is not replayed yet.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from nestling.core.errors import UsageError, strict_parser
from nestling.core.lazy import lazy_module
from nestling.core.options.choices import FOLD_PRUNERS, check_choice
from nestling.core.tree import naming
from nestling.execute.search.pruners import best_complete, prunes
from nestling.execute.search.study import Study
from nestling.execute.search.trials import Trial, TrialState
from nestling.plan.model import Plan
from nestling.plan.store import find_plan_root, load_plan

if TYPE_CHECKING:
    import polars as pl

    from nestling.execute import cv_table
else:
    pl = lazy_module("polars")
    cv_table = lazy_module("nestling.execute.cv_table")

PRUNERS: tuple[str, ...] = ("none", *FOLD_PRUNERS)  # between folds; a replay over epochs (asha, hyperband): not yet


class ReplayState(StrEnum):
    """A trial's state under the replayed pruner: a TrialState's strings, and `undecided`."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"
    UNDECIDED = "undecided"  # the recording stops before the replayed pruner would have


@dataclass(frozen=True)
class ReplayedTrial:
    cv_name: str
    state: ReplayState
    n_folds_done: int
    recorded_state: TrialState
    recorded_n_folds_done: int
    runs_saved: int  # recorded runs the replayed pruner would not have started


@dataclass(frozen=True)
class Replay:
    """What `pruner` would have decided over the tune at `root`."""

    root: Path
    pruner: str
    trials: list[ReplayedTrial]  # in draw order
    runs_recorded: int  # runs of the recorded trials' folds done
    winner: str | None  # the best complete trial by cv score under the replayed pruner
    recorded_winner: str | None
    exact: bool  # a serial tune drawn up front: the replay is what a real tune would decide

    @property
    def runs_saved(self) -> int:
        return sum(t.runs_saved for t in self.trials)

    @property
    def table_path(self) -> Path:
        return naming.replay_table(self.root, self.pruner)

    def lines(self) -> list[str]:
        n = len(self.trials)
        pruned = sum(t.state is ReplayState.PRUNED for t in self.trials)
        share = f" ({self.runs_saved / self.runs_recorded:.0%})" if self.runs_recorded else ""
        out = [f"replay --pruner {self.pruner}: {pruned} of {n} trials pruned, {self.runs_saved} of "
               f"{self.runs_recorded} recorded runs saved{share}"]  # fmt: skip
        same = (
            "the same as recorded"
            if self.winner == self.recorded_winner
            else f"recorded: {self.recorded_winner}"
        )
        out.append(f"winner (by score): {self.winner} ({same})")
        undecided = sum(t.state is ReplayState.UNDECIDED for t in self.trials)
        if undecided:
            out.append(f"{undecided} trials undecided: the recording pruned them before --pruner {self.pruner} "
                       "would have (their later folds never ran)")  # fmt: skip
        if not self.exact:
            out.append("an estimate: the tune drew its configurations adaptively or ran trials side by side, so a "
                       "real tune with this pruner could have drawn or ordered other trials")  # fmt: skip
        out.append(f"table: {self.table_path}")
        return out


def replay_main(argv: list[str], description: str) -> int:
    parser = strict_parser("nestling replay", description)
    parser.add_argument("dir", type=Path, help="a finished tune directory")
    parser.add_argument("--pruner", required=True, help=f"the pruner to replay: {', '.join(PRUNERS)}")
    args = parser.parse_args(argv)
    for line in replay_tune(args.dir, args.pruner).lines():
        print(line)
    return 0


def replay_tune(dir: Path, pruner: str) -> Replay:
    """Replay the tune at `dir` under `pruner` and write its replay-{pruner}.parquet."""
    check_choice("pruner", pruner, PRUNERS)
    root = find_plan_root(Path(dir))
    plan = load_plan(root)
    if plan.kind != "tune":
        raise UsageError(
            f"{root} is a {plan.kind}, not a tune: replay re-decides the trials of a tune (pass the tune dir)"
        )
    study = Study(plan)
    recorded = sorted(study.trials(), key=lambda t: (t.drawn_time or 0.0, t.index))
    replayed = replay_trials(pruner, recorded, plan.n_folds)
    runs_per_fold = [_runs_per_fold(plan, t.index) for t in recorded]
    trials = []
    for rec, rep, per_fold in zip(recorded, replayed, runs_per_fold, strict=True):
        state = ReplayState(rep.state.value) if rep.state.is_finished() else ReplayState.UNDECIDED
        saved = sum(per_fold[rep.n_folds_done : rec.n_folds_done])
        trials.append(ReplayedTrial(str(plan.cvs[rec.index].cv_name), state, rep.n_folds_done, rec.state,
                                    rec.n_folds_done, saved))  # fmt: skip
    result = Replay(
        root=root, pruner=pruner, trials=trials,
        runs_recorded=sum(sum(per_fold[: rec.n_folds_done]) for rec, per_fold in zip(recorded, runs_per_fold, strict=True)),
        winner=_winner_name(plan, best_complete(replayed)), recorded_winner=_winner_name(plan, best_complete(recorded)),
        exact=plan.space is None and plan.options.get("device", {}).get("strategy") != "tune-parallel",
    )  # fmt: skip
    _write(result)
    return result


def replay_trials(pruner: str, recorded: list[Trial], n_folds: int) -> list[Trial]:
    """The recorded trials (in the order they ran) as `pruner` would have left them: each trial, fold by fold, asks
    `prunes` with the trials before it as replayed. A trial the recording stopped before `pruner` decides is left
    RUNNING (undecided)."""
    done: list[Trial] = []
    for rec in recorded:
        outcome: Trial | None = None
        for step in range(1, n_folds):
            if rec.n_folds_done < step:  # the recording ends before this fold (pruned, or never finished)
                break
            if prunes(pruner, _upto(rec, step), step, done):
                outcome = replace(_upto(rec, step), state=TrialState.PRUNED)
                break
        if (
            outcome is None
        ):  # the replayed pruner lets it run every fold: the recording tells how it ended, if it can
            outcome = rec if rec.n_folds_done == n_folds else _upto(rec, rec.n_folds_done)
        done.append(outcome)
    return done


def _upto(trial: Trial, step: int) -> Trial:
    """`trial` as it stood after `step` folds: running, its values and fold scores of those folds."""
    return replace(trial, state=TrialState.RUNNING, n_folds_done=step,
                   values={k: v for k, v in trial.values.items() if k <= step},
                   fold_scores={k: v for k, v in trial.fold_scores.items() if k <= step})  # fmt: skip


def _runs_per_fold(plan: Plan, index: int) -> list[int]:
    counts = [0] * plan.n_folds
    for run in plan.cvs[index].runs:
        counts[run.fold] += 1
    return counts


def _winner_name(plan: Plan, trial: Trial | None) -> str | None:
    return None if trial is None else str(plan.cvs[trial.index].cv_name)


def _write(result: Replay) -> None:
    frame = pl.DataFrame(
        {
            "cv_name": [t.cv_name for t in result.trials],
            "state": [t.state.value for t in result.trials],
            "n_folds_done": [t.n_folds_done for t in result.trials],
            "recorded_state": [t.recorded_state.value for t in result.trials],
            "recorded_n_folds_done": [t.recorded_n_folds_done for t in result.trials],
            "runs_saved": [t.runs_saved for t in result.trials],
        },
        schema={
            "cv_name": pl.String,
            "state": pl.String,
            "n_folds_done": pl.Int64,
            "recorded_state": pl.String,
            "recorded_n_folds_done": pl.Int64,
            "runs_saved": pl.Int64,
        },  # fmt: skip
    )
    cv_table.write_parquet_atomic(frame, result.table_path)
