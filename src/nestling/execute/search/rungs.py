"""Pruning between epochs whose state is the tree: asynchronous successive halving (`--pruner asha`) and Hyperband
(`--pruner hyperband`, several ASHA brackets), over every run of a trial (epochs x folds).

A trial's runs train to its first rung (min_epochs * eta^bracket epochs), pause there, and the trial is compared
with the trials of its bracket that reached the rung. The rules are pure functions in pruners.py; this module is
the protocol on the tree, in the tune's `_trials/` folder beside the draws (study.py):

  {i}.rung{k}           trial i reached rung k: its value there (the cv score over all its runs at that epoch,
                        the same formula as the final score) and its epochs so far; written by the worker that
                        ended the trial's last run of the segment (any worker may rewrite it with the same value)
  {i}.rung{k}.decided   what happens to trial i at rung k: "promote" (its runs go on to rung k + 1) or "prune";
                        created exclusively, so the first decision stands whoever else decides at the same time
  {i}.pruned            trial i stopped (written after a "prune" decision; status and collect read it)
  run_result.json       of each run: `epochs_trained` and `stop_reason` ("paused" at a rung); checkpoints/last.ckpt
                        is where a promoted run goes on

So nothing a killed worker held is lost: a decision is data, not a message. The work it implies (the runs of a
promoted trial below their new rung) is found again by any worker, and the attempt lock keeps each run to one live
attempt. After every segment the worker that ended it decides what the tree now allows: a trial paused at a rung
goes on once it is among the best floor(n / eta) of the n trials at the rung (ASHA; the best one at least once no
other trial can reach the rung), and is pruned as soon as it can never be (pruners.never_promotes). When every
trial has been run, every paused trial has been decided: none is left paused. A free worker takes the most
valuable work first: the runs of the trial promoted to the highest rung, then a new trial (its own work unit).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from nestling.core.ml.scoring import cv_score, run_score
from nestling.core.options.choices import EPOCH_PRUNERS
from nestling.core.tree import attempt_lock, naming
from nestling.core.tree.atomic import create_exclusive, write_json
from nestling.core.tree.run_epochs import RunEpochs, run_epochs
from nestling.core.tree.run_result import read_result
from nestling.core.tree.run_state import RunState
from nestling.execute.search.pruners import (
    bracket_sequence,
    n_brackets,
    never_promotes,
    promotes,
    rung_epochs,
)
from nestling.plan.settings import PlanSettings

IDLE_POLL_S = 2.0  # a worker with nothing to do looks for promotions this often while another run trains


class RungDecision(StrEnum):
    """What happens to a trial at a rung: its runs go on to the next rung, or it stops there."""

    PROMOTE = "promote"
    PRUNE = "prune"


@dataclass(frozen=True)
class Ladder:
    """The rungs of a tune: the bracket of each trial and the epochs at which its trial is compared."""

    pruner: str
    min_epochs: int
    eta: int
    max_epochs: int
    n_trials: int

    @classmethod
    def from_settings(cls, settings: PlanSettings, n_trials: int) -> Ladder | None:
        """The ladder of a tune planned with --pruner asha|hyperband, else None."""
        if settings.pruner not in EPOCH_PRUNERS:
            return None
        return cls(
            pruner=settings.pruner,
            min_epochs=int(settings.min_epochs),
            eta=int(settings.reduction_factor),
            max_epochs=int(settings.max_epochs),
            n_trials=n_trials,
        )

    @property
    def brackets(self) -> int:
        return n_brackets(self.min_epochs, self.eta, self.max_epochs) if self.pruner == "hyperband" else 1

    def bracket(self, index: int) -> int:
        return _sequence(self.n_trials, self.brackets, self.eta)[index] if self.brackets > 1 else 0

    def rungs(self, index: int) -> tuple[int, ...]:
        """Trial `index`'s rungs in epochs; the last is --max_epochs (the trial complete)."""
        return rung_epochs(self.min_epochs, self.eta, self.max_epochs, self.bracket(index))


_SEQUENCES: dict[tuple[int, int, int], list[int]] = {}


def _sequence(n_trials: int, brackets: int, eta: int) -> list[int]:
    key = (n_trials, brackets, eta)
    if key not in _SEQUENCES:
        _SEQUENCES[key] = bracket_sequence(n_trials, brackets, eta)
    return _SEQUENCES[key]


@dataclass
class TrialRungs:
    """What the tree says about one trial's rungs: values reached, decisions taken, whether it was pruned."""

    index: int
    bracket: int
    rungs: tuple[int, ...]
    values: dict[int, float] = field(default_factory=dict)  # rung -> the trial's value there
    n_epochs: dict[int, int] = field(default_factory=dict)  # rung -> the trial's epochs (all runs) by then
    decisions: dict[int, RungDecision] = field(default_factory=dict)
    pruned: bool = False

    @property
    def top(self) -> int:
        """The highest rung reached; -1 before the first."""
        return max(self.values, default=-1)

    @property
    def target(self) -> int:
        """The rung its runs train to now: the next after a promotion, else the one it reached (paused there),
        the first before any."""
        top = self.top
        if top < 0:
            return 0
        return top + 1 if self.decisions.get(top) == RungDecision.PROMOTE and top + 1 < len(self.rungs) else top

    @property
    def complete(self) -> bool:
        """Reached its last rung (--max_epochs)."""
        return self.top == len(self.rungs) - 1

    def epochs(self, rung: int) -> int:
        return self.rungs[min(rung, len(self.rungs) - 1)]


@dataclass(frozen=True)
class Segment:
    """What a worker does with one run now: train it to `until_epoch`, or nothing (`state` says what the run is:
    pruned, paused, or its final result's state)."""

    until_epoch: int | None
    state: RunState | None = None


class Board:
    """The rungs of one tune as the tree holds them; one per process and tune (`board_for` caches them). Reads
    `_trials/` with one scandir per refresh; rung files and decisions are immutable once their trial moved on."""

    def __init__(self, root: Path, ladder: Ladder, trial_runs: list[list[str]], settings: PlanSettings) -> None:
        self.root, self.ladder = Path(root), ladder
        self.paths = naming.TrialPaths(root)
        self.trial_runs = trial_runs  # trial -> its run dirs, in plan order (folds outer, seeds inner)
        self.where = {os.path.basename(d): (i, k) for i, runs in enumerate(trial_runs) for k, d in enumerate(runs)}
        self.scoring = settings.scoring()
        self.strategy = str(settings.multi_score_strategy)
        self._read: dict[str, tuple[int, Any]] = {}  # file name -> (mtime_ns, content)
        self._final_runs: dict[str, tuple[RunEpochs, dict[str, float]]] = {}  # results that never change again

    @classmethod
    def from_root(cls, root: Path) -> Board | None:
        """From plan.json read as plain JSON (as study.Study.from_root); None unless a tune with an epoch pruner."""
        with open(os.path.join(root, naming.PLAN), "rb") as f:
            data = json.loads(f.read())
        if data.get("kind") != "tune":
            return None
        settings = PlanSettings.from_options(data["options"])
        ladder = Ladder.from_settings(settings, len(data["cvs"]))
        if ladder is None:
            return None
        base = str(root)
        runs = [[os.path.join(base, r["dir"]) for r in cv["runs"]] for cv in data["cvs"]]
        return cls(Path(root), ladder, runs, settings)

    # -- reading ------------------------------------------------------------------------------------------------

    def trials(self) -> list[TrialRungs]:
        """Every trial of the plan with what `_trials/` says now (one scandir)."""
        out = [TrialRungs(i, self.ladder.bracket(i), self.ladder.rungs(i)) for i in range(len(self.trial_runs))]
        try:
            entries = list(os.scandir(self.paths.dir))
        except FileNotFoundError:
            return out
        for entry in entries:
            stem, _, rest = entry.name.partition(".")
            if not stem.isdigit() or int(stem) >= len(out):
                continue
            trial = out[int(stem)]
            if rest == "pruned":
                trial.pruned = True
            elif rest.startswith("rung"):
                rung_text, _, decided = rest[4:].partition(".")
                if not rung_text.isdigit():
                    continue
                content = self._content(entry)
                if content is None:
                    continue
                rung = int(rung_text)
                if decided == "decided":
                    try:
                        trial.decisions[rung] = RungDecision(str(content.get("decision")))
                    except ValueError:
                        continue
                elif not decided:
                    trial.values[rung] = _value_or_nan(content.get("value"))
                    trial.n_epochs[rung] = int(content.get("n_epochs") or 0)
        return out

    def _content(self, entry: os.DirEntry[str]) -> dict[str, Any] | None:
        try:
            mtime = entry.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        cached = self._read.get(entry.name)
        if cached is not None and cached[0] == mtime:
            return dict(cached[1])
        try:
            with open(entry.path, "rb") as f:
                content = json.loads(f.read())
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(content, dict):
            return None
        self._read[entry.name] = (mtime, content)
        return dict(content)

    def run_state(self, run_dir: str) -> tuple[RunEpochs, dict[str, float]]:
        """The run's epochs and its result's metrics (empty when none); final results are read once per process."""
        cached = self._final_runs.get(run_dir)
        if cached is not None:
            return cached
        result = read_result(run_dir)
        state = (run_epochs(result), {} if result is None else result.metrics)
        if state[0].final:
            self._final_runs[run_dir] = state
        return state

    def finished(self, index: int) -> bool:
        """Every run of the trial is final: nothing of it trains again (complete, early stopped or failed)."""
        return all(self.run_state(d)[0].final for d in self.trial_runs[index])

    def trial(self, index: int) -> TrialRungs:
        """One trial (the whole folder is read: callers that need several take `trials()` once)."""
        return self.trials()[index]

    # -- one run ------------------------------------------------------------------------------------------------

    def segment(self, run_dir: str) -> Segment:
        """How far this run trains now: to its trial's target rung, or not at all (pruned, final, or paused at
        the rung its trial waits at)."""
        located = self.where.get(os.path.basename(run_dir))
        if located is None:
            return Segment(None, RunState.SKIPPED)  # not a run of this tune
        index = located[0]
        trial = self.trial(index)
        if trial.pruned:
            return Segment(None, RunState.PRUNED)
        done, _ = self.run_state(run_dir)
        if done.final:
            return Segment(None, done.status)
        until = trial.epochs(trial.target)
        if done.epochs_trained >= until and done.paused:
            return Segment(None, RunState.PAUSED)
        return Segment(until)

    def after_run(self, run_dir: str) -> list[int]:
        """A segment of this run ended: if it was its trial's last, write the trial's rung value, then decide what
        the tree allows. Returns the trials pruned now."""
        located = self.where.get(os.path.basename(run_dir))
        if located is not None:
            self.record(located[0])
        return self.decide()

    def record(self, index: int, trial: TrialRungs | None = None) -> bool:
        """Write trial `index`'s value at its target rung when every run reached that rung (or is final).
        `trial`: its state when the caller just read it."""
        trial = trial or self.trial(index)
        if trial.pruned:
            return False
        rung = trial.target
        until = trial.epochs(rung)
        runs = [self.run_state(d) for d in self.trial_runs[index]]
        if not runs or not all(done.final or (done.paused and done.epochs_trained >= until) for done, _ in runs):
            return False
        scored = []
        for done, metrics in runs:
            score, unstable = run_score(metrics, self.scoring, self.strategy)
            scored.append((score, unstable, str(done.status)))
        value = cv_score(scored)[0]
        n_epochs = sum(done.epochs_trained for done, _ in runs)
        record = {"index": index, "bracket": trial.bracket, "rung": rung, "epoch": until, "value": value,
                  "n_epochs": n_epochs}  # fmt: skip
        path = self.paths.rung(index, rung)
        if trial.values.get(rung) != value or trial.n_epochs.get(rung) != n_epochs or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, record)
        # A trial whose runs all ended before its last rung (early stopping, failures) is complete where it is.
        return True

    def decide(self) -> list[int]:
        """Promote and prune what the tree allows now, for every bracket and rung; the trials pruned now. First
        the rung values a worker that died after its trial's last run did not write."""
        trials = self.trials()
        recorded = [t.index for t in trials if not t.pruned and t.target > t.top and self.record(t.index, t)]
        if recorded:
            trials = self.trials()
        finished: dict[int, bool] = {}

        def is_finished(index: int) -> bool:
            if index not in finished:
                finished[index] = self.finished(index)
            return finished[index]

        pruned_now = []
        for bracket in range(self.ladder.brackets):
            members = [t for t in trials if t.bracket == bracket]
            rungs = members[0].rungs if members else ()
            for rung in range(len(rungs) - 1):  # the last rung is the end: nothing to decide there
                at_rung = [t for t in members if rung in t.values]
                if not at_rung:
                    continue
                values = [t.values[rung] for t in at_rung]
                below = [t for t in members if t.top < rung and not t.pruned and not is_finished(t.index)]
                n_possible = len(at_rung) + len(below)
                for t in at_rung:
                    if t.pruned or rung in t.decisions or t.top != rung or is_finished(t.index):
                        continue
                    value = t.values[rung]
                    if promotes(value, values, n_possible, self.ladder.eta):
                        self._decide(t, rung, RungDecision.PROMOTE)
                    elif (
                        never_promotes(value, values, n_possible, self.ladder.eta)
                        and self._decide(t, rung, RungDecision.PRUNE) == RungDecision.PRUNE
                    ):
                        pruned_now.append(t.index)
                for t in at_rung:  # a prune decided by a worker that died before marking the trial
                    if t.decisions.get(rung) == RungDecision.PRUNE and not t.pruned:
                        self._mark_pruned(t, rung)
        return pruned_now

    def _decide(self, trial: TrialRungs, rung: int, decision: RungDecision) -> RungDecision:
        """Create the decision file; the first decision stands (returned)."""
        path = self.paths.decision(trial.index, rung)
        payload = json.dumps({"decision": decision.value, "by": {"pid": os.getpid(), "hostname": socket.gethostname()},
                              "at": time.time()})  # fmt: skip
        if not create_exclusive(path, payload):
            try:
                decision = RungDecision(json.loads(path.read_text()).get("decision"))
            except (FileNotFoundError, ValueError):
                return decision
        trial.decisions[rung] = decision
        if decision == RungDecision.PRUNE:
            self._mark_pruned(trial, rung)
        return decision

    def _mark_pruned(self, trial: TrialRungs, rung: int) -> None:
        write_json(self.paths.pruned(trial.index), {"index": trial.index, "rung": rung, "epoch": trial.epochs(rung),
                                                    "score": _json_number(trial.values.get(rung))})  # fmt: skip
        trial.pruned = True

    # -- work for a free worker ---------------------------------------------------------------------------------

    def promoted_runs(self) -> list[str]:
        """Runs of promoted trials still below their new rung, the highest rung first (ASHA's order), then by
        trial; those a live attempt holds are left out."""
        work: list[tuple[int, int, str]] = []
        for t in self.trials():
            if t.pruned or t.target <= t.top or t.target == 0:
                continue
            until = t.epochs(t.target)
            for d in self.trial_runs[t.index]:
                done, _ = self.run_state(d)
                if not done.final and done.epochs_trained < until and not attempt_lock.alive(Path(d)):
                    work.append((-t.target, t.index, d))
        return [d for _, _, d in sorted(work)]

    def training_elsewhere(self) -> bool:
        """A run of this tune is held by a live attempt (it may make a trial promotable when it ends)."""
        for runs in self.trial_runs:
            for d in runs:
                if os.path.exists(os.path.join(d, naming.RUN_LOCK)) and attempt_lock.alive(Path(d)):
                    return True
        return False


def _value_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _json_number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


_BOARDS: dict[str, Board | None] = {}


def board_for(root: Path | None) -> Board | None:
    """The board of the tune at `root` when it prunes between epochs; cached per process."""
    if root is None:
        return None
    key = str(root)
    if key not in _BOARDS:
        if not (Path(root) / naming.PLAN).is_file():
            return None
        _BOARDS[key] = Board.from_root(Path(root))
    return _BOARDS[key]


def boards() -> list[Board]:
    """The boards this process used (the tunes whose promotions it may still take)."""
    return [b for b in _BOARDS.values() if b is not None]
